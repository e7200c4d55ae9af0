"""Benchmark: the pseudo-label stage (teacher features + k-means labels) against PyTorch.

Run:
  .venv/bin/python benchmarks/pseudo_labels.py          # base, layer 9, 24 utterances, B=4
  .venv/bin/python benchmarks/pseudo_labels.py --utterances 64 --batch 8 --buckets 4 --repeats 2
  .venv/bin/python benchmarks/pseudo_labels.py --model small --layer 3 --utterances 200

Both sides label the same utterances (noise, lengths uniform in [--min-seconds,
--max-seconds]) with the same HuBERT-shaped teacher and the same --clusters random
centroids: the output of Transformer layer --layer, then the nearest centroid of every frame.

- PyTorch: a `transformers.HubertModel` with random weights, under `torch.inference_mode()`
  with `torch.set_num_threads(--threads)`, one utterance at a time, unpadded, as fairseq's
  `dump_hubert_feature.py` reads them (HuBERT-base's first GroupNorm normalises over the
  whole input, so padding a batch would change the features, and transformers' base
  model takes no attention mask). Its encoder layers past --layer are dropped, as
  fairseq's `output_layer` stops early; the nearest centroid is the same squared-distance
  argmin.
- JAX: that model's weights converted with `papt_jax.convert` (both sides hold the same
  weights), batched by `papt_jax.data.batching` (eval mode: --buckets length buckets fitted
  to the lengths, the last batch of each bucket padded) and labelled by the stage function
  itself, `papt_jax.pseudo_labels.compute_pseudo_labels`, given the centroids (so no
  k-means fit); it also writes labels.npz, as the stage does. Layers past --layer are not
  computed (the jitted function never uses them). XLA's CPU backend uses every core.

The JAX stage runs once cold (trace + compile of every bucket shape + run), then the sides
alternate --repeats times; each side's rate is the median of its timed runs, and the
figure to read is the same-run ratio JAX / PyTorch of audio-hours labelled per hour of wall
time (equal to "x real time"). Labels of the two sides are compared frame by frame as a
check that both computed the same thing (float rounding may flip a few near-ties).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from papt_jax import convert, pseudo_labels
from papt_jax.convert.hf_config import to_hf_config
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.batching import BatchPlanner, DatasetIndex, PipelineConfig
from papt_jax.models import HubertModel, get_preset

# Post-LayerNorm presets only: for those, `hidden_states[layer]` of a model cut after
# `layer` layers is the same tensor as in the full model (a stable-LayerNorm model would
# add its final LayerNorm to the cut model's last output).
MODELS = ("base", "small")


# ----------------------------------------------------------------------------- inputs


def make_utterances(
    count: int, min_seconds: float, max_seconds: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """Utterance key -> float32 noise waveform, lengths uniform in [min, max] seconds."""
    rs = np.random.RandomState(seed)
    lengths = rs.uniform(min_seconds, max_seconds, count) * SAMPLE_RATE
    return {
        f"utt{i:05d}": (0.1 * rs.randn(int(n))).astype(np.float32) for i, n in enumerate(lengths)
    }


def make_batches(
    utterances: dict[str, np.ndarray], batch_size: int, num_buckets: int
) -> tuple[list[dict[str, np.ndarray]], tuple[int, ...]]:
    """The stage's evaluation batches, planned by `BatchPlanner` and filled in memory.

    Returns:
      The batches (audio, audio_mask, example_mask, key) in plan order, and the bucket
      lengths (samples).
    """
    keys = tuple(utterances)
    lengths = np.array([len(a) for a in utterances.values()])
    planner = BatchPlanner(
        DatasetIndex(keys, lengths),
        PipelineConfig(
            mode="eval",
            num_buckets=num_buckets,
            batch_size=batch_size,
            device_count=1,
            process_index=0,
            process_count=1,
        ),
    )
    batches = []
    for planned in planner.plan(0):
        rows, length = planner.batch_sizes[planned.bucket], planner.bucket_lengths[planned.bucket]
        batch = {
            "audio": np.zeros((rows, length), np.float32),
            "audio_mask": np.zeros((rows, length), bool),
            "example_mask": np.zeros((rows,), bool),
            "key": np.full((rows,), "", dtype=object),
        }
        for row, index in enumerate(planned.indices):
            audio = utterances[keys[index]]
            batch["audio"][row, : len(audio)] = audio
            batch["audio_mask"][row, : len(audio)] = True
            batch["example_mask"][row] = True
            batch["key"][row] = keys[index]
        batches.append(batch)
    return batches, planner.bucket_lengths


def make_centroids(count: int, dim: int, seed: int = 1) -> np.ndarray:
    """(count, dim) float32 centroids drawn around the origin at the features' scale.

    Layer outputs of HuBERT-base end in a LayerNorm, so each frame is about unit variance
    per dimension; centroids of the same scale spread frames over many clusters.
    """
    return np.random.RandomState(seed).randn(count, dim).astype(np.float32)


# ----------------------------------------------------------------------------- the sides


def torch_teacher(model_name: str, layer: int, folder: str) -> transformers.HubertModel:
    """A random-weight HF encoder cut after `layer` layers; its full weights are saved in
    `folder` first (for the converter)."""
    cfg = get_preset(model_name)
    hf_model = transformers.HubertModel(transformers.HubertConfig(**to_hf_config(cfg))).eval()
    hf_model.save_pretrained(folder)
    hf_model.encoder.layers = hf_model.encoder.layers[:layer]
    return hf_model


def torch_labels(
    model: transformers.HubertModel,
    utterances: dict[str, np.ndarray],
    centroids: torch.Tensor,
    layer: int,
) -> dict[str, np.ndarray]:
    """Nearest-centroid labels of every frame, one utterance at a time."""
    c_sq = (centroids * centroids).sum(-1)
    labels = {}
    with torch.inference_mode():
        for key, audio in utterances.items():
            out = model(torch.from_numpy(audio)[None], output_hidden_states=True)
            feats = out.hidden_states[layer][0]
            dist = (feats * feats).sum(-1, keepdim=True) - 2.0 * feats @ centroids.T + c_sq
            labels[key] = dist.argmin(-1).numpy().astype(np.int16)
    return labels


def jax_stage(feature_fn, batches, centroids_path: str, num_clusters: int, out_dir: str):
    """The stage function with precomputed centroids: features, labels, labels.npz."""
    config = pseudo_labels.PseudoLabelConfig(
        num_clusters=num_clusters,
        fit_fraction=1.0,
        batch_size=10_000,
        max_iter=1,
        n_init=1,
        seed=0,
        centroids_path=centroids_path,
    )
    return pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), feature_fn, 50, config, out_dir, total_batches=len(batches)
    )


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="base")
    parser.add_argument("--layer", type=int, default=9, help="teacher layer (1-based)")
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--min-seconds", type=float, default=2.75)
    parser.add_argument("--max-seconds", type=float, default=11.0)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--batch", type=int, default=4, help="utterances per JAX batch")
    parser.add_argument("--buckets", type=int, default=3, help="JAX length buckets")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.utterances, args.batch, args.buckets, args.repeats, args.clusters) < 1:
        parser.error("--utterances, --batch, --buckets, --repeats, --clusters must be >= 1")
    if not 0.1 <= args.min_seconds <= args.max_seconds:
        parser.error("need 0.1 <= --min-seconds <= --max-seconds")
    if not 1 <= args.layer <= get_preset(args.model).num_hidden_layers:
        parser.error(f"--layer must be in 1..{get_preset(args.model).num_hidden_layers}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="papt_bench_pseudo_labels_") as work:
        return run(args, work)


def run(args: argparse.Namespace, work: str) -> dict:
    """Builds both sides, times them and prints the table; `work` holds temporary files."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    utterances = make_utterances(args.utterances, args.min_seconds, args.max_seconds)
    audio_s = sum(len(a) for a in utterances.values()) / SAMPLE_RATE
    batches, buckets = make_batches(utterances, args.batch, args.buckets)
    padded_s = sum(b["audio"].size for b in batches) / SAMPLE_RATE

    weights_dir = os.path.join(work, "teacher")
    hf_model = torch_teacher(args.model, args.layer, weights_dir)
    ckpt = convert.load_pytorch_checkpoint(weights_dir)
    feature_fn, rate = pseudo_labels.teacher_feature_fn(
        HubertModel(ckpt.config), ckpt.params, args.layer
    )
    assert rate == 50
    centroids = make_centroids(args.clusters, ckpt.config.hidden_size)
    centroids_path = os.path.join(work, "centroids.npy")
    np.save(centroids_path, centroids)
    torch_centroids = torch.from_numpy(centroids)
    print(
        f"model={args.model} layer={args.layer} utterances={args.utterances} "
        f"audio={audio_s:.1f} s ({args.min_seconds}-{args.max_seconds} s) "
        f"clusters={args.clusters} jax_batches={len(batches)} (B={args.batch}, buckets "
        f"{[round(b / SAMPLE_RATE, 2) for b in buckets]} s, {100 * audio_s / padded_s:.1f} % "
        f"real samples) torch_threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"jax={jax.__version__} torch={torch.__version__} "
        f"transformers={transformers.__version__} device={jax.devices()[0].device_kind}",
        flush=True,
    )

    stage = lambda i: jax_stage(
        feature_fn, batches, centroids_path, args.clusters, os.path.join(work, f"run{i}")
    )
    jax_out, jax_cold = timed(lambda: stage(0))
    print(f"  jax cold (trace + compile + run): {jax_cold:.1f} s", flush=True)
    # One untimed utterance: PyTorch's first call allocates its buffers.
    first_key = next(iter(utterances))
    torch_labels(hf_model, {first_key: utterances[first_key]}, torch_centroids, args.layer)
    jax_times, torch_times = [], []
    for i in range(args.repeats):
        torch_out, t = timed(
            lambda: torch_labels(hf_model, utterances, torch_centroids, args.layer)
        )
        torch_times.append(t)
        jax_out, t = timed(lambda i=i: stage(i + 1))
        jax_times.append(t)
        print(
            f"  run {i + 1}: torch {torch_times[-1]:.1f} s, jax {jax_times[-1]:.1f} s", flush=True
        )

    assert all(len(jax_out[k]) == len(torch_out[k]) for k in utterances), "frame counts differ"
    same = sum(int((jax_out[k] == torch_out[k]).sum()) for k in utterances)
    frames = sum(len(v) for v in torch_out.values())
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    result = {
        "args": vars(args),
        "audio_s": audio_s,
        "real_sample_share": audio_s / padded_s,
        "frames": frames,
        "label_agreement": same / frames,
        "jax_cold_s": jax_cold,
        "jax_s": jax_s,
        "torch_s": torch_s,
        "jax_audio_h_per_h": audio_s / jax_s,
        "torch_audio_h_per_h": audio_s / torch_s,
        "jax_over_torch": torch_s / jax_s,
        "jax_all_s": jax_times,
        "torch_all_s": torch_times,
    }
    print_table(result)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def print_table(r: dict) -> None:
    print()
    print("| side | audio (s) | wall (s) | audio-hours / hour |")
    print("|---|---:|---:|---:|")
    rows = [
        ("PyTorch, one utterance at a time", r["torch_s"]),
        ("JAX stage, bucketed batches", r["jax_s"]),
        ("JAX stage, first run (compile included)", r["jax_cold_s"]),
    ]
    for name, wall in rows:
        print(f"| {name} | {r['audio_s']:.1f} | {wall:.1f} | {r['audio_s'] / wall:.1f} |")
    print()
    print(
        f"JAX / PyTorch rate (same run): {r['jax_over_torch']:.2f}x; labels equal on "
        f"{100 * r['label_agreement']:.2f} % of {r['frames']} frames"
    )


if __name__ == "__main__":
    main()
