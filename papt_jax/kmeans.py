"""k-means in JAX for HuBERT pseudo-labels: greedy k-means++ and mini-batch k-means.

The fit mirrors scikit-learn's `MiniBatchKMeans` (Sculley 2010), the estimator fairseq's
`examples/hubert/simple_kmeans/learn_kmeans.py` uses:

* k-means++ (greedy, `2 + int(ln k)` candidates per centre) on a random subset of
  `init_size` points (default `3 * batch_size`), repeated `n_init` times, each on its own
  subset; the init with the lowest inertia on one shared validation subset of `init_size`
  points wins, and only that one is fitted (scikit-learn's `MiniBatchKMeans` semantics of
  `n_init`, unlike `KMeans`, which fits every restart). All `n_init` inits run in one
  jitted computation (vmapped over their keys; the validation scores one init at a time,
  so peak memory stays at one `init_size x k` distance matrix).
* each step draws `batch_size` points with replacement, assigns them to the nearest
  centre and moves every centre to the running mean of all points it was ever assigned
  (a per-centre learning rate of 1 / count);
* `max_iter` passes over the data at most (`max_iter * n // batch_size` steps),
  stopped early when the exponentially weighted batch inertia has not improved for
  `max_no_improvement` steps, or when the squared centre shift drops to
  `tol * mean feature variance` (`tol > 0` only), both exactly as scikit-learn does.

Defaults follow fairseq's recipe, examples/hubert/simple_kmeans/learn_kmeans.py (batch
10 000, 100 passes, `max_no_improvement=100`, `tol=0`, `n_init=20`, no random reassignment
of small clusters).

The whole fit loop is one jitted `lax.while_loop`, so the data (N, D) must fit in
device memory: subsample first (fairseq fits on ~10 % of the utterances). `predict` and
`inertia` stream fixed-size chunks from host memory and scale to any N.

Distances are ||x||^2 - 2 x c^T + ||c||^2 in float32, with the product at HIGHEST
precision so GPUs/TPUs do not round it to TF32/bf16.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "KMeansResult",
    "fit_minibatch_kmeans",
    "inertia",
    "kmeans_plus_plus_init",
    "load_centroids",
    "predict",
]

PREDICT_CHUNK = 65_536
MIN_CHUNK = 256


class KMeansResult(NamedTuple):
    """Result of `fit_minibatch_kmeans`.

    Attributes:
      centroids: (k, dim) float32 centres.
      inertia: Sum of squared distances of every point to its nearest centre (full data).
      n_iter: Passes over the data, counted like scikit-learn's `n_iter_`
        (ceil(n_steps * batch_size / n)).
      n_steps: Mini-batch steps taken.
      init_inertias: (n_init,) float validation-subset inertia of every k-means++ init
        (empty when `init_centroids` were given).
      chosen_init: Index of the init that was fitted (its inertia is the lowest), -1 when
        `init_centroids` were given.
    """

    centroids: jax.Array
    inertia: float
    n_iter: int
    n_steps: int
    init_inertias: np.ndarray = np.zeros((0,))
    chosen_init: int = -1


def _sq_distances(x: jax.Array, centroids: jax.Array, c_sq: jax.Array | None = None):
    """Squared distances (n, k) from points x (n, dim) to centroids (k, dim), >= 0."""
    if c_sq is None:
        c_sq = jnp.sum(centroids * centroids, axis=-1)
    x_sq = jnp.sum(x * x, axis=-1, keepdims=True)
    cross = jnp.matmul(x, centroids.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(x_sq - 2.0 * cross + c_sq[None, :], 0.0)


def _check_data(x, k: int | None = None) -> None:
    if x.ndim != 2:
        raise ValueError(f"data must have shape (n, dim), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("data is empty")
    if k is not None and not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, n={x.shape[0]}], got {k}")


@functools.partial(jax.jit, static_argnames=("k", "n_local_trials"))
def _kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int, n_local_trials: int) -> jax.Array:
    n = x.shape[0]
    x_sq = jnp.sum(x * x, axis=-1)
    key_first, key_loop = jax.random.split(key)
    first = x[jax.random.randint(key_first, (), 0, n)]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    closest = _sq_distances(x, first[None, :])[:, 0]

    def add_centre(i, carry):
        centers, closest = carry
        cumulative = jnp.cumsum(closest)
        draws = jax.random.uniform(jax.random.fold_in(key_loop, i), (n_local_trials,))
        candidates = jnp.searchsorted(cumulative, draws * cumulative[-1], method="compare_all")
        candidates = jnp.clip(candidates, 0, n - 1)
        cand_x = x[candidates]
        # (trials, n): each candidate's distance to every point.
        dist = _sq_distances(cand_x, x, x_sq)
        new_closest = jnp.minimum(closest[None, :], dist)
        best = jnp.argmin(new_closest.sum(axis=1))
        return centers.at[i].set(cand_x[best]), new_closest[best]

    centers, _ = jax.lax.fori_loop(1, k, add_centre, (centers, closest))
    return centers


def kmeans_plus_plus_init(
    key: jax.Array, x, k: int, n_local_trials: int | None = None
) -> jax.Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, scikit-learn's variant).

    The first centre is a uniform draw; each next one is the best of `n_local_trials`
    candidates drawn with probability proportional to the squared distance to the
    nearest centre so far (best: lowest total potential).

    Args:
      key: PRNG key.
      x: (n, dim) float data (on device; use a subset for large n).
      k: Number of centres, 1 <= k <= n.
      n_local_trials: Candidates per centre; default `2 + int(ln k)`.

    Returns:
      (k, dim) float32 centres, rows of `x`.
    """
    x = jnp.asarray(x, jnp.float32)
    _check_data(x, k)
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    return _kmeans_plus_plus(key, x, k, n_local_trials)


