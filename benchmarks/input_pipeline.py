"""Benchmark: can the Grain input pipeline feed a GPU pre-training HuBERT-large?

Usage:

    python benchmarks/input_pipeline.py [--data_dir DIR] [--workers 0,1,2] [--seconds 20]
    python benchmarks/input_pipeline.py --parts flops        # only the XLA cost analysis

Part `pipeline` times the pipeline the pre-training stages use (`BatchPipeline` in train
mode: read, decode, crop to each batch's shortest utterance, bucket, pad, frame targets) for
each worker count, on two sources:

(a) the train split of a dataset built by `papt_jax.data.prepare` (`--data_dir`; default:
    the `demo` synthetic corpus generated and prepared into a temporary directory): the real
    array_record reading and TFDS decoding path;
(b) an MSP-Podcast-sized index: `--num_utterances` lengths of 2.75 s + 8.25 s * Beta(2, 4)
    (the simulation of `benchmarks/padding.py`), whose records come from an in-memory source
    of generated int16 waveforms (a copy of a slice of a pre-generated pool per record, so
    no 180 h of audio touch the disk). It measures planning, cropping, padding and targets
    at that scale; the file reading and decoding of (a) is not part of it.

Frame targets are random 50 Hz labels of the right length for every utterance (their values
do not change the work). After `--warmup_batches` (worker start-up, prefetch), batches are
drawn for at least `--seconds` and their real samples counted: the "delivered" audio, what
the training loop's `audio_sec_per_sec` counts. Nothing is done with a batch once it is
delivered, so the rate is the pipeline's alone. `per worker` divides by the worker count
(worker_count 0: the main process with Grain's reader threads counts as one).

Part `flops` lowers HuBERT-large's PAPT pre-training step (`pretrain.make_train_step`:
encoder with a speaker table, 500-cluster head, fairseq's masking, Adam) from abstract shapes
(`jax.eval_shape`: no weights are allocated), compiles it for one batch shape on this
machine's backend, and reads XLA's FLOP count (`train.throughput.step_cost`). Nothing runs.
From FLOPs per padded audio-second it derives how much audio one GPU consumes at a given
utilisation of its bf16 dense peak, and with both parts, how many workers feed it.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from papt_jax.data import batching, input_pipeline
from papt_jax.data.audio import SAMPLE_RATE, frame_grid_ceil, num_frames

MSP_MIN_SECONDS, MSP_SPAN_SECONDS = 2.75, 8.25
POOL_WAVEFORMS = 16
NUM_CLUSTERS = 500  # HuBERT-large's pre-training labels (k-means on HuBERT-base features)


# --------------------------------------------------------------------------- sources


def msp_like_index(num_utterances: int, seed: int = 0) -> batching.DatasetIndex:
    """Simulated MSP-Podcast segment lengths (right-skewed, 2.75-11 s, mean ~5.5 s)."""
    rng = np.random.default_rng(seed)
    seconds = MSP_MIN_SECONDS + MSP_SPAN_SECONDS * rng.beta(2.0, 4.0, num_utterances)
    keys = tuple(f"sim_{i:07d}" for i in range(num_utterances))
    return batching.DatasetIndex(keys, np.round(seconds * SAMPLE_RATE).astype(np.int64))


class GeneratedSource:
    """Random-access records of generated int16 audio, in the layout `prepare` writes.

    Picklable and small (Grain workers rebuild the waveform pool from the seed); record i
    is a fresh copy of a slice of one of `POOL_WAVEFORMS` pooled waveforms.
    """

    def __init__(self, index: batching.DatasetIndex, num_speakers: int = 1000, seed: int = 0):
        self.keys = index.keys
        self.lengths = np.asarray(index.num_samples)
        self.speakers = np.random.default_rng(seed).integers(0, num_speakers, len(self.keys))
        self.seed = seed
        self._pool = None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def __len__(self) -> int:
        return len(self.keys)

    def _waveforms(self) -> np.ndarray:
        if self._pool is None:
            rng = np.random.default_rng(self.seed + 1)
            longest = int(self.lengths.max())
            self._pool = (rng.standard_normal((POOL_WAVEFORMS, 2 * longest)) * 3000).astype(
                np.int16
            )
        return self._pool

    def __getitem__(self, i: int) -> dict:
        pool = self._waveforms()
        length = int(self.lengths[i])
        start = (i * 7919) % (pool.shape[1] - length)
        speaker = int(self.speakers[i])
        return {
            "key": self.keys[i],
            "audio": pool[i % POOL_WAVEFORMS, start : start + length].copy(),
            "speaker": f"spk{speaker}",
            "speaker_index": speaker,
            "arousal": 4.0,
            "valence": 4.0,
        }


class GeneratedTargets(collections.abc.Mapping):
    """Key -> random 50 Hz labels of the utterance's frame count, sliced from one pool
    (a dict of 100k+ arrays would be pickled to every worker at start-up)."""

    def __init__(self, index: batching.DatasetIndex, seed: int = 0):
        self._frames = {
            key: int(num_frames(n)) for key, n in zip(index.keys, index.num_samples, strict=True)
        }
        longest = max(self._frames.values())
        rng = np.random.default_rng(seed + 2)
        self._pool = rng.integers(0, NUM_CLUSTERS, longest).astype(np.int32)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._pool[: self._frames[key]]

    def __iter__(self):
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


def random_targets(index: batching.DatasetIndex, seed: int = 0) -> dict[str, np.ndarray]:
    """A plain dict of random frame labels, as pseudo-labels are loaded."""
    rng = np.random.default_rng(seed)
    return {
        key: rng.integers(0, NUM_CLUSTERS, int(num_frames(n))).astype(np.int32)
        for key, n in zip(index.keys, index.num_samples, strict=True)
    }


def build_demo_dataset(root: Path) -> Path:
    """Generates the `demo` corpus and prepares it (the two command lines); returns DATA_DIR."""
    corpus, data = root / "corpus", root / "data"
    run = [sys.executable, "-m"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run([*run, "papt_jax.data.synthetic", "--preset=demo", f"--out={corpus}"], **quiet)
    subprocess.run(
        [
            *run,
            "papt_jax.data.prepare",
            f"--corpus_dir={corpus}",
            f"--out={data}",
            f"--new_labels_file={corpus / 'Labels_new' / 'labels_consensus.csv'}",
        ],
        **quiet,
    )
    return data


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Rate:
    """Delivered audio of one timed run.

    Attributes:
      source: Which source.
      workers: Grain worker processes (0: in the main process).
      batches: Batches timed.
      seconds: Wall time of the timed batches.
      real_seconds: Audio seconds of real (unpadded) samples delivered.
      padded_seconds: Audio seconds of the batches' full shapes.
    """

    source: str
    workers: int
    batches: int
    seconds: float
    real_seconds: float
    padded_seconds: float

    @property
    def audio_sec_per_sec(self) -> float:
        return self.real_seconds / self.seconds

    @property
    def per_worker(self) -> float:
        return self.audio_sec_per_sec / max(self.workers, 1)

    @property
    def real_share(self) -> float:
        return self.real_seconds / self.padded_seconds


def pipeline_config(workers: int, batch_size: int, seed: int = 0) -> batching.PipelineConfig:
    """The pre-training stages' train-mode batching (config defaults: 6 buckets, 15 s
    crop, fairseq's crop to the shortest utterance), for one device and one process."""
    return batching.PipelineConfig(
        mode="train",
        num_buckets=6,
        batch_size=batch_size,
        max_length=15 * SAMPLE_RATE,
        crop_to_shortest=True,
        seed=seed,
        device_count=1,
        process_index=0,
        process_count=1,
        worker_count=workers,
    )


