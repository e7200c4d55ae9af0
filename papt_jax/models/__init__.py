"""Flax HuBERT encoder, its configuration and the task heads."""

from papt_jax.models.config import PRESETS, HubertConfig, get_preset
from papt_jax.models.hubert import HubertModel, HubertOutput, masked_mean

__all__ = [
    "PRESETS",
    "HubertConfig",
    "HubertModel",
    "HubertOutput",
    "get_preset",
    "masked_mean",
]
