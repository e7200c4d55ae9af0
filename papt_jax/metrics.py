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
    """CCC of two 1-D sequences (numpy or jax arrays); 0-length input is an error."""
    x = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise ValueError("CCC of empty arrays is undefined")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2.0 * cov / denom) if denom > 0 else 0.0


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
# A speaker takes part in A-CCC only when its CCC is informative:
#   * it has at least 2 utterances, and
#   * its labels are not all identical, and
#   * its predictions are not all identical.
# "Identical" is an exact check (max == min within the speaker), not a variance threshold, so
# float round-off in a mean can never turn a constant speaker into a tiny non-zero variance.
# With constant labels CCC is 0 whatever the model does, and with constant predictions it is 0
# whatever the labels are, so such speakers would only add zeros that measure nothing.
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
      constant_labels: (S,) bool, excluded because all its labels are identical.
      constant_predictions: (S,) bool, excluded because all its predictions are identical.
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
      The pooled CCC (0.0 when both inputs are constant and equal, where CCC is 0/0).
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
      A `PerSpeakerCCC`; excluded speakers (see the module note) have NaN CCC.
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
    valid = ~(few | const_y | const_x)

    denom = vx + vy + (mx - my) ** 2
    values = np.full(num, np.nan)
    values[valid] = 2.0 * cov[valid] / denom[valid]
    return PerSpeakerCCC(
        speakers=speakers,
        counts=counts,
        ccc=values,
        valid=valid,
        few_utterances=few,
        constant_labels=const_y & ~few,
        constant_predictions=const_x & ~few,
    )


def average_ccc(predictions, labels, speaker_ids) -> tuple[float, float, int, int]:
    """A-CCC: mean of the per-speaker CCCs, with their spread.

    Speakers excluded by the module note are counted and logged, never silently dropped.

    Args:
      predictions: (N,) model outputs.
      labels: (N,) ground truth.
      speaker_ids: (N,) speaker of each utterance.

    Returns:
      (mean, std, n_used, n_excluded): mean and population std (ddof=0) of the CCCs of the
      speakers used; both are NaN when no speaker qualifies.
    """
    per = per_speaker_ccc(predictions, labels, speaker_ids)
    n_used = int(per.valid.sum())
    n_excluded = int(per.valid.size - n_used)
    if n_excluded:
        logger.info(
            "A-CCC: excluded %d of %d speakers (%d with < %d utterances, %d with constant "
            "labels, %d with constant predictions)",
            n_excluded,
            per.valid.size,
            int(per.few_utterances.sum()),
            MIN_UTTERANCES,
            int(per.constant_labels.sum()),
            int(per.constant_predictions.sum()),
        )
    if n_used == 0:
        logger.warning("A-CCC: no speaker qualifies; returning NaN")
        return float("nan"), float("nan"), 0, n_excluded
    used = per.ccc[per.valid]
    return float(used.mean()), float(used.std()), n_used, n_excluded
