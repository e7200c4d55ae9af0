"""data2vec-audio's piece of the shared encoder: its positional-convolution stack.

transformers' `Data2VecAudioPositionalConvEmbedding`: `num_conv_pos_layers` grouped convs
(kernel `num_conv_pos_embeddings`, `num_conv_pos_embedding_groups` groups, plain weights,
no weight norm), each followed by SamePad (an even kernel drops its extra frame), a
LayerNorm without parameters and GELU. Its output is added to the input, as for the other
families.

Padded frames are zeroed before every conv, not only before the first as in PyTorch:
there, the frames after an utterance's end are no longer zero after the first conv and
leak into its last frames through the next ones, so its output depends on what it was
batched with. Here it does not; on an unpadded row both compute the same.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from papt_jax.models.config import HubertConfig
from papt_jax.models.grouped_conv import grouped_conv1d, plain_grouped_conv1d
from papt_jax.models.layers import exact_gelu


class PositionalConv(nn.Module):
    """One grouped conv with bias, 'same' padding: (batch, time, dim) -> same shape."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        taps, groups = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
        channels = x.shape[-1]
        # transformers: kaiming-normal weights, zero bias.
        std = math.sqrt(2.0 / (taps * channels // groups))
        kernel = self.param(
            "kernel", nn.initializers.normal(stddev=std), (taps, channels // groups, channels)
        )
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        # As in layers.WeightNormConv1D: XLA's CPU kernel gradient is slow for wide groups.
        conv = grouped_conv1d if jax.default_backend() == "cpu" else plain_grouped_conv1d
        y = conv(x.astype(dtype), kernel.astype(dtype), groups, taps // 2)
        if taps % 2 == 0:
            y = y[:, :-1]
        return y + bias.astype(dtype)


class PositionalConvLayer(nn.Module):
    """conv -> SamePad -> LayerNorm without parameters -> GELU."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = PositionalConv(self.config, name="conv")(x)
        # PyTorch's LayerNorm(dim, elementwise_affine=False): eps 1e-5, no scale or bias.
        x = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=x.dtype)(x)
        return exact_gelu(x)


class PositionalConvStack(nn.Module):
    """The stack (module docstring): (batch, time, dim), (batch, time) -> (batch, time, dim)."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        keep = mask[..., None]
        for j in range(self.config.num_conv_pos_layers):
            x = PositionalConvLayer(self.config, name=f"layers_{j}")(jnp.where(keep, x, 0))
        return x
