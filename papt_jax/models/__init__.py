"""Flax HuBERT encoder, its configuration and the task heads."""

from papt_jax.models.config import PRESETS, HubertConfig, from_hf_config, get_preset, to_hf_config
from papt_jax.models.hubert import HubertModel, HubertOutput, masked_mean

__all__ = [
    "PRESETS",
    "HubertConfig",
    "HubertModel",
    "HubertOutput",
    "from_hf_config",
    "get_preset",
    "masked_mean",
    "to_hf_config",
]
