"""Deterministic synthetic podcast-like corpus in the MSP-Podcast layout.

No one can ship MSP-Podcast, so the project generates a small stand-in corpus that the
very same reader, TFDS builder and pipeline consume. It is synthetic by construction and
exists to exercise the code and to show personalization effects that are known in
advance; it says nothing about real speech.

Layout written under ``out_dir``::

    Audios/<FileName>.wav               16 kHz, mono, PCM_16
    Labels/labels_consensus.csv         the older release (like MSP-Podcast v1.6)
    Labels_new/labels_consensus.csv     the newer release (like v1.10), sharing Audios/
    ground_truth.json                   speaker traits, label distributions, preset, per-file facts
    README.txt                          what this is and what generated it

Audio is source-filter synthesis: a glottal pulse train whose f0 contour has declination,
jitter and syllable-level movement, plus aspiration noise, through a spectral-tilt filter
and four formant resonators whose vowel targets change per syllable (scaled by the
speaker's vocal-tract length; applied frame by frame, see `_formant_filter`), gated by a
syllable-rate energy envelope with pauses, plus fricative noise bursts at some syllable
onsets and a low noise floor.

Labels: every speaker has a mean and a standard deviation for arousal and valence that are
linear functions of the speaker's traits (see `LabelModel`), so speakers differ in label
distribution in a way that can be inferred from their voice. Each utterance draws its
arousal and valence from its speaker's distribution; arousal then drives strong acoustic
cues and valence weak ones (see `CueModel`).

Usage::

    python -m papt_jax.data.synthetic --preset demo --out /tmp/syn_corpus --seed 0
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.signal
import soundfile as sf
import tqdm
from absl import flags

from papt_jax import cli
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import CSV_COLUMNS, LABEL_MAX, LABEL_MIN, UNKNOWN_SPEAKER
from papt_jax.errors import UserError

GENERATOR_VERSION = 1

# Speaker roles -> split name in the CSV. "new" speakers exist only in the newer release;
# "hidden" speakers are real voices whose rows carry SpkrID "Unknown".
_ROLE_SPLIT = {
    "train": "Train",
    "dev": "Development",
    "test": "Test1",
    "test2": "Test2",
    "new": "Test1",
    "hidden": "Train",
}
# Fixed integer per role, part of every random-stream key, so that adding speakers of
# one role never changes the audio or labels of another.
_ROLE_CODE = {"train": 1, "dev": 2, "test": 3, "test2": 4, "new": 5, "hidden": 6}

# Adult male formant targets (F1..F4, Hz) of six vowels; the speaker's vocal-tract scale
# multiplies them (shorter tract -> higher formants).
_VOWEL_FORMANTS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],  # a
        [270.0, 2290.0, 3010.0, 3700.0],  # i
        [300.0, 870.0, 2240.0, 3300.0],  # u
        [530.0, 1840.0, 2480.0, 3500.0],  # e
        [570.0, 840.0, 2410.0, 3300.0],  # o
        [500.0, 1500.0, 2500.0, 3500.0],  # schwa
    ]
)
_FORMANT_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])
# Frame-wise formant filtering: 32 ms Hann frames every 16 ms, FFT zero-padded to 64 ms so
# that the resonators' ringing (time constant 1/(pi*bandwidth) <= 5 ms) does not wrap.
_WIN = 512
_HOP = 256
_NFFT = 1024


@dataclasses.dataclass(frozen=True)
class TraitRanges:
    """Ranges from which per-speaker voice traits are drawn (uniformly).

    Attributes:
      f0_male_hz: Base f0 range (Hz) for male speakers.
      f0_female_hz: Base f0 range (Hz) for female speakers.
      f0_range_st: Typical syllable-to-syllable pitch movement, in semitones (the std of
        the per-syllable pitch targets is half of it).
      vtl_scale_male: Formant scale factor for male speakers (1.0 = the table's adult male).
      vtl_scale_female: Formant scale factor for female speakers (shorter vocal tract).
      expressiveness: Range of the expressiveness trait in [0, 1]. It scales how strongly
        arousal moves the acoustics and raises the speaker's mean and spread of arousal.
      speaking_rate_sps: Neutral speaking rate, syllables per second.
      loudness_db: Speaker's level offset in dB relative to the reference level.
      breathiness: Aspiration-noise level relative to the glottal pulse.
      tilt_offset: Speaker's voice-quality offset to the tilt filter's pole (darker voice
        when positive).
    """

    f0_male_hz: tuple[float, float] = (90.0, 150.0)
    f0_female_hz: tuple[float, float] = (170.0, 250.0)
    f0_range_st: tuple[float, float] = (2.0, 6.0)
    vtl_scale_male: tuple[float, float] = (0.88, 1.0)
    vtl_scale_female: tuple[float, float] = (1.05, 1.2)
    expressiveness: tuple[float, float] = (0.0, 1.0)
    speaking_rate_sps: tuple[float, float] = (3.5, 5.5)
    loudness_db: tuple[float, float] = (-3.0, 3.0)
    breathiness: tuple[float, float] = (0.02, 0.12)
    tilt_offset: tuple[float, float] = (-0.08, 0.08)


@dataclasses.dataclass(frozen=True)
class LabelModel:
    """How a speaker's label distribution follows from the speaker's traits.

    Traits enter as centred scores in about [-1, 1]: ``expr = 2*expressiveness - 1``,
    ``rate`` = speaking rate mapped linearly from its range onto [-1, 1], ``pitch`` = base
    f0 mapped from its gender's range onto [-1, 1]. Then::

        arousal_mean = 4 + arousal_expr*expr + arousal_rate*rate + N(0, arousal_mean_noise)
        arousal_std  = arousal_std_base + arousal_std_expr*expressiveness
        valence_mean = 4 + valence_pitch*pitch + valence_expr*expr + N(0, valence_mean_noise)
        valence_std  = valence_std_base + valence_std_expr*expressiveness

    and each utterance draws ``N(mean, std)`` clipped to [1, 7] and rounded to
    `label_decimals`.

    Attributes:
      arousal_expr: Slope of the speaker's mean arousal on expressiveness.
      arousal_rate: Slope of the speaker's mean arousal on speaking rate.
      arousal_mean_noise: Std of the trait-independent part of the mean arousal.
      arousal_std_base: Arousal std of the least expressive speaker.
      arousal_std_expr: Extra arousal std of the most expressive speaker.
      valence_pitch: Slope of the speaker's mean valence on base pitch (within gender).
      valence_expr: Slope of the speaker's mean valence on expressiveness.
      valence_mean_noise: Std of the trait-independent part of the mean valence.
      valence_std_base: Valence std of the least expressive speaker.
      valence_std_expr: Extra valence std of the most expressive speaker.
      dominance_from_arousal: Dominance = 4 + this*(arousal - 4) + N(0, dominance_noise).
      dominance_noise: Std of the utterance-level dominance noise.
      label_decimals: Decimals kept in the CSV (the synthesis uses the rounded value).
    """

    arousal_expr: float = 0.9
    arousal_rate: float = 0.3
    arousal_mean_noise: float = 0.2
    arousal_std_base: float = 0.5
    arousal_std_expr: float = 0.5
    valence_pitch: float = 0.5
    valence_expr: float = 0.3
    valence_mean_noise: float = 0.3
    valence_std_base: float = 0.4
    valence_std_expr: float = 0.4
    dominance_from_arousal: float = 0.6
    dominance_noise: float = 0.4
    label_decimals: int = 4


@dataclasses.dataclass(frozen=True)
class CueModel:
    """How an utterance's labels change its acoustics.

    Labels enter as ``a = (arousal - 4)/3`` and ``v = (valence - 4)/3`` (both in [-1, 1]).
    Arousal cues are multiplied by the speaker's cue gain ``g = gain_base +
    gain_expr*expressiveness``, so expressive speakers move more: the label-to-acoustics
    mapping is speaker dependent, which is what personalization can exploit.

    Attributes:
      f0_st_per_arousal: Shift of the f0 level in semitones at a = 1 (times g).
      f0_range_per_arousal: Relative growth of the pitch movement at a = 1 (times g).
      energy_db_per_arousal: Level change in dB at a = 1 (times g).
      rate_per_arousal: Relative speaking-rate change at a = 1 (times g).
      tilt_per_arousal: Decrease of the tilt filter's pole at a = 1 (times g); a smaller
        pole means a flatter spectrum (more high-frequency energy).
      tilt_pole: Neutral pole of the one-pole low-pass tilt filter.
      gain_base: Cue gain of the least expressive speaker.
      gain_expr: Extra cue gain of the most expressive speaker.
      final_slope_st_per_valence: Pitch rise (positive valence) or fall (negative) in
        semitones over the last `final_fraction` of the utterance at v = 1.
      final_fraction: Fraction of the utterance the valence contour slope spans.
      formant_shift_per_valence: Relative raise of F2 and F3 at v = 1 (a "smile").
      jitter_base: Relative cycle-to-cycle f0 perturbation (std) at neutral valence.
      jitter_per_valence: Jitter decrease at v = 1 (more irregular when negative).
      breathiness_per_valence: Relative decrease of aspiration noise at v = 1 (breathier
        when negative).
      declination_st: Pitch declination over the utterance, semitones.
      noise_f0_st: Std of a random per-utterance f0 offset, semitones.
      noise_energy_db: Std of a random per-utterance level offset, dB.
      noise_rate: Std of a random relative per-utterance speaking-rate change.
      noise_floor_db: Range of the background noise level, dB relative to the reference.
      reference_rms: Waveform RMS (full scale = 1) over voiced samples at 0 dB.
    """

    f0_st_per_arousal: float = 3.0
    f0_range_per_arousal: float = 0.5
    energy_db_per_arousal: float = 7.0
    rate_per_arousal: float = 0.2
    tilt_per_arousal: float = 0.25
    tilt_pole: float = 0.55
    gain_base: float = 0.6
    gain_expr: float = 0.8
    final_slope_st_per_valence: float = 3.0
    final_fraction: float = 0.35
    formant_shift_per_valence: float = 0.06
    jitter_base: float = 0.015
    jitter_per_valence: float = 0.01
    breathiness_per_valence: float = 0.4
    declination_st: float = 2.5
    noise_f0_st: float = 0.8
    noise_energy_db: float = 1.5
    noise_rate: float = 0.06
    noise_floor_db: tuple[float, float] = (-50.0, -40.0)
    reference_rms: float = 0.05


@dataclasses.dataclass(frozen=True)
class CorpusPreset:
    """Size and shape of a synthetic corpus.

    Attributes:
      name: Preset name (recorded in ground_truth.json).
      num_train_speakers: Speakers in split Train.
      num_dev_speakers: Speakers in split Development.
      num_test_speakers: Speakers in split Test1 of both releases.
      num_test2_speakers: Speakers in split Test2 of both releases (a few rows only).
      num_new_speakers: Test1 speakers present only in the newer release (test-c).
      utts_per_train_speaker: Utterances per Train speaker.
      utts_per_dev_speaker: Utterances per Development speaker.
      utts_per_test_speaker: Utterances per Test1 speaker (split into test-a and test-b).
      utts_per_test2_speaker: Utterances per Test2 speaker.
      utts_per_new_speaker: Utterances per newer-release speaker.
      num_unknown_rows: Train rows whose SpkrID is "Unknown" (the reader must drop them);
        they are spoken by `num_hidden_speakers` voices never named in the CSV.
      num_hidden_speakers: Distinct voices behind the "Unknown" rows.
      min_duration_s: Shortest utterance, seconds.
      max_duration_s: Longest utterance, seconds (durations are uniform in between).
      test_a_fraction: The suggested ``test_a_seconds`` is this fraction of the smallest
        per-speaker Test1 total (so every Test1 speaker keeps a test-b remainder).
      traits: Ranges of the speaker traits.
      labels: Trait -> label-distribution model.
      cues: Label -> acoustics model.
    """

    name: str
    num_train_speakers: int
    num_dev_speakers: int
    num_test_speakers: int
    num_test2_speakers: int
    num_new_speakers: int
    utts_per_train_speaker: int
    utts_per_dev_speaker: int
    utts_per_test_speaker: int
    utts_per_test2_speaker: int
    utts_per_new_speaker: int
    num_unknown_rows: int
    num_hidden_speakers: int
    min_duration_s: float
    max_duration_s: float
    test_a_fraction: float = 0.25
    traits: TraitRanges = TraitRanges()
    labels: LabelModel = LabelModel()
    cues: CueModel = CueModel()

    def __post_init__(self):
        counts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("num_train_speakers", "num_dev_speakers", "num_test_speakers"):
            if counts[key] < 1:
                raise ValueError(f"{key} must be >= 1, got {counts[key]}")
        if self.num_new_speakers < 1:
            raise ValueError("num_new_speakers must be >= 1 so that test-c is non-empty")
        if self.utts_per_test_speaker < 2 or self.utts_per_new_speaker < 2:
            raise ValueError("test speakers need >= 2 utterances (test-a plus a test-b rest)")
        if self.num_unknown_rows > 0 and self.num_hidden_speakers < 1:
            raise ValueError("num_unknown_rows > 0 needs num_hidden_speakers >= 1")
        if not 0.3 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError(
                f"need 0.3 <= min_duration_s <= max_duration_s, got "
                f"{self.min_duration_s}, {self.max_duration_s}"
            )
        if not 0.0 < self.test_a_fraction < 1.0:
            raise ValueError(f"test_a_fraction must be in (0, 1), got {self.test_a_fraction}")


PRESETS: dict[str, CorpusPreset] = {
    # A few seconds to generate; for unit tests and smoke runs.
    "smoke": CorpusPreset(
        name="smoke",
        num_train_speakers=10,
        num_dev_speakers=3,
        num_test_speakers=4,
        num_test2_speakers=2,
        num_new_speakers=3,
        utts_per_train_speaker=6,
        utts_per_dev_speaker=6,
        utts_per_test_speaker=6,
        utts_per_test2_speaker=2,
        utts_per_new_speaker=6,
        num_unknown_rows=4,
        num_hidden_speakers=1,
        min_duration_s=1.0,
        max_duration_s=3.0,
    ),
    # About 25 minutes of audio: the corpus of the whole CPU demo pipeline.
    "demo": CorpusPreset(
        name="demo",
        num_train_speakers=40,
        num_dev_speakers=8,
        num_test_speakers=10,
        num_test2_speakers=2,
        num_new_speakers=6,
        utts_per_train_speaker=8,
        utts_per_dev_speaker=6,
        utts_per_test_speaker=12,
        utts_per_test2_speaker=3,
        utts_per_new_speaker=10,
        num_unknown_rows=6,
        num_hidden_speakers=2,
        min_duration_s=1.5,
        max_duration_s=3.8,
    ),
}


# --------------------------------------------------------------------------- speakers


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic voice.

    Attributes:
      number: Integer used in file names (and as SpkrID unless hidden).
      role: 'train', 'dev', 'test', 'test2', 'new' or 'hidden'.
      gender: 'Male' or 'Female'.
      traits: Voice traits, named as the `TraitRanges` fields (scalars).
      label_params: arousal_mean/std and valence_mean/std of the speaker.
    """

    number: int
    role: str
    gender: str
    traits: dict[str, float]
    label_params: dict[str, float]

    @property
    def spkr_id(self) -> str:
        return UNKNOWN_SPEAKER if self.role == "hidden" else str(self.number)


def _centred(value: float, bounds: tuple[float, float]) -> float:
    """Maps `value` from [lo, hi] linearly onto [-1, 1]."""
    lo, hi = bounds
    return 0.0 if hi == lo else 2.0 * (value - lo) / (hi - lo) - 1.0


def _draw_traits(rng: np.random.Generator, gender: str, ranges: TraitRanges) -> dict[str, float]:
    female = gender == "Female"

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    return {
        "f0_base_hz": uniform(ranges.f0_female_hz if female else ranges.f0_male_hz),
        "f0_range_st": uniform(ranges.f0_range_st),
        "vtl_scale": uniform(ranges.vtl_scale_female if female else ranges.vtl_scale_male),
        "expressiveness": uniform(ranges.expressiveness),
        "speaking_rate_sps": uniform(ranges.speaking_rate_sps),
        "loudness_db": uniform(ranges.loudness_db),
        "breathiness": uniform(ranges.breathiness),
        "tilt_offset": uniform(ranges.tilt_offset),
    }


def _label_params(
    rng: np.random.Generator, gender: str, traits: dict[str, float], preset: CorpusPreset
) -> dict[str, float]:
    model, ranges = preset.labels, preset.traits
    expr = 2.0 * traits["expressiveness"] - 1.0
    rate = _centred(traits["speaking_rate_sps"], ranges.speaking_rate_sps)
    f0_bounds = ranges.f0_female_hz if gender == "Female" else ranges.f0_male_hz
    pitch = _centred(traits["f0_base_hz"], f0_bounds)
    noise_a, noise_v = rng.normal(size=2)
    arousal_mean = (
        4.0 + model.arousal_expr * expr + model.arousal_rate * rate
    ) + model.arousal_mean_noise * noise_a
    valence_mean = (
        4.0 + model.valence_pitch * pitch + model.valence_expr * expr
    ) + model.valence_mean_noise * noise_v
    return {
        "arousal_mean": float(np.clip(arousal_mean, 1.5, 6.5)),
        "arousal_std": model.arousal_std_base + model.arousal_std_expr * traits["expressiveness"],
        "valence_mean": float(np.clip(valence_mean, 1.5, 6.5)),
        "valence_std": model.valence_std_base + model.valence_std_expr * traits["expressiveness"],
    }


def _make_speakers(preset: CorpusPreset, seed: int) -> list[Speaker]:
    """Draws every speaker of the corpus; numbers are shuffled so they do not reveal roles."""
    roles = (
        ["train"] * preset.num_train_speakers
        + ["dev"] * preset.num_dev_speakers
        + ["test"] * preset.num_test_speakers
        + ["test2"] * preset.num_test2_speakers
        + ["new"] * preset.num_new_speakers
    )
    perm = np.random.default_rng([seed, 0]).permutation(len(roles)) + 1
    role_index: dict[str, int] = {}
    speakers = []
    for role, number in zip(roles, perm, strict=True):
        speakers.append(_make_speaker(preset, seed, role, role_index.get(role, 0), int(number)))
        role_index[role] = role_index.get(role, 0) + 1
    # Hidden voices share number 0 in file names; their rows say SpkrID "Unknown".
    for index in range(preset.num_hidden_speakers):
        speakers.append(_make_speaker(preset, seed, "hidden", index, 0))
    return speakers


def _make_speaker(preset: CorpusPreset, seed: int, role: str, index: int, number: int) -> Speaker:
    rng = np.random.default_rng([seed, _ROLE_CODE[role], index, 1])
    gender = "Female" if rng.random() < 0.5 else "Male"
    traits = _draw_traits(rng, gender, preset.traits)
    return Speaker(number, role, gender, traits, _label_params(rng, gender, traits, preset))


# --------------------------------------------------------------------------- labels


def _emo_class(arousal: float, valence: float) -> str:
    """Categorical label from the quadrant: Happy, Angry, Sad, or Neutral."""
    if arousal >= 4.5 and valence >= 4.5:
        return "H"
    if arousal >= 4.5 and valence < 3.5:
        return "A"
    if arousal < 3.5 and valence < 3.5:
        return "S"
    return "N"


def _draw_labels(rng: np.random.Generator, speaker: Speaker, model: LabelModel) -> dict[str, float]:
    p = speaker.label_params
    a, v, d_noise = rng.normal(size=3)
    arousal = np.clip(p["arousal_mean"] + p["arousal_std"] * a, LABEL_MIN, LABEL_MAX)
    valence = np.clip(p["valence_mean"] + p["valence_std"] * v, LABEL_MIN, LABEL_MAX)
    dominance = 4.0 + model.dominance_from_arousal * (arousal - 4.0)
    dominance = np.clip(dominance + model.dominance_noise * d_noise, LABEL_MIN, LABEL_MAX)
    ndigits = model.label_decimals
    return {
        "arousal": round(float(arousal), ndigits),
        "valence": round(float(valence), ndigits),
        "dominance": round(float(dominance), ndigits),
    }


# --------------------------------------------------------------------------- synthesis


@dataclasses.dataclass(frozen=True)
class _Syllables:
    """Timing plan of one utterance, in samples; arrays of shape (syllables,)."""

    onset: np.ndarray  # syllable start (fricative, if any, starts here)
    nucleus: np.ndarray  # voiced nucleus start
    end: np.ndarray  # syllable end
    vowel: np.ndarray  # row of _VOWEL_FORMANTS


def _plan_syllables(rng: np.random.Generator, num_samples: int, rate_sps: float) -> _Syllables:
    """Words of 1-4 syllables separated by pauses, filling the utterance."""
    sr = SAMPLE_RATE
    t = rng.uniform(0.05, 0.15) * sr
    stop = num_samples - rng.uniform(0.05, 0.15) * sr
    rows = []
    while True:
        word_done = False
        for _ in range(int(rng.integers(1, 5))):
            length = rng.uniform(0.7, 1.3) / rate_sps * sr
            if t + length > stop:
                word_done = True
                break
            fricative = rng.random() < 0.5
            nucleus = t + (min(rng.uniform(0.04, 0.09) * sr, 0.35 * length) if fricative else 0)
            rows.append((t, nucleus, t + length, rng.integers(len(_VOWEL_FORMANTS))))
            t += length + rng.uniform(0.0, 0.015) * sr
        if word_done:
            break
        t += rng.uniform(0.06, 0.25) * sr / (rate_sps / 4.5)
    if not rows:  # utterance shorter than one syllable: one syllable fills it
        rows.append((0.02 * sr, 0.02 * sr, num_samples - 0.02 * sr, 0))
    arr = np.array(rows, dtype=np.float64)
    return _Syllables(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3].astype(np.int64))


