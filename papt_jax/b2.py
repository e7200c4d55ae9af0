"""B2: unsupervised speaker-similarity sample weighting (Sridhar & Busso, IEEE TAC 2022).

As the PAPT paper describes it: PCA on ComParE functionals, a Gaussian mixture per speaker,
KL divergence between test and training speakers, and the closest training speakers (the
adaptation set) weigh more in training. It needs the test speakers' audio (not labels) before
fine-tuning, so new speakers need a new fine-tuning run. Steps and the choices made here:

1. **Features**: ComParE functionals per utterance, `opensmile.FeatureSet.ComParE_2016` at
   `FeatureLevel.Functionals` (6373 values), from the 16 kHz waveform (`compare_functionals`).
2. **Projection**: z-normalisation with the training utterances' mean and std, then PCA
   fitted on the training utterances, `pca_components` (10) components, whitened so every
   component has unit training variance and none dominates the divergence by scale alone.
3. **Speaker models**: one Gaussian mixture per speaker with diagonal covariances and
   `gmm_components` (2) components, fitted by EM (`fit_diag_gmm`; k-means++-style seeding
   from `seed`, at most `em_max_iter` iterations, stop when the mean log-likelihood gains
   less than `em_tol`). A speaker gets `min(gmm_components, n // rows_per_component)`
   components, at least 1 (`rows_per_component` = 10: a component needs data to support
   its 2d + 1 parameters). Variances are floored at `var_floor` (1e-3, in whitened units).
   Training speakers with fewer than `min_utterances` (2) utterances are not modelled and
   cannot join the adaptation set (they are counted in the result).
4. **Divergence**: KL(test speaker || training speaker) between mixtures has no closed
   form; we use the variational approximation of Hershey & Olsen (ICASSP 2007),
   deterministic and exact when both mixtures have one component
   (`kl_gmm_variational`). `kl_gmm_monte_carlo` (seeded) is there to check it.
5. **Adaptation set**: for every test speaker the `neighbours` (5) training speakers with
   the smallest divergence; the adaptation set is the union over test speakers.
6. **Weights**: every training utterance of an adaptation-set speaker gets weight
   `weight` (2.0), every other one 1, then all are divided by their mean (mean 1 over the
   training utterances). Fine-tuning uses them in a weighted 1 - CCC loss
   (`losses.weighted_ccc_loss`): every utterance is still seen once per epoch, so batches,
   epochs and resumption stay exactly as in the other systems (weighted sampling would
   change the batch plan and the epoch length). CCC is invariant to a common scale of the
   weights, so the normalisation only makes the weights readable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.special

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.errors import UserError
from papt_jax.shift_analysis import Projection, fit_projection

COMPARE_DIM = 6373


# --- 1. ComParE functionals --------------------------------------------------------------------


def _smile():
    try:
        import opensmile
    except ImportError as err:  # B2 is the only user; the rest of papt_jax runs without it.
        raise UserError(
            "B2 needs the opensmile package for ComParE features",
            hint="pip install opensmile==2.6.0",
        ) from err
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.ComParE_2016,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def compare_functionals(
    signals: Iterable[np.ndarray],
    sampling_rate: int = SAMPLE_RATE,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """ComParE 2016 functionals of each utterance.

    Args:
      signals: 1-D float waveforms in [-1, 1].
      sampling_rate: Their sampling rate in Hz.
      keys: Optional utterance keys, used in error messages.

    Returns:
      (N, 6373) float32 features, one row per signal.
    """
    smile = _smile()
    rows = []
    for i, signal in enumerate(signals):
        name = keys[i] if keys is not None else f"#{i}"
        x = np.asarray(signal, np.float32)
        if x.ndim != 1 or x.size == 0:
            raise UserError(f"utterance {name}: expected a non-empty 1-D waveform, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise UserError(f"utterance {name}: waveform contains NaN or inf")
        values = smile.process_signal(x, sampling_rate).to_numpy(np.float32).reshape(-1)
        if values.shape != (COMPARE_DIM,) or not np.all(np.isfinite(values)):
            raise UserError(
                f"utterance {name}: openSMILE returned {values.shape} features "
                f"({int(np.sum(~np.isfinite(values)))} not finite)",
                hint="very short or silent audio can do this; check the utterance",
            )
        rows.append(values)
    if not rows:
        raise UserError("no utterances to extract ComParE features from")
    return np.stack(rows)


# --- 3. Gaussian mixtures ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiagGMM:
    """A Gaussian mixture with diagonal covariances.

    Attributes:
      weights: (K,) mixture weights, summing to 1.
      means: (K, d) component means.
      variances: (K, d) component variances (> 0).
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    def log_density(self, x) -> np.ndarray:
        """(N, d) points -> (N,) log densities."""
        return scipy.special.logsumexp(_component_log_density(x, self), axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, d) draws."""
        which = rng.choice(self.weights.size, size=n, p=self.weights)
        noise = rng.standard_normal((n, self.means.shape[1]))
        return self.means[which] + noise * np.sqrt(self.variances[which])


def _component_log_density(x, gmm: DiagGMM) -> np.ndarray:
    """(N, K) log(weight_k * N(x | mean_k, var_k))."""
    x = np.asarray(x, np.float64)
    diff = x[:, None, :] - gmm.means[None]
    quad = np.sum(diff * diff / gmm.variances[None], axis=-1)
    log_norm = np.sum(np.log(2 * np.pi * gmm.variances), axis=-1)
    with np.errstate(divide="ignore"):
        return np.log(gmm.weights)[None] - 0.5 * (quad + log_norm[None])


def _seed_means(x, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next mean is a row drawn with probability ~ squared distance."""
    means = [x[rng.integers(x.shape[0])]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1), axis=1)
        if d2.sum() <= 0:
            break  # every row coincides with a mean: more components cannot differ
        means.append(x[rng.choice(x.shape[0], p=d2 / d2.sum())])
    return np.asarray(means)


