"""Benchmark: `--format onnx|stablehlo` at real model sizes (random weights, no run needed).

Run:
  python benchmarks/export_graphs.py --format=onnx --preset=base
  python benchmarks/export_graphs.py --format=stablehlo --preset=large

Builds the two regressors (arousal, valence) of a preset with the paper's 'last' speaker
fusion and random weights, writes them as `python -m papt_jax.export` does (conversion or
lowering, then the check against JAX on padded batches and rows alone) and prints the time,
the largest differences, the file sizes and this process's peak resident memory. Timing does
not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.export.graph import PredictorGraph
from papt_jax.models.config import get_preset
from papt_jax.models.tasks import HubertForRegression
from papt_jax.predict.assets import Regressor, RunAssets
from papt_jax.predict.profiles import Reference

SPEAKERS = 20


def random_assets(preset: str) -> RunAssets:
    config = get_preset(preset, num_speakers=SPEAKERS, speaker_fusion="last")
    model = HubertForRegression(config)
    audio, mask = jnp.zeros((1, 16_000)), jnp.ones((1, 16_000), bool)
    init = jax.jit(lambda key: model.init(key, audio, mask, jnp.zeros((1,), jnp.int32)))
    rng = np.random.default_rng(0)
    regressors, references = {}, {}
    for i, dim in enumerate(("arousal", "valence")):
        regressors[dim] = Regressor(dim, config, jax.device_get(init(jax.random.key(i))), "none")
        references[dim] = Reference(
            np.arange(SPEAKERS - 1, dtype=np.int32),
            rng.standard_normal((SPEAKERS - 1, config.hidden_size)).astype(np.float32),
            np.full(SPEAKERS - 1, 4.0, np.float32),
            np.full(SPEAKERS - 1, 1.0, np.float32),
        )
    speakers = tuple(str(i) for i in range(SPEAKERS))
    return RunAssets(None, {"name": preset}, speakers, 3, regressors, references, lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("onnx", "stablehlo"), default="onnx")
    parser.add_argument("--preset", default="base", help="models.config preset")
    args = parser.parse_args()
    graph = PredictorGraph(random_assets(args.preset))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.format == "onnx":
            from papt_jax.export import onnx_export

            files, record = onnx_export.write(graph, Path(tmp), args.preset)
        else:
            from papt_jax.export import stablehlo

            files, record = stablehlo.write(graph, Path(tmp))
        seconds = time.perf_counter() - start
        sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in Path(tmp).iterdir()}
    result = {
        "format": args.format,
        "preset": args.preset,
        "parameters": int(sum(v.size for v in graph.weights.values())),
        "write_and_check_s": round(seconds, 1),
        "max_abs_difference": record["max_abs_difference"],
        "files_mib": sizes,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
