"""The encoder's building blocks, shared by every family built on this stack.

Each module mirrors a PyTorch module of `transformers`' HuBERT (and of its wav2vec2 parent),
with parameter names that follow the PyTorch `state_dict`, so conversion is a lookup table
(`papt_jax.convert.mapping`):

* `FeatureExtractor`: the strided conv waveform encoder (`ConvLayer` each, with
  `MaskedGroupNorm` on conv 0 or a LayerNorm after every conv);
* `FeatureProjection`: LayerNorm + linear map to the Transformer width;
* `PositionalConvEmbedding`: the wide grouped conv with weight norm (`WeightNormConv1D`);
* `EncoderLayer`: one Transformer layer (`SelfAttention` + `FeedForward`), post-LN or pre-LN.

`EncoderLayer` is what `models.stack` scans or unrolls. Two things make that work: the
layer's settings (`config`, `deterministic`) are module attributes, not call arguments,
and every dropout in it draws from an explicit key handed in by the stack (derived from
the layer's index), so the scanned and the unrolled stack drop the same units. Inputs that
are the same for every layer (the key mask and an optional additive `attention_bias`, e.g.
a relative-position bias computed once) are call arguments the stack broadcasts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from papt_jax.models.config import HubertConfig
from papt_jax.models.flat_random import Dropout
from papt_jax.models.grouped_conv import grouped_conv1d, plain_grouped_conv1d

# PyTorch's GELU is the exact erf form; `jax.nn.gelu` defaults to the tanh approximation.
_gelu = jax.nn.gelu
_dense_init = nn.initializers.normal(stddev=0.02)


def exact_gelu(x: jax.Array) -> jax.Array:
    return _gelu(x, approximate=False)


def conv_output_lengths(lengths: jax.Array, kernels: Sequence[int], strides: Sequence[int]):
    """Valid output lengths of a stack of VALID convs; (batch,) int -> (batch,) int."""
    for kernel, stride in zip(kernels, strides, strict=True):
        lengths = jnp.maximum((lengths - kernel) // stride + 1, 0)
    return lengths


def lengths_to_mask(lengths: jax.Array, max_len: int) -> jax.Array:
    """(batch,) lengths -> (batch, max_len) bool mask of the leading valid positions."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


def normalize_waveform(audio: jax.Array, mask: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Zero mean, unit variance per utterance over valid samples; padding stays zero.

    Matches the Hugging Face feature extractor (`(x - mean) / sqrt(var + 1e-7)`,
    population variance) on the valid part.
    """
    maskf = mask.astype(audio.dtype)
    count = jnp.maximum(maskf.sum(-1, keepdims=True), 1.0)
    mean = (audio * maskf).sum(-1, keepdims=True) / count
    var = (((audio - mean) * maskf) ** 2).sum(-1, keepdims=True) / count
    return (audio - mean) / jnp.sqrt(var + eps) * maskf


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel, statistics over valid frames only.

    PyTorch's `GroupNorm(C, C)` on (batch, C, time) normalises each channel of each
    utterance over time. Here the time average skips padded frames.
    """

    eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: (batch, time, channels); mask: (batch, time) bool."""
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        xf = x.astype(jnp.float32)
        maskf = mask[..., None].astype(jnp.float32)
        count = jnp.maximum(maskf.sum(1, keepdims=True), 1.0)
        mean = (xf * maskf).sum(1, keepdims=True) / count
        var = (((xf - mean) * maskf) ** 2).sum(1, keepdims=True) / count
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


class ConvLayer(nn.Module):
    """One conv of the feature extractor: conv -> [norm] -> GELU."""

    features: int
    kernel: int
    stride: int
    use_bias: bool
    norm: str  # 'group', 'layer' or 'none'
    eps: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: (batch, time, channels_in) -> (batch, time_out, features)."""
        x = nn.Conv(
            self.features,
            kernel_size=(self.kernel,),
            strides=(self.stride,),
            padding="VALID",
            use_bias=self.use_bias,
            dtype=self.dtype,
            kernel_init=nn.initializers.kaiming_normal(),
            name="conv",
        )(x)
        if self.norm == "group":
            x = MaskedGroupNorm(self.eps, self.dtype, name="layer_norm")(x, mask)
        elif self.norm == "layer":
            x = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="layer_norm")(x)
        return exact_gelu(x)