def time_pipeline(
    name: str, pipeline: input_pipeline.BatchPipeline, warmup: int, min_seconds: float
) -> Rate:
    """Draws `warmup` batches, then batches for at least `min_seconds`."""
    with pipeline.iterator() as batches:
        for _ in range(warmup):
            next(batches)
        real = padded = count = 0
        start = time.perf_counter()
        while count < 10 or time.perf_counter() - start < min_seconds:
            mask = next(batches)["audio_mask"]
            real += int(np.count_nonzero(mask))
            padded += mask.size
            count += 1
        elapsed = time.perf_counter() - start
    workers = pipeline.config.worker_count
    return Rate(name, workers, count, elapsed, real / SAMPLE_RATE, padded / SAMPLE_RATE)


# --------------------------------------------------------------------------- FLOPs


def pretrain_step_cost(batch: int, samples: int, num_speakers: int):
    """XLA's StepCost of HuBERT-large's PAPT step for (batch, samples), compiled from
    abstract shapes on the default backend."""
    # Deferred: the pipeline part (and Grain's worker processes) need no model code.
    import jax
    import jax.numpy as jnp

    from papt_jax.models import get_preset
    from papt_jax.models.heads import PretrainHeadConfig
    from papt_jax.models.tasks import HubertForPretraining
    from papt_jax.train import pretrain, sharding, throughput
    from papt_jax.train.state import TrainState, make_optimizer

    no_dropout = dict.fromkeys(
        ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout"), 0.0
    )  # the project's pre-training defaults (fairseq's large recipe)
    cfg = get_preset("large", num_speakers=num_speakers, speaker_fusion="last", **no_dropout)
    model = HubertForPretraining(cfg, PretrainHeadConfig(final_dim=768, num_label_rows=500))
    loss = pretrain.PretrainLossConfig(mask_prob=0.8, mask_length=10, features_pen_weight=10.0)
    settings = pretrain.FAIRSEQ_HUBERT_LARGE_ADAM

    def build(rng):
        tx = make_optimizer(
            1e-5,
            1000,
            0.05,
            weight_decay=settings["weight_decay"],
            clip_norm=settings["clip_norm"],
            b1=settings["adam_b1"],
            b2=settings["adam_b2"],
            eps=settings["adam_eps"],
        )
        return TrainState.create(apply_fn=None, params=pretrain.init_params(model, rng), tx=tx)

    state = jax.eval_shape(build, jax.random.PRNGKey(0))
    frames = int(num_frames(samples))
    spec = jax.ShapeDtypeStruct
    batch_spec = {
        "audio": spec((batch, samples), jnp.float32),
        "audio_mask": spec((batch, samples), jnp.bool_),
        "speaker": spec((batch,), jnp.int32),
        "arousal": spec((batch,), jnp.float32),
        "valence": spec((batch,), jnp.float32),
        "example_mask": spec((batch,), jnp.bool_),
        "targets": spec((batch, frames), jnp.int32),
    }
    step = pretrain.make_train_step(model, loss, sharding.make_mesh(1))
    return throughput.step_cost(step, state, batch_spec, jax.random.PRNGKey(0))