@jax.jit
def _assign_chunk(centroids: jax.Array, x: jax.Array):
    """Nearest centre (chunk,) int32 and its squared distance (chunk,) for one chunk."""
    dist = _sq_distances(x, centroids)
    labels = jnp.argmin(dist, axis=1).astype(jnp.int32)
    return labels, jnp.take_along_axis(dist, labels[:, None], axis=1)[:, 0]


def _assign(centroids, x, chunk_size: int):
    """Streams `x` through `_assign_chunk` in fixed-size chunks (one compiled shape).

    Yields (labels, sq_dist) device arrays of each whole chunk: the distances of padded
    rows are zero, and their labels are meaningless (`predict` cuts them off).
    """
    centroids = jnp.asarray(centroids, jnp.float32)
    _check_data(x)
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"data has dim {x.shape[1]} but centroids have shape {tuple(centroids.shape)}"
        )
    n = x.shape[0]
    # Small inputs (one utterance at a time) pad to a power of two, so callers with
    # many different lengths compile a handful of shapes, not one per length.
    chunk_size = min(chunk_size, max(MIN_CHUNK, 1 << (n - 1).bit_length()))
    # Device arrays are sliced where they live; host arrays travel a chunk at a time.
    xp = jnp if isinstance(x, jax.Array) else np
    for start in range(0, n, chunk_size):
        chunk = xp.asarray(x[start : start + chunk_size], xp.float32)
        valid = chunk.shape[0]
        if valid < chunk_size:
            chunk = xp.pad(chunk, ((0, chunk_size - valid), (0, 0)))
        labels, dist = _assign_chunk(centroids, chunk)
        if valid < chunk_size:
            # Zero the padded rows' distances rather than slicing on the device: a
            # slice compiles once per distinct length. `predict` cuts the labels.
            dist = jnp.where(jnp.arange(chunk_size) < valid, dist, 0.0)
        yield labels, dist


def predict(centroids, x, chunk_size: int = PREDICT_CHUNK) -> np.ndarray:
    """Nearest-centre labels, computed chunk by chunk (scales to millions of rows).

    Args:
      centroids: (k, dim) centres.
      x: (n, dim) data: a NumPy array (stays on the host, sent a chunk at a time) or a
        jax.Array.
      chunk_size: Rows per device call.

    Returns:
      (n,) int32 NumPy labels in [0, k).
    """
    # Chunks are dispatched asynchronously and fetched together at the end.
    labels = [chunk_labels for chunk_labels, _ in _assign(centroids, x, chunk_size)]
    return np.concatenate(jax.device_get(labels))[: x.shape[0]]


def inertia(centroids, x, chunk_size: int = PREDICT_CHUNK) -> float:
    """Sum over the rows of `x` (n, dim) of the squared distance to the nearest of
    `centroids` (k, dim); float32 per chunk, float64 across chunks."""
    totals = [jnp.sum(dist) for _, dist in _assign(centroids, x, chunk_size)]
    return float(np.sum(np.asarray(jax.device_get(totals), np.float64)))


class _FitState(NamedTuple):
    centers: jax.Array  # (k, dim)
    counts: jax.Array  # (k,) points ever assigned to each centre
    step: jax.Array  # steps taken
    ewa: jax.Array  # smoothed batch inertia (per point), nan before the first
    ewa_min: jax.Array
    no_improvement: jax.Array
    done: jax.Array  # early stop triggered


