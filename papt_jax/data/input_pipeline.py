"""Grain input pipeline: loads the batches of a batch plan; resumable iteration.

A Grain `MapDataset` over plan positions (`papt_jax.data.batching.BatchPlanner`) loads the
records of one batch, crops and pads them. Every batch is a pure function of its position:
the same seed gives the same batches, and a restored iterator (`BatchIterator.set_state`)
continues with exactly the batches an uninterrupted run would have produced, with any number
of reader threads or worker processes.

Evaluation mode yields every utterance exactly once, ordered by (bucket, key); the last batch
of each bucket is padded to full size and `example_mask` marks the real rows.

A batch (per process, B rows, T = bucket length in samples, F = (T - 400) // 320 + 1):

    audio         f32  (B, T)  int16 samples / 32768, zero on padding
    audio_mask    bool (B, T)  True on real samples
    speaker       i32  (B,)    speaker index (-1 for unseen speakers and padding rows)
    arousal       f32  (B,)    one per `msp_podcast.DIMENSIONS`
    valence       f32  (B,)
    example_mask  bool (B,)    True on real rows
    key           obj  (B,)    utterance keys (str; "" on padding rows)
    speaker_id    obj  (B,)    corpus speaker ids (str; "" on padding rows), host-only like
                               key: test_c speakers all have index -1 but distinct ids
    targets       i32  (B, F)  only with `targets`: frame labels, -1 where unlabelled

Splits built by `papt_jax.data.prepare` are opened with `open_split` / `make_pipeline`.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from papt_jax import child_processes
from papt_jax.data.audio import FRAME_HOP, num_frames
from papt_jax.data.batching import BatchPlanner, DatasetIndex, PipelineConfig
from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.errors import UserError

log = logging.getLogger(__name__)

# Frame-label sequences may differ from the audio's frame count by this much (label
# extractors round differently at the end of an utterance); more means a wrong key or rate.
TARGET_LENGTH_TOLERANCE = 2
# 2: the batch position; 1 (read too): Grain's own iterator state, which does not carry
# over between different numbers of worker processes.
STATE_VERSION = 2


class DatasetDamagedError(UserError):
    """A dataset file is missing, truncated or unreadable."""


class TargetsError(ValueError):
    """Frame targets are missing for a key or do not match its audio length."""


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        crop_length = planner.batch_crop_length(planned)
        for (row, index), record in zip(real, records, strict=True):
            self._fill(batch, row, index, record, epoch, crop_length)
        return batch

    def _read(self, indices: list[int]) -> list[Mapping[str, Any]]:
        if not indices:
            return []
        try:
            if hasattr(self.source, "__getitems__"):
                return list(self.source.__getitems__(indices))
            return [self.source[i] for i in indices]
        except RuntimeError as e:  # array_record: "Corrupted Riegeli/records file ..."
            raise DatasetDamagedError(
                f"records {indices[0]}..{indices[-1]} of {self.source} cannot be read ({e})",
                hint="the dataset files are damaged: rebuild them with --redo=prepare",
            ) from e

    def _empty(self, rows: int, length: int) -> dict[str, np.ndarray]:
        batch = {
            "audio": np.zeros((rows, length), np.float32),
            "audio_mask": np.zeros((rows, length), bool),
            "speaker": np.full((rows,), -1, np.int32),
            **{name: np.zeros((rows,), np.float32) for name in DIMENSIONS},
            "example_mask": np.zeros((rows,), bool),
            "key": np.full((rows,), "", dtype=object),
            "speaker_id": np.full((rows,), "", dtype=object),
        }
        if self.targets is not None:
            batch["targets"] = np.full((rows, int(num_frames(length))), -1, np.int32)
        return batch

    def _fill(
        self,
        batch,
        row: int,
        index: int,
        record: Mapping[str, Any],
        epoch: int,
        crop_length: int,
    ) -> None:
        samples = np.asarray(record["audio"])
        key = _as_str(record["key"])
        start = self.planner.crop_start(index, len(samples), epoch, crop_length)
        segment = samples[start : start + crop_length]
        batch["audio"][row, : len(segment)] = segment.astype(np.float32) / 32768.0
        batch["audio_mask"][row, : len(segment)] = True
        batch["speaker"][row] = record["speaker_index"]
        for name in DIMENSIONS:
            batch[name][row] = record[name]
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

    `get_state()` returns a JSON-serialisable dict: the pipeline's fingerprint and the
    number of batches given out. Every batch is a pure function of its position, so
    `set_state(state)` on an iterator of the same pipeline (same config, split and seed)
    continues with exactly the batches that would have followed, whatever the number of
    reader threads or worker processes on either side (a run stopped with
    `data.worker_count=4` resumes with 0, and the other way round).

    Args:
      start: position -> a Grain iterator over the batches from that position on.
      fingerprint: the pipeline's fingerprint (see `BatchPipeline`).
      position: the first batch's position.
    """

    def __init__(self, start: Callable[[int], Iterator], fingerprint: str, position: int = 0):
        self._start = start
        self._fingerprint = fingerprint
        self._position = position
        self._iterator = start(position)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self._position += 1
        # From worker processes the arrays arrive in shared memory, freed only when the
        # last reference goes; a copy frees it now, so none is left over (and reported as
        # leaked) when the run stops with a batch still referenced, e.g. on SIGTERM.
        return {
            k: np.array(v, copy=True)
            if isinstance(v, np.ndarray) and type(v) is not np.ndarray
            else v
            for k, v in batch.items()
        }

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
            "position": self._position,
        }

    def set_state(self, state: Mapping) -> None:
        self.close()
        self._position = state_position(state, self._fingerprint)
        self._iterator = self._start(self._position)