# --------------------------------------------------------------------------- main


def print_rates(rates: list[Rate], consumed: float | None) -> None:
    """One table row per run; with `consumed` (padded audio-seconds per second one GPU
    trains on), the workers that feed it at each run's per-worker rate and real share."""
    extra = " workers to feed the GPU |" if consumed else ""
    print(
        "| source | workers | batches | delivered audio s/s | per worker | real samples |" + extra
    )
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if consumed else ""))
    for r in rates:
        needed = f" {consumed * r.real_share / r.per_worker:.1f} |" if consumed else ""
        print(
            f"| {r.source} | {r.workers} | {r.batches} | {r.audio_sec_per_sec:,.0f} | "
            f"{r.per_worker:,.0f} | {100 * r.real_share:.1f} % |" + needed
        )


def report_flops(args) -> float:
    """Compiles the HuBERT-large step at each length; returns the padded audio-seconds per
    second one GPU consumes at the first length's FLOPs per audio-second."""
    import jax

    consumed = None
    for seconds in (float(s) for s in args.flops_seconds.split(",")):
        samples = frame_grid_ceil(int(seconds * SAMPLE_RATE))
        start = time.perf_counter()
        cost = pretrain_step_cost(args.flops_batch, samples, args.num_speakers)
        compile_s = time.perf_counter() - start
        padded_seconds = args.flops_batch * samples / SAMPLE_RATE
        per_second = cost.flops / padded_seconds
        rate = args.utilisation * args.peak_tflops * 1e12 / per_second
        consumed = rate if consumed is None else consumed
        print(
            f"HuBERT-large PAPT step, batch {args.flops_batch} x {samples} samples "
            f"({padded_seconds:.2f} s), compiled for {jax.devices()[0].device_kind} in "
            f"{compile_s:.0f} s: {cost.flops / 1e12:.4f} TFLOP per step, "
            f"{per_second / 1e12:.4f} TFLOP per padded audio-second; at "
            f"{100 * args.utilisation:.0f} % of {args.peak_tflops} TFLOP/s: "
            f"{rate:,.0f} padded audio-seconds per second"
        )
    return consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="pipeline,flops", help="pipeline and/or flops")
    parser.add_argument("--data_dir", default="", help="prepared dataset (default: demo)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", default="0,1,2", help="Grain worker counts to time")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed span per run")
    parser.add_argument("--warmup_batches", type=int, default=20)
    parser.add_argument("--num_utterances", type=int, default=120_000)
    parser.add_argument("--flops_batch", type=int, default=1)
    parser.add_argument(
        "--flops_seconds", default="4", help="lengths to compile; the first one is used"
    )
    parser.add_argument("--num_speakers", type=int, default=1000, help="PAPT speaker table")
    parser.add_argument("--peak_tflops", type=float, default=989.4, help="H100 SXM bf16 dense")
    parser.add_argument("--utilisation", type=float, default=0.4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = set(args.parts.split(","))
    workers = [int(w) for w in args.workers.split(",")]

    # FLOPs first: the compile is over before the pipeline is timed.
    consumed = report_flops(args) if "flops" in parts else None
    if "pipeline" not in parts:
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else build_demo_dataset(Path(tmp))
        source, index = input_pipeline.open_split(data_dir, args.split)
        demo_targets = random_targets(index)
        msp_index = msp_like_index(args.num_utterances)
        msp_source, msp_targets = GeneratedSource(msp_index), GeneratedTargets(msp_index)
        hours = msp_index.num_samples.sum() / SAMPLE_RATE / 3600
        print(
            f"{data_dir} {args.split}: {len(index.keys)} utterances; simulated: "
            f"{len(msp_index.keys):,} utterances, {hours:.0f} h"
        )
        rates = []
        for w in workers:
            cfg = pipeline_config(w, args.batch_size)
            pipe = input_pipeline.BatchPipeline(source, index, cfg, demo_targets)
            rates.append(time_pipeline("demo", pipe, args.warmup_batches, args.seconds))
            pipe = input_pipeline.BatchPipeline(msp_source, msp_index, cfg, msp_targets)
            rates.append(time_pipeline("MSP-sized", pipe, args.warmup_batches, args.seconds))
            print(
                ", ".join(
                    f"{r.source} w={r.workers}: {r.audio_sec_per_sec:,.0f}" for r in rates[-2:]
                )
            )
    print()
    print_rates(rates, consumed)


if __name__ == "__main__":
    main()
