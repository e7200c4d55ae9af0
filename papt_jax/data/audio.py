"""The audio format and its frame grid; reading and checking audio files.

Everything in papt_jax works on 16 kHz mono audio (`SAMPLE_RATE`). HuBERT's convolutional
feature extractor turns it into one frame every `FRAME_HOP` = 320 samples (20 ms, 50 Hz), each
frame seeing `RECEPTIVE_FIELD` = 400 samples (25 ms): `num_frames(T) = (T - 400) // 320 + 1`.
The batch plan keeps padded lengths on that grid (`frame_grid_ceil`, `frame_grid_floor`) and
frame labels are stored at its rate. `HubertConfig` derives the same numbers from its conv
kernels and strides; every model preset matches these constants.

Every audio file that enters the dataset goes through `probe_audio` (header only, cheap) and
`read_audio` (samples). Problems raise a named subclass of `AudioError` so callers can skip a
file with a precise reason instead of crashing later inside a jitted step.

Formats: anything libsndfile reads (wav with PCM_16/24/32, PCM_U8, FLOAT, DOUBLE, u-law,
a-law; flac; ogg/vorbis; ...). Samples are always decoded as float32 by libsndfile, which
divides integer subtypes by their full scale (2**15 for PCM_16, 2**23 for PCM_24, ...) and
leaves float subtypes as stored, so every file arrives in [-1, 1] whatever its subtype, and
`read_audio(..., dtype="int16")` stores it at full 16-bit scale (PCM_16 files bit-exactly).

Checks and their `reason` tags (the skip report's vocabulary):

    corrupt            libsndfile cannot parse the header or the samples
    truncated          the header promises more sample data than the file holds
    empty              no samples at all
    wrong_sample_rate  rate differs from the expected one and resampling is off
    multi_channel      more than one channel under the channel policy "error"
    too_short          shorter than one HuBERT frame at the target rate
    non_finite         NaN or infinite samples (float files)
    clipping           float samples beyond [-1, 1] that would be clipped by int16 storage
    silent             every sample is zero at 16-bit resolution

Header checks (the first six) run when the corpus is read; the sample checks (truncated
again, non_finite, clipping, silent) when the audio is read into the dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile

from papt_jax.errors import UserError

SAMPLE_RATE = 16_000
FRAME_HOP = 320  # samples per encoder frame: the product of the conv strides (20 ms)
RECEPTIVE_FIELD = 400  # samples one frame sees (25 ms); shorter audio yields no frame at all
# int16 storage rounds x * 32768: a peak up to half a step above 1.0 still maps to the
# largest magnitude, so only larger peaks lose information.
CLIP_LIMIT = 1.0 + 0.5 / 32768
# A peak below half an int16 step stores as all zeros.
SILENCE_LIMIT = 0.5 / 32768
# RIFF sizes that writers use for "unknown length" (streamed output); not a truncation.
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)

ChannelPolicy = Literal["error", "mean", "first"]
CHANNEL_POLICIES = ("error", "mean", "first")


def num_frames(num_samples):
    """Encoder frames of `num_samples` samples (int or array): (T - 400) // 320 + 1, 0 below 400.

    Returns:
      A NumPy integer or array of the shape of `num_samples`.
    """
    return np.maximum((np.asarray(num_samples) - RECEPTIVE_FIELD) // FRAME_HOP + 1, 0)


def frame_grid_ceil(num_samples: int) -> int:
    """Smallest length 400 + 320 k >= `num_samples` (whole frames, no partial-frame waste)."""
    k = max(0, -(-(int(num_samples) - RECEPTIVE_FIELD) // FRAME_HOP))
    return RECEPTIVE_FIELD + FRAME_HOP * k


def frame_grid_floor(num_samples: int) -> int:
    """Largest length 400 + 320 k <= `num_samples` (at least 400)."""
    k = max(0, (int(num_samples) - RECEPTIVE_FIELD) // FRAME_HOP)
    return RECEPTIVE_FIELD + FRAME_HOP * k


class AudioError(UserError):
    """Base class of every audio problem; `reason` is a short stable tag for reports."""

    reason = "audio_error"

    def __init__(self, path: str | Path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail} ({self.reason})")


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
    """The file is shorter than one HuBERT frame (`RECEPTIVE_FIELD` samples at the target rate)."""

    reason = "too_short"


class CorruptAudio(AudioError):
    """soundfile cannot parse the header or the sample data."""

    reason = "corrupt"


class TruncatedAudio(AudioError):
    """The header promises more sample data than the file holds (e.g. an interrupted copy)."""

    reason = "truncated"


class NonFiniteAudio(AudioError):
    """Some samples are NaN or infinite."""

    reason = "non_finite"


class ClippedAudio(AudioError):
    """Float samples exceed [-1, 1] by more than int16 rounding absorbs."""

    reason = "clipping"


class SilentAudio(AudioError):
    """Every sample is zero at 16-bit resolution."""

    reason = "silent"


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


def _wav_data_shortfall(path: str | Path) -> tuple[int, int, int] | None:
    """Walks the RIFF chunks of a wav file to compare its `data` chunk with the file size.

    libsndfile silently shortens a wav whose `data` chunk runs past the end of the file, so
    the header's promise has to be read here.

    Returns:
      (promised frames, present frames, bytes per frame) when the `data` chunk declares more
      bytes than follow it, else None (also for non-RIFF files and unknown-length headers).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align, pos = 0, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if chunk_id == b"fmt ":
                block_align = int.from_bytes(f.read(14)[12:14], "little")
            elif chunk_id == b"data":
                present = size - pos - 8
                if chunk_size in _UNKNOWN_RIFF_SIZES or chunk_size <= present or not block_align:
                    return None
                return chunk_size // block_align, present // block_align, block_align
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return None


