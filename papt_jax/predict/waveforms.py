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

from collections.abc import Sequence

import numpy as np

from papt_jax.data.audio import (
    RECEPTIVE_FIELD,
    SAMPLE_RATE,
    EmptyAudio,
    TooShortAudio,
    check_samples,
    resample,
    resampled_length,
)
from papt_jax.errors import UserError


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


def check_input(samples: np.ndarray, name: str, rate: int) -> None:
    """Raises the data path's `AudioError` for an unusable (samples,) float waveform: the
    file checks (`audio.check_samples`) plus empty and too short for one encoder frame."""
    if samples.size == 0:
        raise EmptyAudio(name, "no samples")
    length = resampled_length(samples.size, rate, SAMPLE_RATE)
    if length < RECEPTIVE_FIELD:
        raise TooShortAudio(
            name, f"{length} samples at {SAMPLE_RATE} Hz < {RECEPTIVE_FIELD} (one encoder frame)"
        )
    check_samples(samples, name)


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
    check_input(mono, name, int(sample_rate))
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


def checked_model_inputs(waveforms, sample_rate: int, check_duration) -> list[np.ndarray]:
    """User waveforms -> checked 16 kHz mono float32 arrays, each named `waveform {i}`.

    Args:
      waveforms: One array, a sequence of arrays, or a (batch, samples) array.
      sample_rate: Their sample rate.
      check_duration: `(samples (n,), name) -> None`, raising for a recording the model
        cannot use (the predictor's minimum duration).
    """
    items = batch_to_list(waveforms)
    if not items:
        raise UserError("no waveforms given")
    prepared = []
    for i, x in enumerate(items):
        name = f"waveform {i}"
        prepared.append(to_model_input(x, sample_rate, name))
        check_duration(prepared[-1], name)
    return prepared
