"""Source-filter synthesis of one utterance from a speaker's traits and its labels.

A glottal pulse train whose f0 contour has declination, jitter and syllable-level movement,
plus aspiration noise, goes through a spectral-tilt filter and four formant resonators whose
vowel targets change per syllable (scaled by the speaker's vocal-tract length; applied frame
by frame, see `_formant_filter`), gated by a syllable-rate energy envelope with pauses, plus
fricative noise bursts at some syllable onsets and a low noise floor. Arousal drives strong
acoustic cues and valence weak ones (see `CueModel`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.synthetic.presets import CueModel

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
# The default label -> acoustics model (a frozen dataclass: safe to share as a default).
_NEUTRAL_CUES = CueModel()


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
    cues: CueModel = _NEUTRAL_CUES,
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


def to_int16(wave: np.ndarray) -> np.ndarray:
    return np.round(wave * 32767.0).astype(np.int16)