def probe_audio(path: str | Path) -> AudioInfo:
    """Reads only the header of `path` (and, for wav, the chunk sizes).

    Raises:
      CorruptAudio: the header cannot be parsed (or the file cannot be opened).
      TruncatedAudio: a wav header promises more frames than the file holds.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read header ({err})") from err
    if info.format in ("WAV", "WAVEX"):
        shortfall = _wav_data_shortfall(path)
        if shortfall is not None:
            promised, present, _ = shortfall
            raise TruncatedAudio(
                path, f"header promises {promised} frames, the file holds {present}"
            )
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
    expected_rate: int = SAMPLE_RATE,
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
    if length < RECEPTIVE_FIELD:
        raise TooShortAudio(path, f"{length} samples at {expected_rate} Hz < {RECEPTIVE_FIELD}")


def _mix_down(samples: np.ndarray, channels: ChannelPolicy) -> np.ndarray:
    """(frames, channels) -> (frames,) following the channel policy."""
    if samples.ndim == 1:
        return samples
    if channels == "first":
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 (resampling can overshoot slightly: clipped)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def check_samples(samples: np.ndarray, path: str | Path) -> None:
    """Sample-level checks on (frames,) float samples: non_finite, clipping, silent.

    Args:
      samples: (frames,) float samples at full scale.
      path: the file (or a name for in-memory audio) that errors name.
    """
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise NonFiniteAudio(path, f"{bad} of {samples.size} samples are NaN or infinite")
    peak = float(np.max(np.abs(samples)))
    if peak > CLIP_LIMIT:
        over = int(np.count_nonzero(np.abs(samples) > CLIP_LIMIT))
        raise ClippedAudio(
            path,
            f"peak {peak:.4g} exceeds 1.0 ({over} samples): float audio must lie in [-1, 1] "
            "to be stored as 16-bit; rescale the file",
        )
    if peak < SILENCE_LIMIT:
        raise SilentAudio(path, f"all {samples.size} samples are zero at 16-bit resolution")


def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float at `rate` -> float32 at `target_rate` (polyphase, float64 inside)."""
    if rate == target_rate:
        return np.asarray(samples, np.float32)
    from scipy.signal import resample_poly  # deferred: scipy.signal is slow to import

    g = math.gcd(rate, target_rate)
    out = resample_poly(np.asarray(samples, np.float64), target_rate // g, rate // g)
    return out.astype(np.float32)


_resample = resample  # read_audio's `resample` flag shadows the function's name there


def read_audio(
    path: str | Path,
    expected_rate: int = SAMPLE_RATE,
    resample: bool = False,
    channels: ChannelPolicy = "error",
    dtype: Literal["int16", "float32"] = "int16",
) -> np.ndarray:
    """Reads a mono waveform at `expected_rate`, at full scale whatever the file's subtype.

    Args:
      path: audio file (anything libsndfile reads, see the module docstring).
      expected_rate: sample rate the result must have.
      resample: if True, other rates are converted with `scipy.signal.resample_poly`;
        if False they raise `WrongSampleRate`.
      channels: multi-channel policy: "error" raises `MultiChannelAudio`, "mean" averages the
        channels, "first" keeps channel 0.
      dtype: "int16" (what the dataset stores) or "float32" in [-1, 1].

    Returns:
      (samples,) array of `dtype`.

    Raises:
      AudioError: one of its subclasses, naming the file and the problem.
    """
    info = probe_audio(path)
    check_audio_info(info, path, expected_rate, resample, channels)
    try:
        # float32 decoding scales integer subtypes to [-1, 1) and keeps float ones as stored;
        # PCM_16 round-trips exactly (x / 32768 is exact in float32).
        samples = soundfile.read(str(path), dtype="float32", always_2d=False)[0]
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read samples ({err})") from err
    if samples.shape[0] != info.frames:
        raise TruncatedAudio(
            path, f"header promises {info.frames} frames, {samples.shape[0]} could be read"
        )
    samples = _mix_down(samples, channels)
    check_samples(samples, path)
    samples = _resample(samples, info.sample_rate, expected_rate)
    if dtype == "float32":
        return samples
    return _to_int16(samples)


# libsndfile format name -> extensions it is stored under.
_FORMAT_EXTENSIONS = {
    "WAV": ("wav", "wave"),
    "WAVEX": ("wav",),
    "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",),
    "AIFF": ("aif", "aiff", "aifc"),
    "AU": ("au", "snd"),
    "CAF": ("caf",),
    "W64": ("w64",),
    "RF64": ("rf64",),
    "NIST": ("sph", "nist"),
    "IRCAM": ("sf", "ircam"),
    "VOC": ("voc",),
    "HTK": ("htk",),
    "AVR": ("avr",),
    "SVX": ("8svx", "iff", "svx"),
    "PAF": ("paf", "fap"),
    "PVF": ("pvf",),
    "SD2": ("sd2",),
    "WVE": ("wve",),
}


@functools.cache
def audio_extensions() -> frozenset[str]:
    """Lower-case extensions (no dot) of the formats this libsndfile reads."""
    available = soundfile.available_formats()
    return frozenset(
        ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in available for ext in exts
    )
