"""PLDC: personalized label distribution calibration, vectorized over speakers.

PLDC runs after inference and needs no labels of the test speakers. For every test speaker:

1. its speaker vector is the mean of its utterance vectors (mean-pooled encoder outputs);
2. the k training speakers with the most similar speaker vectors (cosine) are retrieved;
3. their label means and stds are averaged into a target `mu_bar`, `sigma_bar`;
4. each of its predictions `y` becomes `(y - mu) / sigma * sigma_bar + mu_bar`, where `mu` and
   `sigma` are the mean and population std of that speaker's own predictions.

Modes (`MODES`): `"mu"` shifts the mean only (`sigma_bar := sigma`, so `y - mu + mu_bar`),
`"sigma"` rescales only (`mu_bar := mu`), `"both"` does both.

Guard: when a test speaker's predictions are all identical (`sigma = 0`, which includes every
speaker with one utterance) the scale factor `sigma_bar / sigma` is replaced by 1, so their
predictions are only moved in mean (modes `"mu"` and `"both"`) or left as they are (`"sigma"`).
The test is exact (max == min within the speaker), so float round-off in `mu` cannot blow a
constant speaker up by `sigma_bar / 1e-8`.

Unseen speakers (test-c) retrieve neighbours with vectors from another encoder than the one that
made the predictions; every function here therefore takes retrieval vectors and predictions as
separate arguments.

Speaker ids given to these functions are dense indices `0 .. num_segments - 1`. Segment counts
must be static under `jax.jit`; the public functions check index ranges on concrete inputs
(outside any trace) and raise `ValueError`, because `jax.ops.segment_sum` would silently drop
out-of-range ids.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("mu", "sigma", "both")

# Cosine similarity divides by the vector norms; an all-zero vector gets similarity 0.
_NORM_EPS = 1e-12


def _check_segment_ids(ids, num_segments: int, name: str) -> None:
    """Raises ValueError when concrete `ids` fall outside [0, num_segments)."""
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {ids.dtype}")
    if num_segments < 1:
        raise ValueError(f"num_segments for {name} must be >= 1, got {num_segments}")
    if isinstance(ids, jax.core.Tracer) or ids.size == 0:
        return  # Values are unknown while tracing; shapes were checked above.
    lo, hi = int(np.min(ids)), int(np.max(ids))
    if lo < 0 or hi >= num_segments:
        raise ValueError(f"{name} must lie in [0, {num_segments}), found range [{lo}, {hi}]")


def _num_segments(ids, given: int | None, name: str) -> int:
    """Static segment count: `given`, or max(ids) + 1 for concrete ids."""
    if given is not None:
        return int(given)
    if isinstance(ids, jax.core.Tracer):
        raise ValueError(f"pass the number of segments for {name} explicitly under jax.jit")
    if np.size(ids) == 0:
        raise ValueError(f"{name} is empty")
    return int(np.max(ids)) + 1


def _segment_mean(x, segment_ids, num_segments: int):
    counts = jax.ops.segment_sum(jnp.ones(segment_ids.shape, x.dtype), segment_ids, num_segments)
    sums = jax.ops.segment_sum(x, segment_ids, num_segments)
    # Empty segments get mean 0 rather than NaN.
    counts = jnp.maximum(counts, 1.0).reshape((num_segments,) + (1,) * (x.ndim - 1))
    return sums / counts


def _segment_mean_std(values, segment_ids, num_segments: int):
    mean = _segment_mean(values, segment_ids, num_segments)
    # Centre first, then square: the one-pass E[x^2] - E[x]^2 loses digits in float32.
    centred = values - mean[segment_ids]
    var = _segment_mean(centred * centred, segment_ids, num_segments)
    return mean, jnp.sqrt(var)


def speaker_means(x, segment_ids, num_segments: int):
    """Mean vector of each segment (speaker).

    Args:
      x: (N, D) utterance vectors.
      segment_ids: (N,) int, segment of each row, in [0, num_segments).
      num_segments: S, static.

    Returns:
      (S, D) segment means; 0 for a segment with no rows.
    """
    x = jnp.asarray(x)
    segment_ids = jnp.asarray(segment_ids)
    if x.ndim != 2 or x.shape[0] != segment_ids.shape[0]:
        raise ValueError(f"x must be (N, D) with N = len(segment_ids), got {x.shape}")
    _check_segment_ids(segment_ids, num_segments, "segment_ids")
    return _speaker_means_jit(x, segment_ids, num_segments)


def label_stats(labels, segment_ids, num_segments: int):
    """Mean and population std (ddof=0) of the labels of each segment.

    Args:
      labels: (N,) float values.
      segment_ids: (N,) int, segment of each value, in [0, num_segments).
      num_segments: S, static.

    Returns:
      (mean (S,), std (S,)); both 0 for a segment with no values.
    """
    labels = jnp.asarray(labels)
    segment_ids = jnp.asarray(segment_ids)
    if labels.ndim != 1 or labels.shape != segment_ids.shape:
        raise ValueError(
            f"labels must be 1-D and match segment_ids: {labels.shape} vs {segment_ids.shape}"
        )
    _check_segment_ids(segment_ids, num_segments, "segment_ids")
    return _label_stats_jit(labels.astype(jnp.result_type(float)), segment_ids, num_segments)


def _topk_cosine(test_vecs, train_vecs, k: int):
    def unit(v):
        norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
        return v / jnp.maximum(norm, _NORM_EPS)

    sims = unit(test_vecs) @ unit(train_vecs).T
    values, indices = jax.lax.top_k(sims, k)
    return indices, values


def topk_neighbours(test_vecs, train_vecs, k: int):
    """The k training speakers most similar (cosine) to each test speaker.

    Args:
      test_vecs: (St, D) test speaker vectors.
      train_vecs: (Sr, D) training speaker vectors.
      k: neighbours per test speaker, 1 <= k <= Sr, static.

    Returns:
      (indices (St, k) int32 into train_vecs, sims (St, k)), most similar first.
    """
    test_vecs = jnp.asarray(test_vecs)
    train_vecs = jnp.asarray(train_vecs)
    if test_vecs.ndim != 2 or train_vecs.ndim != 2 or test_vecs.shape[1] != train_vecs.shape[1]:
        raise ValueError(
            f"need (St, D) and (Sr, D) vectors, got {test_vecs.shape} and {train_vecs.shape}"
        )
    if not 1 <= k <= train_vecs.shape[0]:
        raise ValueError(f"k must be in [1, {train_vecs.shape[0]}] (training speakers), got {k}")
    return _topk_jit(test_vecs, train_vecs, int(k))


def _calibrate_modes(preds, test_speaker, neighbour_idx, train_label_mean, train_label_std, modes):
    """{mode: (N,)} for each mode in `modes`, sharing the per-speaker statistics."""
    num_test = neighbour_idx.shape[0]
    mu, sigma = _segment_mean_std(preds, test_speaker, num_test)
    seg_max = jax.ops.segment_max(preds, test_speaker, num_test)
    seg_min = jax.ops.segment_min(preds, test_speaker, num_test)
    constant = seg_max == seg_min

    mu_bar = train_label_mean[neighbour_idx].mean(axis=1)
    sigma_bar = train_label_std[neighbour_idx].mean(axis=1)
    # The guard: scale 1 for constant speakers; the inner where keeps 0/0 out of the gradient.
    safe_sigma = jnp.where(constant, 1.0, sigma)
    scale = jnp.where(constant, 1.0, sigma_bar / safe_sigma)[test_speaker]
    centred = preds - mu[test_speaker]
    out = {}
    for mode in modes:
        target_mean = (mu if mode == "sigma" else mu_bar)[test_speaker]
        out[mode] = (centred if mode == "mu" else centred * scale) + target_mean
    return out


_speaker_means_jit = jax.jit(_segment_mean, static_argnames="num_segments")
_label_stats_jit = jax.jit(_segment_mean_std, static_argnames="num_segments")
_topk_jit = jax.jit(_topk_cosine, static_argnames="k")
_calibrate_jit = jax.jit(_calibrate_modes, static_argnames="modes")


@functools.partial(jax.jit, static_argnames=("k", "num_test", "num_train"))
def _pldc_jit(
    preds, test_speaker, test_vecs, train_vecs, train_labels, train_speaker, k, num_test, num_train
):
    test_speaker_vecs = _segment_mean(test_vecs, test_speaker, num_test)
    train_speaker_vecs = _segment_mean(train_vecs, train_speaker, num_train)
    mean, std = _segment_mean_std(train_labels, train_speaker, num_train)
    neighbours, _ = _topk_cosine(test_speaker_vecs, train_speaker_vecs, k)
    return _calibrate_modes(preds, test_speaker, neighbours, mean, std, MODES)


def calibrate(preds, test_speaker, neighbour_idx, train_label_mean, train_label_std, mode: str):
    """Maps each test speaker's predictions onto its neighbours' label distribution.

    Args:
      preds: (N,) predictions of the test utterances.
      test_speaker: (N,) int, test speaker index of each prediction, in [0, St).
      neighbour_idx: (St, k) int, retrieved training speakers (see `topk_neighbours`).
      train_label_mean: (Sr,) label mean of each training speaker.
      train_label_std: (Sr,) population label std of each training speaker.
      mode: one of `MODES` ("mu", "sigma", "both"), static.

    Returns:
      (N,) calibrated predictions (see the module note for the sigma = 0 guard).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    preds = jnp.asarray(preds)
    test_speaker = jnp.asarray(test_speaker)
    neighbour_idx = jnp.asarray(neighbour_idx)
    train_label_mean = jnp.asarray(train_label_mean)
    train_label_std = jnp.asarray(train_label_std)
    if preds.ndim != 1 or preds.shape != test_speaker.shape:
        raise ValueError(
            f"preds must be 1-D and match test_speaker: {preds.shape} vs {test_speaker.shape}"
        )
    if neighbour_idx.ndim != 2 or neighbour_idx.shape[1] < 1:
        raise ValueError(f"neighbour_idx must be (St, k) with k >= 1, got {neighbour_idx.shape}")
    if train_label_mean.ndim != 1 or train_label_mean.shape != train_label_std.shape:
        raise ValueError(
            "train_label_mean and train_label_std must be (Sr,) each, got "
            f"{train_label_mean.shape} and {train_label_std.shape}"
        )
    _check_segment_ids(test_speaker, neighbour_idx.shape[0], "test_speaker")
    _check_segment_ids(neighbour_idx.reshape(-1), train_label_mean.shape[0], "neighbour_idx")
    preds = preds.astype(jnp.result_type(float))
    return _calibrate_jit(
        preds, test_speaker, neighbour_idx, train_label_mean, train_label_std, (mode,)
    )[mode]


