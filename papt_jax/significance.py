"""Paired bootstrap over test speakers, and mean ± std over seeds (the paper reports neither).

`paired_bootstrap` compares a system with a baseline (Vanilla-FT) evaluated on the same test
utterances. One bootstrap replicate draws as many speakers as the test set has, uniformly with
replacement, and keeps every utterance of each drawn speaker (a speaker drawn twice counts
twice). On that replicate it recomputes, for both systems,

* O-CCC: one CCC over the pooled utterances of the drawn speakers, and
* A-CCC: the mean of the per-speaker CCCs of the drawn speakers (a speaker's CCC does not
  change under resampling of speakers; speakers `metrics.per_speaker_ccc` excludes for a
  system stay excluded for it),

and the differences system minus baseline. The 95 % interval is the 2.5 and 97.5 percentiles
of the replicate differences (percentile bootstrap). Speakers, not utterances, are resampled
because utterances of one speaker are not independent and A-CCC averages over speakers.

Everything is vectorised: a replicate is a vector of speaker counts `c` (S,), drawn from a
multinomial, and pooled moments are `c @ per-speaker sums`, so B replicates cost one (B, S)
matrix product.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from papt_jax.errors import UserError
from papt_jax.metrics import per_speaker_ccc

METRICS = ("o_ccc", "a_ccc")


@dataclasses.dataclass(frozen=True)
class BootstrapDifference:
    """A paired difference (system minus baseline) with its percentile interval.

    Attributes:
      metric: 'o_ccc' or 'a_ccc'.
      difference: The difference on the test set as it is.
      low, high: Bounds of the percentile interval.
      confidence: Interval level (0.95).
      n_boot: Replicates drawn.
      n_degenerate: Replicates left out of the interval because a system had no speaker
        valid for A-CCC in them (always 0 for O-CCC); reported, never hidden.
      n_speakers: Speakers resampled.
    """

    metric: str
    difference: float
    low: float
    high: float
    confidence: float
    n_boot: int
    n_degenerate: int
    n_speakers: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def ccc_from_sums(n, sx, sy, sxx, syy, sxy):
    """CCC (population moments) from pooled sums; inputs broadcast, all float64."""
    mx, my = sx / n, sy / n
    vx = sxx / n - mx * mx
    vy = syy / n - my * my
    cov = sxy / n - mx * my
    denom = vx + vy + (mx - my) ** 2
    return np.where(denom > 0, 2.0 * cov / np.where(denom > 0, denom, 1.0), 0.0)


def speaker_sums(x, y, seg, num):
    """(S, 6) per-speaker n, sum x, sum y, sum x^2, sum y^2, sum xy."""
    columns = (np.ones_like(x), x, y, x * x, y * y, x * y)
    return np.stack([np.bincount(seg, weights=c, minlength=num) for c in columns], axis=1)


def _check_inputs(labels, system, baseline, speaker_ids):
    y = np.asarray(labels, np.float64).reshape(-1)
    a = np.asarray(system, np.float64).reshape(-1)
    b = np.asarray(baseline, np.float64).reshape(-1)
    ids = np.asarray(speaker_ids).reshape(-1)
    if not (y.shape == a.shape == b.shape == ids.shape):
        raise UserError(
            "labels, system and baseline predictions and speaker ids must have one entry per "
            f"test utterance, got {y.shape}, {a.shape}, {b.shape}, {ids.shape}"
        )
    for name, v in (("labels", y), ("system predictions", a), ("baseline predictions", b)):
        if not np.all(np.isfinite(v)):
            raise UserError(f"{name} contain NaN or inf")
    return y, a, b, ids


def paired_bootstrap(
    labels,
    system,
    baseline,
    speaker_ids,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, BootstrapDifference]:
    """O-CCC and A-CCC differences (system - baseline) with speaker-bootstrap intervals.

    Args:
      labels: (N,) ground truth of the test utterances.
      system: (N,) predictions of the system, same utterance order.
      baseline: (N,) predictions of the baseline (Vanilla-FT), same utterance order.
      speaker_ids: (N,) speaker of each utterance (any sortable ids).
      n_boot: Bootstrap replicates.
      seed: Seed of the replicate draws (NumPy's default generator).
      confidence: Interval level in (0, 1).

    Returns:
      {'o_ccc': BootstrapDifference, 'a_ccc': BootstrapDifference}.
    """
    y, a, b, ids = _check_inputs(labels, system, baseline, speaker_ids)
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise UserError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    speakers, seg = np.unique(ids, return_inverse=True)
    num = speakers.size
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num, np.full(num, 1.0 / num), size=n_boot).astype(np.float64)
    original = np.ones((1, num))
    # Centring on the label mean keeps the one-pass moments accurate on the 1..7 scale.
    centre = y.mean()
    yc = y - centre

    results = {}
    o_diff = []
    for c in (original, counts):
        per_system = []
        for x in (a, b):
            sums = c @ speaker_sums(x - centre, yc, seg, num)
            per_system.append(ccc_from_sums(*sums.T))
        o_diff.append(per_system[0] - per_system[1])
    results["o_ccc"] = summarize_replicates("o_ccc", o_diff[0][0], o_diff[1], confidence, num)

    a_diff = []
    per = [per_speaker_ccc(x, y, ids) for x in (a, b)]
    for c in (original, counts):
        means = []
        for p in per:
            valid = p.valid.astype(np.float64)
            weight = c @ valid
            total = c @ np.where(p.valid, p.ccc, 0.0)
            means.append(np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan))
        a_diff.append(means[0] - means[1])
    if not np.isfinite(a_diff[0][0]):
        raise UserError("A-CCC is undefined: a system has no speaker with a valid CCC")
    results["a_ccc"] = summarize_replicates("a_ccc", a_diff[0][0], a_diff[1], confidence, num)
    return results


def summarize_replicates(metric, point, replicates, confidence, num) -> BootstrapDifference:
    """The percentile interval of the defined bootstrap replicates of one difference.

    Args:
      metric: 'o_ccc' or 'a_ccc' (named in errors).
      point: the difference on the whole test set.
      replicates: (n_boot,) replicate differences; undefined ones are NaN.
      confidence: e.g. 0.95.
      num: number of test speakers resampled.
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        raise UserError(f"no bootstrap replicate of {metric} is defined")
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return BootstrapDifference(
        metric=metric,
        difference=float(point),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_boot=int(replicates.size),
        n_degenerate=int(replicates.size - finite.size),
        n_speakers=int(num),
    )


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """Mean and sample std (ddof=1) of one metric over runs with different seeds.

    `std` is None for a single run (a spread of one value is not 0, it is unknown).
    """

    mean: float
    std: float | None
    n: int

    def format(self, digits: int = 3) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n} seeds)"


def seed_summary(values) -> SeedSummary:
    """Mean ± std of per-seed results.

    Args:
      values: (n_seeds,) one metric value per seed.

    Returns:
      A `SeedSummary`.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise UserError("no per-seed values to summarise")
    if not np.all(np.isfinite(v)):
        raise UserError(f"per-seed values contain NaN or inf: {v.tolist()}")
    std = float(v.std(ddof=1)) if v.size > 1 else None
    return SeedSummary(mean=float(v.mean()), std=std, n=int(v.size))