class FeatureExtractor(nn.Module):
    """The 7-conv waveform encoder: (batch, samples) -> (batch, frames, conv_dim[-1])."""

    config: HubertConfig

    @nn.compact
    def __call__(self, audio: jax.Array, lengths: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = audio[..., None].astype(dtype)
        for i, (dim, kernel, stride) in enumerate(
            zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, strict=True)
        ):
            lengths = conv_output_lengths(lengths, (kernel,), (stride,))
            if cfg.feat_extract_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if i == 0 else "none"
            mask = lengths_to_mask(lengths, (x.shape[1] - kernel) // stride + 1)
            x = ConvLayer(
                dim,
                kernel,
                stride,
                cfg.conv_bias,
                norm,
                cfg.layer_norm_eps,
                dtype,
                name=f"conv_layers_{i}",
            )(x, mask)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm over CNN features, then a linear map to the Transformer width."""

    config: HubertConfig

    @nn.compact
    def __call__(self, features: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
        """(batch, frames, conv_dim) -> projected (batch, frames, dim) and the normalised
        features (batch, frames, conv_dim), wav2vec2's quantizer input."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        normed = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")(features)
        x = nn.Dense(cfg.hidden_size, dtype=dtype, kernel_init=_dense_init, name="projection")(
            normed
        )
        return Dropout(cfg.feat_proj_dropout)(x, deterministic=deterministic), normed


class WeightNormConv1D(nn.Module):
    """Grouped 1-D conv with weight normalisation over the kernel axis.

    PyTorch `weight_norm(conv, dim=2)` keeps one gain per kernel position:
    `w[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||`. Parameters are stored
    explicitly as `weight_g` (kernel,) and `weight_v` (kernel, in/groups, out), so
    they convert one-to-one and train exactly as in PyTorch.
    """

    features: int
    kernel: int
    groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (batch, time, channels) -> (batch, time + 1 - kernel % 2, features)."""
        in_per_group = x.shape[-1] // self.groups
        # fairseq/HF initialise the positional conv with std sqrt(4 / (kernel * channels)).
        std = math.sqrt(4.0 / (self.kernel * x.shape[-1]))
        weight_v = self.param(
            "weight_v",
            nn.initializers.normal(stddev=std),
            (self.kernel, in_per_group, self.features),
        )
        weight_g = self.param(
            "weight_g",
            lambda _, v: jnp.sqrt((v**2).sum(axis=(1, 2))),
            weight_v,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        norm = jnp.sqrt((weight_v**2).sum(axis=(1, 2), keepdims=True))
        kernel = weight_g[:, None, None] * weight_v / norm
        # On the CPU the kernel gradient is computed as matrix products, which XLA's CPU
        # backend runs far faster than its own lowering (see grouped_conv.py); GPUs and
        # TPUs keep XLA's gradient (cuDNN and the TPU compiler have kernels for it).
        conv = grouped_conv1d if jax.default_backend() == "cpu" else plain_grouped_conv1d
        y = conv(x.astype(self.dtype), kernel.astype(self.dtype), self.groups, self.kernel // 2)
        return y + bias.astype(self.dtype)


class PositionalConvEmbedding(nn.Module):
    """Relative positional information from a wide grouped conv (SamePad + GELU)."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """x: (batch, time, dim) with padded frames zeroed -> (batch, time, dim).

        `mask` is not needed: one conv only sees the zeros the encoder left in padding.
        """
        cfg = self.config
        y = WeightNormConv1D(
            cfg.hidden_size,
            cfg.num_conv_pos_embeddings,
            cfg.num_conv_pos_embedding_groups,
            jnp.dtype(cfg.dtype),
            name="conv",
        )(x)
        if cfg.num_conv_pos_embeddings % 2 == 0:
            # An even kernel with symmetric padding yields one frame too many: drop it.
            y = y[:, :-1]
        return exact_gelu(y)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask and an optional additive bias.

    Attributes:
      config: the encoder's hyper-parameters.
      deterministic: disables the attention-probability dropout.
    """

    config: HubertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        attention_bias: jax.Array | None = None,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Attends over the valid frames.

        Args:
          x: (batch, time, dim).
          mask: (batch, time) bool key mask.
          attention_bias: optional (batch, heads, time, time) added to the attention
            logits (after the 1/sqrt(head_dim) scaling), e.g. a relative-position bias.
          dropout_rng: key of the attention-probability dropout (not deterministic only).

        Returns:
          (batch, time, dim).
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        batch, time, dim = x.shape
        heads = cfg.num_attention_heads
        head_dim = dim // heads

        def project(name):
            y = nn.Dense(dim, dtype=dtype, kernel_init=_dense_init, name=name)(x)
            return y.reshape(batch, time, heads, head_dim)

        q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        key_mask = mask[:, None, None, :]  # (batch, heads, q, k)
        bias = self.layer_bias(x, attention_bias)
        bias = None if bias is None else bias.astype(dtype)
        if self.deterministic or cfg.attention_dropout == 0.0:
            # Fused attention (cuDNN flash attention on GPU when the shapes allow).
            out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=key_mask)
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
            if bias is not None:
                logits = logits + bias
            logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
            probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
            probs = Dropout(cfg.attention_dropout)(probs, deterministic=False, rng=dropout_rng)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        out = out.reshape(batch, time, dim)
        return nn.Dense(dim, dtype=dtype, kernel_init=_dense_init, name="out_proj")(out)

    def layer_bias(self, x: jax.Array, attention_bias: jax.Array | None) -> jax.Array | None:
        """This layer's additive attention bias from the stack's shared one: itself here.

        A family whose layers shape the shared bias (WavLM's gate) overrides this; it runs
        inside `__call__`, so it may declare parameters.
        """
        return attention_bias


