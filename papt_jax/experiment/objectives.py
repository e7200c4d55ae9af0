"""Which pre-training objective a run uses, and whether it needs pseudo-labels.

`pretrain.objective='auto'` gives each encoder family its own objective: wav2vec 2.0's
contrastive loss for wav2vec2, masked prediction of pseudo-labels for HuBERT,
data2vec-audio and WavLM (WavLM's with utterance mixing, `pretrain.utterance_mixing`).

The planner needs the answer before any encoder is loaded (the pseudo-label stage is
skipped for the contrastive objective), so the family is read from the config: a preset's
name, the bootstrap preset, a converted folder's `config.json`, or a PyTorch checkpoint's
own config or header (`convert.peek`: a Hugging Face `config.json`, a safetensors header,
a fairseq file's config unpickled by the safe loader with its tensors left on disk). Only
when that does not tell (a legacy-format pickle, say) is the objective assumed to need
labels; the pre-training stage resolves it from the loaded encoder either way
(`resolve`). No JAX import unless a PyTorch checkpoint is named: settings validation uses
this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OBJECTIVES = ("masked_prediction", "contrastive")
FAMILY_OBJECTIVES = {
    "hubert": "masked_prediction",
    "wav2vec2": "contrastive",
    "wavlm": "masked_prediction",
    "data2vec_audio": "masked_prediction",
}
# Preset names start with their family's name (models.config); the rest are HuBERT's.
_PRESET_PREFIXES = (
    ("wav2vec2", "wav2vec2"),
    ("wavlm", "wavlm"),
    ("data2vec-audio", "data2vec_audio"),
)


def preset_family(name: str) -> str:
    """The family of a `models.config.MODEL_PRESETS` name ('wav2vec2-tiny' -> 'wav2vec2')."""
    for prefix, family in _PRESET_PREFIXES:
        if name.startswith(prefix):
            return family
    return "hubert"


def spec_family(spec: str, values: Mapping[str, Any]) -> str | None:
    """The family of the encoder an encoder spec names, or None when only reading the
    whole checkpoint would tell (a folder that cannot be read, a PyTorch file whose config
    or header does not say).

    Args:
      spec: `model.init`'s value ('bootstrap', 'preset:NAME', 'converted:DIR', ...).
      values: The flat config (`settings.flatten`), for `bootstrap.preset`.
    """
    from papt_jax.experiment.settings import parse_encoder_spec

    try:
        parsed = parse_encoder_spec(spec)
    except ValueError:
        return None
    if parsed.kind == "workdir":
        return preset_family(str(values["bootstrap.preset"])) if spec == "bootstrap" else None
    if parsed.kind == "preset":
        return preset_family(parsed.value)
    if parsed.kind == "converted":
        try:
            stored = json.loads((Path(parsed.value) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        # Folders written before families existed are HuBERT's (convert.storage).
        return stored.get("family", "hubert") if isinstance(stored, dict) else None
    if parsed.kind == "pytorch":
        from papt_jax.convert.peek import checkpoint_family

        return checkpoint_family(parsed.value)
    return None


def resolve(objective: str, family: str) -> str:
    """'auto' -> `family`'s own objective; an explicit objective is kept."""
    if objective == "auto":
        return FAMILY_OBJECTIVES[family]
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be 'auto' or one of {OBJECTIVES}, got {objective!r}")
    return objective


def mixing_on(setting: str, family: str, objective: str) -> bool:
    """`pretrain.utterance_mixing`: 'on', 'off', or 'auto' (WavLM's masked prediction)."""
    if setting == "auto":
        return family == "wavlm" and objective == "masked_prediction"
    return setting == "on"


def planned_objective(values: Mapping[str, Any]) -> str | None:
    """The objective of the run's `pretrain` stage as far as the config tells, else None."""
    objective = str(values["pretrain.objective"])
    if objective != "auto":
        return objective
    family = spec_family(str(values["model.init"]), values)
    return None if family is None else FAMILY_OBJECTIVES[family]


def labels_needed(values: Mapping[str, Any]) -> bool:
    """Whether the run's pre-training reads pseudo-labels (unknown: assumed so)."""
    return planned_objective(values) != "contrastive"


def bootstrap_objective(values: Mapping[str, Any]) -> str:
    """The bootstrap's objective: `pretrain.objective` for the bootstrap preset's family."""
    family = preset_family(str(values["bootstrap.preset"]))
    return resolve(str(values["pretrain.objective"]), family)