def _segment_envelope(
    starts: np.ndarray, ends: np.ndarray, num_samples: int, attack: float, release: float
) -> np.ndarray:
    """Sum of raised-cosine-edged segments [start, end), shape (num_samples,)."""
    env = np.zeros(num_samples)
    for start, end in zip(starts, ends, strict=True):
        lo, hi = int(np.ceil(start)), min(int(np.ceil(end)), num_samples)
        if hi <= lo:
            continue
        n = np.arange(lo, hi, dtype=np.float64)
        rise = np.sin(0.5 * np.pi * np.clip((n - start) / attack, 0.0, 1.0)) ** 2
        fall = np.sin(0.5 * np.pi * np.clip((end - n) / release, 0.0, 1.0)) ** 2
        env[lo:hi] += rise * fall
    return env


def _f0_contour(
    rng: np.random.Generator,
    syl: _Syllables,
    num_samples: int,
    f0_hz: float,
    range_st: float,
    valence_c: float,
    jitter: float,
    cues: CueModel,
) -> np.ndarray:
    """Instantaneous f0 in Hz, shape (num_samples,)."""
    n = np.arange(num_samples, dtype=np.float64)
    pos = n / num_samples
    centres = 0.5 * (syl.nucleus + syl.end)
    targets = rng.normal(0.0, 0.5 * range_st, size=len(centres))
    st = np.interp(n, centres, targets)
    st -= cues.declination_st * pos
    # Valence bends the end of the utterance: rising when positive, falling when negative.
    tail = np.clip((pos - (1.0 - cues.final_fraction)) / cues.final_fraction, 0.0, 1.0)
    st += cues.final_slope_st_per_valence * valence_c * tail
    # Cycle-level jitter: a fresh perturbation every 5 ms.
    step = SAMPLE_RATE // 200
    jit = np.repeat(rng.normal(0.0, jitter, size=num_samples // step + 1), step)[:num_samples]
    return f0_hz * 2.0 ** (st / 12.0) * (1.0 + jit)


def _glottal_source(f0: np.ndarray) -> np.ndarray:
    """Glottal-flow derivative of an asymmetric pulse train, shape (num_samples,).

    Each period opens over 40 % of the cycle, closes over the next 20 % and stays closed;
    differentiating the flow gives the sharp closure that makes a rich harmonic spectrum.
    """
    phase = np.cumsum(f0 / SAMPLE_RATE)
    frac = phase - np.floor(phase)
    opening = 0.5 * (1.0 - np.cos(np.pi * frac / 0.4))
    closing = np.cos(0.5 * np.pi * (frac - 0.4) / 0.2)
    flow = np.where(frac < 0.4, opening, np.where(frac < 0.6, closing, 0.0))
    return np.diff(flow, prepend=0.0) * (SAMPLE_RATE / f0.mean())


def _resonator_sos(freqs: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Second-order sections of unity-DC-gain two-pole resonators, shape (..., 6)."""
    radius = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    a1 = -2.0 * radius * np.cos(2.0 * np.pi * freqs / SAMPLE_RATE)
    a2 = radius**2
    sos = np.zeros(freqs.shape + (6,))
    sos[..., 0] = 1.0 + a1 + a2
    sos[..., 3] = 1.0
    sos[..., 4] = a1
    sos[..., 5] = a2
    return sos


def _resonator_response(formants: np.ndarray, nfft: int) -> np.ndarray:
    """Complex frequency response of the 4-resonator cascade, one per frame.

    The cascade's denominator is the product of the resonators' quadratics; evaluating
    that polynomial in e^{-jw} on the FFT grid is exactly an FFT of its coefficients.

    Args:
      formants: Formant frequencies in Hz, shape (frames, 4).
      nfft: FFT size; the response has nfft // 2 + 1 bins from 0 Hz to Nyquist.

    Returns:
      Response of shape (frames, nfft // 2 + 1).
    """
    sos = _resonator_sos(formants, np.broadcast_to(_FORMANT_BANDWIDTHS, formants.shape))
    denominator = np.ones((formants.shape[0], 1))
    for k in range(formants.shape[1]):
        a1, a2 = sos[:, k, 4, None], sos[:, k, 5, None]
        grown = np.zeros((denominator.shape[0], denominator.shape[1] + 2))
        grown[:, :-2] += denominator
        grown[:, 1:-1] += a1 * denominator
        grown[:, 2:] += a2 * denominator
        denominator = grown
    gain = np.prod(sos[..., 0], axis=1)[:, None]
    return gain / np.fft.rfft(denominator, n=nfft)


def _formant_filter(source: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Applies the time-varying formant cascade by frame-wise filtering and overlap-add.

    A recursive filter whose coefficients change every few milliseconds would need a
    Python loop over blocks (slow); instead each Hann-windowed frame is filtered with the
    exact response of that frame's resonators, zero-padded so that the resonators' decay
    does not wrap around, and the frames are overlap-added. Hann windows at 50 % overlap
    sum to one, so a constant formant track reproduces plain linear filtering.

    Args:
      source: Excitation, shape (num_samples,).
      formants: Formant frequencies of each frame, shape (num_frames(num_samples), 4),
        frame f centred on sample f * _HOP.

    Returns:
      Filtered signal, shape (num_samples,).
    """
    num_samples = source.shape[0]
    padded = np.pad(source, (_WIN // 2, _WIN + _HOP))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _WIN)[::_HOP][: formants.shape[0]]
    window = scipy.signal.get_window("hann", _WIN)  # periodic: sums to 1 at 50 % overlap
    spectra = np.fft.rfft(frames * window, n=_NFFT)
    filtered = np.fft.irfft(spectra * _resonator_response(formants, _NFFT), n=_NFFT)
    # Overlap-add: each frame spans _NFFT // _HOP consecutive hops.
    hops_per_frame = _NFFT // _HOP
    out = np.zeros((formants.shape[0] + hops_per_frame, _HOP))
    for j in range(hops_per_frame):
        out[j : j + formants.shape[0]] += filtered[:, j * _HOP : (j + 1) * _HOP]
    return out.reshape(-1)[_WIN // 2 : _WIN // 2 + num_samples]


def _num_frames(num_samples: int) -> int:
    return num_samples // _HOP + 3


def _formant_tracks(
    syl: _Syllables, num_samples: int, vtl_scale: float, valence_c: float, cues: CueModel
) -> np.ndarray:
    """Formants per filter frame, gliding between per-syllable vowel targets; (frames, 4)."""
    frame_centres = np.arange(_num_frames(num_samples)) * float(_HOP)
    syl_centres = 0.5 * (syl.nucleus + syl.end)
    targets = _VOWEL_FORMANTS[syl.vowel] * vtl_scale
    targets[:, 1:3] *= 1.0 + cues.formant_shift_per_valence * valence_c
    tracks = np.stack([np.interp(frame_centres, syl_centres, targets[:, k]) for k in range(4)], 1)
    return np.minimum(tracks, 0.45 * SAMPLE_RATE)


def _voiced_speech(
    rng: np.random.Generator,
    syl: _Syllables,
    num_samples: int,
    traits: dict[str, float],
    a_c: float,
    v_c: float,
    cues: CueModel,
) -> tuple[np.ndarray, np.ndarray]:
    """Glottal source -> tilt -> formants, gated by the syllable nuclei.

    Args:
      rng: Random generator of the utterance.
      syl: Timing plan.
      num_samples: Utterance length.
      traits: Speaker traits.
      a_c: Centred arousal, (arousal - 4) / 3.
      v_c: Centred valence, (valence - 4) / 3.
      cues: Label -> acoustics model.

    Returns:
      (voiced signal, voicing envelope), both of shape (num_samples,).
    """
    gain = cues.gain_base + cues.gain_expr * traits["expressiveness"]
    f0_st = cues.f0_st_per_arousal * gain * a_c + cues.noise_f0_st * rng.normal()
    range_st = traits["f0_range_st"] * max(0.2, 1.0 + cues.f0_range_per_arousal * gain * a_c)
    jitter = max(0.002, cues.jitter_base - cues.jitter_per_valence * v_c)
    f0_hz = traits["f0_base_hz"] * 2.0 ** (f0_st / 12.0)
    f0 = _f0_contour(rng, syl, num_samples, f0_hz, range_st, v_c, jitter, cues)

    breathiness = traits["breathiness"] * max(0.1, 1.0 - cues.breathiness_per_valence * v_c)
    aspiration = breathiness * rng.normal(size=num_samples)
    envelope = _segment_envelope(
        syl.nucleus, syl.end, num_samples, 0.02 * SAMPLE_RATE, 0.035 * SAMPLE_RATE
    )
    # Per-syllable prominence so loudness is not flat inside an utterance.
    prominence = np.interp(
        np.arange(num_samples),
        0.5 * (syl.nucleus + syl.end),
        rng.uniform(0.6, 1.0, size=len(syl.end)),
    )
    source = (_glottal_source(f0) + aspiration) * envelope * prominence

    pole = cues.tilt_pole - cues.tilt_per_arousal * gain * a_c + traits["tilt_offset"]
    pole = float(np.clip(pole, 0.05, 0.95))
    tilted = scipy.signal.lfilter([1.0 - pole], [1.0, -pole], source)
    tracks = _formant_tracks(syl, num_samples, traits["vtl_scale"], v_c, cues)
    return _formant_filter(tilted, tracks), envelope


def _fricatives(
    rng: np.random.Generator, syl: _Syllables, num_samples: int, vtl_scale: float
) -> np.ndarray:
    """Band-passed noise bursts at the syllable onsets that have one; unit RMS before gating."""
    band = np.array([2500.0, 7000.0]) * min(vtl_scale, 1.1)
    sos = scipy.signal.butter(2, band, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    hiss = scipy.signal.sosfilt(sos, rng.normal(size=num_samples))
    envelope = _segment_envelope(
        syl.onset, syl.nucleus, num_samples, 0.01 * SAMPLE_RATE, 0.01 * SAMPLE_RATE
    )
    return envelope * hiss / np.sqrt(np.mean(hiss**2))


def synthesize_utterance(
    rng: np.random.Generator,
    traits: dict[str, float],
    arousal: float,
    valence: float,
    duration_s: float,
    cues: CueModel = CueModel(),
) -> np.ndarray:
    """Synthesizes one utterance of a speaker with given labels.

    Args:
      rng: Random generator that owns every random choice of this utterance.
      traits: Speaker traits, keys as produced for `Speaker.traits`.
      arousal: Arousal label in [1, 7].
      valence: Valence label in [1, 7].
      duration_s: Length of the utterance in seconds.
      cues: Label -> acoustics model.

    Returns:
      Waveform in [-1, 1], float64, shape (round(duration_s * 16000),).
    """
    num_samples = int(round(duration_s * SAMPLE_RATE))
    a_c, v_c = (arousal - 4.0) / 3.0, (valence - 4.0) / 3.0
    gain = cues.gain_base + cues.gain_expr * traits["expressiveness"]

    rate = traits["speaking_rate_sps"] * (1.0 + cues.rate_per_arousal * gain * a_c)
    rate *= 1.0 + cues.noise_rate * rng.normal()
    syl = _plan_syllables(rng, num_samples, max(rate, 1.5))
    voiced, voicing = _voiced_speech(rng, syl, num_samples, traits, a_c, v_c, cues)
    fricatives = _fricatives(rng, syl, num_samples, traits["vtl_scale"])

    # Normalise the voiced part to unit RMS so that the level is set by the cues alone.
    active = voicing > 0.5
    voiced_rms = np.sqrt(np.mean(voiced[active] ** 2)) if active.any() else 1.0
    speech = voiced / voiced_rms + 0.3 * fricatives

    level_db = traits["loudness_db"] + cues.energy_db_per_arousal * gain * a_c
    level_db += cues.noise_energy_db * rng.normal()
    floor_db = rng.uniform(*cues.noise_floor_db)
    wave = cues.reference_rms * 10.0 ** (level_db / 20.0) * speech
    wave += cues.reference_rms * 10.0 ** (floor_db / 20.0) * rng.normal(size=num_samples)
    return np.clip(wave, -1.0, 1.0)


def _to_int16(wave: np.ndarray) -> np.ndarray:
    return np.round(wave * 32767.0).astype(np.int16)


# --------------------------------------------------------------------------- corpus


@dataclasses.dataclass(frozen=True)
class _Utterance:
    file_name: str
    speaker: Speaker
    index: int
    duration_s: float
    labels: dict[str, float]

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * SAMPLE_RATE))

    def csv_row(self) -> list[str]:
        lab = self.labels
        return [
            self.file_name,
            _emo_class(lab["arousal"], lab["valence"]),
            f"{lab['arousal']:.4f}",
            f"{lab['valence']:.4f}",
            f"{lab['dominance']:.4f}",
            self.speaker.spkr_id,
            self.speaker.gender,
            _ROLE_SPLIT[self.speaker.role],
        ]


def _utts_per_speaker(preset: CorpusPreset, role: str) -> int:
    return {
        "train": preset.utts_per_train_speaker,
        "dev": preset.utts_per_dev_speaker,
        "test": preset.utts_per_test_speaker,
        "test2": preset.utts_per_test2_speaker,
        "new": preset.utts_per_new_speaker,
    }[role]


def _plan_utterances(preset: CorpusPreset, speakers: list[Speaker], seed: int) -> list[_Utterance]:
    """Labels and durations of every utterance (the audio is drawn later, per file)."""
    hidden = [s for s in speakers if s.role == "hidden"]
    counts = {id(s): _utts_per_speaker(preset, s.role) for s in speakers if s.role != "hidden"}
    # Unknown rows are dealt round-robin to the hidden voices.
    for k in range(preset.num_unknown_rows):
        key = id(hidden[k % len(hidden)])
        counts[key] = counts.get(key, 0) + 1
    utterances = []
    for speaker in speakers:
        hidden_index = hidden.index(speaker) if speaker.role == "hidden" else 0
        for i in range(counts.get(id(speaker), 0)):
            rng = np.random.default_rng(
                [seed, _ROLE_CODE[speaker.role], speaker.number, hidden_index, i, 2]
            )
            duration = round(float(rng.uniform(preset.min_duration_s, preset.max_duration_s)), 3)
            labels = _draw_labels(rng, speaker, preset.labels)
            # Hidden voices share file-name number 0; keep their utterance indices distinct.
            index = i + 1 + 100 * hidden_index if speaker.role == "hidden" else i + 1
            name = f"SYN_{speaker.number:04d}_{index:04d}.wav"
            utterances.append(_Utterance(name, speaker, index, duration, labels))
    return sorted(utterances, key=lambda u: u.file_name)


def _check_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; refusing to overwrite it. Choose an empty or new "
                "directory, or pass overwrite=True (CLI: --overwrite) to replace the corpus."
            )
        # Only the generator's own outputs are removed, so stale audio cannot linger.
        for name in ("Audios", "Labels", "Labels_new"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        for name in ("ground_truth.json", "README.txt"):
            (out_dir / name).unlink(missing_ok=True)


def _write_csv(path: pathlib.Path, utterances: Sequence[_Utterance]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(CSV_COLUMNS)] + [",".join(u.csv_row()) for u in utterances]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _suggest_test_a_seconds(preset: CorpusPreset, utterances: Sequence[_Utterance]) -> float:
    totals: dict[str, float] = {}
    for u in utterances:
        if u.speaker.role in ("test", "new"):
            totals[u.speaker.spkr_id] = totals.get(u.speaker.spkr_id, 0.0) + u.duration_s
    return float(np.floor(preset.test_a_fraction * min(totals.values()) * 10.0) / 10.0)


def _ground_truth(
    preset: CorpusPreset, seed: int, speakers: list[Speaker], utterances: list[_Utterance]
) -> dict[str, Any]:
    return {
        "generator": "papt_jax.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "test_a_seconds": _suggest_test_a_seconds(preset, utterances),
        "preset": dataclasses.asdict(preset),
        "speakers": {
            s.spkr_id: {
                "role": s.role,
                "split": _ROLE_SPLIT[s.role],
                "gender": s.gender,
                "new_release_only": s.role == "new",
                "traits": s.traits,
                "labels": s.label_params,
            }
            for s in speakers
            if s.role != "hidden"
        },
        "hidden_speakers": [
            {"gender": s.gender, "traits": s.traits, "labels": s.label_params}
            for s in speakers
            if s.role == "hidden"
        ],
        "utterances": {
            u.file_name: {
                "speaker": u.speaker.spkr_id,
                "split": _ROLE_SPLIT[u.speaker.role],
                "release": "new" if u.speaker.role == "new" else "old",
                "duration_s": u.duration_s,
                "num_samples": u.num_samples,
                **u.labels,
            }
            for u in utterances
        },
    }


def _readme(preset: CorpusPreset, seed: int, total_s: float, num_files: int) -> str:
    return (
        "This is a SYNTHETIC podcast-like speech-emotion corpus, not recorded speech. It was "
        f"generated by papt_jax.data.synthetic (generator version {GENERATOR_VERSION}) with "
        f"preset '{preset.name}' and seed {seed}: {num_files} utterances, "
        f"{total_s / 60.0:.1f} minutes of 16 kHz mono PCM_16 audio made by source-filter "
        "synthesis (glottal pulses with an f0 contour, aspiration noise, spectral tilt and "
        "formant resonators under a syllable-rate envelope). It follows the MSP-Podcast "
        "layout: Labels/labels_consensus.csv is the older release, Labels_new/ the newer one "
        "with extra Test1 speakers, both sharing Audios/. Labels come from per-speaker "
        "distributions tied to voice traits, and arousal (strongly) and valence (weakly) "
        "shape the acoustics; ground_truth.json records every parameter. It exists to "
        "exercise the papt_jax pipeline and says nothing about real speech.\n"
    )


def _resolve_preset(preset: str | CorpusPreset) -> CorpusPreset:
    if isinstance(preset, CorpusPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def generate_corpus(
    out_dir: str | pathlib.Path,
    preset: str | CorpusPreset = "smoke",
    seed: int = 0,
    overwrite: bool = False,
    *,
    progress: bool | None = None,
) -> pathlib.Path:
    """Writes a deterministic synthetic corpus in the MSP-Podcast layout.

    The same preset and seed give byte-identical files. The older release's rows are
    also byte-identical inside the newer release's CSV.

    Args:
      out_dir: Corpus directory; created if missing, must be empty unless `overwrite`.
      preset: A name in `PRESETS` ('smoke', 'demo') or a `CorpusPreset`.
      seed: Seed of every random choice.
      overwrite: Replace the generator's outputs in a non-empty `out_dir`.
      progress: Show a tqdm bar; None shows it for every preset but 'smoke'.

    Returns:
      The corpus directory.

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ValueError: Unknown preset name.
    """
    preset = _resolve_preset(preset)
    out_dir = pathlib.Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    speakers = _make_speakers(preset, seed)
    utterances = _plan_utterances(preset, speakers, seed)

    audio_dir = out_dir / "Audios"
    audio_dir.mkdir(parents=True, exist_ok=True)
    show = preset.name != "smoke" if progress is None else progress
    for u in tqdm.tqdm(utterances, desc=f"synthesizing {preset.name}", disable=not show):
        rng = np.random.default_rng(
            [seed, _ROLE_CODE[u.speaker.role], u.speaker.number, u.index, 3]
        )
        wave = synthesize_utterance(
            rng,
            u.speaker.traits,
            u.labels["arousal"],
            u.labels["valence"],
            u.duration_s,
            preset.cues,
        )
        sf.write(audio_dir / u.file_name, _to_int16(wave), SAMPLE_RATE, subtype="PCM_16")

    old = [u for u in utterances if u.speaker.role != "new"]
    _write_csv(out_dir / "Labels" / "labels_consensus.csv", old)
    _write_csv(out_dir / "Labels_new" / "labels_consensus.csv", utterances)
    truth = _ground_truth(preset, seed, speakers, utterances)
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    total_s = sum(u.duration_s for u in utterances)
    (out_dir / "README.txt").write_text(_readme(preset, seed, total_s, len(utterances)))
    return out_dir


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the command-line flags; called only when this module is the program."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_enum("preset", "smoke", sorted(PRESETS), "Corpus size preset.", **fv)
    flags.DEFINE_string("out", None, "Corpus directory to write.", **fv)
    flags.DEFINE_integer("seed", 0, "Random seed (same seed: byte-identical corpus).", **fv)
    flags.DEFINE_bool("overwrite", False, "Replace the corpus in a non-empty --out.", **fv)
    flags.mark_flag_as_required("out", flag_values=flag_values)


def generate_from_flags(fv: flags.FlagValues) -> pathlib.Path:
    """Generates the corpus the flags (from `define_flags`) describe and prints a summary.

    Raises:
      UserError: --out is a file, or a non-empty directory without --overwrite.
    """
    out_dir = pathlib.Path(fv.out)
    try:
        out = generate_corpus(out_dir, fv.preset, fv.seed, fv.overwrite, progress=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UserError(str(err), hint="choose a new --out, or pass --overwrite") from err
    truth = json.loads((out / "ground_truth.json").read_text())
    total_s = sum(u["duration_s"] for u in truth["utterances"].values())
    print(
        f"wrote {len(truth['utterances'])} utterances ({total_s / 60.0:.1f} min) to {out}; "
        f"suggested test_a_seconds = {truth['test_a_seconds']}"
    )
    return out


def main(argv: Sequence[str]) -> None:
    """Entry point under `papt_jax.cli.run` (flags already parsed into `flags.FLAGS`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}", "run with --help")
    generate_from_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
