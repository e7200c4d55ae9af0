"""What a checkpoint is: its encoder family, its parts, all under the HF names.

`classify` takes a `RawCheckpoint` (as read from disk, in the source's own naming) and
returns a `Source`: the family's `FamilyNaming`, the encoder's arrays under that
family's HF names (task-model prefix stripped, fairseq / release names renamed, legacy
weight-norm keys renamed), the encoder config values when the file carries a config,
and the heads worth keeping, each with its own table:

* fairseq HuBERT's masked-prediction head (fairseq names, `families.hubert.HEAD_RULES`);
* wav2vec2's pre-training head (HF names, `FamilyNaming.pretrain_rules`), from
  `Wav2Vec2ForPreTraining` folders and fairseq wav2vec2 pre-training files;
* the published emotion models' regression heads (`emotion_models`).

Downstream heads of HF task models (CTC, sequence classification) and fairseq's CTC
layer are dropped, each named in a note. Anything whose family cannot be told is
refused by the readers (`hf_config.family_of`, `fairseq`, `wavlm_release`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from papt_jax.convert import emotion_models, fairseq_config, families, hf_config, mapping
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.families import hubert, wav2vec2, wavlm
from papt_jax.convert.families.naming import (
    HF_DOWNSTREAM_PREFIXES,
    LEGACY_WEIGHT_NORM_RENAMES,
    FamilyNaming,
)
from papt_jax.convert.torch_io import RawCheckpoint

logger = logging.getLogger(__name__)

# The HF config of microsoft/wavlm-large, the backbone of the MSP-Podcast challenge
# model (neither of its layouts carries it). Architecture keys as published; the rest
# (dropout rates) are transformers' WavLMConfig defaults.
WAVLM_LARGE_HF_CONFIG = {
    "model_type": "wavlm",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "num_buckets": 320,
    "max_bucket_distance": 800,
    "layer_norm_eps": 1e-5,
}

# Which naming each fairseq-style source uses, per family.
_FAIRSEQ_RENAMES = {"hubert": hubert.FAIRSEQ_RENAMES, "wav2vec2": wav2vec2.FAIRSEQ_RENAMES}

# The HF config keys of wav2vec2's pre-training head, with transformers' defaults (the
# quantizer dropout's None: the file does not say; `pretrain.quantizer_dropout` decides).
_PRETRAIN_HEAD_KEYS = {
    "num_codevector_groups": 2,
    "num_codevectors_per_group": 320,
    "codevector_dim": 256,
    "proj_codevector_dim": 256,
    "contrastive_logits_temperature": 0.1,
    "feat_quantizer_dropout": None,
}

# Weights only one family has, for state dicts that come without any config.
_FAMILY_SIGNS = (
    ("wavlm", (".attention.gru_rel_pos_linear.", ".self_attn.grep_linear.")),
    ("data2vec_audio", ("encoder.pos_conv_embed.layers.",)),
    ("wav2vec2", ("quantizer.codevectors", "quantizer.vars")),
)


@dataclasses.dataclass
class Source:
    """A checkpoint's parts under the HF names of its family.

    Attributes:
      naming: the encoder family's naming.
      encoder: the encoder's arrays, HF names without a task-model prefix.
      source_format: how the file was stored (see `RawCheckpoint.source_format`).
      config_values: the encoder config values from the file's own config, or None
        (then shapes and a preset decide).
      hubert_head: fairseq HuBERT's masked-prediction head, fairseq names.
      pretrain_head: wav2vec2's pre-training head, HF names.
      pretrain_head_config: its config values, in HF `Wav2Vec2Config` terms
        (`num_codevector_groups`, `num_codevectors_per_group`, `codevector_dim`,
        `proj_codevector_dim`, `contrastive_logits_temperature`,
        `feat_quantizer_dropout`).
      emotion_head: an emotion model's head, its table's PyTorch names.
      emotion_head_config: that head's config values (see `emotion_models`).
      notes: what was dropped, assumed or created.
    """

    naming: FamilyNaming
    encoder: dict[str, np.ndarray]
    source_format: str
    config_values: dict[str, Any] | None = None
    hubert_head: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pretrain_head: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pretrain_head_config: dict[str, Any] | None = None
    emotion_head: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    emotion_head_config: dict[str, Any] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _shape(value: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def _split(
    state_dict: Mapping[str, np.ndarray], keep
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the arrays whose key `keep` accepts, the others)."""
    kept = {k: v for k, v in state_dict.items() if keep(k)}
    return kept, {k: v for k, v in state_dict.items() if k not in kept}