def pldc(
    preds,
    test_speaker,
    test_vecs,
    train_vecs,
    train_labels,
    train_speaker,
    k: int,
    num_test_speakers: int | None = None,
    num_train_speakers: int | None = None,
) -> dict[str, jax.Array]:
    """PLDC end to end, from utterance vectors and training labels, for every mode at once.

    Retrieval vectors are separate from the predictions so that, for unseen speakers, they can
    come from another encoder (then `train_vecs` must come from that same encoder).

    Args:
      preds: (N,) predictions of the test utterances.
      test_speaker: (N,) int, test speaker index of each test utterance, in [0, St).
      test_vecs: (N, D) retrieval vector of each test utterance.
      train_vecs: (M, D) retrieval vector of each training utterance.
      train_labels: (M,) label of each training utterance.
      train_speaker: (M,) int, training speaker index of each training utterance, in [0, Sr).
      k: neighbours per test speaker, 1 <= k <= Sr.
      num_test_speakers: St; default max(test_speaker) + 1 (must be given under jit).
      num_train_speakers: Sr; default max(train_speaker) + 1 (must be given under jit).
        A training speaker index without utterances has a zero vector (similarity 0) and label
        mean and std 0, so leave no gaps when k could reach it.

    Returns:
      {mode: (N,) calibrated predictions} for every mode in `MODES`.
    """
    preds = jnp.asarray(preds)
    test_speaker = jnp.asarray(test_speaker)
    test_vecs = jnp.asarray(test_vecs)
    train_vecs = jnp.asarray(train_vecs)
    train_labels = jnp.asarray(train_labels)
    train_speaker = jnp.asarray(train_speaker)
    num_test = _num_segments(test_speaker, num_test_speakers, "test_speaker")
    num_train = _num_segments(train_speaker, num_train_speakers, "train_speaker")
    _check_segment_ids(test_speaker, num_test, "test_speaker")
    _check_segment_ids(train_speaker, num_train, "train_speaker")
    n, m = test_speaker.shape[0], train_speaker.shape[0]
    if preds.shape != (n,) or test_vecs.ndim != 2 or test_vecs.shape[0] != n:
        raise ValueError(
            f"need preds (N,) and test_vecs (N, D) with N = {n}, got {preds.shape}, "
            f"{test_vecs.shape}"
        )
    if train_labels.shape != (m,) or train_vecs.shape != (m, test_vecs.shape[1]):
        raise ValueError(
            f"need train_labels (M,) and train_vecs (M, {test_vecs.shape[1]}) with M = {m}, "
            f"got {train_labels.shape}, {train_vecs.shape}"
        )
    if not 1 <= k <= num_train:
        raise ValueError(f"k must be in [1, {num_train}] (training speakers), got {k}")
    dtype = jnp.result_type(float)
    return _pldc_jit(
        preds.astype(dtype),
        test_speaker,
        test_vecs.astype(dtype),
        train_vecs.astype(dtype),
        train_labels.astype(dtype),
        train_speaker,
        int(k),
        num_test,
        num_train,
    )


