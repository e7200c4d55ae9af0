"""Recordings read from their files window by window, so memory does not grow with length.

`open_recording(path)` checks a file as `papt_jax.data.audio.read_audio` does (same reasons,
same order: header, then truncation, non-finite, clipping and silent samples) in one pass over
blocks of `BLOCK_FRAMES` frames, and returns a `FileRecording`: a (samples,) view of the file
at 16 kHz, mono, float32, that reads only the span it is sliced with. `Predictor` slices one
window at a time (`windows.window_batches`), so a 30-minute file never sits in memory whole.

Slices equal the same span of `read_audio(..., resample=True, channels="mean",
dtype="float32")`: channels are averaged per block as there, and other sample rates are
resampled with the same polyphase filter on a stretch of input around the span. The stretch
starts on a multiple of the rate ratio's denominator, so its output samples are the whole
file's, and reaches `margin` input samples beyond the filter's half length on both sides,
so no output sample of the span sees the stretch's edges (tested bit for bit).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile

from papt_jax.data.audio import (
    CLIP_LIMIT,
    SAMPLE_RATE,
    SILENCE_LIMIT,
    AudioInfo,
    ClippedAudio,
    CorruptAudio,
    NonFiniteAudio,
    SilentAudio,
    TruncatedAudio,
    check_audio_info,
    probe_audio,
    resample,
    resampled_length,
)

# Frames per block of the checking pass (16 s at 16 kHz; times channels x 4 bytes).
BLOCK_FRAMES = 1 << 18


def _mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> (frames,), channels averaged as `read_audio` does."""
    if block.shape[1] == 1:
        return block[:, 0]
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)


def _read_frames(path: Path, start: int, count: int) -> np.ndarray:
    """(count,) mono float32 samples from frame `start`, at the file's own rate."""
    try:
        with soundfile.SoundFile(str(path)) as f:
            f.seek(start)
            block = f.read(count, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read samples ({err})") from err
    if block.shape[0] != count:
        raise TruncatedAudio(path, f"frames {start}..{start + count} could not all be read")
    return _mono(block)


class _SampleCheck:
    """`audio.check_samples` over a file read in blocks: the same errors at the end."""

    def __init__(self):
        self.total = self.non_finite = self.over = 0
        self.peak = 0.0

    def add(self, samples: np.ndarray) -> None:
        finite = np.isfinite(samples)
        self.total += samples.size
        self.non_finite += int(samples.size - np.count_nonzero(finite))
        magnitude = np.abs(samples[finite])
        if magnitude.size:
            self.peak = max(self.peak, float(magnitude.max()))
            self.over += int(np.count_nonzero(magnitude > CLIP_LIMIT))

    def raise_problems(self, path: Path) -> None:
        if self.non_finite:
            raise NonFiniteAudio(
                path, f"{self.non_finite} of {self.total} samples are NaN or infinite"
            )
        if self.peak > CLIP_LIMIT:
            raise ClippedAudio(
                path,
                f"peak {self.peak:.4g} exceeds 1.0 ({self.over} samples): float audio must lie "
                "in [-1, 1] to be stored as 16-bit; rescale the file",
            )
        if self.peak < SILENCE_LIMIT:
            raise SilentAudio(path, f"all {self.total} samples are zero at 16-bit resolution")


class FileRecording:
    """A checked audio file as a lazy (samples,) float32 sequence at 16 kHz.

    `len()` is its length at 16 kHz; `recording[a:b]` reads and returns those samples only.

    Attributes:
      path: the file.
      info: its header facts (frames, sample rate, channels at the file's own rate).
    """

    def __init__(self, path: Path, info: AudioInfo):
        self.path = Path(path)
        self.info = info
        rate = info.sample_rate
        g = math.gcd(rate, SAMPLE_RATE)
        self._up, self._down = SAMPLE_RATE // g, rate // g
        self._length = resampled_length(info.frames, rate, SAMPLE_RATE)
        # resample_poly's filter reaches 10 * max(up, down) taps of the upsampled signal
        # each way: that many / up input samples, plus two for rounding.
        self._margin = -(-10 * max(self._up, self._down) // self._up) + 2

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a FileRecording is read by contiguous slices only")
        start, stop, _ = index.indices(self._length)
        if stop <= start:
            return np.zeros(0, np.float32)
        if self._up == self._down:
            return _read_frames(self.path, start, stop - start)
        return self._resampled(start, stop)

    def _resampled(self, start: int, stop: int) -> np.ndarray:
        """Output samples [start, stop) of the whole file's `resample_poly`."""
        up, down, n = self._up, self._down, self.info.frames
        first = max(0, (start * down // up - self._margin) // down * down)
        last = min(n, -(-stop * down // up) + self._margin)
        stretch = resample(_read_frames(self.path, first, last - first), self.info.sample_rate)
        offset = first * up // down  # exact: `first` is a multiple of `down`
        return stretch[start - offset : stop - offset]


def open_recording(path: str | Path) -> FileRecording:
    """Checks `path` in blocks and returns it as a `FileRecording`.

    Raises:
      AudioError: the subclass `read_audio(path, resample=True, channels="mean")` raises.
    """
    path = Path(path)
    info = probe_audio(path)
    check_audio_info(info, path, SAMPLE_RATE, resample=True, channels="mean")
    check = _SampleCheck()
    read = 0
    try:
        with soundfile.SoundFile(str(path)) as f:
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                read += block.shape[0]
                check.add(_mono(block))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise CorruptAudio(path, f"cannot read samples ({err})") from err
    if read != info.frames:
        raise TruncatedAudio(path, f"header promises {info.frames} frames, {read} could be read")
    check.raise_problems(path)
    return FileRecording(path, info)
