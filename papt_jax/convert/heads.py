"""Converting the heads a checkpoint may carry beside its encoder, each with its own table.

* HuBERT's masked-prediction head (fairseq pre-training files): `PretrainHead`;
* wav2vec2's pre-training head (quantizer and projections; `Wav2Vec2ForPreTraining`
  folders, fairseq wav2vec2 pre-training files): `QuantizerHead`;
* a published emotion model's head (`emotion_models`): `EmotionHeadConfig`.

Each is checked against its Flax module's shapes (`shapes`) like the encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from papt_jax.convert import emotion_models, fairseq, mapping, shapes
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.families.hubert import HEAD_RULES
from papt_jax.convert.sources import Source
from papt_jax.models.config import HubertConfig
from papt_jax.models.emotion_heads import EmotionHeadConfig
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.quantizer import QuantizerHeadConfig

Params = dict[str, Any]
_EMOTION_RULES = {
    "audeering": emotion_models.AUDEERING_RULES,
    "msp_challenge": emotion_models.MSP_RULES,
}


def hubert_head(
    head_state: dict[str, np.ndarray],
    facts: fairseq.HeadFacts | None,
    hidden_size: int,
    context: str,
) -> tuple[PretrainHeadConfig | None, Params | None, list[str]]:
    """fairseq HuBERT's pre-training head, checked against its config: (config, params, notes)."""
    if "label_embs_concat" not in head_state:
        if not head_state:
            return None, None, []
        note = (
            f"dropped {sorted(head_state)}: without label_embs_concat they are no usable "
            "pre-training head"
        )
        return None, None, [note]
    facts = facts or fairseq.HeadFacts()
    rows, width = head_state["label_embs_concat"].shape
    final_dim = facts.final_dim if facts.final_dim is not None else int(width)
    proj = head_state.get("final_proj.weight")
    if proj is not None and proj.shape[0] != final_dim:
        sets = proj.shape[0] / final_dim
        raise CheckpointFormatError(
            f"{context}: final_proj has {proj.shape[0]} outputs, {sets:g} x final_dim "
            f"{final_dim} (untie_final_proj with several label sets): only one label set is "
            "supported"
        )
    if facts.num_label_rows is not None and facts.num_label_rows != rows:
        raise CheckpointFormatError(
            f"{context}: label_embs_concat has {rows} rows but the label dictionary has "
            f"{facts.num_label_rows} symbols"
        )
    head_config = PretrainHeadConfig(
        final_dim=final_dim,
        num_label_rows=int(rows),
        label_offset=facts.label_offset,
        logit_temp=facts.logit_temp,
    )
    expected = shapes.abstract_head_params(head_config, hidden_size)
    flat = mapping.torch_to_flax(head_state, expected, HEAD_RULES, f"{context}, head")
    return head_config, mapping.to_tree(flat), []


def quantizer_head(
    source: Source, config: HubertConfig, context: str
) -> tuple[QuantizerHeadConfig | None, Params | None]:
    """wav2vec2's pre-training head, or (None, None) when the source has none.

    A head without its config (a bare state dict) takes its shapes for the config.
    """
    if not source.pretrain_head:
        return None, None
    values = source.pretrain_head_config
    if values is None:
        entries, per_group = source.pretrain_head["quantizer.codevectors"].shape[1:]
        proj = source.pretrain_head["project_q.weight"].shape
        groups = proj[1] // per_group
        values = {
            "num_codevector_groups": groups,
            "num_codevectors_per_group": entries // groups,
            "codevector_dim": proj[1],
            "proj_codevector_dim": proj[0],
        }
    try:
        head_config = QuantizerHeadConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointFormatError(f"{context}: the quantizer's config: {err}") from err
    expected = shapes.abstract_quantizer_params(head_config, config)
    rules = source.naming.pretrain_rules
    flat = mapping.torch_to_flax(source.pretrain_head, expected, rules, f"{context}, quantizer")
    return head_config, mapping.to_tree(flat)


def emotion_head(
    source: Source, hidden_size: int, context: str
) -> tuple[EmotionHeadConfig | None, Params | None]:
    """A published emotion model's head, or (None, None)."""
    if source.emotion_head_config is None:
        return None, None
    values = source.emotion_head_config
    head_config = EmotionHeadConfig.from_dict(
        {**values, "hidden_dim": values.get("hidden_dim", hidden_size)}
    )
    expected = shapes.abstract_emotion_head_params(head_config, hidden_size)
    rules = _EMOTION_RULES[head_config.kind]
    flat = mapping.torch_to_flax(source.emotion_head, expected, rules, f"{context}, emotion head")
    return head_config, mapping.to_tree(flat)


def emotion_input_overrides(source: Source) -> dict[str, float]:
    """Encoder config values for the challenge model's fixed input normalisation
    `(wav - mean) / (std + 1e-6)`: `input_shift`, `input_scale`."""
    values = source.emotion_head_config or {}
    if "input_mean" not in values:
        return {}
    return {
        "input_shift": float(values["input_mean"]),
        "input_scale": 1.0 / (float(values["input_std"]) + float(values["input_std_eps"])),
    }