# --- Diagnostics: how much PLDC could gain, and whether retrieval finds it -----------------


def pldc_oracle(
    preds, test_speaker, test_labels, num_test_speakers: int | None = None
) -> dict[str, jax.Array]:
    """PLDC with each test speaker's OWN label mean and std: an oracle that uses test labels.

    Not a method (a deployed system never sees these labels): it shows how much calibration
    could gain at most when retrieval were perfect. Same guard as `calibrate`.

    Args:
      preds: (N,) predictions of the test utterances.
      test_speaker: (N,) int, test speaker index of each prediction, in [0, St).
      test_labels: (N,) the test labels (the oracle's knowledge).
      num_test_speakers: St; default max(test_speaker) + 1.

    Returns:
      {mode: (N,) calibrated predictions} for every mode in `MODES`.
    """
    preds = jnp.asarray(preds)
    test_speaker = jnp.asarray(test_speaker)
    test_labels = jnp.asarray(test_labels)
    if preds.ndim != 1 or preds.shape != test_speaker.shape or preds.shape != test_labels.shape:
        raise ValueError(
            f"preds, test_speaker and test_labels must be (N,) each, got {preds.shape}, "
            f"{test_speaker.shape}, {test_labels.shape}"
        )
    num_test = _num_segments(test_speaker, num_test_speakers, "test_speaker")
    _check_segment_ids(test_speaker, num_test, "test_speaker")
    dtype = jnp.result_type(float)
    own_mean, own_std = _label_stats_jit(test_labels.astype(dtype), test_speaker, num_test)
    own = jnp.arange(num_test, dtype=jnp.int32)[:, None]
    return _calibrate_jit(preds.astype(dtype), test_speaker, own, own_mean, own_std, MODES)