def _minibatch_step(centers, counts, batch):
    """One Sculley update: returns new centres, new counts and the batch inertia."""
    k = centers.shape[0]
    dist = _sq_distances(batch, centers)
    labels = jnp.argmin(dist, axis=1)
    batch_inertia = jnp.sum(jnp.min(dist, axis=1))
    one_hot = jax.nn.one_hot(labels, k, dtype=batch.dtype)
    sums = jnp.matmul(one_hot.T, batch, precision=jax.lax.Precision.HIGHEST)
    batch_counts = one_hot.sum(axis=0)
    new_counts = counts + batch_counts
    moved = (centers * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None]
    new_centers = jnp.where(batch_counts[:, None] > 0, moved, centers)
    return new_centers, new_counts, batch_inertia


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _fit_loop(key, x, centers, batch_size: int, n_steps, max_no_improvement, tol):
    """Runs mini-batch steps until `n_steps` or an early stop; returns (centres, steps)."""
    n = x.shape[0]
    alpha = min(batch_size * 2.0 / (n + 1), 1.0)

    def cond(state: _FitState):
        return (state.step < n_steps) & ~state.done

    def body(state: _FitState):
        idx = jax.random.randint(jax.random.fold_in(key, state.step), (batch_size,), 0, n)
        centers, counts, batch_inertia = _minibatch_step(state.centers, state.counts, x[idx])
        batch_inertia = batch_inertia / batch_size
        shift = jnp.sum((centers - state.centers) ** 2)
        # scikit-learn ignores the first step: its inertia reflects only the init.
        first = state.step == 0
        ewa = jnp.where(
            jnp.isnan(state.ewa), batch_inertia, state.ewa * (1 - alpha) + batch_inertia * alpha
        )
        ewa = jnp.where(first, state.ewa, ewa)
        converged = (~first) & (tol > 0) & (shift <= tol)
        improved = jnp.isnan(state.ewa_min) | (ewa < state.ewa_min)
        no_improvement = jnp.where(improved, 0, state.no_improvement + 1)
        no_improvement = jnp.where(first | converged, state.no_improvement, no_improvement)
        ewa_min = jnp.where(improved & ~first & ~converged, ewa, state.ewa_min)
        stalled = no_improvement >= max_no_improvement
        return _FitState(
            centers, counts, state.step + 1, ewa, ewa_min, no_improvement, converged | stalled
        )

    nan = jnp.array(jnp.nan, jnp.float32)
    state = _FitState(
        centers=centers,
        counts=jnp.zeros((centers.shape[0],), jnp.float32),
        step=jnp.array(0, jnp.int32),
        ewa=nan,
        ewa_min=nan,
        no_improvement=jnp.array(0, jnp.int32),
        done=jnp.array(False),
    )
    state = jax.lax.while_loop(cond, body, state)
    return state.centers, state.step


@functools.partial(jax.jit, static_argnames=("size",))
def _random_rows(key: jax.Array, x: jax.Array, size: int) -> jax.Array:
    """`size` rows of x (n, dim) drawn uniformly with replacement, (size, dim)."""
    return x[jax.random.randint(key, (size,), 0, x.shape[0])]