def _strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    if not any(key.startswith(prefix) for key in state_dict):
        return dict(state_dict)
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _drop_downstream(state_dict: dict[str, np.ndarray], notes: list[str]) -> dict[str, np.ndarray]:
    dropped, kept = _split(state_dict, lambda k: k.startswith(HF_DOWNSTREAM_PREFIXES))
    if dropped:
        logger.warning(
            "dropping %d parameters of a downstream task head (not part of the encoder): %s",
            len(dropped),
            sorted(dropped),
        )
        listed = ", ".join(f"{k} {_shape(dropped[k])}" for k in sorted(dropped))
        notes.append(f"dropped the downstream task head (not part of the encoder): {listed}")
    return kept


def _pretrain_split(naming: FamilyNaming, state_dict: dict[str, np.ndarray]):
    prefixes = tuple(key.split(".", 1)[0] + "." for key in naming.pretrain_keys)
    if not prefixes:
        return {}, state_dict
    return _split(state_dict, lambda k: k.startswith(prefixes))


def family_from_keys(state_dict: Mapping[str, np.ndarray]) -> FamilyNaming:
    """The family of a state dict without any config (HuBERT unless its weights say not)."""
    for family, signs in _FAMILY_SIGNS:
        if any(sign in key for key in state_dict for sign in signs):
            return families.FAMILIES[family]
    return families.FAMILIES["hubert"]


def _msp(raw: RawCheckpoint, where: str, backbone: Mapping[str, Any] | None) -> Source:
    notes = list(raw.notes)
    if raw.norm_stat is not None:  # The release folder.
        mean, std = raw.norm_stat
        dropout, labels = emotion_models.MSP_DROPOUT, emotion_models.EMOTION_LABELS
    else:
        mean, std, dropout, labels, more = emotion_models.msp_package_facts(raw.hf_config, where)
        notes += more
    if backbone is None:
        backbone = WAVLM_LARGE_HF_CONFIG
        notes.append(
            f"encoder architecture: {emotion_models.MSP_SSL_TYPE}'s (the challenge model's "
            "backbone; its files do not carry it)"
        )
    else:
        notes.append("encoder architecture: from the backbone config given with the files")
    # Its input is normalised with the training audio's statistics (the head's config),
    # never per utterance.
    naming, values, _ = hf_config.read_hf_config(backbone, {"do_normalize": False}, where)
    if naming.family != "wavlm":
        raise CheckpointFormatError(
            f"{where}: the backbone config describes {naming.family}; the challenge model's "
            "files hold a WavLM"
        )
    head, rest = _split(raw.state_dict, lambda k: k.startswith(emotion_models.MSP_HEAD_PREFIXES))
    encoder = _strip_prefix(rest, emotion_models.MSP_ENCODER_PREFIX)
    return Source(
        naming=naming,
        encoder=mapping.rename_keys(encoder, LEGACY_WEIGHT_NORM_RENAMES),
        source_format=raw.source_format,
        config_values=values,
        emotion_head=head,
        emotion_head_config=emotion_models.msp_head(head, mean, std, dropout, labels, where),
        notes=notes,
    )


