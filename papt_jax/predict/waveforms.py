"""Waveforms handed to the predictor as arrays: checks, mix-down and resampling.

Files are read by `papt_jax.data.audio.read_audio`, which applies the data path's checks.
Arrays given to `Predictor.predict` go through `to_model_input`, which applies the same
rules and raises the same `AudioError` subclasses (with the array's position as its name):

* 2-D input is (samples, channels), as `soundfile.read` returns it, and is averaged over
  the channels (the data path's "mean" channel policy);
* other sample rates are converted with `scipy.signal.resample_poly`, as `read_audio` does;
* empty, too short (fewer than `RECEPTIVE_FIELD` samples at 16 kHz: not one encoder frame),
  non-finite, clipped (beyond [-1, 1]) and silent inputs are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from papt_jax.data.audio import (
    CLIP_LIMIT,
    RECEPTIVE_FIELD,
    SAMPLE_RATE,
    SILENCE_LIMIT,
    ClippedAudio,
    EmptyAudio,
    NonFiniteAudio,
    SilentAudio,
    TooShortAudio,
    resampled_length,
)
from papt_jax.errors import UserError


def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float at `rate` -> float32 at `target_rate` (polyphase, float64 inside).

    The same conversion `papt_jax.data.audio.read_audio` applies to files.
    """
    if rate == target_rate:
        return np.asarray(samples, np.float32)
    from scipy.signal import resample_poly  # deferred: scipy.signal is slow to import

    g = math.gcd(rate, target_rate)
    out = resample_poly(np.asarray(samples, np.float64), target_rate // g, rate // g)
    return out.astype(np.float32)


def mix_down(samples: np.ndarray, name: str) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples,) float32, channels averaged."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if samples.ndim != 1:
        raise UserError(
            f"{name}: a waveform must be (samples,) or (samples, channels), got shape "
            f"{samples.shape}"
        )
    return samples.astype(np.float32, copy=False)


def check_samples(samples: np.ndarray, name: str, rate: int) -> None:
    """Raises the data path's `AudioError` for an unusable (samples,) float waveform."""
    if samples.size == 0:
        raise EmptyAudio(name, "no samples")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise NonFiniteAudio(name, f"{bad} of {samples.size} samples are NaN or infinite")
    length = resampled_length(samples.size, rate, SAMPLE_RATE)
    if length < RECEPTIVE_FIELD:
        raise TooShortAudio(
            name, f"{length} samples at {SAMPLE_RATE} Hz < {RECEPTIVE_FIELD} (one encoder frame)"
        )
    peak = float(np.max(np.abs(samples)))
    if peak > CLIP_LIMIT:
        raise ClippedAudio(
            name, f"peak {peak:.4g} exceeds 1.0: give float audio in [-1, 1] (rescale it)"
        )
    if peak < SILENCE_LIMIT:
        raise SilentAudio(name, f"all {samples.size} samples are zero at 16-bit resolution")


def to_model_input(samples, sample_rate: int, name: str) -> np.ndarray:
    """One user waveform -> checked (samples,) float32 at 16 kHz.

    Args:
      samples: (samples,) or (samples, channels) array-like, float in [-1, 1].
      sample_rate: its rate in Hz.
      name: how errors name it (e.g. 'waveform 3').

    Raises:
      AudioError: a subclass naming the problem (empty, non_finite, too_short, ...).
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise UserError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    mono = mix_down(samples, name)
    check_samples(mono, name, int(sample_rate))
    return resample(mono, int(sample_rate))


def batch_to_list(waveforms) -> list:
    """`predict`'s input -> a list of single waveforms.

    A 2-D array is a batch of equal-length mono waveforms (rows); a sequence holds one
    waveform per entry ((samples,) or (samples, channels)); a 1-D array is one waveform.
    """
    if isinstance(waveforms, np.ndarray):
        if waveforms.ndim == 1:
            return [waveforms]
        if waveforms.ndim == 2:
            return list(waveforms)
        raise UserError(f"waveforms: expected 1-D or 2-D array, got shape {waveforms.shape}")
    if isinstance(waveforms, Sequence) and not isinstance(waveforms, (str, bytes)):
        return list(waveforms)
    raise UserError(f"waveforms must be an array or a list of arrays, got {type(waveforms)}")
