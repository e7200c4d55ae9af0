"""PLDC diagnostics: the test-label oracle and the retrieval diagnostic."""

import numpy as np
import pytest

from papt_jax import pldc


def _test_set(rng, num_speakers=4, per=6):
    spk = np.repeat(np.arange(num_speakers), per)
    labels = rng.uniform(1, 7, spk.size)
    preds = 4.0 + 0.3 * (labels - 4.0) + rng.normal(0, 0.3, spk.size)
    return preds, spk, labels


def test_oracle_gives_each_speaker_its_own_label_moments():
    rng = np.random.default_rng(0)
    preds, spk, labels = _test_set(rng)
    out = {m: np.asarray(v) for m, v in pldc.pldc_oracle(preds, spk, labels).items()}
    for s in range(4):
        sel = spk == s
        np.testing.assert_allclose(out["both"][sel].mean(), labels[sel].mean(), atol=1e-5)
        np.testing.assert_allclose(out["both"][sel].std(), labels[sel].std(), atol=1e-5)
        np.testing.assert_allclose(out["mu"][sel].mean(), labels[sel].mean(), atol=1e-5)
        np.testing.assert_allclose(out["mu"][sel].std(), preds[sel].std(), atol=1e-5)
        np.testing.assert_allclose(out["sigma"][sel].mean(), preds[sel].mean(), atol=1e-5)
        np.testing.assert_allclose(out["sigma"][sel].std(), labels[sel].std(), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N,\) each"):
        pldc.pldc_oracle(preds, spk, labels[:-1])


def test_retrieved_stats_are_what_pldc_uses():
    rng = np.random.default_rng(1)
    preds, test_spk, _ = _test_set(rng)
    test_vecs = rng.normal(size=(test_spk.size, 5))
    train_spk = np.repeat(np.arange(7), 5)
    train_vecs = rng.normal(size=(train_spk.size, 5))
    train_labels = rng.uniform(1, 7, train_spk.size)
    mu_bar, sigma_bar, neighbours = pldc.retrieved_label_stats(
        test_vecs, test_spk, train_vecs, train_labels, train_spk, k=3
    )
    assert mu_bar.shape == sigma_bar.shape == (4,) and neighbours.shape == (4, 3)
    mean, std = pldc.label_stats(train_labels, train_spk, 7)
    full = pldc.pldc(preds, test_spk, test_vecs, train_vecs, train_labels, train_spk, k=3)
    for mode in pldc.MODES:
        via = pldc.calibrate(preds, test_spk, neighbours, mean, std, mode)
        np.testing.assert_allclose(np.asarray(via), np.asarray(full[mode]), atol=1e-5)
    np.testing.assert_allclose(mu_bar, np.asarray(mean)[neighbours].mean(axis=1), atol=1e-6)


def test_retrieval_diagnostic_by_hand():
    # Three test speakers with label means 2, 4, 6 and stds 1, 0.5, 0 (labels by hand); a
    # fourth with one utterance is left out.
    labels = np.array([1.0, 3.0, 3.5, 4.5, 6.0, 6.0, 5.0])
    spk = np.array([0, 0, 1, 1, 2, 2, 3])
    mu_bar = np.array([2.5, 4.0, 5.0, 9.0])
    sigma_bar = np.array([0.8, 0.6, 0.1, 9.0])
    train = np.array([2.0, 6.0])  # mean 4, std 2
    d = pldc.retrieval_diagnostic(labels, spk, mu_bar, sigma_bar, train)
    assert d["n"] == 3 and d["used"].tolist() == [True, True, True, False]
    np.testing.assert_allclose(d["own_mean"][:3], [2, 4, 6], atol=1e-6)
    np.testing.assert_allclose(d["own_std"][:3], [1, 0.5, 0], atol=1e-6)
    assert d["mean_r"] == pytest.approx(np.corrcoef([2.5, 4, 5], [2, 4, 6])[0, 1], abs=1e-6)
    assert d["std_r"] == pytest.approx(np.corrcoef([0.8, 0.6, 0.1], [1, 0.5, 0])[0, 1], abs=1e-6)
    assert d["mean_mae"] == pytest.approx((0.5 + 0 + 1) / 3, abs=1e-6)
    assert d["std_mae"] == pytest.approx((0.2 + 0.1 + 0.1) / 3, abs=1e-6)
    assert d["mean_mae_global"] == pytest.approx((2 + 0 + 2) / 3, abs=1e-6)
    assert d["std_mae_global"] == pytest.approx((1 + 1.5 + 2) / 3, abs=1e-6)
