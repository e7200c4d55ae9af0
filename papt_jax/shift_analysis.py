"""Per-speaker feature and label shift (paper §3, "Performance variance across speakers").

For every test speaker the paper measures the KL divergence of its feature distribution and
of its label distribution from the whole training set's, and correlates both with the
speaker's CCC. It does not say which features or which density estimate; the choices here:

* **Features**: the mean-pooled encoder representation of each utterance (the model being
  evaluated), z-normalised with the training set's per-dimension mean and std, projected on
  the training set's first `n_components` principal components (default 8) and whitened, so
  the training distribution has mean 0 and identity covariance in that space.
* **Density**: one Gaussian per distribution with a diagonal covariance (in the PCA basis the
  training covariance is exactly diagonal; a speaker's few utterances cannot support a full
  one). Variances are maximum-likelihood estimates (ddof=0), floored at `var_floor` times the
  training variance so that a speaker with near-identical utterances has a finite KL.
* **Labels**: a 1-D Gaussian (mean, ML variance with the same floor) per distribution.
* **Direction**: KL(speaker || training set), in nats: how unlikely the speaker's data are
  under the training distribution.
* Speakers with fewer than `min_utterances` utterances (default 2) get no KL, and speakers
  without a valid CCC (see `metrics.per_speaker_ccc`) stay out of the correlations; both are
  counted in the result, never dropped silently.

The closed forms: for diagonal Gaussians p = N(m_p, diag v_p), q = N(m_q, diag v_q),
`KL(p || q) = 1/2 sum_i [v_p/v_q + (m_p - m_q)^2 / v_q - 1 + log(v_q / v_p)]`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats

from papt_jax.errors import UserError
from papt_jax.metrics import per_speaker_ccc

DEFAULT_COMPONENTS = 8
DEFAULT_VAR_FLOOR = 1e-3


def kl_diag_gaussians(mean_p, var_p, mean_q, var_q) -> np.ndarray:
    """KL(p || q) of diagonal Gaussians, broadcasting over leading axes.

    Args:
      mean_p, var_p: (..., d) mean and variances of p (variances > 0).
      mean_q, var_q: (..., d) mean and variances of q (variances > 0).

    Returns:
      (...) float64 KL divergences in nats.
    """
    mean_p, var_p, mean_q, var_q = (
        np.asarray(a, np.float64) for a in (mean_p, var_p, mean_q, var_q)
    )
    if np.any(var_p <= 0) or np.any(var_q <= 0):
        raise ValueError("Gaussian variances must be positive")
    ratio = var_p / var_q
    return 0.5 * np.sum(ratio + (mean_p - mean_q) ** 2 / var_q - 1.0 - np.log(ratio), axis=-1)


@dataclasses.dataclass(frozen=True)
class Projection:
    """z-normalisation followed by PCA, fitted on training rows.

    Attributes:
      mean: (D,) training mean.
      scale: (D,) training std (1 where a feature is constant, so it maps to 0).
      components: (d, D) principal axes of the z-normalised training rows, largest first.
      explained_variance: (d,) training variance along each axis.
      whiten: Whether outputs are divided by sqrt(explained_variance).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    whiten: bool

    def __call__(self, x) -> np.ndarray:
        """(N, D) rows -> (N, d) projected rows (float64)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected (N, {self.mean.shape[0]}) rows, got {x.shape}")
        y = ((x - self.mean) / self.scale) @ self.components.T
        return y / np.sqrt(self.explained_variance) if self.whiten else y


# Above this many matrix entries PCA uses a randomized SVD (ComParE: 6373 features times tens
# of thousands of utterances would need gigabytes and minutes for an exact one).
EXACT_SVD_MAX_ENTRIES = 20_000_000
_CHUNK_ROWS = 4096


def _normalised_chunks(x, mean, scale):
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        yield start, (np.asarray(x[start : start + _CHUNK_ROWS], np.float64) - mean) / scale


def _randomized_top_axes(x, mean, scale, n_components: int, seed: int):
    """Top right singular vectors and values of the z-normalised rows, without forming them.

    Halko, Martinsson & Tropp (2011): a Gaussian sketch with 10 extra columns and 4 power
    iterations (re-orthonormalised), then an exact SVD of the small projected matrix. The
    z-normalised matrix is applied chunk by chunk, so memory stays O(N q + D q).
    """
    n, dim = x.shape
    q = min(n_components + 10, n, dim)
    rng = np.random.default_rng(seed)

    def times(m):  # Z @ m, (N, q)
        out = np.empty((n, m.shape[1]))
        for start, z in _normalised_chunks(x, mean, scale):
            out[start : start + z.shape[0]] = z @ m
        return out

    def transposed_times(y):  # Z^T @ y, (D, q)
        out = np.zeros((dim, y.shape[1]))
        for start, z in _normalised_chunks(x, mean, scale):
            out += z.T @ y[start : start + z.shape[0]]
        return out

    basis, _ = np.linalg.qr(times(rng.standard_normal((dim, q))))
    for _ in range(4):
        side, _ = np.linalg.qr(transposed_times(basis))
        basis, _ = np.linalg.qr(times(side))
    _, singular, vt = np.linalg.svd(transposed_times(basis).T, full_matrices=False)
    return singular[:n_components], vt[:n_components]


def fit_projection(x_train, n_components: int, whiten: bool, seed: int = 0) -> Projection:
    """Fits z-normalisation + PCA on training rows.

    Args:
      x_train: (N, D) finite training rows, N >= 2.
      n_components: d, 1 <= d <= min(N - 1, D).
      whiten: Scale each component to unit training variance.
      seed: Seed of the randomized SVD used for matrices above `EXACT_SVD_MAX_ENTRIES`
        entries (exact SVD below).

    Returns:
      The fitted `Projection`.
    """
    x = np.asarray(x_train)
    if x.ndim != 2 or x.shape[0] < 2:
        raise UserError(f"need at least 2 training rows of shape (N, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError("training features contain NaN or inf")
    n, dim = x.shape
    if not 1 <= n_components <= min(n - 1, dim):
        raise UserError(
            f"n_components must be in [1, {min(n - 1, dim)}] for {n} training rows of "
            f"{dim} features, got {n_components}"
        )
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    if n * dim > EXACT_SVD_MAX_ENTRIES:
        singular, axes = _randomized_top_axes(x, mean, scale, n_components, seed)
    else:
        z = (x.astype(np.float64) - mean) / scale
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        singular, axes = singular[:n_components], vt[:n_components]
    variance = singular**2 / n
    if np.any(variance <= 1e-12 * dim):
        raise UserError(
            f"the training features span fewer than {n_components} dimensions; lower n_components"
        )
    return Projection(mean, scale, axes, variance, whiten)


def diag_gaussian(x, var_floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ML mean and diagonal variances (ddof=0) of rows x (N, d), variances >= var_floor."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=0), np.maximum(x.var(axis=0), var_floor)


@dataclasses.dataclass(frozen=True)
class SpeakerShift:
    """Per-test-speaker shift and performance, speakers sorted (`np.unique` order).

    Attributes:
      speakers: (S,) speaker ids.
      counts: (S,) utterances per speaker.
      feature_kl: (S,) KL(speaker || train) of the projected features; NaN for speakers
        with fewer than `min_utterances` utterances.
      label_kl: (S,) the same for labels.
      ccc: (S,) the speaker's CCC (NaN where `metrics.per_speaker_ccc` excludes it).
      used: (S,) bool, the speaker enters the correlations.
      correlations: {'feature_kl_vs_ccc', 'label_kl_vs_ccc', 'feature_kl_vs_label_kl'} ->
        {'r': Pearson r, 'p': two-sided p-value, 'n': speakers used}.
    """

    speakers: np.ndarray
    counts: np.ndarray
    feature_kl: np.ndarray
    label_kl: np.ndarray
    ccc: np.ndarray
    used: np.ndarray
    correlations: dict


def _pearson(a, b) -> dict:
    n = int(a.size)
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"r": float("nan"), "p": float("nan"), "n": n}
    r, p = scipy.stats.pearsonr(a, b)
    return {"r": float(r), "p": float(p), "n": n}


def speaker_shift(
    train_features,
    train_labels,
    test_features,
    test_labels,
    test_predictions,
    test_speakers,
    n_components: int = DEFAULT_COMPONENTS,
    var_floor: float = DEFAULT_VAR_FLOOR,
    min_utterances: int = 2,
) -> SpeakerShift:
    """Feature and label shift of every test speaker, and their correlation with CCC.

    Args:
      train_features: (M, D) utterance representations of the training set.
      train_labels: (M,) training labels of the dimension analysed.
      test_features: (N, D) utterance representations of the test set.
      test_labels: (N,) test labels.
      test_predictions: (N,) the model's predictions (for per-speaker CCC).
      test_speakers: (N,) speaker id of each test utterance.
      n_components: PCA dimensions of the feature space.
      var_floor: Variance floor as a share of the training variance.
      min_utterances: Fewest utterances for a speaker to get a KL.

    Returns:
      A `SpeakerShift`.
    """
    train_labels = np.asarray(train_labels, np.float64).reshape(-1)
    test_labels = np.asarray(test_labels, np.float64).reshape(-1)
    speakers_of = np.asarray(test_speakers).reshape(-1)
    test_x = np.asarray(test_features, np.float64)
    if train_labels.shape[0] != np.shape(train_features)[0]:
        raise UserError(
            f"{np.shape(train_features)[0]} training feature rows but "
            f"{train_labels.shape[0]} training labels"
        )
    if not (test_x.shape[:1] == test_labels.shape == speakers_of.shape):
        raise UserError(
            f"test features {test_x.shape}, labels {test_labels.shape} and speakers "
            f"{speakers_of.shape} must have one row per utterance"
        )
    if not (np.all(np.isfinite(train_labels)) and np.all(np.isfinite(test_labels))):
        raise UserError("labels contain NaN or inf")
    projection = fit_projection(train_features, n_components, whiten=True)
    train_z = projection(train_features)
    test_z = projection(test_x)
    if not np.all(np.isfinite(test_z)):
        raise UserError("test features contain NaN or inf")
    train_mean, train_var = diag_gaussian(train_z, np.zeros(n_components))
    label_mean, label_var = train_labels.mean(), train_labels.var()
    if label_var <= 0:
        raise UserError("training labels are constant: label KL is undefined")

    per = per_speaker_ccc(test_predictions, test_labels, speakers_of)
    seg = np.searchsorted(per.speakers, speakers_of)
    num = per.speakers.size
    feature_kl = np.full(num, np.nan)
    label_kl = np.full(num, np.nan)
    for s in range(num):
        rows = seg == s
        if rows.sum() < min_utterances:
            continue
        mean, var = diag_gaussian(test_z[rows], var_floor * train_var)
        feature_kl[s] = kl_diag_gaussians(mean, var, train_mean, train_var)
        lm, lv = diag_gaussian(test_labels[rows][:, None], np.array([var_floor * label_var]))
        label_kl[s] = kl_diag_gaussians(lm, lv, [label_mean], [label_var])
    used = per.valid & np.isfinite(feature_kl)
    correlations = {
        "feature_kl_vs_ccc": _pearson(feature_kl[used], per.ccc[used]),
        "label_kl_vs_ccc": _pearson(label_kl[used], per.ccc[used]),
        "feature_kl_vs_label_kl": _pearson(feature_kl[used], label_kl[used]),
    }
    return SpeakerShift(
        speakers=per.speakers,
        counts=per.counts,
        feature_kl=feature_kl,
        label_kl=label_kl,
        ccc=per.ccc,
        used=used,
        correlations=correlations,
    )