def fit_diag_gmm(
    x,
    n_components: int,
    var_floor: float,
    seed: int,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> DiagGMM:
    """EM for a diagonal-covariance Gaussian mixture.

    Args:
      x: (N, d) rows, N >= 1.
      n_components: K >= 1 (fewer when the rows cannot seed K distinct means).
      var_floor: Smallest variance of any component and dimension.
      seed: Seed of the mean seeding.
      max_iter: Most EM iterations.
      tol: Stop when the mean log-likelihood gains less than this.

    Returns:
      The fitted `DiagGMM`.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"need finite (N, d) rows with N >= 1, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    means = _seed_means(x, max(1, min(n_components, x.shape[0])), rng)
    k = means.shape[0]
    gmm = DiagGMM(np.full(k, 1.0 / k), means, np.tile(np.maximum(x.var(axis=0), var_floor), (k, 1)))
    previous = -np.inf
    for _ in range(max_iter):
        joint = _component_log_density(x, gmm)
        total = scipy.special.logsumexp(joint, axis=1, keepdims=True)
        resp = np.exp(joint - total)  # (N, K)
        mean_ll = float(total.mean())
        nk = resp.sum(axis=0) + 1e-12
        means = (resp.T @ x) / nk[:, None]
        variances = (resp.T @ (x * x)) / nk[:, None] - means**2
        gmm = DiagGMM(nk / nk.sum(), means, np.maximum(variances, var_floor))
        if mean_ll - previous < tol:
            break
        previous = mean_ll
    return gmm


# --- 4. KL divergence between mixtures -----------------------------------------------------------


def _pairwise_component_kl(f_means, f_vars, g_means, g_vars) -> np.ndarray:
    """KL(f_a || g_b) for all component pairs: (..., A, d) x (..., B, d) -> (..., A, B)."""
    fm, fv = f_means[..., :, None, :], f_vars[..., :, None, :]
    gm, gv = g_means[..., None, :, :], g_vars[..., None, :, :]
    ratio = fv / gv
    return 0.5 * np.sum(ratio + (fm - gm) ** 2 / gv - 1.0 - np.log(ratio), axis=-1)


def kl_gmm_variational(f: DiagGMM, g: DiagGMM) -> float:
    """Variational approximation of KL(f || g) (Hershey & Olsen 2007).

    `sum_a pi_a log(sum_a' pi_a' exp(-KL(f_a || f_a')) / sum_b w_b exp(-KL(f_a || g_b)))`,
    exact when both mixtures have a single component.
    """
    return float(_kl_variational_batch(_stack([f]), _stack([g]))[0, 0])


def kl_gmm_monte_carlo(f: DiagGMM, g: DiagGMM, n_samples: int, seed: int) -> float:
    """Monte-Carlo estimate of KL(f || g) = E_f[log f - log g] from `n_samples` draws of f."""
    x = f.sample(n_samples, np.random.default_rng(seed))
    return float(np.mean(f.log_density(x) - g.log_density(x)))


@dataclasses.dataclass(frozen=True)
class _Stacked:
    log_weights: np.ndarray  # (S, K), -inf on padding components
    means: np.ndarray  # (S, K, d)
    variances: np.ndarray  # (S, K, d)


def _stack(gmms: Sequence[DiagGMM]) -> _Stacked:
    """Pads mixtures to a common component count (padding has weight 0)."""
    k = max(g.weights.size for g in gmms)
    d = gmms[0].means.shape[1]
    log_w = np.full((len(gmms), k), -np.inf)
    means = np.zeros((len(gmms), k, d))
    variances = np.ones((len(gmms), k, d))
    for i, g in enumerate(gmms):
        n = g.weights.size
        with np.errstate(divide="ignore"):
            log_w[i, :n] = np.log(g.weights)
        means[i, :n], variances[i, :n] = g.means, g.variances
    return _Stacked(log_w, means, variances)


def _kl_variational_batch(f: _Stacked, g: _Stacked) -> np.ndarray:
    """(Sf, Sg) variational KL(f_i || g_j) for all pairs."""
    # Self term: (Sf, A, A') -> (Sf, A)
    self_kl = _pairwise_component_kl(f.means, f.variances, f.means, f.variances)
    numer = scipy.special.logsumexp(f.log_weights[:, None, :] - self_kl, axis=-1)
    # Cross term: (Sf, 1, A, 1, d) vs (1, Sg, 1, B, d) -> (Sf, Sg, A, B) -> (Sf, Sg, A)
    cross_kl = _pairwise_component_kl(
        f.means[:, None], f.variances[:, None], g.means[None], g.variances[None]
    )
    denom = scipy.special.logsumexp(g.log_weights[None, :, None, :] - cross_kl, axis=-1)
    weights = np.exp(f.log_weights)[:, None, :]  # 0 on padding components
    terms = np.where(weights > 0, numer[:, None, :] - denom, 0.0)
    return np.sum(weights * terms, axis=-1)


def kl_matrix(test: Sequence[DiagGMM], train: Sequence[DiagGMM], chunk: int = 64) -> np.ndarray:
    """(St, Sr) variational KL(test_i || train_j), computed in chunks of test speakers."""
    g = _stack(train)
    rows = [
        _kl_variational_batch(_stack(test[i : i + chunk]), g) for i in range(0, len(test), chunk)
    ]
    return np.concatenate(rows, axis=0)


# --- 5, 6. Adaptation set and weights ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class B2Config:
    """B2's settings (see the module docstring for each choice).

    The first five have no defaults: the experiment config holds them (`b2.*`, `seed`);
    the rest are fixed choices of this implementation.
    """

    pca_components: int
    gmm_components: int
    neighbours: int
    weight: float
    seed: int
    rows_per_component: int = 10
    var_floor: float = 1e-3
    em_max_iter: int = 200
    em_tol: float = 1e-6
    min_utterances: int = 2

    def __post_init__(self):
        positive = ("pca_components", "gmm_components", "rows_per_component", "neighbours")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"b2.{name} must be >= 1, got {getattr(self, name)}")
        if not self.weight >= 1.0 or not np.isfinite(self.weight):
            raise UserError(f"b2.weight must be a finite number >= 1, got {self.weight}")
        if not self.var_floor > 0:
            raise UserError(f"b2.var_floor must be > 0, got {self.var_floor}")


@dataclasses.dataclass(frozen=True)
class B2Result:
    """What B2 decided.

    Attributes:
      train_speakers: (Sr,) training speaker ids (sorted).
      test_speakers: (St,) test speaker ids (sorted).
      modelled: (Sr,) bool, training speakers with a mixture (>= min_utterances).
      kl: (St, Sr) KL(test || train); +inf for speakers not modelled.
      neighbours: (St, n) indices into `train_speakers`, closest first.
      adaptation_speakers: Sorted ids of the union of all neighbours.
      speaker_weight: {training speaker id: weight}, mean 1 over training utterances.
      utterance_weights: (M,) weight of every training utterance, in input order.
    """

    train_speakers: np.ndarray
    test_speakers: np.ndarray
    modelled: np.ndarray
    kl: np.ndarray
    neighbours: np.ndarray
    adaptation_speakers: list
    speaker_weight: dict
    utterance_weights: np.ndarray


def _speaker_gmms(z, ids, speakers, config: B2Config) -> list[DiagGMM | None]:
    gmms = []
    for i, s in enumerate(speakers):
        rows = z[ids == s]
        if rows.shape[0] < config.min_utterances:
            gmms.append(None)
            continue
        k = max(1, min(config.gmm_components, rows.shape[0] // config.rows_per_component))
        gmms.append(
            fit_diag_gmm(
                rows, k, config.var_floor, config.seed + i, config.em_max_iter, config.em_tol
            )
        )
    return gmms


def utterance_weights(
    train_speaker_ids, adaptation_speakers, weight: float
) -> tuple[np.ndarray, dict]:
    """`weight` for adaptation-set speakers' utterances, 1 otherwise, scaled to mean 1.

    Returns:
      ((M,) utterance weights, {speaker id: weight} for every training speaker).
    """
    ids = np.asarray(train_speaker_ids).reshape(-1)
    chosen = set(adaptation_speakers)
    raw = np.array([weight if s in chosen else 1.0 for s in ids.tolist()], np.float64)
    scale = raw.mean()
    table = {s: (weight if s in chosen else 1.0) / scale for s in np.unique(ids).tolist()}
    return raw / scale, table


def b2_weights(
    train_features, train_speaker_ids, test_features, test_speaker_ids, config: B2Config
) -> B2Result:
    """Runs B2 from ComParE features (or any utterance features) to training weights.

    Args:
      train_features: (M, D) features of the training utterances.
      train_speaker_ids: (M,) their speakers.
      test_features: (N, D) features of the test utterances (no labels needed).
      test_speaker_ids: (N,) their speakers.
      config: B2 settings.

    Returns:
      A `B2Result`.
    """
    train_ids = np.asarray(train_speaker_ids).reshape(-1)
    test_ids = np.asarray(test_speaker_ids).reshape(-1)
    if np.shape(train_features)[0] != train_ids.size:
        raise UserError(
            f"{np.shape(train_features)[0]} training feature rows but {train_ids.size} speakers"
        )
    if np.shape(test_features)[0] != test_ids.size:
        raise UserError(
            f"{np.shape(test_features)[0]} test feature rows but {test_ids.size} speakers"
        )
    projection: Projection = fit_projection(
        train_features, config.pca_components, whiten=True, seed=config.seed
    )
    z_train, z_test = projection(train_features), projection(test_features)
    if not np.all(np.isfinite(z_test)):
        raise UserError("test features contain NaN or inf")
    train_speakers, test_speakers = np.unique(train_ids), np.unique(test_ids)
    train_gmms = _speaker_gmms(z_train, train_ids, train_speakers, config)
    modelled = np.array([g is not None for g in train_gmms])
    if modelled.sum() < config.neighbours:
        raise UserError(
            f"only {int(modelled.sum())} training speakers have >= {config.min_utterances} "
            f"utterances, fewer than b2.neighbours = {config.neighbours}"
        )
    test_config = dataclasses.replace(config, min_utterances=1)
    test_gmms = _speaker_gmms(z_test, test_ids, test_speakers, test_config)
    kl = np.full((test_speakers.size, train_speakers.size), np.inf)
    kl[:, modelled] = kl_matrix(test_gmms, [g for g in train_gmms if g is not None])
    if not np.all(np.isfinite(kl[:, modelled])):
        raise UserError("a B2 divergence is not finite; check the features for outliers")
    # Stable sort: ties keep the sorted speaker order, so the result is deterministic.
    neighbours = np.argsort(kl, axis=1, kind="stable")[:, : config.neighbours]
    adaptation = sorted({train_speakers[j].item() for j in neighbours.reshape(-1)})
    weights, table = utterance_weights(train_ids, adaptation, config.weight)
    return B2Result(
        train_speakers=train_speakers,
        test_speakers=test_speakers,
        modelled=modelled,
        kl=kl,
        neighbours=neighbours,
        adaptation_speakers=adaptation,
        speaker_weight=table,
        utterance_weights=weights,
    )
