"""Dropout masks drawn as one flat vector and reshaped: the same masks, compiled faster.

JAX's default generator (Threefry-2x32) hashes one counter per element, and the counter
of an element is its row-major index whatever the requested shape (in both of JAX's
counter layouts, `jax_threefry_partitionable` on or off). So `jax.random.bits(key,
(prod(shape),)).reshape(shape)` is `jax.random.bits(key, shape)` bit for bit, and so is
`bernoulli` below against `jax.random.bernoulli` (tested in
`tests/models/test_flat_random.py`). What differs is
the compile: XLA's CPU backend emits the hash loop over a 2-, 3- or 4-D shape as kernels
that LLVM is slow to compile, the 4-D attention-dropout draw (batch, heads, frames,
frames) of a training step most of all (about 2 s cold against 0.2 s for the flat draw;
BENCHMARKS.md, "Cold compile time"). Every dropout of the models is `Dropout` below.
(The 2-D draws of the span masks gained nothing measurable, so they stay as they are.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def bernoulli(key: jax.Array, p: float | jax.Array, shape: Sequence[int]) -> jax.Array:
    """`jax.random.bernoulli(key, p, shape)` for a scalar `p`, drawn flat: bool of `shape`."""
    return jax.random.bernoulli(key, p, (math.prod(shape),)).reshape(shape)


class Dropout(nn.Dropout):
    """`flax.linen.Dropout` with a flat mask draw; same attributes, keys and results.

    The class keeps Flax's name, so auto-named instances are still `Dropout_{i}` and a
    key drawn with `make_rng` (no `rng` argument) is the one Flax's module would draw.
    """

    @nn.compact
    def __call__(
        self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Zeroes each entry with probability `rate` and scales the rest by 1 / (1 - rate).

        Args:
          inputs: any shape.
          deterministic: disables dropout (merged with the attribute, as in Flax).
          rng: the key; None draws one from the `rng_collection` stream.

        Returns:
          inputs' shape and dtype.
        """
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep_prob = 1.0 - self.rate
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        keep = jnp.broadcast_to(bernoulli(rng, keep_prob, shape), inputs.shape)
        return jax.lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))
