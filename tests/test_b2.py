"""B2: ComParE extraction, mixture fitting, KL between mixtures, adaptation set and weights."""

from __future__ import annotations

import numpy as np
import pytest

from papt_jax import b2
from papt_jax.b2 import (
    B2Config,
    DiagGMM,
    b2_weights,
    fit_diag_gmm,
    kl_gmm_monte_carlo,
    kl_gmm_variational,
    kl_matrix,
)
from papt_jax.errors import UserError
from papt_jax.shift_analysis import kl_diag_gaussians


def b2_config(**changes) -> B2Config:
    """The config's B2 values (configs: b2.*), with `changes`."""
    values = dict(pca_components=10, gmm_components=2, neighbours=5, weight=2.0, seed=0)
    return B2Config(**{**values, **changes})


def _single(mean, var):
    return DiagGMM(np.ones(1), np.asarray([mean], float), np.asarray([var], float))


def test_kl_between_single_gaussians_equals_the_closed_form():
    f = _single([0.0, 1.0, -1.0], [1.0, 0.5, 2.0])
    g = _single([1.0, 0.0, 0.5], [2.0, 1.5, 0.3])
    exact = kl_diag_gaussians(f.means[0], f.variances[0], g.means[0], g.variances[0])
    assert kl_gmm_variational(f, g) == pytest.approx(exact, rel=1e-12)
    assert kl_gmm_variational(f, f) == pytest.approx(0.0, abs=1e-12)
    # The seeded Monte-Carlo estimate agrees within its sampling error (about 0.02 here).
    assert kl_gmm_monte_carlo(f, g, 40_000, seed=0) == pytest.approx(exact, abs=0.1)


def test_variational_kl_tracks_monte_carlo_for_mixtures():
    f = DiagGMM(np.array([0.3, 0.7]), np.array([[0.0, 0.0], [6.0, 0.0]]), np.ones((2, 2)))
    g = DiagGMM(np.array([0.5, 0.5]), np.array([[0.5, 0.0], [5.0, 1.0]]), np.full((2, 2), 1.5))
    approx = kl_gmm_variational(f, g)
    sampled = kl_gmm_monte_carlo(f, g, 40_000, seed=1)
    assert approx == pytest.approx(sampled, rel=0.05)
    # The batched matrix agrees with pairwise calls, padding a 1-component mixture.
    h = _single([3.0, 0.0], [4.0, 4.0])
    m = kl_matrix([f, h], [g, h, f])
    expected = [[kl_gmm_variational(a, b) for b in (g, h, f)] for a in (f, h)]
    np.testing.assert_allclose(m, expected, rtol=1e-12)


def test_em_recovers_two_separated_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-4, 1, (60, 2)), rng.normal(4, 0.5, (140, 2))])
    gmm = fit_diag_gmm(x, 2, var_floor=1e-3, seed=0)
    order = np.argsort(gmm.means[:, 0])
    np.testing.assert_allclose(gmm.weights[order], [0.3, 0.7], atol=0.02)
    np.testing.assert_allclose(gmm.means[order], [[-4, -4], [4, 4]], atol=0.3)
    np.testing.assert_allclose(np.sqrt(gmm.variances[order]), [[1, 1], [0.5, 0.5]], atol=0.2)
    again = fit_diag_gmm(x, 2, var_floor=1e-3, seed=0)
    np.testing.assert_array_equal(gmm.means, again.means)


TRAIN_CENTRES = {"t1": (0, 0), "t2": (10, 0), "t3": (0, 10), "t4": (10, 10)}
TRAIN_COUNTS = {"t1": 10, "t2": 10, "t3": 20, "t4": 20}
TEST_CENTRES = {"A": (0.5, 0), "B": (0, 10.5)}


def _speakers(rng, centres, counts):
    feats, ids = [], []
    for s, centre in centres.items():
        feats.append(np.asarray(centre, float) + rng.standard_normal((counts[s], 2)))
        ids += [s] * counts[s]
    return np.concatenate(feats), np.asarray(ids)


