"""PLDC against a plain per-speaker Python loop written here, plus guards and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax import pldc

TOL = dict(rtol=1e-5, atol=1e-5)


def loop_pldc(preds, test_spk, test_vecs, train_vecs, train_labels, train_spk, k):
    """The method as written in the paper, one speaker at a time, float64."""
    train_ids = sorted(set(train_spk.tolist()))
    assert train_ids == list(range(len(train_ids)))
    train_v, train_mu, train_sd = [], [], []
    for s in train_ids:
        sel = train_spk == s
        train_v.append(train_vecs[sel].mean(axis=0))
        train_mu.append(train_labels[sel].mean())
        train_sd.append(train_labels[sel].std())
    train_v, train_mu, train_sd = map(np.asarray, (train_v, train_mu, train_sd))

    out = {m: np.zeros_like(preds, dtype=np.float64) for m in pldc.MODES}
    for s in sorted(set(test_spk.tolist())):
        sel = test_spk == s
        v = test_vecs[sel].mean(axis=0)
        sims = [v @ t / (np.linalg.norm(v) * np.linalg.norm(t)) for t in train_v]
        nbrs = np.argsort(sims)[::-1][:k]
        mu_bar, sd_bar = train_mu[nbrs].mean(), train_sd[nbrs].mean()
        y = preds[sel].astype(np.float64)
        mu, sd = y.mean(), y.std()
        constant = y.max() == y.min()
        scale = 1.0 if constant else sd_bar / sd
        out["both"][sel] = (y - mu) * scale + mu_bar
        out["mu"][sel] = y - mu + mu_bar
        out["sigma"][sel] = (y - mu) * scale + mu
    return out


def make_data(seed, n_test_spk=9, n_train_spk=30, dim=16):
    rng = np.random.default_rng(seed)
    train_spk = np.concatenate(
        [np.arange(n_train_spk), rng.integers(0, n_train_spk, 40 * n_train_spk)]
    )
    centres = rng.normal(size=(n_train_spk + n_test_spk, dim))
    train_vecs = centres[train_spk] + 0.5 * rng.normal(size=(train_spk.size, dim))
    train_labels = rng.uniform(1, 7, train_spk.size) + 0.3 * train_spk % 3
    # Test speaker 0 has one utterance, speaker 1 constant predictions; the rest are random.
    test_spk = np.concatenate([[0], [1] * 4, rng.integers(2, n_test_spk, 300)])
    test_vecs = centres[n_train_spk + test_spk] + 0.5 * rng.normal(size=(test_spk.size, dim))
    preds = rng.normal(4, 1, test_spk.size)
    preds[test_spk == 1] = 3.3
    perm = rng.permutation(test_spk.size)
    return (
        preds[perm].astype(np.float32),
        test_spk[perm],
        test_vecs[perm].astype(np.float32),
        train_vecs.astype(np.float32),
        train_labels.astype(np.float32),
        train_spk,
    )


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 5), (2, 30)])
def test_pldc_matches_loop(seed, k):
    data = make_data(seed)
    got = pldc.pldc(*data, k=k)
    want = loop_pldc(*data, k=k)
    assert set(got) == set(pldc.MODES)
    for mode in pldc.MODES:
        np.testing.assert_allclose(np.asarray(got[mode]), want[mode], **TOL, err_msg=mode)


def test_sigma_zero_guard():
    preds, test_spk, *_ = data = make_data(3)
    got = pldc.pldc(*data, k=5)
    for s in (0, 1):  # one utterance; constant predictions
        sel = test_spk == s
        # Scale stays 1: constant speakers stay constant, sigma mode leaves them unchanged.
        np.testing.assert_allclose(np.asarray(got["sigma"])[sel], preds[sel], **TOL)
        for mode in pldc.MODES:
            values = np.asarray(got[mode])[sel]
            assert np.isfinite(values).all()
            assert np.ptp(values) < 1e-6
        np.testing.assert_allclose(np.asarray(got["mu"])[sel], np.asarray(got["both"])[sel])


def test_calibrated_speaker_takes_target_moments():
    preds = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 12.0], np.float32)
    spk = np.array([0, 0, 0, 0, 1, 1])
    neighbours = np.array([[0, 2], [1, 1]])
    mean = np.array([5.0, 2.0, 3.0], np.float32)
    std = np.array([1.0, 0.5, 2.0], np.float32)
    both = np.asarray(pldc.calibrate(preds, spk, neighbours, mean, std, "both"))
    assert both[:4].mean() == pytest.approx(4.0) and both[:4].std() == pytest.approx(1.5)
    assert both[4:].mean() == pytest.approx(2.0) and both[4:].std() == pytest.approx(0.5)
    mu = np.asarray(pldc.calibrate(preds, spk, neighbours, mean, std, "mu"))
    np.testing.assert_allclose(mu, np.array([2.5, 3.5, 4.5, 5.5, 1.0, 3.0]), **TOL)
    sigma = np.asarray(pldc.calibrate(preds, spk, neighbours, mean, std, "sigma"))
    assert sigma[:4].mean() == pytest.approx(2.5) and sigma[:4].std() == pytest.approx(1.5)


def test_building_blocks():
    x = jnp.arange(12.0).reshape(6, 2)
    ids = jnp.array([0, 0, 2, 2, 2, 0])
    np.testing.assert_allclose(pldc.speaker_means(x, ids, 3), [[4, 5], [0, 0], [6, 7]], **TOL)
    mean, std = pldc.label_stats(jnp.array([1.0, 3.0, 2.0, 2.0, 8.0, 5.0]), ids, 3)
    np.testing.assert_allclose(mean, [3.0, 0.0, 4.0], **TOL)
    np.testing.assert_allclose(std, [np.std([1, 3, 5]), 0.0, np.std([2, 2, 8])], **TOL)
    idx, sims = pldc.topk_neighbours(
        jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[0.0, 1.0], [3.0, 0.1], [-1.0, 0.0]]), 2
    )
    np.testing.assert_array_equal(idx, [[1, 0], [0, 1]])
    assert sims[0, 0] == pytest.approx(3.0 / np.hypot(3.0, 0.1), rel=1e-6)


def test_jittable_with_static_sizes():
    data = make_data(4)
    fn = jax.jit(lambda *a: pldc.pldc(*a, k=3, num_test_speakers=9, num_train_speakers=30))
    got, want = fn(*data), loop_pldc(*data, k=3)
    for mode in pldc.MODES:
        np.testing.assert_allclose(np.asarray(got[mode]), want[mode], **TOL)


def test_bad_input_raises_before_jit():
    preds, spk = np.ones(4, np.float32), np.array([0, 0, 1, 1])
    mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="mode"):
        pldc.calibrate(preds, spk, np.zeros((2, 1), int), mean, std, "median")
    with pytest.raises(ValueError, match="test_speaker must lie"):
        pldc.calibrate(preds, spk, np.zeros((1, 1), int), mean, std, "mu")
    with pytest.raises(ValueError, match="neighbour_idx must lie"):
        pldc.calibrate(preds, spk, np.full((2, 1), 3), mean, std, "mu")
    with pytest.raises(ValueError, match="k must be"):
        pldc.topk_neighbours(np.ones((2, 3)), np.ones((4, 3)), 5)
    with pytest.raises(ValueError, match="segment_ids must lie"):
        pldc.speaker_means(np.ones((3, 2)), np.array([0, 1, -1]), 2)
    with pytest.raises(ValueError, match="integer"):
        pldc.label_stats(np.ones(3), np.array([0.0, 1.0, 1.0]), 2)
