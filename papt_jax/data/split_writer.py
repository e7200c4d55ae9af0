"""Writes a dataset's splits in TFDS's layout, the audio work spread over reader processes.

The files are those TFDS's own writer (`tfds.core.writer.Writer`, as `GeneratorBasedBuilder`
uses it) produces: the records of a split in the order of the md5 of (split name, key)
(`tfds.core.hashing.Hasher`), cut into `ShardConfig.get_number_shards(total bytes, records)`
array_record files at `get_shard_boundaries`, each with TFDS's array_record chunking (zstd
at level 1 where TFDS uses 3: `shard_jobs.ARRAY_RECORD_OPTIONS`). Otherwise only the work is
arranged differently. TFDS's writer serializes, sorts and compresses every record in
the calling process (about 200x real time, however many cores there are; BENCHMARKS.md,
"Preparing a corpus"); here reader processes do the per-utterance work, in two passes:

1. check: every utterance is read and checked (`audio.read_audio`) and the size of its
   record computed. Results come back in corpus order, so the caller meets bad files in the
   order a one-by-one build does. The shard count depends on a split's total size, so it is
   known only after this pass.
2. write: each shard (a run of consecutive records in hash order) is read again, encoded
   (`tf_example`) and compressed into its file by one reader, shards side by side, the
   longest first.

The second read is cheap (a checked 16-bit PCM file is taken as stored, see
`shard_jobs`), where carrying the samples from one pass to the other would take memory or
disk for the whole corpus.

Reader processes are started with "spawn": the caller may have started threads (JAX does),
which "fork" would copy in an undefined state.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tensorflow_datasets.core import hashing, naming, splits
from tensorflow_datasets.core.utils import shard_utils

from papt_jax import child_processes, progress
from papt_jax.data.shard_jobs import Measured, Reading, Source, Unreadable, measure, write_shard

# A reader process is a fresh interpreter that imports NumPy, soundfile, TFDS and the
# caller's main module again: about 1 s under prepare's command line, 5 s under the
# experiment's (which imports JAX and the rest). A reader prepares about 700 audio-seconds
# per second (BENCHMARKS.md): a second reader pays for a 5 s start from about 2 audio-hours
# on. The default number of readers gives each at least this much audio.
AUDIO_SECONDS_PER_READER = 3600.0


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_readers(audio_seconds: float) -> int:
    """One reader per available core, but no more than `audio_seconds` keeps busy."""
    return max(1, min(available_cores(), int(audio_seconds // AUDIO_SECONDS_PER_READER)))


class Readers:
    """Runs functions over items in `count` reader processes, or in this process if 1.

    Use as a context manager. Leaving it, also on an error, cancels the work not started
    and waits for the work under way, so no reader writes into a directory that the caller
    goes on to clean up. A reader that dies (killed for memory, say) raises
    `BrokenProcessPool` here rather than leaving the build waiting.
    """

    def __init__(self, count: int):
        if count < 1:
            raise ValueError(f"readers must be >= 1, got {count}")
        self.count = count
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> Readers:
        if self.count > 1:
            # Readers end with this process, even when it is killed (no orphans).
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=child_processes.worker_initializer(),
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def ordered(self, fn: Callable, items: Sequence) -> Iterator:
        """fn(item) for each item, in the order of `items`."""
        if self._pool is None:
            return map(fn, items)
        # Chunks amortise the round trip; several per reader keep them all busy to the end.
        chunk = max(1, min(64, len(items) // (4 * self.count)))
        return self._pool.map(fn, items, chunksize=chunk)

    def unordered(self, fn: Callable, items: Sequence) -> Iterator:
        """fn(item) for each item, in the order they finish."""
        if self._pool is None:
            return map(fn, items)
        futures = [self._pool.submit(fn, item) for item in items]
        return (f.result() for f in concurrent.futures.as_completed(futures))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class _AudioBar:
    """A progress bar over audio (`papt_jax.progress`), shown as audio-hours and x real time.

    It counts whole milliseconds (`add` rounds each item's seconds), so the counts add up
    to the total exactly, in whatever order items finish.
    """

    FORMAT = (
        "{desc}: {percentage:3.0f}%|{bar}| {hours:.2f}/{total_hours:.2f} audio-h "
        "[{elapsed}<{remaining}, {speed:.0f}x real time]"
    )

    def __init__(self, desc: str, seconds: Iterable[float], file=None):
        total = sum(map(_ms, seconds))
        self.bar = progress.bar(
            total=total,
            desc=desc,
            file=file,
            bar_format=self.FORMAT,
            format_extra=self._audio_fields,
            show_count=False,  # off a terminal: milliseconds mean nothing to the reader
        )

    def __enter__(self) -> _AudioBar:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def add(self, seconds: float) -> None:
        self.bar.update(_ms(seconds))

    def __getattr__(self, name: str) -> Any:  # n, total, refresh: the bar's own
        return getattr(self.bar, name)

    @staticmethod
    def _audio_fields(values: dict[str, Any]) -> dict[str, Any]:
        elapsed = values["elapsed"]
        return {
            "hours": values["n"] / 3.6e6,
            "total_hours": (values["total"] or 0) / 3.6e6,
            "speed": values["n"] / 1000 / elapsed if elapsed else 0.0,
        }


def measure_all(
    readers: Readers, reading: Reading, sources: Sequence[Source]
) -> Iterator[Measured | Unreadable]:
    """`shard_jobs.measure` of every source, yielded in the order of `sources`."""
    with _AudioBar("checking audio", (s.seconds for s in sources)) as bar:
        results = readers.ordered(functools.partial(measure, reading), sources)
        for source, result in zip(sources, results, strict=True):
            bar.add(source.seconds)
            yield result


@dataclasses.dataclass(frozen=True)
class SplitLayout:
    """Where each record of a split goes.

    Attributes:
      name: the split.
      sources: its utterances in record order.
      measured: what `measure` found for each, in the same order.
      shard_lengths: records per shard file, in file order.
    """

    name: str
    sources: list[Source]
    measured: list[Measured]
    shard_lengths: list[int]

    @property
    def num_bytes(self) -> int:
        return sum(m.num_bytes for m in self.measured)

    def shards(self) -> Iterator[tuple[int, slice]]:
        """(shard index, slice of `sources`) for each shard."""
        start = 0
        for index, length in enumerate(self.shard_lengths):
            yield index, slice(start, start + length)
            start += length


def layout(
    name: str,
    sources: Sequence[Source],
    measured: Sequence[Measured],
    shard_config: shard_utils.ShardConfig,
) -> SplitLayout:
    """The order and sharding TFDS's writer gives the records of `sources`.

    Raises:
      ValueError: no sources, or two with the same key (TFDS refuses both).
    """
    if not sources:
        raise ValueError(f"split {name} has no records")
    hasher = hashing.Hasher(name)
    order = sorted(range(len(sources)), key=lambda i: hasher.hash_key(sources[i].key))
    duplicates = sorted(k for k, n in collections.Counter(s.key for s in sources).items() if n > 1)
    if duplicates:
        raise ValueError(f"split {name}: duplicate keys {duplicates[:5]}")
    ordered_measured = [measured[i] for i in order]
    total = sum(m.num_bytes for m in ordered_measured)
    num_shards = shard_config.get_number_shards(total, len(order))
    ends = shard_utils.get_shard_boundaries(len(order), num_shards)
    return SplitLayout(
        name=name,
        sources=[sources[i] for i in order],
        measured=ordered_measured,
        shard_lengths=[end - start for start, end in itertools.pairwise([0, *ends])],
    )


def write_all(
    readers: Readers,
    reading: Reading,
    layouts: Iterable[SplitLayout],
    template: Callable[[str], naming.ShardedFileTemplate],
) -> list[splits.SplitInfo]:
    """Writes the shard files of every split; returns their `SplitInfo`s (in `layouts` order).

    Args:
      readers: where the shards are written.
      reading: how utterances are read and encoded.
      layouts: from `layout`, one per split.
      template: split name -> its TFDS file name template (in the directory being built).
    """
    layouts = list(layouts)
    tasks, seconds = [], []
    for split in layouts:
        for index, part in split.shards():
            path = template(split.name).sharded_filepath(
                shard_index=index, num_shards=len(split.shard_lengths)
            )
            tasks.append((os.fspath(path), split.sources[part], split.measured[part]))
            seconds.append(sum(s.seconds for s in split.sources[part]))
    # Longest first, so no reader is left with a long shard while the others idle.
    order = sorted(range(len(tasks)), key=lambda i: -seconds[i])
    with _AudioBar("writing records", seconds) as bar:
        written = readers.unordered(
            functools.partial(_write_numbered, reading), [(i, *tasks[i]) for i in order]
        )
        for i, _ in written:
            bar.add(seconds[i])
    return [
        splits.SplitInfo(
            name=split.name,
            shard_lengths=split.shard_lengths,
            num_bytes=split.num_bytes,
            filename_template=template(split.name),
        )
        for split in layouts
    ]


def _write_numbered(
    reading: Reading, task: tuple[int, str, Sequence[Source], Sequence[Measured]]
) -> tuple[int, int]:
    """(task number, records written) of one shard task, so unordered results can be matched."""
    number, path, sources, measured = task
    return number, write_shard(reading, path, sources, measured)


def describe_speed(audio_seconds: float, wall_seconds: float, readers: int) -> str:
    """One line: audio-hours, wall time and x real time of a build."""
    speed = audio_seconds / wall_seconds if wall_seconds > 0 else float("inf")
    return (
        f"prepared {audio_seconds / 3600:.2f} audio-h in {wall_seconds:.1f} s: "
        f"{speed:.0f}x real time with {readers} reader(s)"
    )
