"""Benchmark: where a scanned train step's cold compile time goes, piece by piece.

Run:
  python benchmarks/compile_pieces.py                        # large, 4 x 8 s, every piece
  python benchmarks/compile_pieces.py --model base --pieces cnn_forward,optimizer

Each piece of the pre-training and fine-tuning steps (`benchmarks/memory.py` builds the
whole steps) is jitted on its own, lowered from abstract shapes and compiled in a fresh
process with no persistent compilation cache, as `benchmarks/encoder.py --compile_times`
does for the whole steps. A piece that trains is compiled with its backward pass (the
gradient of a sum of its outputs), dropout on, as in the step. Printed per piece: wall
seconds of the compile, CPU seconds of the process over trace, lower and compile (less
sensitive to other jobs on the machine), and the optimised program's HLO instructions.
The pieces overlap the whole step only roughly (XLA fuses across their borders), so their
sum is not the step's figure; the table says which parts of the step cost what.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import memory  # benchmarks/memory.py, beside this file: the whole steps

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.losses import ccc_loss, masked_prediction_loss
from papt_jax.masking import compute_mask_indices_jax
from papt_jax.models import get_preset
from papt_jax.models.config import HubertConfig
from papt_jax.models.families import PIECES
from papt_jax.models.heads import PretrainHead, PretrainHeadConfig, RegressionHead
from papt_jax.models.hubert import HubertModel
from papt_jax.models.layers import FeatureExtractor, FeatureProjection
from papt_jax.models.stack import run_layers
from papt_jax.train.state import guarded_update

F32 = jnp.float32


def _spec(shape, dtype=F32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _grad_of_sum(apply):
    """(params, *inputs) -> gradients of sum(apply(params, *inputs)) w.r.t. params."""
    return jax.grad(lambda params, *a: jnp.sum(apply(params, *a).astype(F32)))


def _module_piece(module, inputs, train: bool, call=None):
    """A jittable fn and its abstract args for a Flax module (params abstract too)."""
    call = call or (lambda m, *a: m(*a))
    key = jax.random.PRNGKey(0)
    init = jax.eval_shape(
        lambda *a: module.init({"params": key, "dropout": key}, *a, method=call), *inputs
    )

    def apply(params, key, *a):
        rngs = {"dropout": key} if train else None
        return module.apply({"params": params}, *a, method=call, rngs=rngs)

    if train:
        return _grad_of_sum(apply), (init["params"], key, *inputs)
    return apply, (init["params"], key, *inputs)


class _Layers(nn.Module):
    """The layer stack alone (no positional conv): `run_layers` over a (batch, frames, dim)."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x, mask):
        return run_layers(
            PIECES[self.config.family].layer,
            self.config,
            x,
            mask,
            deterministic=False,
            dropout_rng=self.make_rng("dropout"),
        )[0]


def pieces(cfg, batch: int, samples: int) -> dict:
    """name -> (fn, abstract args) of every piece."""
    frames = cfg.num_frames(samples)
    audio, audio_mask = _spec((batch, samples)), _spec((batch, samples), jnp.bool_)
    lengths = _spec((batch,), jnp.int32)
    conv_out = _spec((batch, frames, cfg.conv_dim[-1]))
    hidden = _spec((batch, frames, cfg.hidden_size))
    frame_mask = _spec((batch, frames), jnp.bool_)
    out = {}
    out["cnn_forward"] = _module_piece(FeatureExtractor(cfg), (audio, lengths), train=False)
    out["cnn_forward_backward"] = _module_piece(FeatureExtractor(cfg), (audio, lengths), True)
    out["projection_forward_backward"] = _module_piece(
        FeatureProjection(cfg), (conv_out,), True, call=lambda m, x: m(x, False)[0]
    )
    out["pos_conv_forward_backward"] = _module_piece(
        PIECES[cfg.family].positional(cfg), (hidden, frame_mask), True
    )
    for name, n, scan in (("one_layer", 1, False), ("scanned_layers", None, True)):
        layers_cfg = cfg.replace(num_hidden_layers=n or cfg.num_hidden_layers, scan_layers=scan)
        out[f"{name}_forward_backward"] = _module_piece(
            _Layers(layers_cfg), (hidden, frame_mask), True
        )
    out["whole_encoder_forward"] = _module_piece(
        HubertModel(cfg), (audio, audio_mask), False, call=lambda m, a, k: m(a, k).last_hidden_state
    )
    out["span_mask"] = (
        lambda key, mask: compute_mask_indices_jax(key, mask, 0.8, 10, 2),
        (jax.random.PRNGKey(0), frame_mask),
    )
    out.update(_step_pieces(cfg, batch, samples))
    return out