def state_position(state: Mapping, fingerprint: str) -> int:
    """The batch position a saved iterator state continues from.

    Raises:
      ValueError: the state belongs to another pipeline or an unknown format.
    """
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            "iterator state belongs to another pipeline (different split, config or seed)"
        )
    if state.get("version") == STATE_VERSION:
        return int(state["position"])
    grain_state = state.get("grain")
    if (
        state.get("version") == 1
        and isinstance(grain_state, Mapping)
        and "next_index" in grain_state
    ):
        return int(grain_state["next_index"])  # Grain's own state, as saved before version 2
    raise ValueError(f"iterator state of unknown version {state.get('version')!r}")


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

    def dataset(self, start: int = 0) -> grain.IterDataset:
        """The Grain dataset behind the iterator, from batch position `start` on."""
        dataset = grain.MapDataset.range(start, self.planner.num_batches).map(self._load)
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
            # Workers end with this process, even when it is killed (no orphans).
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.config.worker_count),
                worker_init_fn=child_processes.worker_initializer(),
            )
        return dataset

    def iterator(self, state: Mapping | None = None) -> BatchIterator:
        """A fresh iterator, optionally restored to `state` (from `BatchIterator.get_state`)."""
        position = 0 if state is None else state_position(state, self.fingerprint)
        return BatchIterator(lambda start: iter(self.dataset(start)), self.fingerprint, position)

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
    return index_from_source(source)


def index_from_source(source: Sequence[Mapping[str, Any]]) -> DatasetIndex:
    """Reads every record once (use the index written by `prepare` when there is one)."""
    keys, lengths = [], []
    for i in range(len(source)):
        record = source[i]
        keys.append(_as_str(record["key"]))
        lengths.append(len(record["audio"]))
    return DatasetIndex(tuple(keys), np.asarray(lengths, dtype=np.int64))


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
        check_files(data_dir, name)
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


def check_files(data_dir: str | Path, split: str) -> None:
    """Every record file of `split` exists with the size `prepare` wrote (a cheap check
    that catches truncated or missing files before training reads them).

    Raises:
      DatasetDamagedError: naming the file, its recorded and its present size.
    """
    from papt_jax.data import prepare

    out = prepare.dataset_dir(data_dir)
    path = out / "index" / f"{split}.json"
    recorded = json.loads(path.read_text()).get("files", {}) if path.is_file() else {}
    for name, size in recorded.items():
        file = out / name
        present = file.stat().st_size if file.is_file() else None
        if present != size:
            state = "is missing" if present is None else f"has {present} bytes, not {size}"
            raise DatasetDamagedError(
                f"dataset file {file} {state} (split {split})",
                hint="rebuild the dataset: --redo=prepare, or delete the folder",
            )


def make_pipeline(
    data_dir: str | Path,
    split: str | Sequence[str],
    config: PipelineConfig,
    targets: Mapping[str, np.ndarray] | None = None,
) -> BatchPipeline:
    """`BatchPipeline` over split(s) built by `papt_jax.data.prepare` (see `open_split`)."""
    source, index = open_split(data_dir, split)
    return BatchPipeline(source, index, config, targets)
