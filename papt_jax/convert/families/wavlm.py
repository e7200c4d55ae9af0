"""WavLM's naming: transformers `WavLMModel`, and the official release (`WavLM-Large.pt`).

WavLM adds a gated relative-position bias to every attention layer: a bucketed table
(`rel_attn_embed`, (num_buckets, heads)) that only layer 0 holds, and per layer a gate
projection (`gru_rel_pos_linear`, head_dim -> 8) and a per-head constant
(`gru_rel_pos_const`, (1, heads, 1, 1) in PyTorch). The table sits outside the layers
in Flax (`encoder/rel_attn_embed`): the bias is computed once and handed to every layer.

The release files (github.com/microsoft/unilm, wavlm/WavLM.py and modules.py) use
fairseq's names plus `self_attn.grep_linear`, `self_attn.grep_a` and
`self_attn.relative_attention_bias` (transformers'
convert_wavlm_original_pytorch_checkpoint_to_pytorch.py maps them the same way).
"""

from __future__ import annotations

from papt_jax.convert.families.naming import (
    ENCODER_RULES,
    FAIRSEQ_ENCODER_RENAMES,
    FLAYER,
    LAYER,
    WEIGHT_NORM_POS_CONV_RULES,
    FamilyNaming,
)
from papt_jax.convert.mapping import IDENTITY_2D, SQUEEZE_HEADS, Rule, dense

REL_ATTN_EMBED = "encoder.layers.0.attention.rel_attn_embed.weight"

NAMING = FamilyNaming(
    family="wavlm",
    hf_model_type="wavlm",
    hf_prefix="wavlm.",
    hf_architecture="WavLMModel",
    rules=(
        *ENCODER_RULES,
        *WEIGHT_NORM_POS_CONV_RULES,
        *dense(f"{LAYER}.attention.gru_rel_pos_linear", f"{FLAYER}/attention/gru_rel_pos_linear"),
        Rule(
            f"{LAYER}.attention.gru_rel_pos_const",
            f"{FLAYER}/attention/gru_rel_pos_const",
            SQUEEZE_HEADS,
        ),
        Rule(REL_ATTN_EMBED, "encoder/rel_attn_embed/embedding", IDENTITY_2D),
    ),
    config_keys=(("num_buckets", "num_buckets"), ("max_bucket_distance", "max_bucket_distance")),
    required=(
        ("hidden_act", "gelu"),
        ("feat_extract_activation", "gelu"),
        ("add_adapter", False),
    ),
    config_defaults=(("num_buckets", 320), ("max_bucket_distance", 800)),
)

# The release's names -> HF.
RELEASE_RENAMES: tuple[tuple[str, str], ...] = (
    *FAIRSEQ_ENCODER_RENAMES,
    *(
        (f"{LAYER}.self_attn.grep_linear.{kind}", f"{LAYER}.attention.gru_rel_pos_linear.{kind}")
        for kind in ("weight", "bias")
    ),
    (f"{LAYER}.self_attn.grep_a", f"{LAYER}.attention.gru_rel_pos_const"),
    (
        f"{LAYER}.self_attn.relative_attention_bias.weight",
        f"{LAYER}.attention.rel_attn_embed.weight",
    ),
)
