"""Presets of the synthetic corpus: its size, speaker traits, label and acoustic-cue models.

`CORPUS_PRESETS` names the two shipped sizes ('smoke' for tests and smoke runs, 'demo' for
the CPU demo); every knob is a field of a frozen dataclass, recorded in ground_truth.json.
"""

from __future__ import annotations

import dataclasses


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


CORPUS_PRESETS: dict[str, CorpusPreset] = {
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
    # About 33 minutes of audio: the corpus of the whole CPU demo pipeline.
    "demo": CorpusPreset(
        name="demo",
        num_train_speakers=40,
        num_dev_speakers=8,
        # Test speakers are what the paired bootstrap resamples: 20 (test-b) and 12
        # (test-c) narrow the intervals of the comparison tables enough to read them.
        num_test_speakers=20,
        num_test2_speakers=2,
        num_new_speakers=12,
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


def resolve_preset(preset: str | CorpusPreset) -> CorpusPreset:
    """A `CorpusPreset` given itself or its name in `CORPUS_PRESETS`.

    Raises:
      ValueError: Unknown preset name.
    """
    if isinstance(preset, CorpusPreset):
        return preset
    if preset not in CORPUS_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(CORPUS_PRESETS)}")
    return CORPUS_PRESETS[preset]
