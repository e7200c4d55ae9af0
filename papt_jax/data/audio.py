"""Reading and checking audio files.

Every audio file that enters the dataset goes through `probe_audio` (header only, cheap) and
`read_audio` (samples). Problems raise a named subclass of `AudioError` so callers can skip a
file with a precise reason instead of crashing later inside a jitted step.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile

# One HuBERT frame needs 400 samples (25 ms at 16 kHz); shorter audio yields no frame at all.
MIN_SAMPLES = 400

ChannelPolicy = Literal["error", "mean", "first"]
CHANNEL_POLICIES = ("error", "mean", "first")


class AudioError(Exception):
    """Base class of every audio problem; `reason` is a short stable tag for reports."""

    reason = "audio_error"

    def __init__(self, path: str | Path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class WrongSampleRate(AudioError):
    """The file's sample rate is not the expected one and resampling was not requested."""

    reason = "wrong_sample_rate"


class MultiChannelAudio(AudioError):
    """The file has more than one channel and the channel policy is "error"."""

    reason = "multi_channel"


class EmptyAudio(AudioError):
    """The file holds no samples."""

    reason = "empty"


class TooShortAudio(AudioError):
    """The file is shorter than one HuBERT frame (`MIN_SAMPLES` samples at the target rate)."""

    reason = "too_short"


class CorruptAudio(AudioError):
    """soundfile cannot parse the header or the sample data."""

    reason = "corrupt"


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts of one audio file.

    Attributes:
      frames: samples per channel.
      sample_rate: samples per second.
      channels: number of channels.
    """

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def probe_audio(path: str | Path) -> AudioInfo:
    """Reads only the header of `path`.

    Raises:
      CorruptAudio: the header cannot be parsed (or the file cannot be opened).
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read header ({err})") from err
    return AudioInfo(
        frames=int(info.frames), sample_rate=int(info.samplerate), channels=info.channels
    )


def resampled_length(frames: int, rate: int, target_rate: int) -> int:
    """Number of samples `resample_poly` produces when going from `rate` to `target_rate`."""
    g = math.gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    return -(-frames * up // down)


def check_audio_info(
    info: AudioInfo,
    path: str | Path,
    expected_rate: int = 16000,
    resample: bool = False,
    channels: ChannelPolicy = "error",
) -> None:
    """Raises the matching `AudioError` if a file with header `info` would be rejected.

    The checks run in a fixed order (empty, rate, channels, length) so a file always gets the
    same reason.
    """
    if channels not in CHANNEL_POLICIES:
        raise ValueError(f"channels must be one of {CHANNEL_POLICIES}, got {channels!r}")
    if info.frames == 0:
        raise EmptyAudio(path, "no samples")
    if info.sample_rate != expected_rate and not resample:
        raise WrongSampleRate(
            path, f"sample rate {info.sample_rate} Hz, expected {expected_rate} Hz (resample off)"
        )
    if info.channels > 1 and channels == "error":
        raise MultiChannelAudio(path, f"{info.channels} channels (channel policy 'error')")
    length = resampled_length(info.frames, info.sample_rate, expected_rate)
    if length < MIN_SAMPLES:
        raise TooShortAudio(path, f"{length} samples at {expected_rate} Hz < {MIN_SAMPLES}")


def _mix_down(samples: np.ndarray, channels: ChannelPolicy) -> np.ndarray:
    """(frames, channels) -> (frames,) following the channel policy."""
    if samples.ndim == 1:
        return samples
    if channels == "first":
        return samples[:, 0]
    return samples.mean(axis=1)


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 with clipping (resampling can overshoot slightly)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def read_audio(
    path: str | Path,
    expected_rate: int = 16000,
    resample: bool = False,
    channels: ChannelPolicy = "error",
    dtype: Literal["int16", "float32"] = "int16",
) -> np.ndarray:
    """Reads a mono waveform at `expected_rate`.

    Args:
      path: audio file (anything libsndfile reads; wav in practice).
      expected_rate: sample rate the result must have.
      resample: if True, other rates are converted with `scipy.signal.resample_poly`;
        if False they raise `WrongSampleRate`.
      channels: multi-channel policy: "error" raises `MultiChannelAudio`, "mean" averages the
        channels, "first" keeps channel 0.
      dtype: "int16" (what the dataset stores) or "float32" in [-1, 1).

    Returns:
      (samples,) array of `dtype`.

    Raises:
      AudioError: one of its subclasses, naming the file and the problem.
    """
    info = probe_audio(path)
    check_audio_info(info, path, expected_rate, resample, channels)
    plain = info.sample_rate == expected_rate and (info.channels == 1 or channels == "first")
    try:
        # int16 files read as int16 are bit-exact; everything else goes through float.
        samples = soundfile.read(str(path), dtype="int16" if plain else "float64", always_2d=False)[
            0
        ]
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read samples ({err})") from err
    samples = _mix_down(samples, channels)
    if samples.shape[0] != info.frames:
        raise CorruptAudio(path, f"header says {info.frames} frames, read {samples.shape[0]}")
    if info.sample_rate != expected_rate:
        from scipy.signal import resample_poly  # deferred: scipy.signal is slow to import

        g = math.gcd(info.sample_rate, expected_rate)
        samples = resample_poly(samples, expected_rate // g, info.sample_rate // g)
    if dtype == "float32":
        if samples.dtype == np.int16:
            return samples.astype(np.float32) / 32768.0
        return samples.astype(np.float32)
    if samples.dtype == np.int16:
        return samples
    return _to_int16(samples)
