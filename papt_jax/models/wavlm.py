"""WavLM's piece of the shared encoder: a gated, bucketed relative-position attention bias.

WavLM (Chen et al. 2022; transformers' `WavLMAttention`, unilm's wavlm/modules.py) adds to
every layer's attention logits a relative-position bias:

* `RelativePositionBias` (`encoder/rel_attn_embed`, held by layer 0 in PyTorch): a table
  (num_buckets, heads) looked up at the bucket of each key-query distance, computed once
  per forward pass and handed to every layer by the stack (`models.stack`);
* `GatedSelfAttention`: each layer scales that bias per head and per query by a gate
  computed from its own attention input: the input split into heads goes through
  `gru_rel_pos_linear` (head_dim -> 8), reshaped (2, 4) and summed to two logits; with
  a = sigmoid(first), b = sigmoid(second), the gate is a * (b * gru_rel_pos_const - 1) + 2.

Buckets (T5's bidirectional scheme): half the buckets per direction; distances below a
quarter of `num_buckets` get one bucket each, longer ones a logarithmic share up to
`max_bucket_distance`, beyond which they share the last bucket.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.models.config import HubertConfig
from papt_jax.models.layers import EncoderLayer, SelfAttention


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(length, length) int32 bucket of every (query, key) pair, as transformers computes it.

    Computed on the host in float32 with transformers' order of operations, so the
    truncations to an integer bucket agree with PyTorch's.
    """
    positions = np.arange(length, dtype=np.int64)
    relative = positions[None, :] - positions[:, None]  # key - query
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    is_small = distance < max_exact
    with np.errstate(divide="ignore"):
        scaled = np.log(distance.astype(np.float32) / np.float32(max_exact))
    scaled = scaled / np.float32(math.log(max_distance / max_exact))
    scaled = scaled * np.float32(half - max_exact)
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(is_small, distance, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """The shared, ungated bias: (1, heads, time, time) for `time` positions."""

    config: HubertConfig

    @nn.compact
    def __call__(self, time: int) -> jax.Array:
        cfg = self.config
        table = self.param(
            "embedding",
            nn.initializers.normal(stddev=0.02),
            (cfg.num_buckets, cfg.num_attention_heads),
        )
        buckets = relative_position_buckets(time, cfg.num_buckets, cfg.max_bucket_distance)
        bias = jnp.take(table, jnp.asarray(buckets), axis=0)  # (time, time, heads)
        return jnp.transpose(bias, (2, 0, 1))[None]


class GatedSelfAttention(SelfAttention):
    """`SelfAttention` whose shared bias is gated per head and per query (module docstring)."""

    def layer_bias(self, x: jax.Array, attention_bias: jax.Array | None) -> jax.Array | None:
        """x: (batch, time, dim) attention input; attention_bias: (1, heads, time, time)."""
        if attention_bias is None:
            raise ValueError("WavLM's attention needs the relative-position bias")
        cfg = self.config
        batch, time, dim = x.shape
        heads = cfg.num_attention_heads
        per_head = x.reshape(batch, time, heads, dim // heads).astype(jnp.float32)
        logits = nn.Dense(8, name="gru_rel_pos_linear")(per_head)  # (batch, time, heads, 8)
        logits = logits.reshape(batch, time, heads, 2, 4).sum(-1)
        gate_a, gate_b = jnp.split(jax.nn.sigmoid(logits), 2, axis=-1)
        const = self.param("gru_rel_pos_const", nn.initializers.ones, (heads,))
        gate = gate_a[..., 0] * (gate_b[..., 0] * const - 1.0) + 2.0  # (batch, time, heads)
        return jnp.transpose(gate, (0, 2, 1))[..., None] * attention_bias


class WavLMEncoderLayer(EncoderLayer):
    """`EncoderLayer` with `GatedSelfAttention`."""

    def attention_module(self) -> SelfAttention:
        return GatedSelfAttention(self.config, self.deterministic, name="attention")
