"""Benchmark: the train steps of `benchmarks/encoder.py` under XLA CPU flag variants.

Run:
  python benchmarks/xla_flags.py                          # base, B=4 x 4 s, every variant
  python benchmarks/xla_flags.py --variants default,onednn --steps 5

Each variant runs `benchmarks/encoder.py` in a fresh process (XLA reads `XLA_FLAGS` once, when
the backend starts) with the PyTorch reference interleaved step by step in the same process,
so every row has its own same-run PyTorch/JAX ratio. Compare variants by that ratio: on a
shared 2-core VM the JAX step time alone drifts by several percent between identical runs.

The variants are the XLA CPU backend's own switches for the work the profile in
BENCHMARKS.md points at (matrix products and the fusions around them):

- `default`: no flags (XLA's YNNPACK fusions for dots and convolutions).
- `no_ynn`: `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusions: XLA's own dot
  emitters).
- `onednn`: oneDNN matrix products as custom calls (PyTorch's CPU matmuls are oneDNN/MKL).
- `concurrency_scheduler`: XLA's concurrency-optimised HLO scheduler.
- `no_fusion_emitters`: XLA's older loop-fusion emitters instead of the MLIR ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "default": "",
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
}
ENCODER = Path(__file__).with_name("encoder.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--model", choices=("base", "large", "small"), default="base")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--parts", default="finetune,pretrain")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {sorted(VARIANTS)}")
    args.variants = names
    return args


def run_variant(name: str, args: argparse.Namespace, out_dir: str) -> list[dict]:
    """Runs encoder.py under the variant's XLA_FLAGS; returns its result rows."""
    out = os.path.join(out_dir, f"{name}.json")
    env = dict(os.environ)
    # XLA reads a blank XLA_FLAGS as a file name and aborts: set it only when non-empty.
    flags = f"{env.pop('XLA_FLAGS', '')} {VARIANTS[name]}".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    command = [
        sys.executable,
        str(ENCODER),
        f"--model={args.model}",
        f"--batch={args.batch}",
        f"--seconds={args.seconds}",
        f"--steps={args.steps}",
        f"--parts={args.parts}",
        f"--json={out}",
    ]
    print(f"[{name}] XLA_FLAGS={VARIANTS[name] or '(none)'}", flush=True)
    done = subprocess.run(command, env=env)
    if done.returncode:
        # encoder.py has printed its own error above; pass its exit code on, no traceback.
        print(
            f"xla_flags.py: variant {name!r}: encoder.py exited with {done.returncode}",
            file=sys.stderr,
        )
        sys.exit(done.returncode)
    with open(out) as f:
        return json.load(f)["rows"]


def main(argv=None) -> dict[str, list[dict]]:
    args = parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.variants:
            results[name] = run_variant(name, args, out_dir)
    print(
        f"\nmodel={args.model} batch={args.batch} seconds={args.seconds} steps={args.steps}\n"
        "| variant | workload | JAX compile+first (s) | JAX ms/step | PyTorch ms/step "
        "| PyTorch/JAX |\n|---|---|---:|---:|---:|---:|"
    )
    for name, rows in results.items():
        for r in rows:
            print(
                f"| {name} | {r['part']} | {r['jax_first_s']:.1f} | {r['jax_ms']:.0f} | "
                f"{r['torch_ms']:.0f} | {r['torch_over_jax']:.2f}x |"
            )
    return results


if __name__ == "__main__":
    main()
