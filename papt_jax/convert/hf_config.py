"""Hugging Face `config.json` <-> `HubertConfig`.

Field names of `HubertConfig` follow `transformers.HubertConfig` where a field exists
there, so most values are copied; the rest (activation, feature-projection norm,
positional-conv batch norm) must have the one value this port implements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.models.config import HubertConfig

# The Hugging Face config keys copied one-to-one.
_HF_SHARED_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "do_stable_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "layer_norm_eps",
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
)

# transformers.HubertConfig defaults of the masking probabilities.
_HF_MASK_DEFAULTS = {"mask_time_prob": 0.05, "mask_feature_prob": 0.0}


def from_hf_config(hf: Mapping[str, Any], **overrides: Any) -> HubertConfig:
    """Translates a Hugging Face `config.json` dict into a `HubertConfig`.

    Stable-layer-norm (large) models are trained on normalised waveforms, so
    `normalize_waveform` follows `do_stable_layer_norm` unless overridden.

    Raises:
      CheckpointFormatError: for architectures this port does not implement (another
        activation, no feature-projection LayerNorm, batch-normed positional conv),
        naming each offending key, or an inconsistent config.
    """
    unsupported = []
    for key, expected in (
        ("hidden_act", "gelu"),
        ("feat_extract_activation", "gelu"),
        ("feat_proj_layer_norm", True),
        ("conv_pos_batch_norm", False),
    ):
        if key in hf and hf[key] != expected:
            unsupported.append(f"{key}={hf[key]!r} (only {expected!r} is supported)")
    if unsupported:
        raise CheckpointFormatError("unsupported HuBERT architecture: " + "; ".join(unsupported))
    values = {key: hf[key] for key in _HF_SHARED_KEYS if key in hf}
    values["normalize_waveform"] = bool(hf.get("do_stable_layer_norm", False))
    values.update(overrides)
    try:
        return HubertConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise CheckpointFormatError(f"config.json does not describe a valid HuBERT: {err}") from err


def to_hf_config(config: HubertConfig) -> dict[str, Any]:
    """The Hugging Face `config.json` dict for the encoder part of `config`."""
    values = {key: getattr(config, key) for key in _HF_SHARED_KEYS}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    values.update(
        architectures=["HubertModel"],
        model_type="hubert",
        hidden_act="gelu",
        feat_extract_activation="gelu",
        feat_proj_layer_norm=True,
        conv_pos_batch_norm=False,
        do_stable_layer_norm=config.do_stable_layer_norm,
        feat_extract_norm=config.feat_extract_norm,
    )
    return values


def hf_config(
    hf: Mapping[str, Any], preprocessor: Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> HubertConfig:
    """`from_hf_config`, taking waveform normalisation from the feature extractor config."""
    values = dict(overrides)
    if preprocessor is not None and "do_normalize" in preprocessor:
        values.setdefault("normalize_waveform", bool(preprocessor["do_normalize"]))
    return from_hf_config(hf, **values)


def saves_mask_embedding(hf: Mapping[str, Any]) -> bool:
    """Whether transformers creates (and so saves) `masked_spec_embed` for this config.

    `HubertModel` only has the parameter when a masking probability is positive.
    """
    return any(float(hf.get(key, default)) > 0 for key, default in _HF_MASK_DEFAULTS.items())
