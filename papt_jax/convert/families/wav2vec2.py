"""wav2vec 2.0's naming: transformers `Wav2Vec2Model` / `Wav2Vec2ForPreTraining`, and fairseq.

The encoder's names are HuBERT's (transformers built HuBERT from wav2vec2's modules).
What is wav2vec2's own is the pre-training head of `Wav2Vec2ForPreTraining` (and of
fairseq's pre-training checkpoints): the Gumbel product quantizer (`quantizer.codevectors`
(1, groups * vars, codevector_dim / groups), `quantizer.weight_proj` from the CNN
features to the groups' logits) and the two projections into the contrastive space
(`project_q` for quantized targets, `project_hid` for the Transformer output).
"""

from __future__ import annotations

from papt_jax.convert.families.naming import (
    ENCODER_RULES,
    FAIRSEQ_ENCODER_RENAMES,
    WEIGHT_NORM_POS_CONV_RULES,
    FamilyNaming,
)
from papt_jax.convert.mapping import SQUEEZE_LEADING, Rule, dense

PRETRAIN_RULES: tuple[Rule, ...] = (
    Rule("quantizer.codevectors", "quantizer/codevectors", SQUEEZE_LEADING),
    *dense("quantizer.weight_proj", "quantizer/weight_proj"),
    *dense("project_q", "project_q"),
    *dense("project_hid", "project_hid"),
)

NAMING = FamilyNaming(
    family="wav2vec2",
    hf_model_type="wav2vec2",
    hf_prefix="wav2vec2.",
    hf_architecture="Wav2Vec2Model",
    rules=ENCODER_RULES + WEIGHT_NORM_POS_CONV_RULES,
    pretrain_rules=PRETRAIN_RULES,
    required=(
        ("hidden_act", "gelu"),
        ("feat_extract_activation", "gelu"),
        ("add_adapter", False),
    ),
)

# fairseq's Wav2Vec2Model: the shared encoder names plus its pre-training modules
# (`quantizer.vars` is the codebook; `final_proj` projects the Transformer output).
FAIRSEQ_RENAMES: tuple[tuple[str, str], ...] = (
    *FAIRSEQ_ENCODER_RENAMES,
    ("quantizer.vars", "quantizer.codevectors"),
    ("final_proj.weight", "project_hid.weight"),
    ("final_proj.bias", "project_hid.bias"),
)
