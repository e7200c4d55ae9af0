"""What every encoder family's parameter naming shares, and the record describing one family.

The Hugging Face names are the hub: each family's table (`FamilyNaming.rules`) pairs
its HF `state_dict` keys with the Flax encoder's parameter paths, in the per-layer
form `encoder/layers_{i}/...` (stacking into the scanned layout happens afterwards).
fairseq, the WavLM release and legacy weight-norm keys are rename layers onto the HF
names; the renames every fairseq-derived naming shares are `FAIRSEQ_ENCODER_RENAMES`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from papt_jax.convert.mapping import (
    IDENTITY_1D,
    IDENTITY_2D,
    SQUEEZE_G,
    TRANSPOSE_CONV,
    Rule,
    dense,
    norm,
)

CONV = "feature_extractor.conv_layers.{i}"
FCONV = "feature_extractor/conv_layers_{i}"
LAYER = "encoder.layers.{i}"
FLAYER = "encoder/layers_{i}"
POS = "encoder.pos_conv_embed.conv"
FPOS = "encoder/pos_conv_embed/conv"
SPEAKER_KEY = "speaker_embedding.weight"

# The rows of the HF naming that HuBERT, wav2vec2, WavLM and data2vec-audio share.
ENCODER_RULES: tuple[Rule, ...] = (
    Rule("masked_spec_embed", "masked_spec_embed", IDENTITY_1D),
    Rule(f"{CONV}.conv.weight", f"{FCONV}/conv/kernel", TRANSPOSE_CONV),
    Rule(f"{CONV}.conv.bias", f"{FCONV}/conv/bias", IDENTITY_1D),
    # GroupNorm (conv 0, 'group') or LayerNorm (every conv, 'layer'): same names.
    *norm(f"{CONV}.layer_norm", f"{FCONV}/layer_norm"),
    *norm("feature_projection.layer_norm", "feature_projection/layer_norm"),
    *dense("feature_projection.projection", "feature_projection/projection"),
    *norm("encoder.layer_norm", "encoder/layer_norm"),
    *dense(f"{LAYER}.attention.q_proj", f"{FLAYER}/attention/q_proj"),
    *dense(f"{LAYER}.attention.k_proj", f"{FLAYER}/attention/k_proj"),
    *dense(f"{LAYER}.attention.v_proj", f"{FLAYER}/attention/v_proj"),
    *dense(f"{LAYER}.attention.out_proj", f"{FLAYER}/attention/out_proj"),
    *norm(f"{LAYER}.layer_norm", f"{FLAYER}/layer_norm"),
    *dense(f"{LAYER}.feed_forward.intermediate_dense", f"{FLAYER}/feed_forward/intermediate_dense"),
    *dense(f"{LAYER}.feed_forward.output_dense", f"{FLAYER}/feed_forward/output_dense"),
    *norm(f"{LAYER}.final_layer_norm", f"{FLAYER}/final_layer_norm"),
    # Not part of any HF model: the PAPT speaker table, stored beside an exported HF model.
    Rule(SPEAKER_KEY, "speaker_embedding/embedding", IDENTITY_2D),
)

# The weight-normed positional conv of HuBERT, wav2vec2 and WavLM: gain g and direction
# v over the kernel axis, kept apart in both models.
WEIGHT_NORM_POS_CONV_RULES: tuple[Rule, ...] = (
    Rule(f"{POS}.parametrizations.weight.original0", f"{FPOS}/weight_g", SQUEEZE_G),
    Rule(f"{POS}.parametrizations.weight.original1", f"{FPOS}/weight_v", TRANSPOSE_CONV),
    Rule(f"{POS}.bias", f"{FPOS}/bias", IDENTITY_1D),
)

# Renames are (source pattern, HF pattern) pairs applied before a family's rules.
# `torch.nn.utils.weight_norm` keys (older HF files) -> the parametrization keys that
# current transformers writes.
LEGACY_WEIGHT_NORM_RENAMES: tuple[tuple[str, str], ...] = (
    (f"{POS}.weight_g", f"{POS}.parametrizations.weight.original0"),
    (f"{POS}.weight_v", f"{POS}.parametrizations.weight.original1"),
)

# The encoder names fairseq's wav2vec2 modules give (fairseq/models/wav2vec/wav2vec2.py;
# fairseq HuBERT and the WavLM release reuse them): ConvFeatureExtractionModel blocks are
# Sequential(conv, dropout, norm, gelu) with the LayerNorm itself wrapped as
# Sequential(TransposeLast, Fp32LayerNorm, TransposeLast); the positional conv is
# Sequential(weight-normed conv, SamePad, GELU); `layer_norm` normalises the CNN features.
# One way only (-> HF): a reverse rename could not tell the two norm modes apart.
FAIRSEQ_ENCODER_RENAMES: tuple[tuple[str, str], ...] = (
    ("mask_emb", "masked_spec_embed"),
    (f"{CONV}.0.weight", f"{CONV}.conv.weight"),
    (f"{CONV}.0.bias", f"{CONV}.conv.bias"),
    # extractor_mode='default': Fp32GroupNorm at index 2 of conv 0 only.
    *(
        (f"feature_extractor.conv_layers.0.2.{kind}", f"{CONV.format(i=0)}.layer_norm.{kind}")
        for kind in ("weight", "bias")
    ),
    # extractor_mode='layer_norm': the LayerNorm is item 1 of the block's item 2.
    (f"{CONV}.2.1.weight", f"{CONV}.layer_norm.weight"),
    (f"{CONV}.2.1.bias", f"{CONV}.layer_norm.bias"),
    ("layer_norm.weight", "feature_projection.layer_norm.weight"),
    ("layer_norm.bias", "feature_projection.layer_norm.bias"),
    ("post_extract_proj.weight", "feature_projection.projection.weight"),
    ("post_extract_proj.bias", "feature_projection.projection.bias"),
    ("encoder.pos_conv.0.weight_g", f"{POS}.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_v", f"{POS}.parametrizations.weight.original1"),
    # The same conv saved by a torch that writes weight-norm parametrizations.
    *(
        (f"encoder.pos_conv.0.parametrizations.weight.{p}", f"{POS}.parametrizations.weight.{p}")
        for p in ("original0", "original1")
    ),
    ("encoder.pos_conv.0.bias", f"{POS}.bias"),
    ("encoder.layer_norm.weight", "encoder.layer_norm.weight"),
    ("encoder.layer_norm.bias", "encoder.layer_norm.bias"),
    *(
        (f"{LAYER}.self_attn.{proj}.{kind}", f"{LAYER}.attention.{proj}.{kind}")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
        for kind in ("weight", "bias")
    ),
    *(
        (f"{LAYER}.{src}.{kind}", f"{LAYER}.{dst}.{kind}")
        for src, dst in (
            ("self_attn_layer_norm", "layer_norm"),
            ("fc1", "feed_forward.intermediate_dense"),
            ("fc2", "feed_forward.output_dense"),
            ("final_layer_norm", "final_layer_norm"),
        )
        for kind in ("weight", "bias")
    ),
)

# Downstream heads of HF task models (ForCTC, ForSequenceClassification,
# ForAudioFrameClassification): not part of the encoder, dropped with a note.
HF_DOWNSTREAM_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights")

# The HF config keys every family copies one-to-one into the encoder's config values.
HF_SHARED_CONFIG_KEYS = (
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


@dataclasses.dataclass(frozen=True)
class FamilyNaming:
    """How one encoder family is named in Hugging Face files and in the Flax model.

    Attributes:
      family: The family's name in papt_jax configs ('hubert', 'wav2vec2', 'wavlm',
        'data2vec_audio').
      hf_model_type: `model_type` in its HF `config.json`.
      hf_prefix: The key prefix of the encoder inside HF task models ('wav2vec2.').
      hf_architecture: The HF class an export writes ('Wav2Vec2Model').
      rules: HF encoder keys <-> Flax encoder parameters.
      pretrain_rules: HF pre-training head keys <-> the Flax pre-training head's
        parameters (wav2vec2's quantizer and projections), or ().
      config_keys: Family-specific (HF config key, encoder config field) pairs.
      required: (HF config key, the only value implemented) pairs; anything else is
        refused by name.
      fixed: Encoder config values the family always has (its HF config has no key
        for them, and an export writes none).
      config_defaults: transformers' defaults of the family-specific HF keys, used
        when a `config.json` leaves one out.
    """

    family: str
    hf_model_type: str
    hf_prefix: str
    hf_architecture: str
    rules: tuple[Rule, ...]
    pretrain_rules: tuple[Rule, ...] = ()
    config_keys: tuple[tuple[str, str], ...] = ()
    required: tuple[tuple[str, Any], ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()
    config_defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def pretrain_keys(self) -> tuple[str, ...]:
        """The HF keys (patterns) of the pre-training head."""
        return tuple(rule.torch for rule in self.pretrain_rules)
