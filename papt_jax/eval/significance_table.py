"""Paired speaker-bootstrap differences against a baseline, for the comparison tables.

Every system row (and the PLDC rows shown for it) is compared with the baseline's raw
predictions on the same test utterances, matched by key. The bootstrap is
`significance.paired_bootstrap`'s: a replicate draws the test speakers with replacement
and recomputes O-CCC and A-CCC of both systems. With several seeds per run, each replicate
compares the *seed means* of the metric (every seed on the same draw), so the interval
describes the test-set sampling uncertainty of the seed-averaged difference; the spread over
seeds is reported separately (mean ± std). With one seed per run this is exactly
`paired_bootstrap`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from papt_jax import metrics
from papt_jax.errors import UserError
from papt_jax.eval.results import MISSING, MODE_LABELS, SYSTEM, EvalResult, ReportError
from papt_jax.eval.runs import Run, load_predictions

# The building blocks of `significance.paired_bootstrap`, shared so that both draw and
# summarise replicates identically.
from papt_jax.significance import (
    BootstrapDifference,
    ccc_from_sums,
    speaker_sums,
    summarize_replicates,
)

BASELINE = "Vanilla-FT"


def _o_ccc(counts, x, y, centre, seg, num):
    sums = counts @ speaker_sums(x - centre, y - centre, seg, num)
    return ccc_from_sums(*sums.T)


def _a_ccc(counts, x, y, ids):
    per = metrics.per_speaker_ccc(x, y, ids)
    weight = counts @ per.valid.astype(np.float64)
    total = counts @ np.where(per.valid, per.ccc, 0.0)
    return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)


def seed_bootstrap(
    labels,
    systems: Sequence,
    baselines: Sequence,
    speaker_ids,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, BootstrapDifference]:
    """O-CCC and A-CCC differences (mean over system seeds - mean over baseline seeds).

    Args:
      labels: (N,) ground truth.
      systems: one (N,) prediction array per system seed, utterances in `labels`' order.
      baselines: one (N,) prediction array per baseline seed.
      speaker_ids: (N,) speaker of each utterance.
      n_boot, seed, confidence: as `significance.paired_bootstrap` (same draws).

    Returns:
      {'o_ccc': BootstrapDifference, 'a_ccc': BootstrapDifference}.
    """
    y = np.asarray(labels, np.float64).reshape(-1)
    ids = np.asarray(speaker_ids).reshape(-1)
    runs = [np.asarray(p, np.float64).reshape(-1) for p in (*systems, *baselines)]
    if not systems or not baselines or any(r.shape != y.shape for r in runs):
        raise UserError("need at least one system and one baseline run, one value per utterance")
    if not all(np.all(np.isfinite(v)) for v in (y, *runs)):
        raise UserError("labels or predictions contain NaN or inf")
    speakers, seg = np.unique(ids, return_inverse=True)
    num = speakers.size
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num, np.full(num, 1.0 / num), size=n_boot).astype(np.float64)
    both = np.vstack([np.ones((1, num)), counts])  # row 0: the test set as it is
    centre = y.mean()
    out = {}
    for metric in ("o_ccc", "a_ccc"):
        if metric == "o_ccc":
            values = [_o_ccc(both, r, y, centre, seg, num) for r in runs]
        else:
            values = [_a_ccc(both, r, y, ids) for r in runs]
        diff = np.mean(values[: len(systems)], axis=0) - np.mean(values[len(systems) :], axis=0)
        if not np.isfinite(diff[0]):
            raise UserError(f"{metric} is undefined: a run has no speaker with a valid CCC")
        out[metric] = summarize_replicates(metric, diff[0], diff[1:], confidence, num)
    return out


def _aligned(run: Run, split: str, dim: str, order: Mapping[str, int], ref: EvalResult):
    """Each seed's result of `run`, utterances in the reference's order; refuses others."""
    out = []
    for report_dir in run.report_dirs:
        r = load_predictions(report_dir, split, dim)
        if r.keys.size != ref.keys.size or not all(k in order for k in r.keys):
            extra = [k for k in r.keys if k not in order][:3]
            raise ReportError(
                f"{run.name} ({report_dir}) and the baseline were evaluated on different "
                f"{split} utterances ({r.keys.size} vs {ref.keys.size}; e.g. {extra} only in "
                f"{run.name})",
                hint="paired significance needs the same test utterances in every run",
            )
        rows = np.argsort([order[k] for k in r.keys])
        if not np.allclose(r.labels[rows], ref.labels, atol=1e-6):
            raise ReportError(f"{run.name} ({report_dir}): {split} {dim} labels differ")
        out.append({v: p[rows] for v, p in r.variants().items()})
    return out


def differences(
    runs: Sequence[Run],
    baseline: Run,
    split: str,
    dim: str,
    pldc_systems: set[str],
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, BootstrapDifference]]:
    """{row label: {'o_ccc', 'a_ccc'}} for every non-baseline row of one split and dimension."""
    ref = load_predictions(baseline.report_dirs[0], split, dim)
    order = {k: i for i, k in enumerate(ref.keys)}
    base = [seed_run[SYSTEM] for seed_run in _aligned(baseline, split, dim, order, ref)]
    rows = {}
    for run in runs:
        seeds = _aligned(run, split, dim, order, ref)
        variants = [SYSTEM] if run.name not in pldc_systems else list(seeds[0])
        for variant in variants:
            if run is baseline and variant == SYSTEM:
                continue
            label = run.name if variant == SYSTEM else f"{run.name} {MODE_LABELS[variant]}"
            preds = [s[variant] for s in seeds]
            rows[label] = seed_bootstrap(ref.labels, preds, base, ref.speakers, n_boot, seed)
    return rows


def format_difference(d: BootstrapDifference | None) -> str:
    """`+0.028 [-0.010, +0.066]`; a star marks an interval that excludes 0."""
    if d is None:
        return MISSING
    star = " *" if d.excludes_zero() else ""
    return f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{star}"
