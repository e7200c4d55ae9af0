"""The heads of the published dimensional emotion models, and the model they make.

* `MeanTanhHead` (audEERING's `w2v2-L-robust-12`): mean over valid frames of the last
  hidden state -> dropout -> `classifier/dense` -> tanh -> dropout -> `classifier/out_proj`.
* `AttentiveStatisticsHead` (the MSP-Podcast challenge 2024 baseline): attentive
  statistics pooling (`pool_model`: `sap_linear`, `attention` (dim, 1)): weights
  softmax_t(tanh(x W + b) a), output [mean, sqrt(max(E[x^2] - mean^2, 1e-5))]; then
  `ser_model`: dropout -> `num_layers` x (`fc_{i}/linear`, `fc_{i}/layer_norm`, ReLU,
  dropout) -> `out`.

Both predict arousal, dominance and valence (`EmotionHeadConfig.labels` gives the order)
on 0..1, MSP-Podcast's 1..7 scale mapped by (label - 1) / 6.

The challenge's pooling counts (samples - 1) // 320 + 1 frames per utterance, one more
than the encoder outputs when the sample count is not 80 past a multiple of 320: a
batched, padded utterance pools one padded frame in PyTorch. Pooling here uses the valid
frames only, which equals PyTorch on one utterance at a time (how the challenge
evaluates).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from papt_jax.models.config import HubertConfig
from papt_jax.models.flat_random import Dropout
from papt_jax.models.hubert import HubertModel, masked_mean

HEAD_KINDS = ("audeering", "msp_challenge")
# PyTorch's LayerNorm default epsilon (the challenge's head uses nn.LayerNorm(hidden)).
_TORCH_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class EmotionHeadConfig:
    """A published emotion model's head.

    Attributes:
      kind: 'audeering' or 'msp_challenge'.
      labels: the outputs' dimensions, in order.
      label_range: the outputs' scale (both: 0..1).
      dropout: the head's dropout rate.
      hidden_dim: width of the challenge head's Linear layers (audEERING: the encoder's).
      num_layers: the challenge head's (Linear, LayerNorm, ReLU, Dropout) blocks.
    """

    kind: str
    labels: tuple[str, ...] = ("arousal", "dominance", "valence")
    label_range: tuple[float, float] = (0.0, 1.0)
    dropout: float = 0.1
    hidden_dim: int = 0
    num_layers: int = 1

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "label_range", tuple(float(v) for v in self.label_range))
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"emotion head kind must be one of {HEAD_KINDS}, got {self.kind!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmotionHeadConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class MeanTanhHead(nn.Module):
    """audEERING's head: (batch, frames, dim), (batch, frames) -> (batch, labels)."""

    config: EmotionHeadConfig

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        pooled = masked_mean(frames, mask)
        dropout = Dropout(cfg.dropout, deterministic=not train)
        x = nn.Dense(pooled.shape[-1], name="dense")(dropout(pooled))
        return nn.Dense(len(cfg.labels), name="out_proj")(dropout(jnp.tanh(x)))


class AttentiveStatisticsPooling(nn.Module):
    """(batch, frames, dim), (batch, frames) -> (batch, 2 * dim): weighted mean and std."""

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array) -> jax.Array:
        x = frames.astype(jnp.float32)
        dim = x.shape[-1]
        attention = self.param("attention", nn.initializers.normal(1.0), (dim, 1))
        scores = (jnp.tanh(nn.Dense(dim, name="sap_linear")(x)) @ attention)[..., 0]
        scores = jnp.where(mask, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)[..., None]
        mean = (x * weights).sum(1)
        var = (x**2 * weights).sum(1) - mean**2
        return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, 1e-5))], axis=-1)


class RegressionBlocks(nn.Module):
    """The challenge's `EmotionRegression`: (batch, features) -> (batch, labels)."""

    config: EmotionHeadConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        x = Dropout(cfg.dropout, deterministic=not train)(x)
        for i in range(cfg.num_layers):
            x = _Block(cfg, name=f"fc_{i}")(x, train)
        return nn.Dense(len(cfg.labels), name="out")(x)


class _Block(nn.Module):
    config: EmotionHeadConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Dense(self.config.hidden_dim, name="linear")(x)
        x = nn.LayerNorm(epsilon=_TORCH_EPS, name="layer_norm")(x)
        return Dropout(self.config.dropout, deterministic=not train)(nn.relu(x))


class AttentiveStatisticsHead(nn.Module):
    """The challenge's head: `pool_model` then `ser_model`."""

    config: EmotionHeadConfig

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        pooled = AttentiveStatisticsPooling(name="pool_model")(frames, mask)
        return RegressionBlocks(self.config, name="ser_model")(pooled, train)


HEADS = {"audeering": MeanTanhHead, "msp_challenge": AttentiveStatisticsHead}


class EmotionModel(nn.Module):
    """An encoder (`hubert`) and a published emotion head: audio -> (batch, labels)."""

    config: HubertConfig
    head_config: EmotionHeadConfig

    @nn.compact
    def __call__(
        self,
        audio: jax.Array,
        audio_mask: jax.Array,
        speaker: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """Returns predictions (batch, labels) on the head's scale and pooled (batch, dim)."""
        out = HubertModel(self.config, name="hubert")(
            audio, audio_mask=audio_mask, speaker=speaker, deterministic=not train
        )
        head = HEADS[self.head_config.kind](self.head_config, name="head")
        preds = head(out.last_hidden_state, out.frame_mask, train)
        return preds, masked_mean(out.last_hidden_state, out.frame_mask)
