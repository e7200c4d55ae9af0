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

The building blocks live in `models.layers` and the layer stack (scanned or unrolled,
with a remat policy) in `models.stack`; this module puts them together.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from papt_jax.models.config import HubertConfig
from papt_jax.models.families import PIECES
from papt_jax.models.flat_random import Dropout
from papt_jax.models.layers import (
    FeatureExtractor,
    FeatureProjection,
    conv_output_lengths,
    lengths_to_mask,
    normalize_waveform,
)
from papt_jax.models.stack import run_layers

__all__ = [
    "Encoder",
    "HubertModel",
    "HubertOutput",
    "conv_output_lengths",
    "lengths_to_mask",
    "masked_mean",
    "normalize_waveform",
]


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
      normalized_features: (batch, frames, conv_dim[-1]) the same after the feature
        projection's LayerNorm: wav2vec2's quantizer input.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None
    frame_mask: jax.Array
    features_pen: jax.Array
    extract_features: jax.Array
    normalized_features: jax.Array


class Encoder(nn.Module):
    """Positional conv, encoder LayerNorm and the Transformer stack (`models.stack`)."""

    config: HubertConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        deterministic: bool,
        first_layer_offset: jax.Array | None = None,
        prefix: jax.Array | None = None,
        output_hidden_states: bool = False,
        attention_bias: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...] | None]:
        """Runs the encoder.

        Args:
          x: (batch, frames, dim) projected features.
          mask: (batch, frames) bool.
          deterministic: disables dropout.
          first_layer_offset: optional (batch, dim) added to the first layer's input.
          prefix: optional (batch, dim) token prepended before the first layer.
          output_hidden_states: also return the L+1 hidden states.
          attention_bias: optional (batch, heads, q, k) added to every layer's attention
            logits (with a prefix token, q and k count it).

        Returns:
          The encoder output (batch, frames, dim) and None or the L+1 hidden states,
          each (batch, frames, dim) (a prefix token is removed from all of them).
        """
        cfg = self.config
        pieces = PIECES[cfg.family]
        dtype = jnp.dtype(cfg.dtype)
        # Padded frames must not leak into real ones through the positional conv.
        x = jnp.where(mask[..., None], x, 0).astype(dtype)
        x = x + pieces.positional(cfg, name="pos_conv_embed")(x, mask)
        layer_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name="layer_norm")
        if not cfg.do_stable_layer_norm:
            x = layer_norm(x)
        x = Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        if first_layer_offset is not None:
            x = x + jnp.where(mask[..., None], first_layer_offset[:, None, :], 0).astype(dtype)
        if prefix is not None:
            x = jnp.concatenate([prefix[:, None, :].astype(dtype), x], axis=1)
            mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
        n_prefix = 0 if prefix is None else 1
        if pieces.attention_bias is not None:
            bias = pieces.attention_bias(cfg, name="rel_attn_embed")(x.shape[1])
            attention_bias = bias if attention_bias is None else attention_bias + bias
        x, hidden_states = run_layers(
            pieces.layer,
            cfg,
            x,
            mask,
            deterministic=deterministic,
            dropout_rng=None if deterministic else self.make_rng("dropout"),
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
            drop_prefix=n_prefix,
        )
        x = x[:, n_prefix:]
        if hidden_states is not None:
            # As transformers>=5 records them: the last entry is the output of the last
            # layer, before the pre-LN model's final LayerNorm.
            hidden_states = (*hidden_states, x)
        if cfg.do_stable_layer_norm:
            x = layer_norm(x)
        return x, hidden_states


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

    def _cnn_features(self, audio: jax.Array, audio_mask: jax.Array | None):
        """(batch, samples) waveforms -> CNN features (batch, frames, conv_dim[-1]) and the
        (batch, frames) bool mask of frames computed from real audio."""
        cfg = self.config
        if audio.ndim != 2:
            raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}")
        if audio_mask is None:
            audio_mask = jnp.ones(audio.shape, dtype=bool)
        audio_mask = audio_mask.astype(bool)
        if cfg.input_shift != 0.0 or cfg.input_scale != 1.0:
            audio = (audio.astype(jnp.float32) - cfg.input_shift) * cfg.input_scale
        if cfg.normalize_waveform:
            audio = normalize_waveform(audio.astype(jnp.float32), audio_mask)
        else:
            audio = jnp.where(audio_mask, audio, 0)
        lengths = audio_mask.sum(-1).astype(jnp.int32)
        features = self.feature_extractor(audio, lengths)
        frame_lengths = conv_output_lengths(lengths, cfg.conv_kernel, cfg.conv_stride)
        return features, lengths_to_mask(frame_lengths, features.shape[1])

    def quantizer_input(self, audio: jax.Array, audio_mask: jax.Array | None = None) -> jax.Array:
        """`HubertOutput.normalized_features` alone: the CNN and the feature projection's
        LayerNorm, no Transformer (wav2vec 2.0's codebook statistics need only these).

        Returns:
          (batch, frames, conv_dim[-1]) features, as `__call__` computes them.
        """
        features, _ = self._cnn_features(audio, audio_mask)
        return self.feature_projection(features, True)[1]

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
        if cfg.speaker_fusion != "none" and speaker is None:
            raise ValueError(f"speaker_fusion={cfg.speaker_fusion!r} needs `speaker` ids")
        features, frame_mask = self._cnn_features(audio, audio_mask)
        if freeze_feature_extractor:
            features = jax.lax.stop_gradient(features)

        frame_maskf = frame_mask[..., None].astype(jnp.float32)
        n_values = jnp.maximum(frame_maskf.sum() * features.shape[-1], 1.0)
        features_pen = (features.astype(jnp.float32) ** 2 * frame_maskf).sum() / n_values

        x, normalized_features = self.feature_projection(features, deterministic)
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
            output_hidden_states=output_hidden_states,
        )
        if cfg.speaker_fusion == "last":
            x = x + speaker_vec[:, None, :].astype(x.dtype)
        return HubertOutput(
            last_hidden_state=x,
            hidden_states=hidden_states,
            frame_mask=frame_mask,
            features_pen=features_pen,
            extract_features=features,
            normalized_features=normalized_features,
        )


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over valid frames: (batch, frames, dim), (batch, frames) -> (batch, dim)."""
    maskf = mask[..., None].astype(jnp.float32)
    return (x.astype(jnp.float32) * maskf).sum(1) / jnp.maximum(maskf.sum(1), 1.0)