class FeedForward(nn.Module):
    """Dense -> exact GELU -> dropout -> Dense -> dropout."""

    config: HubertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rngs: Sequence[jax.Array | None]) -> jax.Array:
        """x: (batch, time, dim); dropout_rngs: keys of the activation and output dropouts."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = nn.Dense(
            cfg.intermediate_size, dtype=dtype, kernel_init=_dense_init, name="intermediate_dense"
        )(x)
        x = exact_gelu(x)
        x = Dropout(cfg.activation_dropout)(x, self.deterministic, rng=dropout_rngs[0])
        x = nn.Dense(cfg.hidden_size, dtype=dtype, kernel_init=_dense_init, name="output_dense")(x)
        return Dropout(cfg.hidden_dropout)(x, self.deterministic, rng=dropout_rngs[1])


class EncoderLayer(nn.Module):
    """One Transformer layer, post-LN (base) or pre-LN (large, 'stable').

    Attributes:
      config: the encoder's hyper-parameters.
      deterministic: disables dropout.
    """

    config: HubertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        attention_bias: jax.Array | None = None,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies the layer.

        Args:
          x: (batch, time, dim).
          mask: (batch, time) bool, True on valid frames.
          attention_bias: optional (batch, heads, time, time) additive attention bias.
          dropout_rng: this layer's dropout key (required unless deterministic); its four
            dropouts (attention probabilities, attention output, feed-forward activation,
            feed-forward output) use keys split from it.

        Returns:
          (batch, time, dim) in the compute dtype.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        if self.deterministic:
            keys = (None,) * 4
        else:
            if dropout_rng is None:
                raise ValueError("EncoderLayer needs a dropout_rng when not deterministic")
            keys = tuple(jax.random.split(dropout_rng, 4))
        attention = self.attention_module()
        layer_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")
        feed_forward = FeedForward(cfg, self.deterministic, name="feed_forward")
        final_layer_norm = nn.LayerNorm(
            epsilon=cfg.layer_norm_eps, dtype=dtype, name="final_layer_norm"
        )
        dropout = Dropout(cfg.hidden_dropout)

        def attend(h):
            return dropout(attention(h, mask, attention_bias, keys[0]), self.deterministic, keys[1])

        if cfg.do_stable_layer_norm:
            x = x + attend(layer_norm(x))
            return x + feed_forward(final_layer_norm(x), keys[2:])
        x = layer_norm(x + attend(x))
        return final_layer_norm(x + feed_forward(x, keys[2:]))

    def attention_module(self) -> SelfAttention:
        """The layer's attention; a family with its own attention overrides this."""
        return SelfAttention(self.config, self.deterministic, name="attention")