def retrieved_label_stats(
    test_vecs,
    test_speaker,
    train_vecs,
    train_labels,
    train_speaker,
    k: int,
    num_test_speakers: int | None = None,
    num_train_speakers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The targets PLDC retrieves for each test speaker (as `pldc` computes them).

    Args: as `pldc` (without predictions).

    Returns:
      (mu_bar (St,), sigma_bar (St,), neighbours (St, k)) as NumPy arrays.
    """
    test_speaker = jnp.asarray(test_speaker)
    train_speaker = jnp.asarray(train_speaker)
    num_test = _num_segments(test_speaker, num_test_speakers, "test_speaker")
    num_train = _num_segments(train_speaker, num_train_speakers, "train_speaker")
    dtype = jnp.result_type(float)
    test_speaker_vecs = speaker_means(jnp.asarray(test_vecs, dtype), test_speaker, num_test)
    train_speaker_vecs = speaker_means(jnp.asarray(train_vecs, dtype), train_speaker, num_train)
    mean, std = label_stats(jnp.asarray(train_labels, dtype), train_speaker, num_train)
    neighbours, _ = topk_neighbours(test_speaker_vecs, train_speaker_vecs, k)
    mu_bar = mean[neighbours].mean(axis=1)
    sigma_bar = std[neighbours].mean(axis=1)
    return tuple(np.asarray(a) for a in (mu_bar, sigma_bar, neighbours))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def retrieval_diagnostic(
    test_labels, test_speaker, mu_bar, sigma_bar, train_labels, min_utterances: int = 2
) -> dict:
    """Does retrieval find the test speakers' label distributions? (uses test labels)

    Across test speakers with at least `min_utterances` utterances, compares the retrieved
    label mean and std with the speaker's own: Pearson r, and the mean absolute error next
    to that of the trivial guess (the whole training set's mean and std for everyone).

    Args:
      test_labels: (N,) test labels.
      test_speaker: (N,) int test speaker index in [0, St).
      mu_bar, sigma_bar: (St,) retrieved targets (`retrieved_label_stats`).
      train_labels: (M,) all training labels (for the trivial guess).
      min_utterances: Fewest utterances for a speaker to be compared.

    Returns:
      {'n': speakers compared, 'mean_r', 'std_r', 'mean_mae', 'std_mae',
       'mean_mae_global', 'std_mae_global', 'own_mean', 'own_std' (St,), 'used' (St,)}.
    """
    labels = np.asarray(test_labels, np.float64).reshape(-1)
    speaker = np.asarray(test_speaker).reshape(-1)
    mu_bar = np.asarray(mu_bar, np.float64)
    sigma_bar = np.asarray(sigma_bar, np.float64)
    train = np.asarray(train_labels, np.float64).reshape(-1)
    if labels.shape != speaker.shape or mu_bar.shape != sigma_bar.shape or mu_bar.ndim != 1:
        raise ValueError(
            f"need test_labels and test_speaker (N,) and mu_bar, sigma_bar (St,), got "
            f"{labels.shape}, {speaker.shape}, {mu_bar.shape}, {sigma_bar.shape}"
        )
    num = mu_bar.size
    _check_segment_ids(np.asarray(speaker), num, "test_speaker")
    counts = np.bincount(speaker, minlength=num)
    own_mean, own_std = (np.asarray(a) for a in _label_stats_jit(labels, speaker, num))
    used = counts >= min_utterances
    own_m, own_s, m, s = own_mean[used], own_std[used], mu_bar[used], sigma_bar[used]
    return {
        "n": int(used.sum()),
        "mean_r": _pearson(m, own_m),
        "std_r": _pearson(s, own_s),
        "mean_mae": float(np.mean(np.abs(m - own_m))) if used.any() else float("nan"),
        "std_mae": float(np.mean(np.abs(s - own_s))) if used.any() else float("nan"),
        "mean_mae_global": float(np.mean(np.abs(train.mean() - own_m)))
        if used.any()
        else float("nan"),
        "std_mae_global": float(np.mean(np.abs(train.std() - own_s)))
        if used.any()
        else float("nan"),
        "own_mean": own_mean,
        "own_std": own_std,
        "used": used,
    }
