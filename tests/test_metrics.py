"""Metrics: CCC against an independent formula, O-CCC, per-speaker CCC and A-CCC."""

import numpy as np
import pytest

from papt_jax import metrics


def reference_ccc(x, y):
    """CCC = 2 rho sx sy / (sx^2 + sy^2 + (mx - my)^2), population moments, via np.corrcoef."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rho = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    return 2 * rho * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


def test_overall_ccc_matches_independent_formula():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 7, 500)
    x = 0.6 * y + rng.normal(0, 0.8, 500) + 0.4
    assert metrics.overall_ccc(x, y) == pytest.approx(reference_ccc(x, y), abs=1e-12)
    # np.cov with bias=True is the population covariance: a second independent route.
    cov = np.cov(x, y, bias=True)
    expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)
    assert metrics.overall_ccc(x, y) == pytest.approx(expected, abs=1e-12)


def test_known_cases():
    y = np.array([1.0, 2.5, 3.0, 4.5, 6.0])
    assert metrics.overall_ccc(y, y) == pytest.approx(1.0)
    # Negation around the mean: rho = -1, equal spreads and means -> CCC = -1.
    assert metrics.overall_ccc(2 * y.mean() - y, y) == pytest.approx(-1.0)
    # A constant shift c keeps rho = 1 but lowers CCC to 2 s^2 / (2 s^2 + c^2).
    c = 1.5
    s2 = y.var()
    assert metrics.overall_ccc(y + c, y) == pytest.approx(2 * s2 / (2 * s2 + c * c))
    # Scaling: x = a y has CCC 2 a s^2 / (s^2 (1 + a^2) + (a - 1)^2 m^2).
    a = 0.5
    expected = 2 * a * s2 / (s2 * (1 + a * a) + ((a - 1) * y.mean()) ** 2)
    assert metrics.overall_ccc(a * y, y) == pytest.approx(expected)


def test_overall_ccc_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.overall_ccc([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        metrics.overall_ccc([], [])
    with pytest.raises(ValueError, match="finite"):
        metrics.overall_ccc([1.0, np.nan], [1.0, 2.0])


def make_speakers(rng, n_speakers=12):
    sizes = rng.integers(3, 40, n_speakers)
    ids = np.repeat(np.arange(n_speakers), sizes)
    rng.shuffle(ids)
    y = rng.uniform(1, 7, ids.size) + ids * 0.1
    x = 0.5 * y + rng.normal(0, 1, ids.size)
    return x, y, ids


def test_per_speaker_ccc_matches_loop():
    rng = np.random.default_rng(1)
    x, y, ids = make_speakers(rng)
    str_ids = np.array([f"spk{i:03d}" for i in ids])
    per = metrics.per_speaker_ccc(x, y, str_ids)
    assert list(per.speakers) == sorted(set(str_ids))
    for s, n, value in zip(per.speakers, per.counts, per.ccc, strict=True):
        sel = str_ids == s
        assert n == sel.sum()
        assert value == pytest.approx(reference_ccc(x[sel], y[sel]), abs=1e-10)
    assert per.valid.all()
    assert set(per.as_dict()) == set(str_ids)


def test_constant_speakers_count_as_zero_and_are_counted():
    rng = np.random.default_rng(2)
    x, y, ids = make_speakers(rng, 6)
    # Speaker 100: one utterance. 101: constant labels. 102: constant predictions.
    # 103: both constant and equal (the formula's 0/0).
    x = np.concatenate([x, [3.0], [1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [2.0, 2.0]])
    y = np.concatenate([y, [3.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0], [2.0, 2.0]])
    ids = np.concatenate([ids, [100], [101] * 3, [102] * 3, [103] * 2])
    per = metrics.per_speaker_ccc(x, y, ids)
    by_id = dict(zip(per.speakers.tolist(), range(per.speakers.size), strict=True))
    assert per.few_utterances[by_id[100]]
    assert not per.valid[by_id[100]] and np.isnan(per.ccc[by_id[100]])
    assert per.constant_labels[by_id[101]] and not per.constant_predictions[by_id[101]]
    assert per.constant_predictions[by_id[102]] and not per.constant_labels[by_id[102]]
    assert per.constant_labels[by_id[103]] and per.constant_predictions[by_id[103]]
    for s in (101, 102, 103):
        assert per.valid[by_id[s]] and per.ccc[by_id[s]] == 0.0
    # The covariance form of the formula agrees: zero covariance, positive denominator.
    cov = np.cov([4.0, 4.0, 4.0], [1.0, 2.0, 3.0], bias=True)
    assert 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (4.0 - 2.0) ** 2) == 0.0
    assert metrics.ccc([4.0, 4.0, 4.0], [1.0, 2.0, 3.0]) == 0.0

    result = metrics.a_ccc(x, y, ids)
    assert (result.n_used, result.n_excluded) == (9, 1)
    assert (result.n_constant_predictions, result.n_constant_labels) == (2, 2)
    kept = [reference_ccc(x[ids == s], y[ids == s]) for s in range(6)] + [0.0, 0.0, 0.0]
    assert result.mean == pytest.approx(np.mean(kept), abs=1e-10)
    assert result.std == pytest.approx(np.std(kept), abs=1e-10)
    assert metrics.average_ccc(x, y, ids) == (result.mean, result.std, 9, 1)


def test_a_ccc_is_not_nan_when_a_speaker_predicts_a_constant():
    # Before: a constant-prediction speaker was dropped, which flattered a model that
    # collapses on some speakers. Now it pulls the mean down as a CCC of 0.
    y = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    x = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    result = metrics.a_ccc(x, y, [0, 0, 0, 1, 1, 1])
    assert result.mean == pytest.approx(0.5) and result.n_constant_predictions == 1


def test_ccc_of_non_finite_or_single_input_is_nan_not_zero():
    # Before: 0.0, which early stopping read as a poor epoch.
    assert np.isnan(metrics.ccc([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]))
    assert np.isnan(metrics.ccc([1.0, 2.0, 3.0], [1.0, np.inf, 3.0]))
    assert np.isnan(metrics.ccc([np.nan] * 3, [np.nan] * 3))
    assert np.isnan(metrics.ccc([2.0], [5.0]))
    assert np.isnan(metrics.ccc([2.0], [2.0]))
    # Defined cases stay numbers.
    assert metrics.ccc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert metrics.ccc([3.0, 3.0], [3.0, 3.0]) == 0.0


def test_constant_check_is_exact_not_roundoff():
    # 0.1 is inexact in binary; a mean-based variance would be a tiny non-zero number.
    x = np.array([0.1, 0.1, 0.1, 0.7, 0.2, 0.5])
    y = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    per = metrics.per_speaker_ccc(x, y, [0, 0, 0, 1, 1, 1])
    assert per.constant_predictions.tolist() == [True, False]


def test_average_ccc_without_valid_speakers_is_nan():
    mean, std, n_used, n_excluded = metrics.average_ccc([1.0, 2.0], [1.0, 2.0], [0, 1])
    assert np.isnan(mean) and np.isnan(std) and (n_used, n_excluded) == (0, 2)
    assert metrics.a_ccc([1.0, 2.0], [1.0, 2.0], [0, 1]).n_excluded == 2


def test_per_speaker_ccc_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="speaker_ids"):
        metrics.per_speaker_ccc([1.0, 2.0], [1.0, 2.0], [0])