def _step_pieces(cfg, batch, samples):
    """The heads, losses and optimiser updates of the two steps, from `benchmarks/memory`."""
    frames = cfg.num_frames(samples)
    hidden = _spec((batch, frames, cfg.hidden_size))
    head = PretrainHead(PretrainHeadConfig(768, memory.NUM_CLUSTERS))
    head_params = jax.eval_shape(lambda x: head.init(jax.random.PRNGKey(0), x), hidden)

    def head_loss(params, x, targets, mask_indices, frame_mask):
        logits = head.apply(params, x)
        return masked_prediction_loss(logits, targets, mask_indices, frame_mask)[0]

    frame_mask = _spec((batch, frames), jnp.bool_)
    targets = _spec((batch, frames), jnp.int32)
    out = {
        "head_and_loss_forward_backward": (
            jax.grad(head_loss, argnums=(0, 1)),
            (head_params, hidden, targets, frame_mask, frame_mask),
        )
    }
    mesh = memory.sharding.make_mesh(1)
    for part, build in (("pretrain", memory._pretrain), ("finetune", memory._finetune)):
        _, state = build(cfg, mesh, 1)

        def update(state, grads):
            return guarded_update(state, grads, jnp.float32(1.0))[0]

        out[f"{part}_optimizer_update"] = (update, (state, state.params))
    regression = RegressionHead((128, 32), 0.1)
    pooled = _spec((batch, cfg.hidden_size))
    variables = jax.eval_shape(
        lambda x: regression.init(jax.random.PRNGKey(0), x, train=False), pooled
    )

    def regression_loss(params, batch_stats, key, pooled, labels, example_mask):
        preds, _ = regression.apply(
            {"params": params, "batch_stats": batch_stats},
            pooled,
            train=True,
            example_mask=example_mask,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        return ccc_loss(preds, labels, example_mask)

    out["regression_head_and_ccc_forward_backward"] = (
        jax.grad(regression_loss, argnums=(0, 3)),
        (
            variables["params"],
            variables["batch_stats"],
            jax.random.PRNGKey(0),
            pooled,
            _spec((batch,)),
            _spec((batch,), jnp.bool_),
        ),
    )
    return out


def compile_piece(fn, args) -> dict:
    jax.config.update("jax_enable_compilation_cache", False)
    cpu = time.process_time()
    lowered = jax.jit(fn).lower(*args)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    instructions = sum(" = " in line for line in compiled.as_text().splitlines())
    return {
        "compile_s": compile_s,
        "cpu_s": time.process_time() - cpu,
        "instructions": instructions,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "large", "small", "tiny"), default="large")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--pieces", default=None, help="comma-separated (default: all)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    samples = int(args.seconds * SAMPLE_RATE)
    cfg = get_preset(args.model)
    if args.one:
        fn, fn_args = pieces(cfg, args.batch, samples)[args.one]
        print(json.dumps(compile_piece(fn, fn_args)))
        return []
    names = args.pieces.split(",") if args.pieces else list(pieces(cfg, args.batch, samples))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    print(
        f"model={args.model} batch={args.batch} seconds={args.seconds} scanned, float32 "
        f"jax={jax.__version__} device={jax.devices()[0].device_kind} cpus={os.cpu_count()}"
    )
    print("| piece | compile (s) | CPU s | HLO instructions |\n|---|---:|---:|---:|")
    rows = []
    for name in names:
        command = [sys.executable, os.path.abspath(__file__), "--one", name]
        command += ["--model", args.model, "--batch", str(args.batch)]
        command += ["--seconds", str(args.seconds)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        row = {"piece": name, **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(
            f"| {name} | {row['compile_s']:.1f} | {row['cpu_s']:.1f} | {row['instructions']} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
