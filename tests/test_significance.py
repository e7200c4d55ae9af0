"""Paired speaker bootstrap: point estimates, coverage on simulated data, identical systems."""

from __future__ import annotations

import numpy as np
import pytest

from papt_jax.errors import UserError
from papt_jax.metrics import average_ccc, overall_ccc
from papt_jax.significance import paired_bootstrap, seed_summary

UTTERANCES = 12


def _population(rng, num_speakers):
    """Labels and two systems' predictions for `num_speakers` speakers.

    Speakers differ in label mean and spread and in how well each system tracks them,
    so per-speaker CCCs vary and the system is better on average, not everywhere.
    """
    spk = np.repeat(np.arange(num_speakers), UTTERANCES)
    mean = rng.normal(4.0, 0.6, num_speakers)[spk]
    spread = rng.uniform(0.4, 1.2, num_speakers)[spk]
    y = mean + spread * rng.standard_normal(spk.size)
    skill = rng.uniform(0.3, 1.0, num_speakers)[spk]
    baseline = 4.0 + 0.5 * (y - 4.0) * skill + 0.6 * rng.standard_normal(spk.size)
    system = 4.0 + 0.6 * (y - 4.0) * skill + 0.5 * rng.standard_normal(spk.size)
    return y, system, baseline, spk


def test_point_estimates_equal_the_metrics():
    y, system, baseline, spk = _population(np.random.default_rng(0), 30)
    result = paired_bootstrap(y, system, baseline, spk, n_boot=200, seed=1)
    o = overall_ccc(system, y) - overall_ccc(baseline, y)
    a = average_ccc(system, y, spk)[0] - average_ccc(baseline, y, spk)[0]
    assert result["o_ccc"].difference == pytest.approx(o, abs=1e-10)
    assert result["a_ccc"].difference == pytest.approx(a, abs=1e-10)
    for r in result.values():
        assert r.low < r.difference < r.high and r.n_degenerate == 0 and r.n_speakers == 30
    again = paired_bootstrap(y, system, baseline, spk, n_boot=200, seed=1)
    assert again == result


def test_intervals_cover_the_population_difference_about_95_percent():
    rng = np.random.default_rng(2)
    # A large population stands for "the truth"; each simulated test set draws 40 of its
    # speakers, and the interval should cover the population difference ~95 % of the time.
    y, system, baseline, spk = _population(rng, 4000)
    truth = {
        "o_ccc": overall_ccc(system, y) - overall_ccc(baseline, y),
        "a_ccc": average_ccc(system, y, spk)[0] - average_ccc(baseline, y, spk)[0],
    }
    covered = {"o_ccc": 0, "a_ccc": 0}
    trials = 200
    for t in range(trials):
        chosen = rng.choice(4000, 40, replace=False)
        rows = np.isin(spk, chosen)
        result = paired_bootstrap(
            y[rows], system[rows], baseline[rows], spk[rows], n_boot=400, seed=t
        )
        for metric, r in result.items():
            covered[metric] += r.low <= truth[metric] <= r.high
    rates = {m: c / trials for m, c in covered.items()}
    print(rates)
    # 200 trials: a true 95 % rate lands in [0.88, 0.99] with probability > 99.9 %.
    for rate in rates.values():
        assert 0.88 <= rate <= 0.99, rates


def test_identical_systems_give_a_zero_width_interval_at_zero():
    y, system, _, spk = _population(np.random.default_rng(3), 20)
    result = paired_bootstrap(y, system, system.copy(), spk, n_boot=300)
    for r in result.values():
        assert r.difference == 0.0 and r.low == 0.0 and r.high == 0.0
        assert not r.excludes_zero()


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="one entry per"):
        paired_bootstrap([1.0, 2.0], [1.0], [1.0, 2.0], [0, 0])
    with pytest.raises(UserError, match="NaN"):
        paired_bootstrap([1.0, np.nan], [1.0, 2.0], [1.0, 2.0], [0, 0])


def test_seed_summary():
    s = seed_summary([0.5, 0.7, 0.6])
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1) and s.n == 3
    assert s.format() == "0.600 ± 0.100 (3 seeds)"
    one = seed_summary([0.5])
    assert one.std is None and one.format() == "0.500 (1 seed)"
    with pytest.raises(UserError, match="NaN"):
        seed_summary([0.5, np.nan])
