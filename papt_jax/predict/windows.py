"""Long recordings in windows, windows in length buckets, and how windows recombine.

The window rule (frames are the encoder's 20 ms frames, `papt_jax.data.audio`):

* A recording of T samples has F = (T - 400) // 320 + 1 frames. With at most W frames per
  window (W = frames of `window_seconds`), it is cut into n = ceil(F / W) windows whose frame
  counts differ by at most one (the first F mod n windows get one more), so no window is a
  short leftover. Window i starts at sample 320 * s_i (s_i: its first frame) and spans
  exactly the samples its frames see, 400 + 320 * (f_i - 1); the last window runs to the end
  of the recording. Every frame of the whole recording therefore lies in exactly one window,
  and a recording of at most W frames is one window: the whole recording, unchanged.
* Each window is encoded on its own (its frames see no audio of the other windows), and its
  mean-pooled representation p_i (the mean of its f_i frames) is computed as in training.
* The recording's pooled representation is the frame-weighted mean sum_i f_i p_i / sum_i f_i
  (in float64, then float32): the mean over all F frames of the windows' outputs. The
  regression head is applied to it once. For a single window this is p_1 exactly.
* Each window also has its own value: the head applied to p_i (`Predictor.predict_windows`).

Sliding windows (`hop_seconds`, for a value every H frames): a recording of at most W frames
is still one window; a longer one gets n = ceil((F - W) / H) + 1 windows of exactly W
frames, window i starting at frame i * H except the last, which ends with the recording
(starts at frame F - W, running to the last sample). Windows then overlap, and the
recording's representation is still the frame-weighted mean of its windows (frames that
several windows share count once per window).

Buckets: window lengths are padded to a fixed ladder of at most `num_buckets` lengths (the
longest holds any window; each next one is half as long, on the frame grid), and every batch
of a bucket has the same number of rows (`batch_seconds / length`, the last one padded with
empty rows), so each model compiles at most `num_buckets` shapes, once per process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from papt_jax.data.audio import (
    FRAME_HOP,
    RECEPTIVE_FIELD,
    SAMPLE_RATE,
    frame_grid_ceil,
    frame_grid_floor,
    num_frames,
)
from papt_jax.errors import UserError


class BatchingError(UserError, ValueError):
    """Window and batch settings that cannot work."""


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of one recording.

    Attributes:
      item: position of the recording in the input list.
      start: first sample.
      length: number of samples.
      frames: encoder frames it yields.
    """

    item: int
    start: int
    length: int
    frames: int


