"""Benchmark: wav2vec 2.0's contrastive logits and loss, forward and backward.

Run:
  python benchmarks/contrastive_logits.py                       # base: 8 x 250 frames, dim 256
  python benchmarks/contrastive_logits.py --frames 781 --batch 4 --dim 768   # large, 15.6 s
  python benchmarks/contrastive_logits.py ... --torch_device cuda --json OUT.json  # gpu.sh

Three formulations of the same numbers (fairseq's `compute_preds` and loss; the targets
first, 100 negatives, temperature 0.1, cross-entropy summed over the masked frames), each
timed as loss + gradient with respect to the predictions and the targets:
- `papt_jax`: `papt_jax.contrastive` as it is (the negatives' logits read from each row's
  (frames, frames) cosine matrix);
- `gathered`: the formulation papt_jax used before 2026-12-05 and transformers uses, in
  JAX: K target vectors gathered per frame, (batch, frames, K, dim), then the cosine;
- `torch`: transformers' `Wav2Vec2ForPreTraining` steps (the gather, its
  `compute_contrastive_logits`, `neg_is_pos`, `cross_entropy(reduction="sum")`) in PyTorch
  on `--torch_device` (the CPU by default; benchmarks/gpu.sh gives `cuda`).
It prints the median seconds per call of each, the ratios to `papt_jax` from this same run,
XLA's temporary memory of the two compiled JAX programs (`memory_analysis()`), and the
largest differences of the loss and gradients from PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this file
from torch_device import check_torch_device  # benchmarks/torch_device.py, beside this file

from papt_jax import contrastive

MIB = 1024**2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=250, help="frames per row (50 per s)")
    parser.add_argument("--dim", type=int, default=256, help="final_dim (base 256, large 768)")
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--mask_prob", type=float, default=0.65, help="share of masked frames")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--torch_device", default="cpu", help="where PyTorch runs (cpu, cuda)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    for name in ("batch", "frames", "dim", "negatives", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0.0 < args.mask_prob <= 1.0:
        parser.error(f"--mask_prob must be in (0, 1], got {args.mask_prob}")
    if args.frames < 2:
        parser.error("--frames must be at least 2 (a negative is another frame)")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: its folder does not exist")
    if not args.no_torch:
        check_torch_device(parser, args.torch_device)
    return args


def _gathered_logits(predicted, targets, negative_indices, logit_temperature):
    """The gathered formulation (papt_jax before 2026-12-05; transformers' layout)."""
    batch, frames, k = negative_indices.shape
    dim = targets.shape[-1]
    flat = negative_indices.reshape(batch, frames * k, 1)
    negatives = jnp.take_along_axis(targets, flat, axis=1).reshape(batch, frames, k, dim)
    candidates = jnp.concatenate([targets[:, :, None, :], negatives], axis=2)
    cosine = (contrastive._unit(predicted)[:, :, None, :] * contrastive._unit(candidates)).sum(-1)
    logits = cosine / logit_temperature
    neg_is_pos = jnp.all(negatives == targets[:, :, None, :], axis=-1)
    return logits.at[..., 1:].set(jnp.where(neg_is_pos, -jnp.inf, logits[..., 1:]))


def _jax_program(logits_fn):
    def loss(predicted, targets, negatives, mask):
        logits = logits_fn(predicted, targets, negatives, 0.1)
        return contrastive.contrastive_loss(logits, mask)["contrastive_sum"]

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _torch_loss_and_grads(predicted, targets, negatives, mask, device: str):
    """transformers' steps, with the negatives as offsets into the flattened batch."""
    import torch
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2ForPreTraining

    predicted = torch.tensor(predicted, device=device, requires_grad=True)
    targets = torch.tensor(targets, device=device, requires_grad=True)
    batch, frames, dim = targets.shape
    offsets = negatives + (np.arange(batch) * frames)[:, None, None]
    k = negatives.shape[-1]
    negative_features = targets.view(-1, dim)[torch.tensor(offsets.reshape(-1), device=device)]
    negative_features = negative_features.view(batch, frames, k, dim).permute(2, 0, 1, 3)
    logits = Wav2Vec2ForPreTraining.compute_contrastive_logits(
        targets[None, :], negative_features, predicted, 0.1
    )
    neg_is_pos = (targets == negative_features).all(-1)
    logits = logits.clone()
    logits[1:][neg_is_pos] = float("-inf")
    logits = logits.transpose(0, 2).reshape(-1, logits.size(0))
    labels = ((1 - torch.tensor(mask, device=device).long()) * -100).transpose(0, 1).flatten()
    loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    loss.backward()
    # .cpu() waits for the device, so the timing covers the whole computation.
    return tuple(t.detach().cpu().numpy() for t in (loss, predicted.grad, targets.grad))


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.frames, args.dim)
    predicted = rng.standard_normal(shape, np.float32)
    targets = rng.standard_normal(shape, np.float32)
    mask = rng.random((args.batch, args.frames)) < args.mask_prob
    mask[:, :2] = True  # at least two masked frames per row
    negatives = np.asarray(
        contrastive.sample_negative_indices(jax.random.key(0), jnp.asarray(mask), args.negatives)
    )
    inputs = [jnp.asarray(x) for x in (predicted, targets, negatives, mask)]
    print(
        f"batch {args.batch} x {args.frames} frames, dim {args.dim}, {args.negatives} negatives, "
        f"{int(mask.sum())} masked frames; device {jax.devices()[0].device_kind}"
    )

    # name -> seconds, loss, gradients and (JAX) XLA's temporary bytes of the program.
    runs: dict[str, dict] = {}
    for name, logits_fn in (
        ("papt_jax", contrastive.contrastive_logits),
        ("gathered", _gathered_logits),
    ):
        compiled = _jax_program(logits_fn).lower(*inputs).compile()
        memory = compiled.memory_analysis()  # None where a backend has none
        # The first call warms up and gives the values compared below; then the timed calls.
        value, grads = jax.block_until_ready(compiled(*inputs))
        seconds = median_seconds(lambda p=compiled: jax.block_until_ready(p(*inputs)), args.repeat)
        temp_bytes = memory.temp_size_in_bytes if memory is not None else None
        runs[name] = {"seconds": seconds, "loss": float(value), "grads": grads}
        runs[name]["temp_bytes"] = temp_bytes
        temp = "n/a" if temp_bytes is None else f"{temp_bytes / MIB:8.1f} MiB"
        print(f"{name:9s} {seconds * 1e3:9.2f} ms per call   temporaries {temp}")
    if not args.no_torch:
        torch_args = (predicted, targets, negatives, mask, args.torch_device)
        value, *grads = _torch_loss_and_grads(*torch_args)  # warm-up, and the values compared
        seconds = median_seconds(lambda: _torch_loss_and_grads(*torch_args), args.repeat)
        runs["torch"] = {"seconds": seconds, "loss": float(value), "grads": grads}
        print(f"{'torch':9s} {seconds * 1e3:9.2f} ms per call")

    base = runs["papt_jax"]["seconds"]
    print(
        "same-run ratios (seconds / papt_jax's): "
        + ", ".join(f"{name} {run['seconds'] / base:.2f}" for name, run in runs.items())
    )
    if "torch" in runs:
        reference = runs["torch"]
        for name in ("papt_jax", "gathered"):
            run = runs[name]
            run["loss_relative_to_torch"] = abs(run["loss"] - reference["loss"]) / abs(
                reference["loss"]
            )
            run["gradient_max_abs_diff_to_torch"] = max(
                float(np.max(np.abs(np.asarray(g) - r)))
                for g, r in zip(run["grads"], reference["grads"], strict=True)
            )
            print(
                f"{name} vs torch: loss {run['loss_relative_to_torch']:.1e} relative; "
                f"gradients max |diff| {run['gradient_max_abs_diff_to_torch']:.1e}"
            )
    if args.json:
        record = {"arguments": vars(args), "device": jax.devices()[0].device_kind}
        record.update({n: {k: v for k, v in r.items() if k != "grads"} for n, r in runs.items()})
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
