"""Preparing an MSP-Podcast-shaped corpus: one reader process against several.

Usage:

    python benchmarks/prepare.py [--hours 3] [--readers N] [--repeat 1] [--workdir DIR] [--profile]

A corpus in the MSP-Podcast v1.x layout is simulated (not real speech): `Audios/` with
16 kHz mono 16-bit wav files and `Labels/labels_consensus.csv` with the real header
(`msp_podcast.CSV_COLUMNS`), file names like `MSP-PODCAST_0153_0042.wav`, many speakers,
splits Train / Development / Test1 (about 70/15/15 % of the speakers) and a few rows of
speaker "Unknown" (dropped by the reader, as in the real labels). Durations follow the shape
MSP-Podcast's segmenter gives (2.75-11 s, most of them short), simulated as
2.75 s + 8.25 s * Beta(2, 4) like benchmarks/padding.py (mean ~5.5 s). Each file is noise
shaped by a syllable-rate envelope at a per-file level around -26 dBFS: cheap to make, and
with the sign and magnitude mix of speech, which is what decides the record sizes
(a negative sample takes 10 bytes in a tf.train.Example) and the compression work.

The same corpus is then prepared with 1 reader and with `--readers` (default: every
available core), alternately, `--repeat` times each, in this process. Each build is timed
from the call to `prepare.prepare` to its return (start-up of the reader processes
included, interpreter start-up not). Printed per build: audio-hours in the records, wall
seconds, x real time (audio seconds per wall second), CPU seconds per audio-hour (this
process and its reader processes), wall seconds per phase as `prepare` logs them (corpus:
labels CSV and audio headers; check: reader start-up and the first pass; write: the second
pass; rest: metadata, index) and the 1-minute load average before and after (other jobs on
the machine slow every figure but the CPU seconds; before the builds, N spinning processes
measure how many cores' worth of CPU the other jobs leave). Then the best speed of each
setting and their ratio, the time a pool of reader processes takes to start on its own, and
whether the two datasets hold the same records (index files and split metadata compared;
tests/data/test_prepare.py compares the record files themselves).

--profile then builds once more with 1 reader under cProfile (slower than the timed run)
and sums the profile into where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import pstats
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from papt_jax.data import msp_podcast, prepare, split_writer
from papt_jax.data.audio import SAMPLE_RATE


def write_corpus(root: Path, hours: float, speakers: int, seed: int = 0) -> tuple[int, float]:
    """Writes the simulated corpus; returns (files, audio seconds)."""
    rng = np.random.default_rng(seed)
    audios = root / "Audios"
    audios.mkdir(parents=True)
    rows, total, i = [], 0.0, 0
    split_of = {}
    for s in range(1, speakers + 1):
        u = rng.random()
        split_of[s] = "Train" if u < 0.7 else "Development" if u < 0.85 else "Test1"
    while total < hours * 3600:
        seconds = 2.75 + 8.25 * rng.beta(2.0, 4.0)
        n = int(seconds * SAMPLE_RATE)
        speaker = int(rng.integers(1, speakers + 1))
        name = f"MSP-PODCAST_{i // 50 + 1:04d}_{i % 50 + 1:04d}.wav"
        t = np.arange(n) / SAMPLE_RATE
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6))
        level = 10 ** (rng.uniform(-32, -20) / 20)  # -26 dBFS on average
        samples = level * envelope * rng.standard_normal(n)
        soundfile.write(str(audios / name), np.clip(samples, -1, 1), SAMPLE_RATE, "PCM_16")
        unknown = rng.random() < 0.01  # rows the reader drops, as in the real labels
        rows.append(
            [
                name,
                rng.choice(list("NHSAUCDFX")),
                *(f"{v:.1f}" for v in rng.uniform(1, 7, 3)),
                "Unknown" if unknown else speaker,
                "Female" if speaker % 2 else "Male",
                split_of[speaker],
            ]
        )
        total += n / SAMPLE_RATE
        i += 1
    (root / "Labels").mkdir()
    with open(root / "Labels" / "labels_consensus.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(msp_podcast.CSV_COLUMNS)
        writer.writerows(rows)
    return i, total


class _Phases(logging.Handler):
    """Keeps the seconds per phase that `prepare.prepare` logs."""

    def __init__(self):
        super().__init__()
        self.phases: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.phases = getattr(record, "phases", self.phases)


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished children."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclasses.dataclass(frozen=True)
class Run:
    readers: int
    wall: float  # seconds, prepare.prepare call
    cpu: float  # seconds of CPU, reader processes included
    audio: float  # seconds of audio in the records
    phases: dict
    load: tuple[float, float]  # 1-minute load average before and after


def run(config: msp_podcast.CorpusConfig, out: Path, readers: int) -> Run:
    """One timed build into `out` (emptied first)."""
    shutil.rmtree(out, ignore_errors=True)
    handler = _Phases()
    logger = logging.getLogger(prepare.__name__)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    load_before, cpu = os.getloadavg()[0], _cpu_seconds()
    start = time.perf_counter()
    try:
        prepare.prepare(config, out, readers=readers)
    finally:
        logger.removeHandler(handler)
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    infos = json.loads((prepare.dataset_dir(out) / "dataset_info.json").read_text())["splits"]
    index = prepare.dataset_dir(out) / "index"
    samples = sum(
        sum(json.loads((index / f"{s['name']}.json").read_text())["num_samples"]) for s in infos
    )
    return Run(
        readers, wall, cpu, samples / SAMPLE_RATE, handler.phases, (load_before, os.getloadavg()[0])
    )


def _noop(_: int) -> None:
    return None


def _spin(seconds: float) -> int:
    """Loop iterations done in `seconds` of wall time."""
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        count += 1
    return count


def cores_free(processes: int, seconds: float = 2.0) -> float:
    """How many cores' worth `processes` spinning processes get now, relative to one: what the
    machine's other jobs leave for parallel work (`processes` on an idle machine)."""
    one = _spin(seconds)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        many = sum(pool.map(_spin, [seconds] * processes, chunksize=1))
    return many / one


