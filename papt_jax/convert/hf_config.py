"""Hugging Face `config.json` <-> an encoder family and its config values.

`read_hf_config` finds the family from `model_type` (HuBERT, wav2vec2, WavLM,
data2vec-audio) and translates the file into the encoder config's values: the keys
every family shares are copied (the encoder config's field names follow transformers'),
the family's own keys are translated by its `FamilyNaming`, and every key whose value
this port does not implement is refused by name. A `model_type` it does not know is
refused too: a conversion never guesses which architecture a file describes.

`hf_config_dict` is the way back, for exports that transformers loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papt_jax.convert import families
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.families.naming import HF_SHARED_CONFIG_KEYS, FamilyNaming
from papt_jax.models.config import HubertConfig

# transformers' defaults of the masking probabilities (the same in every family).
_HF_MASK_DEFAULTS = {"mask_time_prob": 0.05, "mask_feature_prob": 0.0}
_KNOWN = ", ".join(naming.hf_model_type for naming in families.FAMILIES.values())


def family_of(hf: Mapping[str, Any], where: str = "config.json") -> FamilyNaming:
    """The encoder family a HF `config.json` describes.

    Raises:
      CheckpointFormatError: no `model_type`, or one that is not an encoder family here.
    """
    model_type = hf.get("model_type")
    if model_type is None:
        raise CheckpointFormatError(
            f"{where} has no model_type, so it does not say which encoder family it "
            f"describes (this converter reads {_KNOWN})"
        )
    naming = families.by_model_type(model_type)
    if naming is None:
        raise CheckpointFormatError(
            f"{where} describes a {model_type!r} model: not an encoder family this "
            f"converter reads ({_KNOWN})"
        )
    return naming


def read_hf_config(
    hf: Mapping[str, Any],
    preprocessor: Mapping[str, Any] | None = None,
    where: str = "config.json",
) -> tuple[FamilyNaming, dict[str, Any], list[str]]:
    """Translates a HF `config.json` (and its feature extractor config) into config values.

    Waveform normalisation comes from `preprocessor_config.json`'s `do_normalize`.
    Without that file, HuBERT follows `do_stable_layer_norm` (HuBERT-large was trained
    on normalised waveforms, base was not); the other families do what the
    transformers model itself does, which is not to normalise, and a note says so.

    Args:
      hf: the `config.json` dict.
      preprocessor: the `preprocessor_config.json` dict, if the folder has one.
      where: names the file in messages.

    Returns:
      (the family's naming, encoder config values without `family`, notes).

    Raises:
      CheckpointFormatError: an unknown family, or settings this port does not
        implement (each offending key named, all in one message).
    """
    naming = family_of(hf, where)
    unsupported = [
        f"{key}={hf[key]!r} (only {expected!r} is supported)"
        for key, expected in naming.required
        if key in hf and hf[key] != expected
    ]
    if unsupported:
        raise CheckpointFormatError(
            f"{where}: unsupported {naming.family} architecture: " + "; ".join(unsupported)
        )
    own = {hf_key for hf_key, _ in naming.config_keys}
    fixed = dict(naming.fixed)
    values = {
        key: hf[key]
        for key in HF_SHARED_CONFIG_KEYS
        if key in hf and key not in own and key not in fixed
    }
    defaults = dict(naming.config_defaults)
    for hf_key, field in naming.config_keys:
        values[field] = hf.get(hf_key, defaults.get(hf_key))
    values.update(fixed)
    notes = []
    for key in ("input_shift", "input_scale"):  # Written by papt_jax's own export.
        if preprocessor is not None and key in preprocessor:
            values[key] = float(preprocessor[key])
    if preprocessor is not None and "do_normalize" in preprocessor:
        values["normalize_waveform"] = bool(preprocessor["do_normalize"])
    elif naming.family == "hubert":
        values["normalize_waveform"] = bool(hf.get("do_stable_layer_norm", False))
    else:
        values["normalize_waveform"] = False
        notes.append(
            "no preprocessor_config.json: waveforms are not normalised, as the transformers "
            "model itself computes (pass normalize_waveform=True if this checkpoint was "
            "trained on normalised waveforms)"
        )
    return naming, values, notes


def hf_config_dict(naming: FamilyNaming, values: Mapping[str, Any]) -> dict[str, Any]:
    """The HF `config.json` dict of an encoder of family `naming` with config `values`."""
    fixed = dict(naming.fixed)
    own = {hf_key for hf_key, _ in naming.config_keys}
    out = {key: values[key] for key in HF_SHARED_CONFIG_KEYS if key not in set(fixed) | own}
    for hf_key, field in naming.config_keys:
        out[hf_key] = values[field]
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
    out.update(dict(naming.required))
    out.update(architectures=[naming.hf_architecture], model_type=naming.hf_model_type)
    return out


def from_hf_config(hf: Mapping[str, Any], **overrides: Any) -> HubertConfig:
    """Translates a HF `config.json` dict of any family into a `HubertConfig`.

    Raises:
      CheckpointFormatError: an unknown family, settings this port does not implement
        (naming each offending key), or an inconsistent config.
    """
    naming, values, _ = read_hf_config(hf)
    values.update(family=naming.family, **overrides)
    try:
        return HubertConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise CheckpointFormatError(
            f"config.json does not describe a valid encoder: {err}"
        ) from err


def to_hf_config(config: HubertConfig) -> dict[str, Any]:
    """The Hugging Face `config.json` dict for the encoder part of `config`."""
    return hf_config_dict(families.FAMILIES[config.family], config.to_dict())


def saves_mask_embedding(hf: Mapping[str, Any]) -> bool:
    """Whether transformers creates (and so saves) `masked_spec_embed` for this config.

    Every family's model has the parameter only when a masking probability is positive.
    """
    return any(float(hf.get(key, default)) > 0 for key, default in _HF_MASK_DEFAULTS.items())
