"""Grain input pipeline: length buckets, crop, pad, shuffle, shard, resumable iteration.

The pipeline works in two steps.

1. A *batch plan* per epoch, computed from record lengths alone (no audio is read): every
   utterance goes to the smallest bucket length that holds it (after cropping to the maximum
   length), utterances are grouped per bucket and cut into batches, and in training the
   utterances and then the batches are shuffled with a generator seeded by (seed, epoch).
   The plan is the same on every process, so all processes see the same batch shape at the
   same step; each process then loads only its own rows of every global batch (rows
   `[p * B / P, (p + 1) * B / P)`), which is what `jax.make_array_from_process_local_data`
   expects.
2. A Grain `MapDataset` over plan positions loads the records of one batch, crops and pads
   them. Random crops are seeded by (seed, epoch, record), so every batch is a pure function
   of its position: the same seed gives the same batches, and a restored iterator
   (`BatchIterator.set_state`) continues with exactly the batches an uninterrupted run would
   have produced, with any number of reader threads or worker processes.

Evaluation mode yields every utterance exactly once, ordered by (bucket, key); the last batch
of each bucket is padded to full size and `example_mask` marks the real rows.

A batch (per process, B rows, T = bucket length in samples, F = (T - 400) // 320 + 1):

    audio         f32  (B, T)  int16 samples / 32768, zero on padding
    audio_mask    bool (B, T)  True on real samples
    speaker       i32  (B,)    speaker index (-1 for unseen speakers and padding rows)
    arousal       f32  (B,)
    valence       f32  (B,)
    example_mask  bool (B,)    True on real rows
    key           obj  (B,)    utterance keys (str; "" on padding rows)
    speaker_id    obj  (B,)    corpus speaker ids (str; "" on padding rows), host-only like
                               key: test_c speakers all have index -1 but distinct ids
    targets       i32  (B, F)  only with `targets`: frame labels, -1 where unlabelled
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import grain
import numpy as np

from papt_jax.data.audio import (
    FRAME_HOP,
    RECEPTIVE_FIELD,
    SAMPLE_RATE,
    frame_grid_floor,
    num_frames,
)

log = logging.getLogger(__name__)

# Frame-label sequences may differ from the audio's frame count by this much (label
# extractors round differently at the end of an utterance); more means a wrong key or rate.
TARGET_LENGTH_TOLERANCE = 2
STATE_VERSION = 1


class TargetsError(ValueError):
    """Frame targets are missing for a key or do not match its audio length."""


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
    batch_size: int | None = 8
    batch_seconds: float | None = None
    max_length: int | None = None
    sample_rate: int = SAMPLE_RATE
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True
    num_epochs: int | None = None
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

    @classmethod
    def from_source(cls, source: Sequence[Mapping[str, Any]]) -> DatasetIndex:
        """Reads every record once (use the index written by `prepare` when there is one)."""
        keys, lengths = [], []
        for i in range(len(source)):
            record = source[i]
            keys.append(_as_str(record["key"]))
            lengths.append(len(record["audio"]))
        return cls(tuple(keys), np.asarray(lengths, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """One global batch of the plan: bucket position and record indices (unpadded)."""

    bucket: int
    indices: tuple[int, ...]


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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

    def crop_start(self, record: int, length: int, epoch: int) -> int:
        """Start of the crop window (a multiple of 320) for a record of `length` samples."""
        if length <= self.crop_length:
            return 0
        excess_frames = (length - self.crop_length) // FRAME_HOP
        if self.config.mode == "train":
            rng = np.random.default_rng([self.config.seed, epoch, record])
            return FRAME_HOP * int(rng.integers(0, excess_frames + 1))
        return FRAME_HOP * (excess_frames // 2)


class _LoadBatch:
    """Plan position -> this process's padded batch (a picklable callable for Grain)."""

    def __init__(self, source, planner: BatchPlanner, targets: Mapping[str, np.ndarray] | None):
        self.source = source
        self.planner = planner
        self.targets = targets

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        planner = self.planner
        epoch, planned = planner.batch(position)
        size = planner.batch_sizes[planned.bucket]
        local = size // planner.process_count
        rows = list(planned.indices) + [-1] * (size - len(planned.indices))
        rows = rows[planner.process_index * local : (planner.process_index + 1) * local]
        batch = self._empty(local, planner.bucket_lengths[planned.bucket])
        real = [(row, index) for row, index in enumerate(rows) if index >= 0]
        records = self._read([index for _, index in real])
        for (row, index), record in zip(real, records, strict=True):
            self._fill(batch, row, index, record, epoch)
        return batch

    def _read(self, indices: list[int]) -> list[Mapping[str, Any]]:
        if not indices:
            return []
        if hasattr(self.source, "__getitems__"):
            return list(self.source.__getitems__(indices))
        return [self.source[i] for i in indices]

    def _empty(self, rows: int, length: int) -> dict[str, np.ndarray]:
        batch = {
            "audio": np.zeros((rows, length), np.float32),
            "audio_mask": np.zeros((rows, length), bool),
            "speaker": np.full((rows,), -1, np.int32),
            "arousal": np.zeros((rows,), np.float32),
            "valence": np.zeros((rows,), np.float32),
            "example_mask": np.zeros((rows,), bool),
            "key": np.full((rows,), "", dtype=object),
            "speaker_id": np.full((rows,), "", dtype=object),
        }
        if self.targets is not None:
            batch["targets"] = np.full((rows, int(num_frames(length))), -1, np.int32)
        return batch

    def _fill(self, batch, row: int, index: int, record: Mapping[str, Any], epoch: int) -> None:
        samples = np.asarray(record["audio"])
        key = _as_str(record["key"])
        start = self.planner.crop_start(index, len(samples), epoch)
        segment = samples[start : start + self.planner.crop_length]
        batch["audio"][row, : len(segment)] = segment.astype(np.float32) / 32768.0
        batch["audio_mask"][row, : len(segment)] = True
        batch["speaker"][row] = record["speaker_index"]
        batch["arousal"][row] = record["arousal"]
        batch["valence"][row] = record["valence"]
        batch["example_mask"][row] = True
        batch["key"][row] = key
        batch["speaker_id"][row] = _as_str(record["speaker"])
        if self.targets is not None:
            labels = self._labels(key, len(samples))
            first = start // FRAME_HOP
            frames = labels[first : first + int(num_frames(len(segment)))]
            batch["targets"][row, : len(frames)] = frames

    def _labels(self, key: str, num_samples: int) -> np.ndarray:
        if key not in self.targets:
            raise TargetsError(f"no frame targets for utterance {key!r}")
        labels = np.asarray(self.targets[key])
        expected = int(num_frames(num_samples))
        if labels.ndim != 1 or abs(len(labels) - expected) > TARGET_LENGTH_TOLERANCE:
            raise TargetsError(
                f"targets for {key!r} have shape {labels.shape}; its {num_samples} samples "
                f"give {expected} frames at 50 Hz"
            )
        return labels


