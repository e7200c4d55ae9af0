"""The parameter shapes conversion checks against: `jax.eval_shape` of each Flax module.

Nothing is allocated. Encoder shapes are always given in the per-layer layout
(`encoder/layers_{i}/...`), the one the mapping tables and PyTorch name; a scanned model
gets its layers stacked afterwards (`models.stack.to_layout`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

from papt_jax.models.config import HubertConfig
from papt_jax.models.emotion_heads import HEADS, EmotionHeadConfig
from papt_jax.models.heads import PretrainHead, PretrainHeadConfig
from papt_jax.models.hubert import HubertModel
from papt_jax.models.quantizer import QuantizerHead, QuantizerHeadConfig

Shapes = dict[str, jax.ShapeDtypeStruct]


def _flat(shapes) -> Shapes:
    return flatten_dict(shapes["params"], sep="/")


def abstract_params(config: HubertConfig) -> Shapes:
    """Flat path -> shape/dtype of every `HubertModel(config)` parameter, one layer at a time."""
    config = config.replace(scan_layers=False)
    model = HubertModel(config)
    audio = jnp.zeros((1, config.receptive_field), jnp.float32)
    speaker = jnp.zeros((1,), jnp.int32) if config.num_speakers > 0 else None
    return _flat(jax.eval_shape(lambda: model.init(jax.random.key(0), audio, speaker=speaker)))


def abstract_head_params(head_config: PretrainHeadConfig, hidden_size: int) -> Shapes:
    """... of every `PretrainHead(head_config)` parameter (HuBERT's masked prediction)."""
    frames = jnp.zeros((1, 1, hidden_size), jnp.float32)
    head = PretrainHead(head_config)
    return _flat(jax.eval_shape(lambda: head.init(jax.random.key(0), frames)))


def abstract_quantizer_params(head_config: QuantizerHeadConfig, config: HubertConfig) -> Shapes:
    """... of every `QuantizerHead(head_config)` parameter (wav2vec2's pre-training head)."""
    features = jnp.zeros((1, 1, config.conv_dim[-1]), jnp.float32)
    hidden = jnp.zeros((1, 1, config.hidden_size), jnp.float32)
    head = QuantizerHead(head_config)
    return _flat(jax.eval_shape(lambda: head.init(jax.random.key(0), hidden, features, 1.0)))


def abstract_emotion_head_params(head_config: EmotionHeadConfig, hidden_size: int) -> Shapes:
    """... of every parameter of a published emotion model's head."""
    frames = jnp.zeros((1, 2, hidden_size), jnp.float32)
    mask = jnp.ones((1, 2), bool)
    head = HEADS[head_config.kind](head_config)
    return _flat(jax.eval_shape(lambda: head.init(jax.random.key(0), frames, mask, False)))
