"""HuBERT encoder in Flax Linen, with a speaker-embedding table.

A port of `transformers.HubertModel` (itself a port of fairseq's HuBERT). Module
and parameter names mirror the PyTorch `state_dict` (`feature_extractor.conv_layers.0.conv`
becomes `feature_extractor/conv_layers_0/conv`) so conversion is a lookup table;
see `papt_jax.convert.mapping`.

Two things differ from the PyTorch model on purpose, both so that an utterance's
output does not depend on what it is batched with:
  * the base model's GroupNorm (conv 0) takes its statistics over valid samples only
    (PyTorch averages over padding too, which is why Hugging Face tells users not to
    pass an attention mask to base models);
  * the optional in-model waveform normalisation uses valid samples only.
On unpadded input both are exactly the PyTorch computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from papt_jax.models.config import HubertConfig
from papt_jax.models.grouped_conv import grouped_conv1d, plain_grouped_conv1d

# PyTorch's GELU is the exact erf form; `jax.nn.gelu` defaults to the tanh approximation.
_gelu = jax.nn.gelu
_dense_init = nn.initializers.normal(stddev=0.02)


def exact_gelu(x: jax.Array) -> jax.Array:
    return _gelu(x, approximate=False)


@struct.dataclass
class HubertOutput:
    """What the encoder returns.

    Attributes:
      last_hidden_state: (batch, frames, dim) Transformer output, with the speaker
        vector added when `speaker_fusion='last'`; this is `f_p` of the paper.
      hidden_states: None, or a tuple of L+1 arrays (batch, frames, dim) in the
        transformers convention: the input of each layer, then the encoder output
        (for pre-LN models, the last layer's output before the final LayerNorm, as
        transformers>=5 records it; `last_hidden_state` is after it). They never
        include the 'last' speaker vector.
      frame_mask: (batch, frames) bool, True on frames computed from real audio.
      features_pen: () mean square of the CNN features over valid frames (HuBERT's
        feature penalty).
      extract_features: (batch, frames, conv_dim[-1]) CNN features before projection.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None
    frame_mask: jax.Array
    features_pen: jax.Array
    extract_features: jax.Array


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
    def __call__(self, features: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")(features)
        x = nn.Dense(cfg.hidden_size, dtype=dtype, kernel_init=_dense_init, name="projection")(x)
        return nn.Dropout(cfg.feat_proj_dropout)(x, deterministic=deterministic)


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
    def __call__(self, x: jax.Array) -> jax.Array:
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
    """Multi-head self-attention with a key-padding mask."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        """x: (batch, time, dim); mask: (batch, time) bool key mask."""
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
        if deterministic or cfg.attention_dropout == 0.0:
            # Fused attention (cuDNN flash attention on GPU when the shapes allow).
            out = jax.nn.dot_product_attention(q, k, v, mask=key_mask)
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
            logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
            probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
            probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=False)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        out = out.reshape(batch, time, dim)
        return nn.Dense(dim, dtype=dtype, kernel_init=_dense_init, name="out_proj")(out)


class FeedForward(nn.Module):
    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = nn.Dense(
            cfg.intermediate_size, dtype=dtype, kernel_init=_dense_init, name="intermediate_dense"
        )(x)
        x = exact_gelu(x)
        x = nn.Dropout(cfg.activation_dropout)(x, deterministic=deterministic)
        x = nn.Dense(cfg.hidden_size, dtype=dtype, kernel_init=_dense_init, name="output_dense")(x)
        return nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """One Transformer layer, post-LN (base) or pre-LN (large, 'stable')."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        attention = SelfAttention(cfg, name="attention")
        layer_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")
        feed_forward = FeedForward(cfg, name="feed_forward")
        final_layer_norm = nn.LayerNorm(
            epsilon=cfg.layer_norm_eps, dtype=dtype, name="final_layer_norm"
        )
        dropout = nn.Dropout(cfg.hidden_dropout)
        if cfg.do_stable_layer_norm:
            h = attention(layer_norm(x), mask, deterministic)
            x = x + dropout(h, deterministic=deterministic)
            return x + feed_forward(final_layer_norm(x), deterministic)
        h = attention(x, mask, deterministic)
        x = layer_norm(x + dropout(h, deterministic=deterministic))
        return final_layer_norm(x + feed_forward(x, deterministic))


class Encoder(nn.Module):
    """Positional conv, encoder LayerNorm and the Transformer stack."""

    config: HubertConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        deterministic: bool,
        first_layer_offset: jax.Array | None = None,
        prefix: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Runs the encoder.

        Args:
          x: (batch, frames, dim) projected features.
          mask: (batch, frames) bool.
          deterministic: disables dropout.
          first_layer_offset: optional (batch, dim) added to the first layer's input.
          prefix: optional (batch, dim) token prepended before the first layer.

        Returns:
          The encoder output and the L+1 hidden states, both (batch, frames, dim)
          (a prefix token is removed from all of them).
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        # Padded frames must not leak into real ones through the positional conv.
        x = jnp.where(mask[..., None], x, 0).astype(dtype)
        x = x + PositionalConvEmbedding(cfg, name="pos_conv_embed")(x)
        layer_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")
        if not cfg.do_stable_layer_norm:
            x = layer_norm(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        if first_layer_offset is not None:
            x = x + jnp.where(mask[..., None], first_layer_offset[:, None, :], 0).astype(dtype)
        if prefix is not None:
            x = jnp.concatenate([prefix[:, None, :].astype(dtype), x], axis=1)
            mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
        n_prefix = 0 if prefix is None else 1

        layer_cls = EncoderLayer
        if cfg.remat:
            layer_cls = nn.remat(EncoderLayer, static_argnums=(3,))
        hidden_states = []
        for i in range(cfg.num_hidden_layers):
            hidden_states.append(x[:, n_prefix:])
            x = layer_cls(cfg, name=f"layers_{i}")(x, mask, deterministic)
        x = x[:, n_prefix:]
        # As transformers>=5 records them: the last entry is the output of the last
        # layer, before the pre-LN model's final LayerNorm.
        hidden_states.append(x)
        if cfg.do_stable_layer_norm:
            x = layer_norm(x)
        return x, tuple(hidden_states)


class HubertModel(nn.Module):
    """HuBERT encoder with an optional speaker-embedding table.

    Call with `model.apply({'params': params}, audio, audio_mask=..., speaker=...)`.
    Dropout needs `rngs={'dropout': key}` and `deterministic=False`.
    """

    config: HubertConfig

    def setup(self):
        cfg = self.config
        self.feature_extractor = FeatureExtractor(cfg)
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Encoder(cfg)
        self.masked_spec_embed = self.param(
            "masked_spec_embed", nn.initializers.uniform(scale=1.0), (cfg.hidden_size,)
        )
        if cfg.num_speakers > 0:
            # Zero init: at step 0 the model is exactly the pre-trained encoder and the
            # table learns only what the adaptation data asks of it (paper is silent).
            self.speaker_embedding = nn.Embed(
                cfg.num_speakers,
                cfg.hidden_size,
                embedding_init=nn.initializers.zeros,
                name="speaker_embedding",
            )

    def __call__(
        self,
        audio: jax.Array,
        audio_mask: jax.Array | None = None,
        speaker: jax.Array | None = None,
        mask_time_indices: jax.Array | None = None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        freeze_feature_extractor: bool = False,
    ) -> HubertOutput:
        """Encodes a batch of waveforms.

        Args:
          audio: (batch, samples) float waveform at 16 kHz.
          audio_mask: (batch, samples) bool, True on real samples (default: all).
          speaker: (batch,) int speaker ids; required when the model fuses speakers.
          mask_time_indices: (batch, frames) bool frames replaced by
            `masked_spec_embed` (HuBERT's masked prediction).
          deterministic: disables dropout when True.
          output_hidden_states: also return the L+1 hidden states.
          freeze_feature_extractor: stop gradients at the CNN output, so a frozen CNN
            costs no backward pass (its parameters get zero gradients).

        Returns:
          A `HubertOutput`.
        """
        cfg = self.config
        if audio.ndim != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}")
        if audio_mask is None:
            audio_mask = jnp.ones(audio.shape, dtype=bool)
        audio_mask = audio_mask.astype(bool)
        if cfg.speaker_fusion != "none" and speaker is None:
            raise ValueError(f"speaker_fusion={cfg.speaker_fusion!r} needs `speaker` ids")
        if cfg.normalize_waveform:
            audio = normalize_waveform(audio.astype(jnp.float32), audio_mask)
        else:
            audio = jnp.where(audio_mask, audio, 0)

        lengths = audio_mask.sum(-1).astype(jnp.int32)
        features = self.feature_extractor(audio, lengths)
        if freeze_feature_extractor:
            features = jax.lax.stop_gradient(features)
        frame_lengths = conv_output_lengths(lengths, cfg.conv_kernel, cfg.conv_stride)
        frame_mask = lengths_to_mask(frame_lengths, features.shape[1])

        frame_maskf = frame_mask[..., None].astype(jnp.float32)
        n_values = jnp.maximum(frame_maskf.sum() * features.shape[-1], 1.0)
        features_pen = (features.astype(jnp.float32) ** 2 * frame_maskf).sum() / n_values

        x = self.feature_projection(features, deterministic)
        if mask_time_indices is not None:
            x = jnp.where(mask_time_indices[..., None], self.masked_spec_embed.astype(x.dtype), x)

        speaker_vec = None
        if cfg.speaker_fusion != "none":
            speaker_vec = self.speaker_embedding(speaker)
        x, hidden_states = self.encoder(
            x,
            frame_mask,
            deterministic,
            first_layer_offset=speaker_vec if cfg.speaker_fusion == "first" else None,
            prefix=speaker_vec if cfg.speaker_fusion == "prefix" else None,
        )
        if cfg.speaker_fusion == "last":
            x = x + speaker_vec[:, None, :].astype(x.dtype)
        return HubertOutput(
            last_hidden_state=x,
            hidden_states=hidden_states if output_hidden_states else None,
            frame_mask=frame_mask,
            features_pen=features_pen,
            extract_features=features,
        )


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over valid frames: (batch, frames, dim), (batch, frames) -> (batch, dim)."""
    maskf = mask[..., None].astype(jnp.float32)
    return (x.astype(jnp.float32) * maskf).sum(1) / jnp.maximum(maskf.sum(1), 1.0)
