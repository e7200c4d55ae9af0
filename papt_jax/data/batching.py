"""The batch plan: length buckets, batch sizes and per-epoch batches, from lengths alone.

No audio is read here (pure NumPy). Every utterance goes to the smallest bucket length that
holds it (after cropping to the maximum length); bucket lengths lie on the encoder's frame
grid (`papt_jax.data.audio`), so padding never cuts a frame. Utterances are grouped per
bucket and cut into batches, and in training the utterances and then the batches are
shuffled with a generator seeded by (seed, epoch). The plan is the same on every process, so
all processes see the same batch shape at the same step; each process then loads only its own
rows of every global batch (rows `[p * B / P, (p + 1) * B / P)`), which is what
`jax.make_array_from_process_local_data` expects. Random crop starts are seeded by
(seed, epoch, record) and lie on the frame grid, so frame targets stay aligned.

`papt_jax.data.input_pipeline` turns plan positions into batches with Grain.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np

from papt_jax.data.audio import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE, frame_grid_floor

log = logging.getLogger(__name__)


def fit_bucket_lengths(
    lengths: Sequence[int] | np.ndarray, num_buckets: int = 8, max_length: int | None = None
) -> tuple[int, ...]:
    """Bucket lengths (samples) that minimise total padding for `lengths`.

    Lengths are cropped to `max_length` (rounded down to the frame grid), rounded up to the
    frame grid, and split into at most `num_buckets` contiguous groups by dynamic programming
    over the distinct rounded lengths; each group's bucket is its largest length.

    Returns:
      Increasing bucket lengths, each 400 + 320 k.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("no lengths to fit buckets to")
    if max_length is not None:
        lengths = np.minimum(lengths, frame_grid_floor(max_length))
    grid = RECEPTIVE_FIELD + FRAME_HOP * np.maximum(0, -(-(lengths - RECEPTIVE_FIELD) // FRAME_HOP))
    values, counts = np.unique(grid, return_counts=True)
    n, k = len(values), min(num_buckets, len(values))
    # cost of one bucket covering values[i..j] = values[j] * count - sum of lengths (the
    # constant sum is dropped: minimising sum(values[j] * count(i..j)) is equivalent).
    cum = np.concatenate([[0], np.cumsum(counts)])
    best = values * cum[1:]  # one bucket covering values[0..j]
    choice = [np.zeros(n, dtype=np.int64)]
    for _ in range(1, k):
        # new[j] = min over i <= j of best[i - 1] + values[j] * (cum[j + 1] - cum[i])
        prev = np.concatenate([[0], best[:-1]])
        cost = prev[None, :] + values[:, None] * (cum[1:, None] - cum[None, :-1])
        cost[np.triu_indices(n, 1)] = np.iinfo(np.int64).max  # i > j is not allowed
        starts = np.argmin(cost, axis=1)
        best = cost[np.arange(n), starts]
        choice.append(starts)
    buckets, j = [], n - 1
    for starts in reversed(choice):
        buckets.append(int(values[j]))
        j = int(starts[j]) - 1
        if j < 0:
            break
    return tuple(sorted(buckets))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How utterances become batches.

    Attributes:
      mode: "train" (shuffled epochs, random crops) or "eval" (every utterance once, fixed
        order, deterministic crops, last batch of each bucket padded).
      bucket_lengths: padded lengths in samples; None fits `num_buckets` of them to the
        split's lengths with `fit_bucket_lengths`. Pass them explicitly to share shapes
        between splits.
      num_buckets: buckets to fit when `bucket_lengths` is None (at most 8 keeps jit cheap).
      batch_size: global utterances per batch (all processes together); exclusive with
        `batch_seconds`.
      batch_seconds: global audio seconds per batch; each bucket then holds
        `budget // bucket_length` rows, rounded down to a multiple of the device count.
      max_length: crop longer utterances to this many samples (train: random start, eval:
        centred start; starts are multiples of 320 so frame targets stay aligned). None:
        crop only to the largest bucket.
      sample_rate: to convert `batch_seconds` to samples.
      seed: shuffling and cropping seed.
      shuffle: shuffle in train mode.
      drop_remainder: train mode drops each bucket's last partial batch; if False it is padded
        (eval mode always pads).
      num_epochs: epochs in train mode; None repeats forever. Eval mode runs one pass.
      crop_to_shortest: train mode only: crop every row of a batch to the batch's shortest
        utterance (rounded down to the frame grid), each at its own random frame-aligned
        start, as fairseq's HuBERT pre-training does (`pad_audio: false`). Every row then
        has the same number of valid frames, so masking draws the same span count for each
        (fairseq's behaviour), instead of trimming longer rows to the shortest row's count.
        The batch keeps its bucket's padded shape.
      device_count: global devices batches are split over (default `jax.device_count()`).
      process_index, process_count: this host's shard (default from jax).
      read_threads: Grain reader threads per process.
      prefetch_buffer: batches Grain reads ahead per process.
      worker_count: >0 uses that many Grain worker processes (source and targets must
        pickle).
    """

    mode: Literal["train", "eval"] = "train"
    bucket_lengths: tuple[int, ...] | None = None
    num_buckets: int = 8
    batch_size: int | None = None
    batch_seconds: float | None = None
    max_length: int | None = None
    sample_rate: int = SAMPLE_RATE
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True
    num_epochs: int | None = None
    crop_to_shortest: bool = False
    device_count: int | None = None
    process_index: int | None = None
    process_count: int | None = None
    read_threads: int = 4
    prefetch_buffer: int = 4
    worker_count: int = 0

    def __post_init__(self):
        if self.mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {self.mode!r}")
        if (self.batch_size is None) == (self.batch_seconds is None):
            raise ValueError("set exactly one of batch_size and batch_seconds")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bucket_lengths is not None:
            lengths = tuple(int(x) for x in self.bucket_lengths)
            if not lengths or list(lengths) != sorted(set(lengths)) or lengths[0] < RECEPTIVE_FIELD:
                raise ValueError(
                    f"bucket_lengths must be increasing and >= {RECEPTIVE_FIELD}: {lengths}"
                )
            object.__setattr__(self, "bucket_lengths", lengths)
        if self.max_length is not None and self.max_length < RECEPTIVE_FIELD:
            raise ValueError(f"max_length must be >= {RECEPTIVE_FIELD}, got {self.max_length}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {self.num_epochs}")
        if self.crop_to_shortest and self.mode != "train":
            raise ValueError("crop_to_shortest is for train mode (evaluation never crops)")

    def fingerprint_fields(self) -> dict:
        """Fields that decide the batches (not the reading speed)."""
        fields = dataclasses.asdict(self)
        for name in ("read_threads", "prefetch_buffer", "worker_count"):
            fields.pop(name)
        return fields


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    """Keys and lengths of a split's records, in record order.

    Attributes:
      keys: (num_records,) utterance keys.
      num_samples: (num_records,) int64 audio lengths.
    """

    keys: tuple[str, ...]
    num_samples: np.ndarray

    def __post_init__(self):
        if len(self.keys) != len(self.num_samples):
            raise ValueError("keys and num_samples differ in length")


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """One global batch of the plan: bucket position and record indices (unpadded)."""

    bucket: int
    indices: tuple[int, ...]


def _resolve_sharding(config: PipelineConfig) -> tuple[int, int, int]:
    """(device_count, process_index, process_count), asking jax for what is not configured."""
    if None in (config.device_count, config.process_index, config.process_count):
        import jax  # deferred: only needed when the config leaves it open

        devices = config.device_count or jax.device_count()
        index = jax.process_index() if config.process_index is None else config.process_index
        count = jax.process_count() if config.process_count is None else config.process_count
    else:
        devices, index, count = config.device_count, config.process_index, config.process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} not in [0, {count})")
    return devices, index, count


def bucket_batch_sizes(
    config: PipelineConfig, bucket_lengths: Sequence[int], device_count: int, process_count: int
) -> tuple[int, ...]:
    """Global batch size of each bucket."""
    step = np.lcm(device_count, process_count)
    if config.batch_size is not None:
        if config.batch_size % step:
            raise ValueError(
                f"batch_size {config.batch_size} is not a multiple of the device count "
                f"{device_count} (and process count {process_count})"
            )
        return tuple(config.batch_size for _ in bucket_lengths)
    budget = int(config.batch_seconds * config.sample_rate)
    sizes = tuple(int(budget // length // step * step) for length in bucket_lengths)
    if min(sizes) < 1:
        raise ValueError(
            f"batch_seconds {config.batch_seconds} is too small: bucket of "
            f"{max(bucket_lengths)} samples gets no row per device ({device_count} devices)"
        )
    return sizes


class BatchPlanner:
    """Per-epoch batch plans from record lengths (no audio read); picklable."""

    def __init__(self, index: DatasetIndex, config: PipelineConfig):
        self.config = config
        self.keys = index.keys
        lengths = np.asarray(index.num_samples, dtype=np.int64)
        if lengths.size == 0:
            raise ValueError("the split has no records")
        self.devices, self.process_index, self.process_count = _resolve_sharding(config)
        if config.bucket_lengths is None:
            self.bucket_lengths = fit_bucket_lengths(lengths, config.num_buckets, config.max_length)
        else:
            self.bucket_lengths = config.bucket_lengths
        # The crop length: utterances longer than this are cut to it.
        self.crop_length = self.bucket_lengths[-1]
        if config.max_length is not None:
            self.crop_length = min(self.crop_length, config.max_length)
        self.lengths = np.minimum(lengths, self.crop_length)
        self.num_cropped = int(np.sum(lengths > self.crop_length))
        self.bucket_of = np.searchsorted(self.bucket_lengths, self.lengths, side="left")
        self.batch_sizes = bucket_batch_sizes(
            config, self.bucket_lengths, self.devices, self.process_count
        )
        counts = np.bincount(self.bucket_of, minlength=len(self.bucket_lengths))
        drop = config.mode == "train" and config.drop_remainder
        per_bucket = [
            c // b if drop else -(-c // b) for c, b in zip(counts, self.batch_sizes, strict=True)
        ]
        self.batches_per_epoch = int(sum(per_bucket))
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"no full batch: {len(lengths)} records, batch sizes {self.batch_sizes}, "
                "drop_remainder=True"
            )
        if config.mode == "train" and config.drop_remainder:
            dropped = int(
                sum(c - n * b for c, n, b in zip(counts, per_bucket, self.batch_sizes, strict=True))
            )
            if dropped:
                log.info("drop_remainder: %d utterance(s) per epoch are not used", dropped)
        if self.num_cropped:
            log.info(
                "%d utterance(s) longer than %d samples are cropped",
                self.num_cropped,
                self.crop_length,
            )
        self._cache: dict[int, list[PlannedBatch]] = {}
        self._lock = threading.Lock()
        if config.crop_to_shortest:
            log.info(
                "crop_to_shortest: %.1f %% of the (max_length-cropped) audio of an epoch is "
                "cut to fit each batch's shortest utterance",
                100.0 * self.shortest_crop_fraction(0),
            )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_epochs(self) -> int | None:
        return 1 if self.config.mode == "eval" else self.config.num_epochs

    @property
    def num_batches(self) -> int:
        """Batches the iterator yields in total (sys.maxsize when repeating forever)."""
        epochs = self.num_epochs
        return sys.maxsize if epochs is None else epochs * self.batches_per_epoch

    def plan(self, epoch: int) -> list[PlannedBatch]:
        """The global batches of `epoch`, in the order they are yielded."""
        with self._lock:
            if epoch not in self._cache:
                if len(self._cache) >= 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = self._make_plan(epoch)
            return self._cache[epoch]

    def _make_plan(self, epoch: int) -> list[PlannedBatch]:
        config = self.config
        shuffled = config.mode == "train" and config.shuffle
        rng = np.random.default_rng([config.seed, epoch])
        if shuffled:
            order = rng.permutation(len(self.lengths))
        elif config.mode == "eval":
            order = np.asarray(sorted(range(len(self.keys)), key=self.keys.__getitem__))
        else:
            order = np.arange(len(self.lengths))
        drop = config.mode == "train" and config.drop_remainder
        batches = []
        for bucket, size in enumerate(self.batch_sizes):
            members = order[self.bucket_of[order] == bucket]
            stop = len(members) // size * size if drop else len(members)
            for start in range(0, stop, size):
                batches.append(
                    PlannedBatch(bucket, tuple(int(i) for i in members[start : start + size]))
                )
        if shuffled:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batch(self, position: int) -> tuple[int, PlannedBatch]:
        """(epoch, planned batch) at a global position of the iteration."""
        epoch, offset = divmod(position, self.batches_per_epoch)
        return epoch, self.plan(epoch)[offset]

    def batch_crop_length(self, planned: PlannedBatch) -> int:
        """Samples kept of every row of `planned`: the crop length, or with
        `crop_to_shortest` the batch's shortest (cropped) utterance on the frame grid."""
        if not self.config.crop_to_shortest:
            return self.crop_length
        return frame_grid_floor(int(np.min(self.lengths[list(planned.indices)])))

    def shortest_crop_fraction(self, epoch: int) -> float:
        """Share of an epoch's audio (after the max-length crop) that cropping every batch
        to its shortest utterance cuts away: what `crop_to_shortest` removes (computed with
        or without it, so padded and cropped plans can be compared)."""
        kept = total = 0
        for planned in self.plan(epoch):
            rows = self.lengths[list(planned.indices)]
            total += int(rows.sum())
            kept += len(rows) * min(frame_grid_floor(int(rows.min())), int(rows.min()))
        return 0.0 if total == 0 else 1.0 - kept / total

    def crop_start(
        self, record: int, length: int, epoch: int, crop_length: int | None = None
    ) -> int:
        """Start of the crop window (a multiple of 320) for a record of `length` samples.

        Args:
          record: Record index (seeds the random start in train mode).
          length: The record's length in samples.
          epoch: Epoch (seeds the random start in train mode).
          crop_length: Samples to keep (default: the planner's crop length).
        """
        crop_length = self.crop_length if crop_length is None else crop_length
        if length <= crop_length:
            return 0
        excess_frames = (length - crop_length) // FRAME_HOP
        if self.config.mode == "train":
            rng = np.random.default_rng([self.config.seed, epoch, record])
            return FRAME_HOP * int(rng.integers(0, excess_frames + 1))
        return FRAME_HOP * (excess_frames // 2)
