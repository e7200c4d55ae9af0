"""Benchmark: peak memory of a fine-tuning step with and without remat, fp32 and bf16.

Run:
  /work/venv/bin/python benchmarks/memory.py                           # large, B=4, 8 s
  /work/venv/bin/python benchmarks/memory.py --model base --seconds 4  # faster to compile
  /work/venv/bin/python benchmarks/memory.py --variants fp32,fp32+remat

Nothing is executed: each variant's fine-tuning step (`finetune.make_train_step`, the
encoder + regression head, 1 - CCC, Adam, frozen CNN) is lowered from abstract shapes
(`jax.eval_shape`, so no parameters are allocated) and compiled, and XLA's
`memory_analysis()` of the compiled step is read. The figure that bounds the device memory
of a step is arguments + temporaries (+ outputs not aliased to donated arguments); the
arguments are the train state (parameters + Adam moments, float32 on every variant) and the
batch. The buffer assignment is the CPU backend's: a GPU or TPU compile schedules
differently, so read the ratios between variants, not the absolute bytes, as the forecast
for an accelerator.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models import get_preset
from papt_jax.models.config import HubertConfig
from papt_jax.models.tasks import HubertForRegression
from papt_jax.train import finetune, sharding
from papt_jax.train.state import TrainState, make_optimizer

VARIANTS = {
    "fp32": {"dtype": "float32", "remat": False},
    "fp32+remat": {"dtype": "float32", "remat": True},
    "bf16": {"dtype": "bfloat16", "remat": False},
    "bf16+remat": {"dtype": "bfloat16", "remat": True},
}
MIB = 1024**2


def abstract_state(model: HubertForRegression):
    """ShapeDtypeStructs of the fine-tuning TrainState (params, Adam moments, BN stats)."""

    def build(rng):
        variables = finetune.init_variables(model, rng)
        tx = make_optimizer(
            5e-5,
            1000,
            schedule="constant",
            clip_norm=10.0,
            params=variables["params"],
            frozen_prefixes=("hubert/feature_extractor",),
        )
        return TrainState.create(
            apply_fn=None, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
        )

    return jax.eval_shape(build, jax.random.PRNGKey(0))


def abstract_batch(batch: int, samples: int) -> dict[str, jax.ShapeDtypeStruct]:
    f32, b = jnp.float32, jnp.bool_
    return {
        "audio": jax.ShapeDtypeStruct((batch, samples), f32),
        "audio_mask": jax.ShapeDtypeStruct((batch, samples), b),
        "speaker": jax.ShapeDtypeStruct((batch,), jnp.int32),
        "label": jax.ShapeDtypeStruct((batch,), f32),
        "example_mask": jax.ShapeDtypeStruct((batch,), b),
    }


def analyse(cfg: HubertConfig, batch: int, samples: int) -> dict[str, float]:
    """Compiles one fine-tuning step for `cfg` and returns its memory figures in bytes."""
    model = HubertForRegression(cfg, freeze_feature_extractor=True)
    mesh = sharding.make_mesh(1)
    step = finetune.make_train_step(model, finetune.LabelScaling("none"), mesh)
    state = abstract_state(model)
    start = time.perf_counter()
    compiled = step.lower(
        state, abstract_batch(batch, samples), jax.ShapeDtypeStruct((2,), jnp.uint32)
    ).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError("this backend gives no memory_analysis() for compiled functions")
    params = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    out = {
        "params_bytes": float(params),
        "argument_bytes": float(stats.argument_size_in_bytes),
        "temp_bytes": float(stats.temp_size_in_bytes),
        "output_bytes": float(stats.output_size_in_bytes),
        "alias_bytes": float(stats.alias_size_in_bytes),
        "compile_s": seconds,
    }
    # Donated state aliases the outputs; only unaliased outputs need fresh memory.
    out["peak_bytes"] = (
        out["argument_bytes"] + out["temp_bytes"] + out["output_bytes"] - out["alias_bytes"]
    )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "large", "small", "tiny"), default="large")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown --variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    if args.batch < 1 or args.seconds <= 0:
        parser.error("--batch and --seconds must be positive")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    samples = int(args.seconds * SAMPLE_RATE)
    print(
        f"model={args.model} batch={args.batch} seconds={args.seconds} "
        f"backend={jax.default_backend()} jax={jax.__version__}",
        flush=True,
    )
    rows = []
    for name in args.variants:
        cfg = get_preset(args.model, **VARIANTS[name])
        row = {"variant": name, **analyse(cfg, args.batch, samples)}
        rows.append(row)
        print(
            f"  {name}: peak {row['peak_bytes'] / MIB:.0f} MiB "
            f"(temp {row['temp_bytes'] / MIB:.0f}, compile {row['compile_s']:.0f} s)",
            flush=True,
        )
    print()
    print(
        "| variant | params (MiB) | arguments (MiB) | temporaries (MiB) | peak (MiB) | vs first |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['params_bytes'] / MIB:.0f} | {r['argument_bytes'] / MIB:.0f} "
            f"| {r['temp_bytes'] / MIB:.0f} | {r['peak_bytes'] / MIB:.0f} "
            f"| {r['peak_bytes'] / rows[0]['peak_bytes']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
