"""Padding share and batch-shape count: length-bucketed vs unbucketed batching.

Usage:

    python benchmarks/padding.py [--corpus SYNTHETIC_OR_MSP_DIR] [--num_lengths 50000]

Two length distributions are measured:

(a) the train split of a corpus in MSP-Podcast layout (default: the `demo` synthetic corpus,
    generated into a temporary directory);
(b) an MSP-Podcast-like distribution: MSP-Podcast segments are 2.75-11 s long with most
    of them short. It is simulated (not measured) as 2.75 s + 8.25 s * Beta(2, 4), i.e.
    right-skewed with mode ~4.4 s and mean ~5.5 s, `--num_lengths` draws with seed 0.
    A uniform 2.75-11 s variant is printed as well, since the true shape is not public here.

For each, one training epoch's batch plan (the pipeline's own `BatchPlanner`, so lengths
only, no audio) is summarised for:

* bucketed/count: at most 8 buckets fitted by `fit_bucket_lengths`, 8 utterances a batch;
* bucketed/seconds: the same buckets, batches of `--batch_seconds` of audio;
* fixed/single: every batch padded to the longest utterance (one shape);
* per-batch max: batches of random utterances padded to their own longest member (what
  dynamic padding would do; every distinct length is a new jit compilation).

Printed per row: share of real (non-padding) samples, number of distinct batch shapes, and
for the bucketed plans the share of audio that pre-training's `crop_to_shortest` (fairseq's
`pad_audio: false`: every batch cropped to its shortest utterance) cuts away.
Target: bucketed >= 90 % real samples with <= 8 shapes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from papt_jax.data import batching, msp_podcast
from papt_jax.data.audio import SAMPLE_RATE, frame_grid_ceil


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Padding summary of a set of batches.

    Attributes:
      shapes: (rows, samples) -> number of batches with that audio shape.
      real_samples: audio samples of real rows that are not padding.
      total_samples: all audio samples, padding included.
      cut_share: share of the audio that cropping each batch to its shortest utterance
        cuts (None where not computed).
    """

    shapes: Mapping[tuple[int, int], int]
    real_samples: int
    total_samples: int
    cut_share: float | None = None

    @property
    def real_share(self) -> float:
        return self.real_samples / max(self.total_samples, 1)


def summarize_plan(planner: batching.BatchPlanner, epoch: int = 0) -> BatchStats:
    """Batch shapes and real samples of one epoch's plan, from lengths only (global batches)."""
    shapes = collections.Counter()
    real = total = 0
    for planned in planner.plan(epoch):
        size = planner.batch_sizes[planned.bucket]
        length = planner.bucket_lengths[planned.bucket]
        shapes[(size, length)] += 1
        real += int(planner.lengths[list(planned.indices)].sum())
        total += size * length
    return BatchStats(dict(shapes), real, total, planner.shortest_crop_fraction(epoch))


def corpus_lengths(corpus_dir: Path | None) -> tuple[str, np.ndarray]:
    """Train-split lengths (samples) of a corpus; generates the demo corpus if none is given."""
    if corpus_dir is None:
        from papt_jax.data import synthetic

        corpus_dir = Path(tempfile.mkdtemp()) / "demo_corpus"
        print(f"generating the demo synthetic corpus in {corpus_dir} ...")
        synthetic.generate_corpus(corpus_dir, preset="demo", seed=0, progress=False)
    corpus = msp_podcast.load_corpus(msp_podcast.CorpusConfig(corpus_dir=corpus_dir))
    lengths = [round(u.duration * SAMPLE_RATE) for u in corpus.splits["train"]]
    return f"corpus {corpus_dir.name} (train)", np.asarray(lengths, dtype=np.int64)


def msp_like_lengths(num: int, shape: str) -> np.ndarray:
    """Simulated MSP-Podcast segment lengths in samples (see the module docstring)."""
    rng = np.random.default_rng(0)
    unit = rng.beta(2.0, 4.0, size=num) if shape == "skewed" else rng.uniform(size=num)
    return np.round((2.75 + 8.25 * unit) * SAMPLE_RATE).astype(np.int64)


def plan_stats(lengths: np.ndarray, **config) -> BatchStats:
    """One training epoch's padding statistics for a `PipelineConfig`."""
    keys = tuple(f"u{i}" for i in range(len(lengths)))
    cfg = batching.PipelineConfig(device_count=1, process_index=0, process_count=1, **config)
    return summarize_plan(batching.BatchPlanner(batching.DatasetIndex(keys, lengths), cfg))


def per_batch_max_stats(lengths: np.ndarray, batch_size: int) -> BatchStats:
    """Random batches padded to their own longest member (frame grid), remainder dropped."""
    order = np.random.default_rng(0).permutation(len(lengths))
    usable = len(order) // batch_size * batch_size
    batches = lengths[order[:usable]].reshape(-1, batch_size)
    padded = np.array([frame_grid_ceil(n) for n in batches.max(axis=1)])
    shapes: dict[tuple[int, int], int] = {}
    for length in padded:
        shapes[(batch_size, int(length))] = shapes.get((batch_size, int(length)), 0) + 1
    return BatchStats(shapes, int(batches.sum()), int(padded.sum() * batch_size))


def report(name: str, lengths: np.ndarray, batch_seconds: float) -> None:
    seconds = lengths / SAMPLE_RATE
    print(
        f"\n{name}: {len(lengths)} utterances, {seconds.min():.2f}-{seconds.max():.2f} s, "
        f"mean {seconds.mean():.2f} s"
    )
    buckets = batching.fit_bucket_lengths(lengths, num_buckets=8)
    print(f"  buckets (s): {', '.join(f'{b / SAMPLE_RATE:.2f}' for b in buckets)}")
    rows = {
        "4 buckets/count (8 utts)": plan_stats(lengths, num_buckets=4, batch_size=8),
        "bucketed/count (8 utts)": plan_stats(lengths, bucket_lengths=buckets, batch_size=8),
        f"bucketed/seconds ({batch_seconds:g} s)": plan_stats(
            lengths, bucket_lengths=buckets, batch_size=None, batch_seconds=batch_seconds
        ),
        "fixed/single length": plan_stats(lengths, num_buckets=1, batch_size=8),
        "per-batch max (8 utts)": per_batch_max_stats(lengths, 8),
    }
    rows["fixed/single length"] = dataclasses.replace(rows["fixed/single length"], cut_share=None)
    print(f"  {'batching':28s} {'real samples':>12s} {'shapes':>7s} {'cut by crop':>12s}")
    for label, stats in rows.items():
        cut = "" if stats.cut_share is None else f"{stats.cut_share:.1%}"
        print(f"  {label:28s} {stats.real_share:11.1%} {len(stats.shapes):7d} {cut:>12s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="corpus dir (default: generate demo)")
    parser.add_argument("--num_lengths", type=int, default=50_000)
    parser.add_argument("--batch_seconds", type=float, default=64.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(*corpus_lengths(args.corpus), args.batch_seconds)
    for shape in ("skewed", "uniform"):
        lengths = msp_like_lengths(args.num_lengths, shape)
        report(f"MSP-Podcast-like ({shape}, simulated)", lengths, args.batch_seconds)


if __name__ == "__main__":
    main()
