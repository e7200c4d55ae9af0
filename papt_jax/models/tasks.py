"""Encoder + head compositions used by the training stages.

All keep the encoder's parameters under `hubert`, so a pre-trained encoder moves
between tasks (and to and from PyTorch) without renaming.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from papt_jax.models.config import HubertConfig
from papt_jax.models.heads import PretrainHead, PretrainHeadConfig, RegressionHead
from papt_jax.models.hubert import HubertModel, HubertOutput, masked_mean
from papt_jax.models.quantizer import QuantizerHead, QuantizerHeadConfig, QuantizerOutput


class HubertForPretraining(nn.Module):
    """HuBERT with its masked-prediction head."""

    config: HubertConfig
    head_config: PretrainHeadConfig

    def setup(self):
        self.hubert = HubertModel(self.config)
        self.head = PretrainHead(self.head_config)

    def __call__(
        self,
        audio: jax.Array,
        audio_mask: jax.Array,
        speaker: jax.Array | None,
        mask_time_indices: jax.Array,
        deterministic: bool = True,
    ) -> tuple[jax.Array, HubertOutput]:
        """Returns logits (batch, frames, rows) computed from `f_p`, and the encoder output."""
        out = self.hubert(
            audio,
            audio_mask=audio_mask,
            speaker=speaker,
            mask_time_indices=mask_time_indices,
            deterministic=deterministic,
        )
        return self.head(out.last_hidden_state), out


class EncoderForContrastive(nn.Module):
    """An encoder (any family) with wav2vec 2.0's pre-training head (`QuantizerHead`).

    The encoder's parameters are under `hubert` and the head's under `head`, as in
    `HubertForPretraining`, so one training loop serves both objectives.
    """

    config: HubertConfig
    head_config: QuantizerHeadConfig

    def setup(self):
        self.hubert = HubertModel(self.config)
        self.head = QuantizerHead(self.head_config)

    def code_sums(
        self,
        audio: jax.Array,
        audio_mask: jax.Array,
        mask_time_indices: jax.Array,
        deterministic: bool = True,
        quantizer_dropout_rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """The quantizer's `prob_sum` and `code_sum` (groups, vars) over the masked frames,
        from the CNN, the feature LayerNorm and the quantizer's logits only (no
        Transformer): what `__call__` would give with the same arguments."""
        features = self.hubert.quantizer_input(audio, audio_mask)
        return self.head.code_sums(
            features, mask_time_indices, deterministic, dropout_rng=quantizer_dropout_rng
        )

    def __call__(
        self,
        audio: jax.Array,
        audio_mask: jax.Array,
        speaker: jax.Array | None,
        mask_time_indices: jax.Array,
        deterministic: bool = True,
        temperature: jax.Array | float = 1.0,
        gumbel_noise: jax.Array | None = None,
        quantizer_dropout_rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, QuantizerOutput, HubertOutput]:
        """Returns `project_hid(f_p)` and `project_q(quantized)`, both (batch, frames,
        proj_codevector_dim), the quantizer's output and the encoder output.

        `temperature`, `gumbel_noise` and `quantizer_dropout_rng` are the quantizer's
        (`QuantizerHead`); training (`deterministic=False`) needs the 'dropout' rng stream,
        and the 'gumbel' stream unless `gumbel_noise` is given.
        """
        out = self.hubert(
            audio,
            audio_mask=audio_mask,
            speaker=speaker,
            mask_time_indices=mask_time_indices,
            deterministic=deterministic,
        )
        projected, projected_quantized, quantizer_out = self.head(
            out.last_hidden_state,
            out.normalized_features,
            temperature,
            mask_time_indices,
            deterministic=deterministic,
            gumbel_noise=gumbel_noise,
            dropout_rng=quantizer_dropout_rng,
        )
        return projected, projected_quantized, quantizer_out, out


class HubertForRegression(nn.Module):
    """HuBERT, masked mean pooling of `f_p`, and the paper's light regression head."""

    config: HubertConfig
    head_dims: tuple[int, ...] = (128, 32)
    head_dropout: float = 0.1
    # Stop gradients at the CNN output (the optimiser also leaves its weights alone).
    freeze_feature_extractor: bool = False

    def setup(self):
        self.hubert = HubertModel(self.config)
        self.head = RegressionHead(self.head_dims, self.head_dropout)

    def __call__(
        self,
        audio: jax.Array,
        audio_mask: jax.Array,
        speaker: jax.Array | None = None,
        train: bool = False,
        example_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Returns predictions (batch,) and pooled representations (batch, dim).

        `example_mask` (batch,) marks real rows; rows that only pad a batch stay out of the
        head's BatchNorm statistics in training.
        """
        out = self.hubert(
            audio,
            audio_mask=audio_mask,
            speaker=speaker,
            deterministic=not train,
            freeze_feature_extractor=self.freeze_feature_extractor,
        )
        pooled = masked_mean(out.last_hidden_state, out.frame_mask)
        return self.head(pooled, train=train, example_mask=example_mask), pooled