def reader_start_seconds(readers: int) -> float:
    """Wall seconds until a pool of `readers` spawned processes (as prepare starts them,
    importing this program's modules) has run one task each."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(readers) as pool:
        pool.map(_noop, range(readers), chunksize=1)
    return time.perf_counter() - start


# Where the time of a one-reader build goes: profile entries (file suffix, function name)
# whose cumulative times are reported, in the order of the build. They do not overlap.
PROFILE_PARTS = (
    ("labels CSV + audio headers (load_corpus)", "splits.py", "load_corpus"),
    ("read + decode + check audio (check pass)", "audio.py", "read_audio"),
    ("record sizes (check pass)", "tf_example.py", "serialized_size"),
    ("read checked audio as int16 (write pass)", "shard_jobs.py", "_read_checked"),
    ("tf.train.Example encoding (write pass)", "tf_example.py", "serialize"),
    (
        "array_record write: zstd + file (write pass)",
        "~",
        "<built-in method array_record.python.array_record_module.write>",
    ),
    ("hash order + shard layout", "split_writer.py", "layout"),
)


def profile(config: msp_podcast.CorpusConfig, out: Path) -> None:
    """Builds again with 1 reader under cProfile and prints where the time goes."""
    shutil.rmtree(out, ignore_errors=True)
    path = out.with_suffix(".prof")
    cProfile.runctx("prepare.prepare(config, out, readers=1)", globals(), locals(), str(path))
    stats = pstats.Stats(str(path)).stats
    total = max(v[3] for v in stats.values())
    print(f"\nwhere the time goes (1 reader, under cProfile: {total:.1f} s in all)")
    rest = total
    for label, file_suffix, function in PROFILE_PARTS:
        seconds = sum(
            v[3]
            for (file, _, name), v in stats.items()
            if file.endswith(file_suffix) and name == function
        )
        rest -= seconds
        print(f"  {label:<46} {seconds:7.2f} s {100 * seconds / total:5.1f} %")
    print(
        f"  {'the rest (TFDS metadata, index, ...)':<46} {rest:7.2f} s {100 * rest / total:5.1f} %"
    )


def same_records(a: Path, b: Path) -> bool:
    """Index files (keys, lengths, speakers in record order) and split metadata equal."""
    da, db = prepare.dataset_dir(a), prepare.dataset_dir(b)

    def splits(d: Path) -> list:
        return json.loads((d / "dataset_info.json").read_text())["splits"]

    def index(d: Path) -> dict:
        return {
            p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "files"}
            for p in sorted((d / "index").glob("*.json"))
        }

    return splits(da) == splits(db) and index(da) == index(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=3.0, help="audio to simulate")
    parser.add_argument("--speakers", type=int, default=400)
    parser.add_argument("--readers", type=int, default=split_writer.available_cores())
    parser.add_argument("--workdir", type=Path, help="kept if given (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="builds of each setting")
    parser.add_argument("--profile", action="store_true", help="profile the 1-reader build")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="prepare_bench_"))
    try:
        corpus = workdir / "corpus"
        if not (corpus / "Labels").is_dir():
            start = time.perf_counter()
            files, seconds = write_corpus(corpus, args.hours, args.speakers)
            print(
                f"corpus: {files} files, {seconds / 3600:.2f} audio-h, {args.speakers} speakers "
                f"(written in {time.perf_counter() - start:.0f} s)"
            )
        config = msp_podcast.CorpusConfig(corpus_dir=corpus)
        # Other jobs on a shared machine can leave less than a core per reader; say so.
        print(
            f"cores' worth of CPU {args.readers} processes get now: "
            f"{cores_free(args.readers):.2f} (of {args.readers})"
        )
        # Alternating 1 and N readers, so a change in the machine's other load hits both.
        runs = [
            run(config, workdir / f"data_{r}_readers", r)
            for _ in range(args.repeat)
            for r in (1, args.readers)
        ]
        print(f"\nmachine: {split_writer.available_cores()} cores available to this process")
        print(
            "| readers | audio-h | wall s | x real time | CPU s per audio-h "
            "| wall s: corpus / check / write / rest | load before/after |"
        )
        print("|---:|---:|---:|---:|---:|---|---|")
        for r in runs:
            phases = " / ".join(f"{v:.1f}" for v in r.phases.values())
            print(
                f"| {r.readers} | {r.audio / 3600:.2f} | {r.wall:.1f} | {r.audio / r.wall:.0f} | "
                f"{r.cpu / (r.audio / 3600):.1f} | {phases} | {r.load[0]:.1f} / {r.load[1]:.1f} |"
            )
        best = {r: max(x.audio / x.wall for x in runs if x.readers == r) for r in (1, args.readers)}
        print(
            f"best of {args.repeat}: {best[1]:.0f}x real time with 1 reader, "
            f"{best[args.readers]:.0f}x with {args.readers}: "
            f"{best[args.readers] / best[1]:.2f} times faster"
        )
        print(
            f"starting {args.readers} reader processes alone: "
            f"{reader_start_seconds(args.readers):.1f} s (part of 'check' above)"
        )
        same = same_records(workdir / "data_1_readers", workdir / f"data_{args.readers}_readers")
        print(f"same records (index + split metadata): {same}")
        if args.profile:
            profile(config, workdir / "data_profiled")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
