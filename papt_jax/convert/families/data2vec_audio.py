"""data2vec-audio's naming: transformers `Data2VecAudioModel`.

Its encoder is wav2vec2's except for the positional embedding: a stack of plain
grouped convs (`encoder.pos_conv_embed.layers.{j}.conv`, no weight norm), each followed
by a LayerNorm without parameters. Every conv of the feature extractor has a
LayerNorm, and the Transformer is post-LN; its config has no keys for either.

Two HF keys change meaning against the other families: data2vec-audio's
`num_conv_pos_embeddings` counts the positional convs (the encoder config's
`num_conv_pos_layers`), and `conv_pos_kernel_size` is their kernel (the encoder
config's `num_conv_pos_embeddings`, as for the other families).
"""

from __future__ import annotations

from papt_jax.convert.families.naming import ENCODER_RULES, FamilyNaming
from papt_jax.convert.mapping import IDENTITY_1D, TRANSPOSE_CONV, Rule

_PCONV = "encoder.pos_conv_embed.layers.{j}.conv"
_FPCONV = "encoder/pos_conv_embed/layers_{j}/conv"

NAMING = FamilyNaming(
    family="data2vec_audio",
    hf_model_type="data2vec-audio",
    hf_prefix="data2vec_audio.",
    hf_architecture="Data2VecAudioModel",
    rules=(
        *ENCODER_RULES,
        Rule(f"{_PCONV}.weight", f"{_FPCONV}/kernel", TRANSPOSE_CONV),
        Rule(f"{_PCONV}.bias", f"{_FPCONV}/bias", IDENTITY_1D),
    ),
    config_keys=(
        ("num_conv_pos_embeddings", "num_conv_pos_layers"),
        ("conv_pos_kernel_size", "num_conv_pos_embeddings"),
    ),
    required=(
        ("hidden_act", "gelu"),
        ("feat_extract_activation", "gelu"),
        ("add_adapter", False),
    ),
    fixed=(("feat_extract_norm", "layer"), ("do_stable_layer_norm", False)),
    config_defaults=(("num_conv_pos_embeddings", 5), ("conv_pos_kernel_size", 19)),
)