def _hf(raw: RawCheckpoint, where: str) -> Source:
    naming, values, notes = hf_config.read_hf_config(raw.hf_config, raw.preprocessor, where)
    notes = list(raw.notes) + notes
    state_dict = _strip_prefix(raw.state_dict, naming.hf_prefix)
    source = Source(naming, {}, raw.source_format, values, notes=notes)
    if emotion_models.is_audeering(state_dict):
        head, state_dict = _split(state_dict, lambda k: k in emotion_models.AUDEERING_KEYS)
        source.emotion_head = head
        source.emotion_head_config = emotion_models.audeering_head(raw.hf_config, head, where)
    source.pretrain_head, state_dict = _pretrain_split(naming, state_dict)
    if source.pretrain_head:
        source.pretrain_head_config = {
            key: raw.hf_config.get(key, default) for key, default in _PRETRAIN_HEAD_KEYS.items()
        }
    state_dict = _drop_downstream(state_dict, notes)
    source.encoder = mapping.rename_keys(state_dict, LEGACY_WEIGHT_NORM_RENAMES)
    return source


def _fairseq(raw: RawCheckpoint, where: str) -> Source:
    naming = families.FAMILIES[raw.family or "hubert"]
    state_dict = raw.state_dict
    hubert_head = {}
    if naming.family == "hubert":
        hubert_head, state_dict = _split(state_dict, lambda k: k in hubert.FAIRSEQ_HEAD_KEYS)
    state_dict = mapping.rename_keys(state_dict, _FAIRSEQ_RENAMES[naming.family])
    pretrain_head, encoder = _pretrain_split(naming, state_dict)
    head_config = None
    if pretrain_head and raw.fairseq_model_cfg is not None:
        head_config = fairseq_config.wav2vec2_head_values(raw.fairseq_model_cfg, where)
    return Source(
        naming,
        encoder,
        raw.source_format,
        raw.config_values,
        hubert_head=hubert_head,
        pretrain_head=pretrain_head,
        pretrain_head_config=head_config,
        notes=list(raw.notes),
    )


def classify(
    raw: RawCheckpoint, where: str, backbone_config: Mapping[str, Any] | None = None
) -> Source:
    """Finds a checkpoint's family and splits it into encoder and heads, under HF names.

    Args:
      raw: the checkpoint as read.
      where: names it in messages.
      backbone_config: for the MSP-Podcast challenge model, whose files do not carry
        their WavLM's architecture: that WavLM's HF `config.json` dict (default:
        microsoft/wavlm-large's, which the challenge trains).

    Raises:
      CheckpointFormatError: a family or layout the readers do not know, or an
        emotion head that does not fit its config.
    """
    if raw.source_format == "msp_release" or emotion_models.is_msp_package(raw.state_dict):
        return _msp(raw, where, backbone_config)
    if raw.hf_config is not None:
        return _hf(raw, where)
    if raw.source_format.startswith("fairseq"):
        return _fairseq(raw, where)
    if raw.source_format == "wavlm_release":
        encoder = mapping.rename_keys(raw.state_dict, wavlm.RELEASE_RENAMES)
        naming = families.FAMILIES["wavlm"]
        return Source(naming, encoder, raw.source_format, raw.config_values, notes=raw.notes)
    # A bare state dict: HF names (possibly a task model's), no config.
    naming = family_from_keys(raw.state_dict)
    state_dict = _strip_prefix(raw.state_dict, naming.hf_prefix)
    notes = list(raw.notes)
    if emotion_models.is_audeering(state_dict):
        raise CheckpointFormatError(
            f"{where} holds audEERING's emotion head but no config.json (its labels and "
            "encoder architecture are in the folder's config.json)",
            hint="pass the whole Hugging Face folder",
        )
    pretrain_head, state_dict = _pretrain_split(naming, state_dict)
    state_dict = _drop_downstream(state_dict, notes)
    encoder = mapping.rename_keys(state_dict, LEGACY_WEIGHT_NORM_RENAMES)
    return Source(naming, encoder, raw.source_format, pretrain_head=pretrain_head, notes=notes)
