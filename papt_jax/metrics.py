"""Concordance correlation coefficient (CCC) and its per-speaker aggregates.

CCC uses population (biased) variances, as audmetric's `concordance_cc` does:
`2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`.
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np

logger = logging.getLogger(__name__)


def ccc(predictions, labels) -> float:
    """CCC of two 1-D sequences (numpy or jax arrays).

    Undefined cases give NaN, never a number that looks like a score: NaN or inf in either
    input, or a single sample. When either input is constant (exact check) the CCC is 0,
    which is what the formula gives there (zero covariance); round-off in the means cannot
    turn it into a tiny non-zero value. Both constant and equal (the formula's 0/0) is also
    0: a constant prediction earns no credit.

    Raises:
      ValueError: for inputs of different lengths or empty inputs.
    """
    x = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise ValueError("CCC of empty arrays is undefined")
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if x.max() == x.min() or y.max() == y.min():
        return 0.0
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2.0 * cov / (x.var() + y.var() + (mx - my) ** 2))


def ccc_jnp(predictions: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray | None = None):
    """Differentiable CCC over a batch, optionally over rows with weight 1 only.

    Args:
      predictions: (batch,) float.
      labels: (batch,) float.
      weights: optional (batch,) 0/1 mask of real rows (padding rows get 0).

    Returns:
      () float32 CCC.
    """
    x = predictions.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    w = jnp.ones_like(x) if weights is None else weights.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    mx, my = (w * x).sum() / n, (w * y).sum() / n
    vx = (w * (x - mx) ** 2).sum() / n
    vy = (w * (y - my) ** 2).sum() / n
    cov = (w * (x - mx) * (y - my)).sum() / n
    return 2.0 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)


# --- Per-speaker aggregates -------------------------------------------------------------------
#
# A-CCC averages every speaker with at least 2 utterances, as the paper averages every test
# speaker. A speaker whose predictions are all identical counts as CCC 0 (the formula's value:
# its covariance is 0), and so does one whose labels are all identical; when both are constant
# the formula is 0/0 only if they are equal, and that speaker counts as 0 too (a constant
# prediction earns no credit). "Identical" is an exact check (max == min within the speaker), so
# float round-off in a mean can never turn a constant speaker into a tiny non-zero score. How
# many speakers were constant is counted and reported. A speaker with one utterance has no CCC
# (NaN) and is left out of A-CCC, counted as excluded.
MIN_UTTERANCES = 2


@dataclasses.dataclass(frozen=True)
class PerSpeakerCCC:
    """Per-speaker CCCs, one entry per distinct speaker, speakers sorted.

    Attributes:
      speakers: (S,) the distinct speaker ids, sorted (`np.unique` order).
      counts: (S,) int, utterances per speaker.
      ccc: (S,) float64, the speaker's CCC; NaN where the speaker is excluded.
      valid: (S,) bool, True where the speaker takes part in A-CCC.
      few_utterances: (S,) bool, excluded because it has fewer than 2 utterances.
      constant_labels: (S,) bool, all its labels identical (CCC 0, taking part).
      constant_predictions: (S,) bool, all its predictions identical (CCC 0, taking part).
    """

    speakers: np.ndarray
    counts: np.ndarray
    ccc: np.ndarray
    valid: np.ndarray
    few_utterances: np.ndarray
    constant_labels: np.ndarray
    constant_predictions: np.ndarray

    def as_dict(self) -> dict:
        """{speaker: ccc} for the valid speakers only."""
        return {
            s.item(): float(c)
            for s, c in zip(self.speakers, self.ccc, strict=True)
            if not np.isnan(c)
        }


def _as_pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise ValueError("CCC of empty arrays is undefined")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions and labels must be finite (found NaN or inf)")
    return x, y


def overall_ccc(predictions, labels) -> float:
    """O-CCC: one CCC over all utterances pooled, whoever the speaker.

    Args:
      predictions: (N,) model outputs.
      labels: (N,) ground truth.

    Returns:
      The pooled CCC, as `ccc` (0.0 when either input is constant; NaN for one utterance).
    """
    x, y = _as_pair(predictions, labels)
    return ccc(x, y)


def _segment_is_constant(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(S,) bool: whether every value within each segment is identical (exact)."""
    sorted_values = values[order]
    return np.maximum.reduceat(sorted_values, starts) == np.minimum.reduceat(sorted_values, starts)


def per_speaker_ccc(predictions, labels, speaker_ids) -> PerSpeakerCCC:
    """CCC of each speaker's utterances, all speakers at once with segment sums.

    Args:
      predictions: (N,) model outputs.
      labels: (N,) ground truth.
      speaker_ids: (N,) speaker of each utterance (ints or strings; any sortable ids).

    Returns:
      A `PerSpeakerCCC`; excluded speakers (see the note above) have NaN CCC.
    """
    x, y = _as_pair(predictions, labels)
    ids = np.asarray(speaker_ids).reshape(-1)
    if ids.shape != x.shape:
        raise ValueError(f"speaker_ids has shape {ids.shape}, expected {x.shape}")
    speakers, seg, counts = np.unique(ids, return_inverse=True, return_counts=True)
    num = speakers.size
    n = counts.astype(np.float64)
    # Two passes (means first, then centred sums) keep the variances accurate for large offsets.
    mx = np.bincount(seg, weights=x, minlength=num) / n
    my = np.bincount(seg, weights=y, minlength=num) / n
    dx, dy = x - mx[seg], y - my[seg]
    vx = np.bincount(seg, weights=dx * dx, minlength=num) / n
    vy = np.bincount(seg, weights=dy * dy, minlength=num) / n
    cov = np.bincount(seg, weights=dx * dy, minlength=num) / n

    order = np.argsort(seg, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    few = counts < MIN_UTTERANCES
    const_y = _segment_is_constant(y, order, starts)
    const_x = _segment_is_constant(x, order, starts)
    valid = ~few
    varying = valid & ~(const_x | const_y)

    denom = vx + vy + (mx - my) ** 2
    values = np.full(num, np.nan)
    values[valid] = 0.0
    values[varying] = 2.0 * cov[varying] / denom[varying]
    return PerSpeakerCCC(
        speakers=speakers,
        counts=counts,
        ccc=values,
        valid=valid,
        few_utterances=few,
        constant_labels=const_y & ~few,
        constant_predictions=const_x & ~few,
    )


@dataclasses.dataclass(frozen=True)
class AverageCCC:
    """A-CCC with the speaker counts a report needs.

    Attributes:
      mean: Mean of the per-speaker CCCs (NaN when no speaker qualifies).
      std: Their population std (ddof=0; NaN when no speaker qualifies).
      n_used: Speakers averaged (at least 2 utterances).
      n_excluded: Speakers left out (fewer than 2 utterances).
      n_constant_predictions: Speakers used whose predictions are all identical (CCC 0).
      n_constant_labels: Speakers used whose labels are all identical (CCC 0).
    """

    mean: float
    std: float
    n_used: int
    n_excluded: int
    n_constant_predictions: int
    n_constant_labels: int


def a_ccc(predictions, labels, speaker_ids) -> AverageCCC:
    """A-CCC: mean and std of the per-speaker CCCs, with the speaker counts.

    Args:
      predictions: (N,) model outputs.
      labels: (N,) ground truth.
      speaker_ids: (N,) speaker of each utterance.

    Returns:
      An `AverageCCC` (see the note above for who counts and how).
    """
    per = per_speaker_ccc(predictions, labels, speaker_ids)
    n_used = int(per.valid.sum())
    n_excluded = int(per.valid.size - n_used)
    n_const_x = int((per.constant_predictions & per.valid).sum())
    n_const_y = int((per.constant_labels & per.valid).sum())
    if n_excluded or n_const_x or n_const_y:
        logger.info(
            "A-CCC over %d of %d speakers: %d excluded (< %d utterances); %d with constant "
            "predictions and %d with constant labels count as CCC 0",
            n_used,
            per.valid.size,
            n_excluded,
            MIN_UTTERANCES,
            n_const_x,
            n_const_y,
        )
    if n_used == 0:
        logger.warning("A-CCC: no speaker has %d utterances; returning NaN", MIN_UTTERANCES)
        return AverageCCC(float("nan"), float("nan"), 0, n_excluded, 0, 0)
    used = per.ccc[per.valid]
    return AverageCCC(
        float(used.mean()), float(used.std()), n_used, n_excluded, n_const_x, n_const_y
    )


def average_ccc(predictions, labels, speaker_ids) -> tuple[float, float, int, int]:
    """A-CCC as the tuple (mean, std, n_used, n_excluded); `a_ccc` has the full counts."""
    result = a_ccc(predictions, labels, speaker_ids)
    return result.mean, result.std, result.n_used, result.n_excluded