def test_weights_match_a_hand_computation_on_separated_speakers():
    rng = np.random.default_rng(0)
    train_x, train_ids = _speakers(rng, TRAIN_CENTRES, TRAIN_COUNTS)
    test_x, test_ids = _speakers(rng, TEST_CENTRES, {"A": 15, "B": 15})
    config = b2_config(pca_components=2, neighbours=1, weight=2.0)
    result = b2_weights(train_x, train_ids, test_x, test_ids, config)
    # A sits on t1 and B on t3: the adaptation set is {t1, t3}.
    assert result.test_speakers.tolist() == ["A", "B"]
    assert result.train_speakers[result.neighbours[:, 0]].tolist() == ["t1", "t3"]
    assert result.adaptation_speakers == ["t1", "t3"]
    # By hand: raw weights 2 (t1: 10 utts, t3: 20) and 1 (t2: 10, t4: 20) have mean
    # (2*10 + 10 + 2*20 + 20) / 60 = 1.5, so adaptation utterances weigh 4/3, others 2/3.
    assert result.speaker_weight == pytest.approx(
        {"t1": 4 / 3, "t2": 2 / 3, "t3": 4 / 3, "t4": 2 / 3}
    )
    expected = np.where(np.isin(train_ids, ["t1", "t3"]), 4 / 3, 2 / 3)
    np.testing.assert_allclose(result.utterance_weights, expected)
    assert result.utterance_weights.mean() == pytest.approx(1.0)
    # Each test speaker's own neighbour is far closer than any other training speaker.
    for i, j in enumerate(result.neighbours[:, 0]):
        others = np.delete(result.kl[i], j)
        assert result.kl[i, j] < 0.1 * others.min()


def test_two_neighbours_and_unmodelled_speakers():
    rng = np.random.default_rng(1)
    centres = {**TRAIN_CENTRES, "t5": (5, 5)}
    train_x, train_ids = _speakers(rng, centres, {**TRAIN_COUNTS, "t5": 1})
    test_x, test_ids = _speakers(rng, {"A": (0.5, 0)}, {"A": 15})
    result = b2_weights(
        train_x, train_ids, test_x, test_ids, b2_config(pca_components=2, neighbours=2)
    )
    # t5 has one utterance: not modelled, never a neighbour, weight of the non-adapted.
    assert result.modelled.tolist() == [True, True, True, True, False]
    assert np.isinf(result.kl[0, 4])
    assert "t5" not in result.adaptation_speakers and len(result.adaptation_speakers) == 2
    assert "t1" in result.adaptation_speakers
    with pytest.raises(UserError, match="fewer than b2.neighbours"):
        b2_weights(train_x, train_ids, test_x, test_ids, b2_config(pca_components=2, neighbours=5))


def test_config_and_input_errors():
    with pytest.raises(UserError, match="b2.weight"):
        b2_config(weight=0.5)
    with pytest.raises(UserError, match="b2.neighbours"):
        b2_config(neighbours=0)
    with pytest.raises(UserError, match="training feature rows"):
        b2_weights(np.zeros((3, 2)), ["a"], np.zeros((1, 2)), ["b"], b2_config())


def _tone(seconds, f0, rng):
    t = np.arange(int(seconds * b2.SAMPLE_RATE)) / b2.SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * 2.7 * f0 * t)
    return wave * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)


def test_compare_functionals_with_opensmile():
    pytest.importorskip("opensmile")
    rng = np.random.default_rng(0)
    signals = [_tone(1.0, 120.0, rng), _tone(1.5, 220.0, rng), _tone(1.0, 300.0, rng)]
    feats = b2.compare_functionals(signals)
    assert feats.shape == (3, b2.COMPARE_DIM) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    assert not np.allclose(feats[0], feats[1])
    again = b2.compare_functionals(signals[:1])
    np.testing.assert_array_equal(again[0], feats[0])
    with pytest.raises(UserError, match="utt-x"):
        b2.compare_functionals([np.full(100, np.nan)], keys=["utt-x"])