def fit_minibatch_kmeans(
    key: jax.Array,
    x,
    k: int,
    batch_size: int = 10_000,
    max_iter: int = 100,
    max_no_improvement: int | None = 100,
    tol: float = 0.0,
    init_size: int | None = None,
    n_init: int = 20,
    init_centroids=None,
) -> KMeansResult:
    """Mini-batch k-means (scikit-learn's `MiniBatchKMeans` algorithm) in JAX.

    Args:
      key: PRNG key; the same key and data give the same result.
      x: (n, dim) float data; must fit in device memory.
      k: Number of clusters, 1 <= k <= n.
      batch_size: Points per step (drawn with replacement).
      max_iter: Most passes over the data.
      max_no_improvement: Stop after this many steps without a new minimum of the
        smoothed batch inertia; None disables it.
      tol: Stop when the squared centre shift of a step is at most `tol` times the mean
        per-feature variance of `x`; 0 disables it.
      init_size: Points the k-means++ init sees (default `3 * batch_size`, at least
        `3 * k`, at most n).
      n_init: k-means++ inits to try (fairseq: 20), all in one jitted computation; the
        lowest inertia on a random validation subset of `init_size` points wins.
      init_centroids: Optional (k, dim) starting centres (e.g. `load_centroids(path)`),
        which skips k-means++.

    Returns:
      `KMeansResult` with the (k, dim) centroids and the full-data inertia.
    """
    x = jnp.asarray(x, jnp.float32)
    _check_data(x, k)
    n, dim = x.shape
    if batch_size < 1 or max_iter < 1 or n_init < 1:
        raise ValueError(
            f"batch_size, max_iter and n_init must be >= 1, got {batch_size}, {max_iter}, {n_init}"
        )
    batch_size = min(batch_size, n)
    if init_size is None:
        init_size = max(3 * batch_size, 3 * k)
    init_size = max(min(init_size, n), k)
    key_valid, key_init, key_fit = jax.random.split(key, 3)

    init_inertias, chosen = np.zeros((0,)), -1
    if init_centroids is not None:
        centers = _checked_centroids(np.asarray(init_centroids), k, dim, "init_centroids")
        centers = jnp.asarray(centers, jnp.float32)
    else:
        centers, scores, best = _best_init(key_valid, key_init, x, k, init_size, n_init)
        init_inertias, chosen = np.asarray(scores, np.float64), int(best)

    n_steps = max((max_iter * n) // batch_size, 1)
    patience = n_steps + 1 if max_no_improvement is None else max_no_improvement
    scaled_tol = tol * float(jnp.mean(jnp.var(x, axis=0))) if tol > 0 else 0.0
    centers, steps = _fit_loop(key_fit, x, centers, batch_size, n_steps, patience, scaled_tol)
    steps = int(steps)
    return KMeansResult(
        centroids=centers,
        inertia=inertia(centers, x),
        n_iter=math.ceil(steps * batch_size / n),
        n_steps=steps,
        init_inertias=init_inertias,
        chosen_init=chosen,
    )


@functools.partial(jax.jit, static_argnames=("k", "init_size", "n_local_trials"))
def _init_candidates(keys, x, valid, k: int, init_size: int, n_local_trials: int):
    """k-means++ inits for every key at once.

    Args:
      keys: (n_init,) PRNG keys, one per init (its row subset and its seeding).
      x: (n, dim) data.
      valid: (m, dim) validation rows shared by all inits.

    Returns:
      ((n_init, k, dim) centres, (n_init,) float32 validation inertias).
    """

    def seed(key):
        key_rows, key_pp = jax.random.split(key)
        return _kmeans_plus_plus(key_pp, _random_rows(key_rows, x, init_size), k, n_local_trials)

    centers = jax.vmap(seed)(keys)
    # One init's (m, k) distances at a time: vmapping this too would hold n_init of them.
    scores = jax.lax.map(lambda c: jnp.sum(jnp.min(_sq_distances(valid, c), axis=1)), centers)
    return centers, scores


def _best_init(key_valid, key_init, x, k: int, init_size: int, n_init: int):
    """The lowest-validation-inertia of `n_init` k-means++ inits.

    Returns:
      ((k, dim) centres, (n_init,) validation inertias, index of the chosen init).
    """
    valid = _random_rows(key_valid, x, init_size)
    keys = jax.vmap(lambda i: jax.random.fold_in(key_init, i))(jnp.arange(n_init))
    centers, scores = _init_candidates(keys, x, valid, k, init_size, 2 + int(math.log(k)))
    best = int(jnp.argmin(scores))
    return centers[best], scores, best


def _checked_centroids(centroids: np.ndarray, k: int | None, dim: int | None, what: str):
    if centroids.ndim != 2:
        raise ValueError(f"{what} must have shape (k, dim), got {centroids.shape}")
    if k is not None and centroids.shape[0] != k:
        raise ValueError(f"{what} has {centroids.shape[0]} centres, expected k={k}")
    if dim is not None and centroids.shape[1] != dim:
        raise ValueError(f"{what} has dim {centroids.shape[1]}, expected {dim}")
    if not np.issubdtype(centroids.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {centroids.dtype}")
    if not np.all(np.isfinite(centroids)):
        raise ValueError(f"{what} contains NaN or inf")
    return centroids


def load_centroids(
    path: str | os.PathLike, k: int | None = None, dim: int | None = None
) -> np.ndarray:
    """Loads precomputed centroids from a `.npy` file.

    Args:
      path: A `.npy` holding a (k, dim) float array (e.g. fairseq-compatible centres
        exported from scikit-learn's `cluster_centers_`).
      k: Expected number of centres, or None to accept any.
      dim: Expected feature dimension, or None to accept any.

    Returns:
      (k, dim) float32 NumPy array.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file is not a finite float (k, dim) array of the expected shape.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"centroids file not found: {path}")
    try:
        centroids = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a plain .npy array: {err}") from err
    what = f"centroids in {path}"
    return _checked_centroids(centroids, k, dim, what).astype(np.float32)
