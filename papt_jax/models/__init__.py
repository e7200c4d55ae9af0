"""Flax HuBERT encoder, its configuration and the task heads."""

from papt_jax.models.config import MODEL_PRESETS, HubertConfig, get_preset
from papt_jax.models.hubert import HubertModel, HubertOutput, masked_mean
from papt_jax.models.stack import first_layers, to_layout

__all__ = [
    "MODEL_PRESETS",
    "HubertConfig",
    "HubertModel",
    "HubertOutput",
    "first_layers",
    "get_preset",
    "masked_mean",
    "to_layout",
]
