"""Benchmark: the converter's copy of transposed dense weights against NumPy's own copy.

Run:
  python benchmarks/convert_copy.py            # one large model's dense weights (24 layers)
  python benchmarks/convert_copy.py --layers 2 # a few seconds

Both sides turn the transposed view of every dense weight of a large encoder (per layer:
four 1024x1024 attention projections and the 1024x4096 and 4096x1024 feed-forward layers,
PyTorch's (out, in) layout read as Flax's (in, out)) into a C-contiguous float32 array:
`np.ascontiguousarray` against `papt_jax.convert.mapping.contiguous`, which the converter
uses. The results are compared before any time is printed. Times are the median of
`--repeats` passes over all the weights, into memory already touched once (the first pass
of each side is a warm-up), so they measure the copy and not the page faults of fresh memory.
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this file

from papt_jax.convert.mapping import contiguous

LARGE_LAYER = [(1024, 1024)] * 4 + [(4096, 1024), (1024, 4096)]  # torch (out, in) shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.layers < 1 or args.repeats < 1:
        parser.error(f"--layers and --repeats must be >= 1, got {args.layers} and {args.repeats}")
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s, np.float32) for s in LARGE_LAYER * args.layers]
    views = [w.T for w in weights]
    for ours, numpy_copy in zip(
        (contiguous(v, np.float32) for v in views), map(np.ascontiguousarray, views), strict=True
    ):
        assert ours.flags.c_contiguous and np.array_equal(ours, numpy_copy)
    gigabytes = sum(w.nbytes for w in weights) / 1e9

    def numpy_pass():
        return [np.ascontiguousarray(v, np.float32) for v in views]

    def converter_pass():
        return [contiguous(v, np.float32) for v in views]

    numpy_pass(), converter_pass()  # warm-up: the allocator now has the memory
    numpy_s = median_seconds(numpy_pass, args.repeats)
    ours_s = median_seconds(converter_pass, args.repeats)
    print(f"{len(weights)} dense weights, {gigabytes:.2f} GB float32, median of {args.repeats}")
    print(f"np.ascontiguousarray    {numpy_s:7.3f} s  {gigabytes / numpy_s:5.2f} GB/s")
    print(f"mapping.contiguous      {ours_s:7.3f} s  {gigabytes / ours_s:5.2f} GB/s")
    print(f"speed-up                {numpy_s / ours_s:7.2f}x")


if __name__ == "__main__":
    main()
