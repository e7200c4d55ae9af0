"""Times papt_jax's mini-batch k-means against scikit-learn's MiniBatchKMeans.

Both fit the same Gaussian-mixture data with the same settings (fairseq's recipe:
k-means++ init on 3 * batch_size points, batch 10 000, at most 100 passes, stop after
100 steps without improvement, no random reassignment, one init), then label every
point. The JAX fit is timed twice: the first call includes compilation, the second
(another seed, same shapes) is the steady state; "compile" is their difference.
Inertia is the full-data sum of squared distances, scored the same way for both.

    python benchmarks/kmeans.py            # 200k x 39, k = 100 and 500
    python benchmarks/kmeans.py --quick    # 50k x 39, k = 100, 20 passes
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from sklearn.cluster import MiniBatchKMeans

from papt_jax.kmeans import fit_minibatch_kmeans, inertia, predict


def _mixture(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (clusters, dim))
    widths = rng.uniform(0.5, 1.5, clusters)
    labels = rng.integers(0, clusters, n)
    return (means[labels] + rng.standard_normal((n, dim)) * widths[labels, None]).astype(np.float32)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _bench_jax(x: np.ndarray, k: int, settings: dict) -> dict:
    fit = lambda seed: fit_minibatch_kmeans(jax.random.key(seed), x, k, **settings)
    _, first = _timed(lambda: fit(0))  # inertia is a Python float: the call has finished
    result, steady = _timed(lambda: fit(1))
    labels, predict_s = _timed(lambda: predict(result.centroids, x))
    _, predict_steady = _timed(lambda: predict(result.centroids, x))
    assert labels.shape == (x.shape[0],)
    return {
        "fit_s": steady,
        "compile_s": max(first - steady, 0.0),
        "predict_s": predict_steady,
        "predict_first_s": predict_s,
        "steps": result.n_steps,
        "inertia": result.inertia,
    }


def _bench_sklearn(x: np.ndarray, k: int, settings: dict) -> dict:
    model = MiniBatchKMeans(
        k,
        random_state=1,
        n_init=settings["n_init"],
        reassignment_ratio=0.0,
        batch_size=settings["batch_size"],
        max_iter=settings["max_iter"],
        max_no_improvement=settings["max_no_improvement"],
        tol=settings["tol"],
    )
    _, fit_s = _timed(lambda: model.fit(x))
    labels, predict_s = _timed(lambda: model.predict(x))
    assert labels.shape == (x.shape[0],)
    return {
        "fit_s": fit_s,
        "compile_s": 0.0,
        "predict_s": predict_s,
        "steps": model.n_steps_,
        "inertia": inertia(model.cluster_centers_, x),
    }


def _print_table(rows: list[tuple[int, dict, dict]]) -> None:
    header = (
        f"{'k':>5} {'impl':>8} {'fit s':>8} {'ms/step':>8} {'compile s':>10} {'predict s':>10} "
        f"{'steps':>6} {'inertia':>14} {'inertia ratio':>14} {'fit speedup':>12}"
    )
    print(header)
    print("-" * len(header))
    for k, ours, theirs in rows:
        for name, r in (("jax", ours), ("sklearn", theirs)):
            ratio = r["inertia"] / theirs["inertia"]
            speedup = theirs["fit_s"] / r["fit_s"]
            print(
                f"{k:>5} {name:>8} {r['fit_s']:>8.2f} {1e3 * r['fit_s'] / r['steps']:>8.2f} "
                f"{r['compile_s']:>10.2f} {r['predict_s']:>10.3f} {r['steps']:>6d} "
                f"{r['inertia']:>14.1f} {ratio:>14.4f} {speedup:>12.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast run")
    parser.add_argument("--n", type=int, default=None, help="points (default 200k)")
    parser.add_argument("--dim", type=int, default=39)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="cluster counts")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--max-iter", type=int, default=None, help="passes (default 100)")
    parser.add_argument("--max-no-improvement", type=int, default=100)
    parser.add_argument("--n-init", type=int, default=20, help="k-means++ inits (fairseq: 20)")
    args = parser.parse_args()

    n = args.n or (50_000 if args.quick else 200_000)
    ks = args.ks or ([100] if args.quick else [100, 500])
    max_iter = args.max_iter or (20 if args.quick else 100)
    settings = dict(
        batch_size=args.batch_size,
        max_iter=max_iter,
        max_no_improvement=args.max_no_improvement,
        tol=0.0,
        n_init=args.n_init,
    )
    x = _mixture(n, args.dim, clusters=max(ks), seed=0)
    print(f"data {x.shape} float32, JAX device: {jax.devices()[0]}, settings {settings}")
    rows = [(k, _bench_jax(x, k, settings), _bench_sklearn(x, k, settings)) for k in ks]
    _print_table(rows)
    print(
        "fit s: steady-state JAX fit (init + steps + final inertia); compile s: first call "
        "minus steady state.\ninertia ratio: over sklearn's (< 1 is better); fit speedup: "
        "sklearn fit time over this row's."
    )


if __name__ == "__main__":
    main()
