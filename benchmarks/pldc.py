"""Benchmark: vectorized, jitted PLDC against a NumPy loop over speakers.

Run:
  /work/venv/bin/python benchmarks/pldc.py            # 1,000 train x 100 test speakers, D=1024
  /work/venv/bin/python benchmarks/pldc.py --quick    # small sizes, a few seconds

Both sides compute all three PLDC modes from utterance vectors, training labels and test
predictions. The NumPy reference loops over speakers in Python but groups utterances by one
sort beforehand (slices, not an O(speakers x utterances) mask per speaker), so it is a fair
loop, not a strawman. Compile time is reported apart from the steady-state time, which is the
median over repeats of the public `pldc.pldc` call on device-resident inputs, input checks
included. The results of both sides are compared before any time is printed.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this file

from papt_jax import pldc


def make_inputs(rng, num_train, num_test, train_utts, test_utts, dim):
    """Random utterance vectors, labels and predictions; every speaker has >= 1 utterance."""
    train_spk = np.concatenate([np.arange(num_train), rng.integers(0, num_train, train_utts)])
    train_spk = train_spk[:train_utts]
    test_spk = np.concatenate([np.arange(num_test), rng.integers(0, num_test, test_utts)])
    test_spk = test_spk[:test_utts]
    return dict(
        preds=rng.normal(4.0, 1.0, test_utts).astype(np.float32),
        test_speaker=test_spk.astype(np.int32),
        test_vecs=rng.normal(size=(test_utts, dim)).astype(np.float32),
        train_vecs=rng.normal(size=(train_utts, dim)).astype(np.float32),
        train_labels=rng.uniform(1.0, 7.0, train_utts).astype(np.float32),
        train_speaker=train_spk.astype(np.int32),
    )


def _groups(ids):
    """Row indices of each speaker 0..S-1, from one stable sort."""
    order = np.argsort(ids, kind="stable")
    bounds = np.cumsum(np.bincount(ids))[:-1]
    return np.split(order, bounds)


def numpy_loop_pldc(preds, test_speaker, test_vecs, train_vecs, train_labels, train_speaker, k):
    """All three PLDC modes, one speaker at a time."""
    train_v, train_mu, train_sd = [], [], []
    for rows in _groups(train_speaker):
        train_v.append(train_vecs[rows].mean(axis=0))
        train_mu.append(train_labels[rows].mean())
        train_sd.append(train_labels[rows].std())
    train_v = np.stack(train_v)
    train_unit = train_v / np.linalg.norm(train_v, axis=1, keepdims=True)
    train_mu, train_sd = np.asarray(train_mu), np.asarray(train_sd)

    out = {m: np.empty_like(preds) for m in pldc.MODES}
    for rows in _groups(test_speaker):
        v = test_vecs[rows].mean(axis=0)
        sims = train_unit @ (v / np.linalg.norm(v))
        nbrs = np.argpartition(-sims, k - 1)[:k]
        mu_bar, sd_bar = train_mu[nbrs].mean(), train_sd[nbrs].mean()
        y = preds[rows]
        mu, sd = y.mean(), y.std()
        scale = 1.0 if y.max() == y.min() else sd_bar / sd
        out["mu"][rows] = y - mu + mu_bar
        out["sigma"][rows] = (y - mu) * scale + mu
        out["both"][rows] = (y - mu) * scale + mu_bar
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--train-speakers", type=int, default=1000)
    parser.add_argument("--test-speakers", type=int, default=100)
    parser.add_argument("--train-utterances", type=int, default=100_000)
    parser.add_argument("--test-utterances", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.train_speakers, args.test_speakers = 100, 10
        args.train_utterances, args.test_utterances, args.dim = 5_000, 1_000, 64
        args.repeats = 3

    rng = np.random.default_rng(0)
    host = make_inputs(
        rng,
        args.train_speakers,
        args.test_speakers,
        args.train_utterances,
        args.test_utterances,
        args.dim,
    )
    print(
        f"backend={jax.default_backend()} train_speakers={args.train_speakers} "
        f"test_speakers={args.test_speakers} train_utts={args.train_utterances} "
        f"test_utts={args.test_utterances} dim={args.dim} k={args.k}"
    )
    device = {name: jax.device_put(value) for name, value in host.items()}
    jax.block_until_ready(device)

    run_jax = lambda: jax.block_until_ready(pldc.pldc(**device, k=args.k))
    start = time.perf_counter()
    got = run_jax()
    first_call = time.perf_counter() - start
    steady = median_seconds(run_jax, args.repeats)

    want = numpy_loop_pldc(**host, k=args.k)
    for mode in pldc.MODES:
        np.testing.assert_allclose(np.asarray(got[mode]), want[mode], rtol=1e-4, atol=1e-4)
    ref = median_seconds(lambda: numpy_loop_pldc(**host, k=args.k), args.repeats)

    print(f"jax first call (compile + run): {first_call * 1e3:9.1f} ms")
    print(f"jax steady state (median of {args.repeats}): {steady * 1e3:9.1f} ms")
    print(f"numpy speaker loop (median of {args.repeats}): {ref * 1e3:9.1f} ms")
    print(f"speed-up numpy loop / jax steady: {ref / steady:.1f}x")


if __name__ == "__main__":
    main()