class BatchIterator:
    """Iterator over batches whose position can be saved and restored.

    `get_state()` returns a JSON-serialisable dict; `set_state(state)` on an iterator of the
    same pipeline (same config, split and seed) continues with exactly the batches that
    would have followed.
    """

    def __init__(self, iterator, fingerprint: str):
        self._iterator = iterator
        self._fingerprint = fingerprint

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def close(self) -> None:
        """Stops Grain's reader threads / worker processes (they also stop at exit)."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "fingerprint": self._fingerprint,
            "grain": self._iterator.get_state(),
        }

    def set_state(self, state: Mapping) -> None:
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self._fingerprint:
            raise ValueError(
                "iterator state belongs to another pipeline (different split, config or seed)"
            )
        self._iterator.set_state(state["grain"])


class BatchPipeline:
    """Batches of one split; iterate it (or call `iterator`) to get a `BatchIterator`.

    Args:
      source: random-access records (`tfds.data_source` split, or any sequence of dicts with
        key, audio (int16), speaker, speaker_index, arousal, valence).
      index: keys and lengths of `source`, in the same order.
      config: batching options.
      targets: utterance key -> (frames,) 50 Hz frame labels of the whole utterance.
    """

    def __init__(
        self,
        source: Sequence[Mapping[str, Any]],
        index: DatasetIndex,
        config: PipelineConfig,
        targets: Mapping[str, np.ndarray] | None = None,
    ):
        if len(source) != len(index.keys):
            raise ValueError(f"source has {len(source)} records, index {len(index.keys)}")
        self.config = config
        self.planner = BatchPlanner(index, config)
        self._load = _LoadBatch(source, self.planner, targets)
        fields = {
            **config.fingerprint_fields(),
            "bucket_lengths": self.planner.bucket_lengths,
            "records": len(index.keys),
            "keys": hashlib.sha1("\n".join(index.keys).encode()).hexdigest(),
            "targets": targets is not None,
        }
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        self.fingerprint = hashlib.sha1(blob).hexdigest()

    @property
    def bucket_lengths(self) -> tuple[int, ...]:
        return self.planner.bucket_lengths

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Global batch size per bucket (each process gets 1 / process_count of it)."""
        return self.planner.batch_sizes

    @property
    def batches_per_epoch(self) -> int:
        return self.planner.batches_per_epoch

    def dataset(self) -> grain.IterDataset:
        """The Grain dataset behind the iterator."""
        dataset = grain.MapDataset.range(self.planner.num_batches).map(self._load)
        read = grain.ReadOptions(
            num_threads=self.config.read_threads, prefetch_buffer_size=self.config.prefetch_buffer
        )
        dataset = dataset.to_iter_dataset(read)
        if self.config.worker_count > 0:
            from absl import flags

            # Grain's worker processes read absl flags; outside `absl.app.run` (tests,
            # notebooks) they are unparsed, so accept the defaults.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.config.worker_count)
            )
        return dataset

    def iterator(self, state: Mapping | None = None) -> BatchIterator:
        """A fresh iterator, optionally restored to `state` (from `BatchIterator.get_state`)."""
        iterator = BatchIterator(iter(self.dataset()), self.fingerprint)
        if state is not None:
            iterator.set_state(state)
        return iterator

    def __iter__(self) -> BatchIterator:
        return self.iterator()


