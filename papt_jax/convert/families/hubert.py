"""HuBERT's naming: transformers `HubertModel`, and fairseq HuBERT with its pre-training head."""

from __future__ import annotations

from papt_jax.convert.families.naming import (
    ENCODER_RULES,
    FAIRSEQ_ENCODER_RENAMES,
    WEIGHT_NORM_POS_CONV_RULES,
    FamilyNaming,
)
from papt_jax.convert.mapping import IDENTITY_2D, Rule, dense

NAMING = FamilyNaming(
    family="hubert",
    hf_model_type="hubert",
    hf_prefix="hubert.",
    hf_architecture="HubertModel",
    rules=ENCODER_RULES + WEIGHT_NORM_POS_CONV_RULES,
    required=(
        ("hidden_act", "gelu"),
        ("feat_extract_activation", "gelu"),
        ("feat_proj_layer_norm", True),
        ("conv_pos_batch_norm", False),
    ),
)

# fairseq HuBERT (fairseq/models/hubert/hubert.py) names its encoder as wav2vec2 does.
FAIRSEQ_RENAMES = FAIRSEQ_ENCODER_RENAMES

# fairseq HuBERT's pre-training head <-> `papt_jax.models.heads.PretrainHead` parameters.
HEAD_RULES: tuple[Rule, ...] = (
    *dense("final_proj", "final_proj"),
    Rule("label_embs_concat", "label_embs_concat", IDENTITY_2D),
)
# Its keys, kept apart from the encoder and converted with HEAD_RULES.
FAIRSEQ_HEAD_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")
