"""Shift analysis: Gaussian KLs against closed forms on hand-built data, and correlations."""

from __future__ import annotations

import numpy as np
import pytest

from papt_jax import shift_analysis
from papt_jax.errors import UserError
from papt_jax.shift_analysis import fit_projection, kl_diag_gaussians, speaker_shift


def _full_kl(mp, cp, mq, cq):
    """KL(N(mp, cp) || N(mq, cq)) with full covariance matrices (textbook form)."""
    d = mp.size
    inv = np.linalg.inv(cq)
    diff = mq - mp
    return 0.5 * (
        np.trace(inv @ cp) + diff @ inv @ diff - d + np.log(np.linalg.det(cq) / np.linalg.det(cp))
    )


def test_diagonal_kl_equals_the_full_covariance_formula():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mp, mq = rng.standard_normal(3), rng.standard_normal(3)
        vp, vq = rng.uniform(0.2, 3.0, 3), rng.uniform(0.2, 3.0, 3)
        expected = _full_kl(mp, np.diag(vp), mq, np.diag(vq))
        assert kl_diag_gaussians(mp, vp, mq, vq) == pytest.approx(expected, rel=1e-12)
    assert kl_diag_gaussians(mp, vp, mp, vp) == 0.0
    # Broadcasting over leading axes: one KL per row.
    assert kl_diag_gaussians(np.zeros((4, 3)), np.ones((4, 3)), mq, vq).shape == (4,)


def _features(u, v):
    """Rows u * (1, 1) + 0.5 * v * (1, -1): correlated raw features whose whitened PCA
    coordinates are exactly (u, v) (up to sign) when the training set is u, v in {-1, 1}."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    return np.stack([u + 0.5 * v, u - 0.5 * v], axis=1)


TRAIN_U = np.array([1, 1, -1, -1] * 3)
TRAIN_V = np.array([1, -1, 1, -1] * 3)
TRAIN_LABELS = np.array([1.0, 2.0, 3.0, 4.0] * 3)


def test_projection_whitens_the_training_set():
    train = _features(TRAIN_U, TRAIN_V)
    projection = fit_projection(train, 2, whiten=True)
    z = projection(train)
    np.testing.assert_allclose(np.abs(z), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(2), atol=1e-12)
    np.testing.assert_allclose(projection.explained_variance, [1.6, 0.4], rtol=1e-12)


def _hand_kl_1d(m, v, mq, vq):
    return 0.5 * (v / vq + (m - mq) ** 2 / vq - 1 + np.log(vq / v))


def test_speaker_kls_equal_hand_computed_closed_forms():
    train = _features(TRAIN_U, TRAIN_V)
    # Speaker "a": whitened coordinates u in {2, 3}, v in {0.5, -0.5}; labels 5, 5, 6, 6.
    # Speaker "b": close to the training set; speaker "c": far in v; "d": one utterance.
    test_u = [2, 3, 2, 3, 0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    test_v = [0.5, -0.5, -0.5, 0.5, 1, -1, -1, 1, 3, 4, 3, 4, 0.0]
    labels = np.array([5, 5, 6, 6, 2, 3, 2, 3, 1, 1, 2, 2, 4.0])
    speakers = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["d"])
    preds = labels + np.linspace(-0.2, 0.3, labels.size) ** 2
    shift = speaker_shift(
        train, TRAIN_LABELS, _features(test_u, test_v), labels, preds, speakers, n_components=2
    )
    assert shift.speakers.tolist() == ["a", "b", "c", "d"]
    # Training set in whitened coordinates: N(0, I); labels N(2.5, 1.25).
    expected_feature = [
        _hand_kl_1d(2.5, 0.25, 0, 1) + _hand_kl_1d(0, 0.25, 0, 1),
        _hand_kl_1d(0, 0.25, 0, 1) + _hand_kl_1d(0, 1.0, 0, 1),
        # u is constant: its variance is floored at 1e-3 of the training variance.
        _hand_kl_1d(0, 1e-3, 0, 1) + _hand_kl_1d(3.5, 0.25, 0, 1),
    ]
    expected_label = [
        _hand_kl_1d(5.5, 0.25, 2.5, 1.25),
        _hand_kl_1d(2.5, 0.25, 2.5, 1.25),
        _hand_kl_1d(1.5, 0.25, 2.5, 1.25),
    ]
    np.testing.assert_allclose(shift.feature_kl[:3], expected_feature, rtol=1e-9)
    np.testing.assert_allclose(shift.label_kl[:3], expected_label, rtol=1e-9)
    # One utterance: no KL, and left out of the correlations (counted, not hidden).
    assert np.isnan(shift.feature_kl[3]) and not shift.used[3]
    assert shift.used[:3].all()
    for name, (a, b) in {
        "feature_kl_vs_ccc": (shift.feature_kl[:3], shift.ccc[:3]),
        "label_kl_vs_ccc": (shift.label_kl[:3], shift.ccc[:3]),
        "feature_kl_vs_label_kl": (shift.feature_kl[:3], shift.label_kl[:3]),
    }.items():
        assert shift.correlations[name]["n"] == 3
        assert shift.correlations[name]["r"] == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_bad_inputs():
    train = _features(TRAIN_U, TRAIN_V)
    with pytest.raises(UserError, match="n_components"):
        fit_projection(train, 3, whiten=True)
    with pytest.raises(UserError, match="training labels"):
        speaker_shift(train, TRAIN_LABELS[:5], train, TRAIN_LABELS, TRAIN_LABELS, TRAIN_U, 2)
    with pytest.raises(UserError, match="constant"):
        speaker_shift(
            train, np.ones(12), train, TRAIN_LABELS, TRAIN_LABELS, TRAIN_U, n_components=2
        )


def test_randomized_pca_matches_the_exact_one(monkeypatch):
    rng = np.random.default_rng(5)
    # Low-rank structure plus noise, with well separated leading variances.
    latent = rng.standard_normal((3000, 4)) * np.array([6.0, 4.0, 3.0, 2.0])
    x = latent @ rng.standard_normal((4, 40)) + 0.3 * rng.standard_normal((3000, 40))
    exact = fit_projection(x, 4, whiten=True)
    monkeypatch.setattr(shift_analysis, "EXACT_SVD_MAX_ENTRIES", 1000)
    monkeypatch.setattr(shift_analysis, "_CHUNK_ROWS", 700)  # several chunks, one partial
    fast = fit_projection(x, 4, whiten=True)
    np.testing.assert_allclose(fast.explained_variance, exact.explained_variance, rtol=1e-6)
    np.testing.assert_allclose(np.abs(fast(x[:50])), np.abs(exact(x[:50])), atol=1e-5)
