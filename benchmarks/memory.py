"""Benchmark: XLA's memory analysis of the compiled train steps under each remat policy.

Run:
  python benchmarks/memory.py                           # large, 4 x 8 s, both steps, 4 policies
  python benchmarks/memory.py --model base --seconds 4 --remat none,full
  python benchmarks/memory.py --parts finetune --dtype bfloat16 --accumulate 2
  python benchmarks/memory.py --unrolled --remat none,full   # the unrolled (debugging) stack

Nothing is executed: each step (`finetune.make_train_step`: encoder + regression head,
1 - CCC, Adam, frozen CNN; `pretrain.make_train_step`: masked prediction, AdamW) is lowered
from abstract shapes (`jax.eval_shape`, so no parameters are allocated) and compiled, and
XLA's `memory_analysis()` of the compiled step is read: arguments (the train state, float32
on every variant, and the batch), outputs, temporaries. The figure that bounds the device
memory of a step is arguments + temporaries + outputs not aliased to donated arguments.
The buffer assignment is the backend's that compiles: run it on the device you care about
(benchmarks/gpu.sh on a GPU); on the CPU backend read the ratios between policies.

`compile_step` is shared with `benchmarks/encoder.py --compile_times`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models import get_preset
from papt_jax.models.config import HubertConfig
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.tasks import HubertForPretraining, HubertForRegression
from papt_jax.train import finetune, pretrain, sharding
from papt_jax.train.state import TrainState, make_optimizer

PARTS = ("finetune", "pretrain")
REMATS = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
NUM_CLUSTERS = 500
MIB = 1024**2


def _finetune(cfg: HubertConfig, mesh, accumulate: int):
    model = HubertForRegression(cfg, freeze_feature_extractor=True)

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

    step = finetune.make_train_step(
        model, finetune.LabelScaling("none"), mesh, accumulate_steps=accumulate
    )
    return step, jax.eval_shape(build, jax.random.PRNGKey(0))


def _pretrain(cfg: HubertConfig, mesh, accumulate: int):
    model = HubertForPretraining(cfg, PretrainHeadConfig(768, NUM_CLUSTERS))

    def build(rng):
        params = pretrain.init_params(model, rng)
        tx = make_optimizer(1e-5, 1000, 0.05, weight_decay=0.01, clip_norm=1.0, b2=0.98, eps=1e-6)
        return TrainState.create(apply_fn=None, params=params, tx=tx)

    loss = pretrain.PretrainLossConfig(mask_prob=0.8, mask_length=10, features_pen_weight=10.0)
    step = pretrain.make_train_step(model, loss, mesh, accumulate_steps=accumulate)
    return step, jax.eval_shape(build, jax.random.PRNGKey(0))


def abstract_batch(cfg: HubertConfig, part: str, batch: int, samples: int) -> dict:
    f32, b, i32 = jnp.float32, jnp.bool_, jnp.int32
    out = {
        "audio": jax.ShapeDtypeStruct((batch, samples), f32),
        "audio_mask": jax.ShapeDtypeStruct((batch, samples), b),
        "speaker": jax.ShapeDtypeStruct((batch,), i32),
        "example_mask": jax.ShapeDtypeStruct((batch,), b),
    }
    if part == "finetune":
        out["label"] = jax.ShapeDtypeStruct((batch,), f32)
    else:
        out["targets"] = jax.ShapeDtypeStruct((batch, cfg.num_frames(samples)), i32)
    return out


def compile_step(cfg: HubertConfig, part: str, batch: int, samples: int, accumulate: int = 1):
    """Lowers and compiles one train step from abstract shapes.

    Returns:
      (seconds to trace and lower, seconds to compile, the compiled step, the state's shapes).
    """
    mesh = sharding.make_mesh(1)
    step, state = (_finetune if part == "finetune" else _pretrain)(cfg, mesh, accumulate)
    start = time.perf_counter()
    lowered = step.lower(
        state, abstract_batch(cfg, part, batch, samples), jax.ShapeDtypeStruct((2,), jnp.uint32)
    )
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at, compiled, state


def analyse(cfg: HubertConfig, part: str, batch: int, samples: int, accumulate: int) -> dict:
    """Compiles one step for `cfg` and returns its memory figures in bytes."""
    lower_s, compile_s, compiled, state = compile_step(cfg, part, batch, samples, accumulate)
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
        "lower_s": lower_s,
        "compile_s": compile_s,
    }
    # Donated state aliases the outputs; only unaliased outputs need fresh memory.
    out["peak_bytes"] = (
        out["argument_bytes"] + out["temp_bytes"] + out["output_bytes"] - out["alias_bytes"]
    )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "large", "small", "tiny"), default="large")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (all micro-batches)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--parts", default=",".join(PARTS), help="finetune, pretrain")
    parser.add_argument("--remat", default=",".join(REMATS), help="comma-separated policies")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--unrolled", action="store_true", help="unrolled layers (not scanned)")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--check_args", action="store_true", help="check the arguments, exit")
    args = parser.parse_args(argv)
    args.parts = tuple(p for p in args.parts.split(",") if p)
    args.remat = tuple(r for r in args.remat.split(",") if r)
    if set(args.parts) - set(PARTS):
        parser.error(f"unknown --parts {sorted(set(args.parts) - set(PARTS))}; choose from {PARTS}")
    for name in args.remat:
        try:
            get_preset("tiny", remat=name)
        except ValueError as err:
            parser.error(f"--remat {name!r}: {err}")
    if args.batch < 1 or args.seconds <= 0 or args.accumulate < 1:
        parser.error("--batch, --seconds and --accumulate must be positive")
    if args.batch % args.accumulate:
        parser.error(f"--batch {args.batch} does not split into {args.accumulate} micro-batches")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.check_args:
        print("arguments ok:", " ".join(sys.argv[1:] if argv is None else argv))
        return []
    samples = int(args.seconds * SAMPLE_RATE)
    layers = "unrolled" if args.unrolled else "scanned"
    print(
        f"model={args.model} batch={args.batch} seconds={args.seconds} dtype={args.dtype} "
        f"layers={layers} accumulate={args.accumulate} backend={jax.default_backend()} "
        f"device={jax.devices()[0].device_kind} jax={jax.__version__}",
        flush=True,
    )
    rows = []
    for part in args.parts:
        for remat in args.remat:
            cfg = get_preset(
                args.model, dtype=args.dtype, remat=remat, scan_layers=not args.unrolled
            )
            row = {"part": part, "remat": remat}
            row.update(analyse(cfg, part, args.batch, samples, args.accumulate))
            rows.append(row)
            print(
                f"  {part} remat={remat}: peak {row['peak_bytes'] / MIB:.0f} MiB "
                f"(temp {row['temp_bytes'] / MIB:.0f}; lower {row['lower_s']:.0f} s, "
                f"compile {row['compile_s']:.0f} s)",
                flush=True,
            )
    print()
    print(
        "| step | remat | params (MiB) | arguments (MiB) | temporaries (MiB) | peak (MiB) "
        "| temporaries vs none |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        base = next((b for b in rows if b["part"] == r["part"] and b["remat"] == "none"), None)
        ratio = "-" if base is None else f"{r['temp_bytes'] / base['temp_bytes']:.2f}"
        print(
            f"| {r['part']} | {r['remat']} | {r['params_bytes'] / MIB:.0f} "
            f"| {r['argument_bytes'] / MIB:.0f} | {r['temp_bytes'] / MIB:.0f} "
            f"| {r['peak_bytes'] / MIB:.0f} | {ratio} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
