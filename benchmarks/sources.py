"""The check a rerun makes before reusing a dataset: has any labels or audio file changed?

Usage:

    python benchmarks/sources.py [--files 150000] [--workdir DIR] [--repeat 3] [--keep]

Simulates an MSP-Podcast-sized corpus (about 150 000 utterances) as `Audios/` with that
many files named like `MSP-PODCAST_0153_0042.wav` and a labels CSV with one row per file
(the real header). The files are empty: the default check reads only each file's size and
modification time (`os.stat`), whose cost does not depend on the size, and the content check
(`data.verify_audio=content`) is not timed here (it reads every byte: disk speed decides).
The record is made once (`sources.scan`, as `prepare` does after a build, labels SHA-256
included) and written, then the check a rerun makes (`dataset_files.source_changes`:
read sources.json, hash the labels, stat every file) is timed `--repeat` times. Printed: the
record's size, the scan time, and each check's wall time, with the load average (other jobs
slow every figure). The project's bound is 10 s for the check.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

from papt_jax.data import dataset_files, sources
from papt_jax.data.msp_podcast import CSV_COLUMNS


def make_corpus(root: Path, files: int) -> tuple[Path, list[Path]]:
    audios = root / "Audios"
    audios.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = audios / f"MSP-PODCAST_{i // 100:04d}_{i % 100:04d}.wav"
        if not path.exists():
            path.touch()
        paths.append(path)
    labels = root / "Labels" / "labels_consensus.csv"
    labels.parent.mkdir(exist_ok=True)
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i, path in enumerate(paths):
            writer.writerow([path.name, "N", "4.2", "4.0", "4.1", str(i // 150), "Female", "Train"])
    return labels, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=150_000)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the simulated corpus")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="papt_sources_"))
    try:
        clock = time.perf_counter()
        labels, paths = make_corpus(root / "corpus", args.files)
        print(f"corpus: {len(paths)} files in {time.perf_counter() - clock:.1f} s")
        dataset = root / "dataset"
        dataset.mkdir(exist_ok=True)
        clock = time.perf_counter()
        sources.write(dataset, sources.scan([labels], [str(p) for p in paths]))
        scan_s = time.perf_counter() - clock
        size = (dataset / sources.SOURCES_FILE).stat().st_size
        print(f"record: {size / 1e6:.1f} MB sources.json, made in {scan_s:.2f} s")
        for i in range(args.repeat):
            load = os.getloadavg()[0]
            clock = time.perf_counter()
            changes = dataset_files.source_changes(dataset)
            wall = time.perf_counter() - clock
            assert changes == [], changes
            print(f"check {i + 1}: {wall:.2f} s for {len(paths)} files (load {load:.1f})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