def split_windows(item: int, num_samples: int, max_frames: int) -> list[Window]:
    """The windows of one recording (see the module docstring for the rule).

    Args:
      item: the recording's position (copied into each window).
      num_samples: its length T (>= 400).
      max_frames: W, most frames per window (>= 1).
    """
    total = int(num_frames(num_samples))
    if total < 1:
        raise ValueError(f"{num_samples} samples give no encoder frame (need {RECEPTIVE_FIELD})")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    count = -(-total // max_frames)
    base, extra = divmod(total, count)
    windows, first = [], 0
    for i in range(count):
        frames = base + (1 if i < extra else 0)
        start = FRAME_HOP * first
        last = i == count - 1
        length = num_samples - start if last else RECEPTIVE_FIELD + FRAME_HOP * (frames - 1)
        windows.append(Window(item, start, length, frames))
        first += frames
    return windows


def sliding_windows(item: int, num_samples: int, max_frames: int, hop_frames: int) -> list[Window]:
    """Windows of `max_frames` frames every `hop_frames` frames (module docstring).

    Args:
      item: the recording's position (copied into each window).
      num_samples: its length T (>= 400).
      max_frames: W, frames per window (>= 1).
      hop_frames: H, frames between window starts (1 <= H <= W).
    """
    total = int(num_frames(num_samples))
    if total < 1:
        raise ValueError(f"{num_samples} samples give no encoder frame (need {RECEPTIVE_FIELD})")
    if not 1 <= hop_frames <= max_frames:
        raise ValueError(f"need 1 <= hop_frames <= max_frames, got {hop_frames}, {max_frames}")
    if total <= max_frames:
        return [Window(item, 0, num_samples, total)]
    count = -(-(total - max_frames) // hop_frames) + 1
    firsts = [min(i * hop_frames, total - max_frames) for i in range(count)]
    span = RECEPTIVE_FIELD + FRAME_HOP * (max_frames - 1)
    return [
        Window(
            item,
            FRAME_HOP * first,
            num_samples - FRAME_HOP * first if i == count - 1 else span,
            max_frames,
        )
        for i, first in enumerate(firsts)
    ]


def combine(pooled: np.ndarray, frames: np.ndarray, items: np.ndarray, num_items: int):
    """Frame-weighted mean of window representations per recording.

    Args:
      pooled: (num_windows, D) mean-pooled window representations.
      frames: (num_windows,) frames of each window.
      items: (num_windows,) recording of each window, in [0, num_items).
      num_items: number of recordings (each must have a window).

    Returns:
      (num_items, D) float32 pooled representation of each recording.
    """
    weights = np.asarray(frames, np.float64)
    sums = np.zeros((num_items, pooled.shape[1]), np.float64)
    np.add.at(sums, items, np.asarray(pooled, np.float64) * weights[:, None])
    totals = np.bincount(items, weights=weights, minlength=num_items)
    if np.any(totals <= 0):
        raise ValueError("a recording has no window")
    return (sums / totals[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Batching:
    """How windows become fixed-shape batches.

    Attributes:
      window_seconds: longest window (audio beyond it goes to further windows).
      batch_seconds: padded audio per batch; each bucket gets batch_seconds / its length
        rows (at least `row_multiple`).
      num_buckets: padded lengths on the ladder (compiled shapes per model).
      row_multiple: rows per batch are a multiple of this (the device count).
      hop_seconds: None: windows tile the recording (`split_windows`); else sliding windows
        starting every `hop_seconds` (`sliding_windows`), at most `window_seconds`.
    """

    window_seconds: float = 20.0
    batch_seconds: float = 80.0
    num_buckets: int = 5
    row_multiple: int = 1
    hop_seconds: float | None = None

    def __post_init__(self):
        if not self.window_seconds * SAMPLE_RATE >= RECEPTIVE_FIELD:
            raise BatchingError(
                f"window_seconds must be at least {RECEPTIVE_FIELD / SAMPLE_RATE} s (one "
                f"encoder frame), got {self.window_seconds}"
            )
        if not self.batch_seconds > 0:
            raise BatchingError(f"batch_seconds must be > 0, got {self.batch_seconds}")
        if self.num_buckets < 1 or self.row_multiple < 1:
            raise BatchingError(f"num_buckets and row_multiple must be >= 1: {self}")
        if self.hop_seconds is not None and not (
            FRAME_HOP / SAMPLE_RATE <= self.hop_seconds <= self.window_seconds
        ):
            raise BatchingError(
                f"hop_seconds must lie between {FRAME_HOP / SAMPLE_RATE} s (one frame) and "
                f"window_seconds ({self.window_seconds} s), got {self.hop_seconds}"
            )

    @property
    def hop_frames(self) -> int | None:
        """H: frames between sliding windows' starts (None: tiling)."""
        if self.hop_seconds is None:
            return None
        return min(int(self.hop_seconds * SAMPLE_RATE) // FRAME_HOP, self.max_frames)

    def windows(self, item: int, num_samples: int) -> list[Window]:
        """The windows of one recording of `num_samples` samples under these settings."""
        if self.hop_seconds is None:
            return split_windows(item, num_samples, self.max_frames)
        return sliding_windows(item, num_samples, self.max_frames, self.hop_frames)

    @property
    def shortest_window_frames(self) -> int:
        """Frames of the shortest window a recording longer than one window can get.

        Tiling: n = ceil(F / W) windows of at least floor(F / n) frames, smallest for
        F = W + 1 (two windows): (W + 1) // 2. Sliding: exactly W.
        """
        if self.hop_seconds is None:
            return (self.max_frames + 1) // 2
        return self.max_frames

    def check_shortest(self, least_seconds: float) -> None:
        """Raises `BatchingError` when a window could be shorter than `least_seconds`.

        A recording of at most one window is predicted whole (its own length is the
        caller's check); only the windows of longer ones are cut by these settings.
        """
        shortest = RECEPTIVE_FIELD + FRAME_HOP * (self.shortest_window_frames - 1)
        if shortest >= least_seconds * SAMPLE_RATE:
            return
        need = int(num_frames(frame_grid_ceil(int(np.ceil(least_seconds * SAMPLE_RATE)))))
        frames = need if self.hop_seconds is not None else 2 * need - 1
        # Rounded up to what the hint prints, so the value named passes.
        seconds = np.ceil((RECEPTIVE_FIELD + FRAME_HOP * (frames - 1)) / SAMPLE_RATE * 100) / 100
        how = "sliding windows are" if self.hop_seconds is not None else "tiled windows can be"
        raise BatchingError(
            f"window_seconds {self.window_seconds:g}: {how} as short as "
            f"{shortest / SAMPLE_RATE:.3f} s, below this model's minimum duration "
            f"{least_seconds:.2f} s",
            hint=f"use window_seconds of at least {seconds:.2f}",
        )

    @property
    def max_frames(self) -> int:
        """W: most frames per window."""
        return int(num_frames(frame_grid_floor(int(self.window_seconds * SAMPLE_RATE))))

    @property
    def bucket_lengths(self) -> tuple[int, ...]:
        """Increasing padded lengths; the longest holds a window plus its tail (< 320)."""
        top = RECEPTIVE_FIELD + FRAME_HOP * self.max_frames
        lengths = {frame_grid_ceil(-(-top // 2**j)) for j in range(self.num_buckets)}
        return tuple(sorted(lengths))

    def rows(self, length: int) -> int:
        """Rows of a full batch of a bucket of `length` samples."""
        rows = int(self.batch_seconds * SAMPLE_RATE) // length
        return max(self.row_multiple, rows // self.row_multiple * self.row_multiple)


@dataclasses.dataclass
class WindowBatch:
    """One padded batch of windows.

    Attributes:
      audio: (rows, T) float32, zero on padding.
      audio_mask: (rows, T) bool, True on real samples.
      windows: indices into the window list of the real rows (rows beyond are padding).
      seconds: real audio seconds in the batch (for progress).
    """

    audio: np.ndarray
    audio_mask: np.ndarray
    windows: np.ndarray
    seconds: float


def window_batches(
    waveforms: Sequence[np.ndarray], windows: Sequence[Window], batching: Batching
) -> Iterator[WindowBatch]:
    """Padded batches over `windows`, grouped by bucket (shortest first), input order inside."""
    buckets = np.asarray(batching.bucket_lengths)
    lengths = np.asarray([w.length for w in windows])
    bucket_of = np.searchsorted(buckets, lengths, side="left")
    if lengths.size and bucket_of.max() >= buckets.size:
        raise ValueError(f"a window of {lengths.max()} samples exceeds every bucket {buckets}")
    for b, length in enumerate(buckets):
        members = np.flatnonzero(bucket_of == b)
        rows = batching.rows(int(length))
        for first in range(0, members.size, rows):
            chosen = members[first : first + rows]
            audio = np.zeros((rows, int(length)), np.float32)
            mask = np.zeros((rows, int(length)), bool)
            for row, index in enumerate(chosen):
                w = windows[index]
                audio[row, : w.length] = waveforms[w.item][w.start : w.start + w.length]
                mask[row, : w.length] = True
            seconds = float(lengths[chosen].sum()) / SAMPLE_RATE
            yield WindowBatch(audio, mask, chosen, seconds)
