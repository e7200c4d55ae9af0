"""Losses: the weighted 1 - CCC used by B2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.losses import ccc_loss, weighted_ccc_loss
from papt_jax.metrics import ccc
from papt_jax.train.finetune import batch_loss


def _batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    y = rng.uniform(1, 7, n).astype(np.float32)
    return (y + rng.normal(0, 1, n)).astype(np.float32), y


def test_integer_weights_equal_repeated_rows():
    preds, labels = _batch()
    weights = np.array([1, 2, 3, 1, 1, 2], np.float32)
    mask = np.ones(6, bool)
    got = float(weighted_ccc_loss(preds, labels, mask, weights))
    repeated = np.repeat(np.arange(6), weights.astype(int))
    assert got == pytest.approx(1.0 - ccc(preds[repeated], labels[repeated]), abs=1e-5)
    # A common factor changes nothing, even one that makes the weights sum below 1.
    for factor in (0.01, 7.0):
        scaled = float(weighted_ccc_loss(preds, labels, mask, weights * factor))
        assert scaled == pytest.approx(got, abs=1e-5)
    # All-equal weights are the unweighted loss.
    plain = float(ccc_loss(jnp.asarray(preds), jnp.asarray(labels)))
    assert float(weighted_ccc_loss(preds, labels, mask, np.full(6, 1.3))) == pytest.approx(
        plain, abs=1e-5
    )


def test_padding_rows_weigh_nothing_and_gradients_are_finite():
    preds, labels = _batch(1, 8)
    weights = np.array([2, 1, 1, 2, 1, 1, 5, 5], np.float32)
    mask = np.array([True] * 6 + [False] * 2)
    got = float(weighted_ccc_loss(preds, labels, mask, weights))
    only_real = float(weighted_ccc_loss(preds[:6], labels[:6], mask[:6], weights[:6]))
    assert got == pytest.approx(only_real, abs=1e-6)
    grad = jax.grad(lambda p: weighted_ccc_loss(p, labels, mask, weights))(jnp.asarray(preds))
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[6:] == 0)


def test_finetune_batch_loss_weights_rows_by_speaker():
    preds, labels = _batch(2, 6)
    batch = {
        "example_mask": np.array([True] * 5 + [False]),
        "speaker": np.array([0, 2, 1, 2, -1, -1], np.int32),
    }
    table = jnp.asarray([1.0, 0.5, 3.0])
    got = float(batch_loss(preds, labels, batch, table))
    weights = np.array([1.0, 3.0, 0.5, 3.0, 1.0, 0.0])  # speaker -1 weighs 1; padding 0
    expected = float(weighted_ccc_loss(preds, labels, batch["example_mask"], weights))
    assert got == pytest.approx(expected, abs=1e-6)
    unweighted = float(batch_loss(preds, labels, batch))
    assert unweighted == pytest.approx(float(ccc_loss(preds, labels, batch["example_mask"])))
    assert abs(got - unweighted) > 1e-3