# --------------------------------------------------------------------------- TFDS splits


def load_index(data_dir: str | Path, split: str, source=None) -> DatasetIndex:
    """The index `prepare` wrote for `split`, or (slow) one read from `source`."""
    from papt_jax.data import prepare  # deferred: imports TFDS

    path = prepare.dataset_dir(data_dir) / "index" / f"{split}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return DatasetIndex(tuple(data["keys"]), np.asarray(data["num_samples"], np.int64))
    if source is None:
        raise FileNotFoundError(f"{path} not found and no source to scan")
    log.warning("%s not found: reading every record of %s to get lengths", path, split)
    return DatasetIndex.from_source(source)


class ConcatSource:
    """Several random-access sources read as one (picklable if its parts are).

    Args:
      sources: the parts, in order; record i of the whole is found by its offset.
    """

    def __init__(self, sources: Sequence[Sequence[Mapping[str, Any]]]):
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return part, index - int(self.offsets[part])

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        part, local = self._locate(int(index))
        return self.sources[part][local]

    def __getitems__(self, indices: Sequence[int]) -> list[Mapping[str, Any]]:
        by_part: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        for position, index in enumerate(indices):
            part, local = self._locate(int(index))
            by_part[part].append((position, local))
        out: list[Any] = [None] * len(indices)
        for part, items in by_part.items():
            source = self.sources[part]
            locals_ = [local for _, local in items]
            if hasattr(source, "__getitems__"):
                records = source.__getitems__(locals_)
            else:
                records = [source[i] for i in locals_]
            for (position, _), record in zip(items, records, strict=True):
                out[position] = record
        return out


def split_names(split: str | Sequence[str]) -> tuple[str, ...]:
    """ "train+test_b" or ("train", "test_b") -> ("train", "test_b")."""
    names = split.split("+") if isinstance(split, str) else list(split)
    names = tuple(n.strip() for n in names if n.strip())
    if not names:
        raise ValueError(f"no split names in {split!r}")
    return names


def open_split(data_dir: str | Path, split: str | Sequence[str]):
    """(source, index) of split(s) built by `papt_jax.data.prepare`, via `tfds.data_source`.

    Args:
      data_dir: the TFDS data directory given to `prepare`.
      split: a split name, several joined by "+", or a sequence of names; several splits
        are read as one source (in the given order).
    """
    import tensorflow_datasets as tfds

    from papt_jax.data import prepare  # registers the builder under its name

    sources, indices = [], []
    for name in split_names(split):
        source = tfds.data_source(
            prepare.DATASET_NAME, split=name, data_dir=str(data_dir), download=False
        )
        sources.append(source)
        indices.append(load_index(data_dir, name, source))
    if len(sources) == 1:
        return sources[0], indices[0]
    index = DatasetIndex(
        tuple(k for i in indices for k in i.keys),
        np.concatenate([i.num_samples for i in indices]),
    )
    return ConcatSource(sources), index


def make_pipeline(
    data_dir: str | Path,
    split: str | Sequence[str],
    config: PipelineConfig,
    targets: Mapping[str, np.ndarray] | None = None,
) -> BatchPipeline:
    """`BatchPipeline` over split(s) built by `papt_jax.data.prepare` (see `open_split`)."""
    source, index = open_split(data_dir, split)
    return BatchPipeline(source, index, config, targets)


# --------------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Padding summary of a set of batches.

    Attributes:
      shapes: (rows, samples) -> number of batches with that audio shape.
      real_samples: audio samples of real rows that are not padding.
      total_samples: all audio samples, padding included.
    """

    shapes: Mapping[tuple[int, int], int]
    real_samples: int
    total_samples: int

    @property
    def real_share(self) -> float:
        return self.real_samples / max(self.total_samples, 1)


def summarize_batches(batches: Iterable[Mapping[str, np.ndarray]]) -> BatchStats:
    """Distinct batch shapes and the share of real samples over `batches`."""
    shapes = collections.Counter()
    real = total = 0
    for batch in batches:
        shapes[batch["audio"].shape] += 1
        real += int(batch["audio_mask"].sum())
        total += batch["audio_mask"].size
    return BatchStats(dict(shapes), real, total)


def summarize_plan(planner: BatchPlanner, epoch: int = 0) -> BatchStats:
    """`summarize_batches` for one epoch's plan, from lengths only (global batches)."""
    shapes = collections.Counter()
    real = total = 0
    for planned in planner.plan(epoch):
        size = planner.batch_sizes[planned.bucket]
        length = planner.bucket_lengths[planned.bucket]
        shapes[(size, length)] += 1
        real += int(planner.lengths[list(planned.indices)].sum())
        total += size * length
    return BatchStats(dict(shapes), real, total)
