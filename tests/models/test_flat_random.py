"""The flat dropout draw (`models/flat_random.py`) is JAX's and Flax's draw, bit for bit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.models.flat_random import Dropout, bernoulli

SHAPES = [(7,), (3, 5), (2, 3, 4, 5), (2, 4, 9, 9)]


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_bernoulli_is_jax_bernoulli(shape, partitionable):
    key = jax.random.PRNGKey(3)
    with jax.threefry_partitionable(partitionable):
        for p in (0.1, 0.5, 0.9):
            ours = jax.jit(lambda k, p=p: bernoulli(k, p, shape))(key)
            theirs = jax.jit(lambda k, p=p: jax.random.bernoulli(k, p, shape))(key)
            assert ours.shape == shape and ours.dtype == jnp.bool_
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


class _Block(nn.Module):
    """Two auto-named dropouts drawing their keys with make_rng, as the encoder does."""

    dropout_cls: type
    rate: float
    broadcast_dims: tuple = ()

    @nn.compact
    def __call__(self, x, deterministic):
        x = self.dropout_cls(self.rate, self.broadcast_dims)(x, deterministic)
        return self.dropout_cls(self.rate)(x * 2.0, deterministic)


@pytest.mark.parametrize("rate,broadcast_dims", [(0.1, ()), (0.5, ()), (0.3, (1,)), (1.0, ())])
def test_dropout_is_flax_dropout(rate, broadcast_dims):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 9, 9))
    rngs = {"dropout": jax.random.PRNGKey(7)}
    outs = {}
    for cls in (Dropout, nn.Dropout):
        block = _Block(cls, rate, broadcast_dims)
        outs[cls] = jax.jit(lambda x, b=block: b.apply({}, x, False, rngs=rngs))(x)
        np.testing.assert_array_equal(np.asarray(block.apply({}, x, True)), np.asarray(x * 2.0))
    np.testing.assert_array_equal(np.asarray(outs[Dropout]), np.asarray(outs[nn.Dropout]))
    if rate < 1.0:  # a draw that dropped nothing or everything would prove little
        zeros = float((outs[Dropout] == 0).mean())
        assert 0.0 < zeros < 1.0


def test_dropout_with_explicit_key_is_flax_dropout():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 5))
    key = jax.random.PRNGKey(11)
    ours = Dropout(0.2).apply({}, x, False, rng=key)
    theirs = nn.Dropout(0.2).apply({}, x, False, rng=key)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
