"""Benchmark: an ONNX conversion with jax2onnx's own output check and with the newest-first one.

Run:
  python benchmarks/onnx_output_check.py --preset=tiny
  python benchmarks/onnx_output_check.py --preset=base --unrolled --repeat=1

Converts the two regressors of a preset (random weights, the paper's 'last' fusion; as
benchmarks/export_graphs.py builds them) to `predictor.onnx` and `head.onnx`, in turn with
jax2onnx's graph-connection check as it is and with `onnx_output_check`'s (the conversion
alone: no check against JAX), and prints both times, their ratio and whether the files are
byte-identical. `--unrolled`: the Transformer layers unrolled (`scan_layers=False`), as a
run trained with them exports them; scanned layers are one loop in the graph.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from export_graphs import random_assets

from papt_jax.export import onnx_export
from papt_jax.export.graph import PredictorGraph
from papt_jax.export.onnx_output_check import newest_first_output_check
from papt_jax.models import config as model_config


def convert(graph: PredictorGraph, newest_first: bool) -> tuple[float, bytes]:
    """Seconds of one conversion and the bytes of the files it wrote."""
    folder = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    if newest_first:
        with newest_first_output_check() as swapped:
            assert swapped, "this jax2onnx has no check to swap"
            onnx_export._convert(graph, folder, "bench")
    else:
        onnx_export._convert(graph, folder, "bench")
    seconds = time.perf_counter() - start
    return seconds, b"".join(p.read_bytes() for p in sorted(folder.iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="models.config preset")
    parser.add_argument("--unrolled", action="store_true", help="scan_layers=False")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.unrolled:
        preset = model_config.MODEL_PRESETS[args.preset]
        model_config.MODEL_PRESETS[args.preset] = preset.replace(scan_layers=False)
    onnx_export._quiet()  # jax2onnx's and onnx-ir's warnings, as the export quiets them
    graph = PredictorGraph(random_assets(args.preset))
    layers = "unrolled" if args.unrolled else "scanned"
    for i in range(args.repeat):
        plain, plain_files = convert(graph, newest_first=False)
        fast, fast_files = convert(graph, newest_first=True)
        print(
            f"{args.preset} ({layers}) repeat {i}: jax2onnx's check {plain:.2f} s, "
            f"newest first {fast:.2f} s, ratio {plain / fast:.2f}, "
            f"files identical: {plain_files == fast_files}, load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
