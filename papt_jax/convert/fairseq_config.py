"""fairseq-style model configs -> encoder config values: HuBERT, wav2vec2, the WavLM release.

fairseq's `HubertConfig` and `Wav2Vec2Config` and the WavLM release's `WavLMConfig`
(github.com/microsoft/unilm, wavlm/WavLM.py, itself fairseq-derived) name the encoder's
options alike (`encoder_layers`, `encoder_embed_dim`, `extractor_mode`,
`layer_norm_first`, `conv_feature_layers`, `conv_pos`, ...). `encoder_values`
translates any of them; each family adds its own checks and keys. Options whose other
values this port does not implement are refused, all named in one message.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np

from papt_jax.convert.conversion_errors import CheckpointFormatError


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parses fairseq's `conv_feature_layers` string without `eval`.

    Accepts list literals of (dim, kernel, stride) int tuples combined with `+` and
    `* int`, e.g. "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2".

    Raises:
      ValueError: for anything else (names, calls, attributes...).
    """
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"conv_feature_layers is not a Python expression: {spec!r}") from err

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [evaluate(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = evaluate(node.left), evaluate(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = evaluate(node.left), evaluate(node.right)
            if isinstance(left, list) and type(right) is int:
                return left * right
        raise ValueError(f"unsupported element {ast.dump(node)} in conv_feature_layers {spec!r}")

    layers = evaluate(tree.body)
    if not isinstance(layers, list) or not all(
        isinstance(layer, tuple) and len(layer) == 3 and all(type(v) is int for v in layer)
        for layer in layers
    ):
        raise ValueError(f"conv_feature_layers must be a list of (dim, kernel, stride): {spec!r}")
    return layers


# The defaults of the options when an (old) config omits one: fairseq's HubertConfig and
# the WavLM release's WavLMConfig agree on all of them.
DEFAULTS = {
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "extractor_mode": "default",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
}

# Options whose other values this port does not implement, per family (None: absent).
SUPPORTED: dict[str, dict[str, tuple[Any, ...]]] = {
    "hubert": {
        "activation_fn": ("gelu",),
        "layer_type": ("transformer",),
        "conv_pos_batch_norm": (False,),
        "pos_conv_depth": (1,),
        "target_glu": (False,),
        "extractor_mode": ("default", "layer_norm"),
    },
    "wav2vec2": {
        "activation_fn": ("gelu",),
        "layer_type": ("transformer",),
        "conv_pos_batch_norm": (False,),
        "pos_conv_depth": (1,),
        "target_glu": (False,),
        "quantize_input": (False,),
        "extractor_mode": ("default", "layer_norm"),
    },
    "wavlm": {
        "activation_fn": ("gelu",),
        "extractor_mode": ("default", "layer_norm"),
        "relative_position_embedding": (True,),
        "gru_rel_pos": (True,),
    },
}
# The WavLM release's WavLMConfig leaves these off unless the file sets them.
_WAVLM_REQUIRED_PRESENT = ("relative_position_embedding", "gru_rel_pos")


def _value(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    value = cfg.get(key)
    return default if value is None else value


def get_int(cfg: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """`cfg[key]` (or `default` when absent or None), checked to be an int."""
    value = _value(cfg, key, default)
    if type(value) is not int:
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not an integer")
    return value


def get_float(cfg: Mapping[str, Any], key: str, default: float, where: str) -> float:
    """`cfg[key]` (or `default`), checked to be a finite number."""
    value = _value(cfg, key, default)
    if type(value) not in (int, float) or not np.isfinite(value):
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not a number")
    return float(value)


def get_bool(cfg: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    """`cfg[key]` (or `default`), checked to be a bool."""
    value = _value(cfg, key, default)
    if type(value) is not bool:
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not true/false")
    return value


def check_supported(model_cfg: Mapping[str, Any], family: str, where: str) -> None:
    """Refuses, in one message, every option of `model_cfg` this port does not implement."""
    unsupported = [
        f"{key}={model_cfg[key]!r} (supported: {', '.join(map(repr, allowed))})"
        for key, allowed in SUPPORTED[family].items()
        if model_cfg.get(key) is not None and model_cfg[key] not in allowed
    ]
    if family == "wavlm":
        unsupported += [
            f"{key} is not set (the release's default is False; only True is supported)"
            for key in _WAVLM_REQUIRED_PRESENT
            if model_cfg.get(key) is None
        ]
    if unsupported:
        raise CheckpointFormatError(
            f"{where}: unsupported {family} architecture: " + "; ".join(unsupported)
        )


def encoder_values(
    model_cfg: Mapping[str, Any], normalize: bool, family: str, where: str = "checkpoint"
) -> dict[str, Any]:
    """Translates a fairseq-style model config into encoder config values.

    Args:
      model_cfg: the model options (fairseq `cfg['model']`, an old flat `args`, or the
        WavLM release's `cfg`).
      normalize: whether the model was trained on normalised waveforms (fairseq: the
        task's `normalize`; the WavLM release: its own `normalize`).
      family: 'hubert', 'wav2vec2' or 'wavlm'.
      where: names the file in messages.

    Returns:
      The encoder config values (without `family`).

    Raises:
      CheckpointFormatError: unsupported options or values of the wrong type.
    """
    check_supported(model_cfg, family, where)
    spec = _value(model_cfg, "conv_feature_layers", DEFAULTS["conv_feature_layers"])
    try:
        layers = parse_conv_feature_layers(spec)
    except ValueError as err:
        raise CheckpointFormatError(f"{where}: {err}") from err
    d = DEFAULTS
    values = {
        "hidden_size": get_int(model_cfg, "encoder_embed_dim", d["encoder_embed_dim"], where),
        "num_hidden_layers": get_int(model_cfg, "encoder_layers", d["encoder_layers"], where),
        "num_attention_heads": get_int(
            model_cfg, "encoder_attention_heads", d["encoder_attention_heads"], where
        ),
        "intermediate_size": get_int(
            model_cfg, "encoder_ffn_embed_dim", d["encoder_ffn_embed_dim"], where
        ),
        "conv_dim": tuple(dim for dim, _, _ in layers),
        "conv_kernel": tuple(kernel for _, kernel, _ in layers),
        "conv_stride": tuple(stride for _, _, stride in layers),
        "conv_bias": get_bool(model_cfg, "conv_bias", d["conv_bias"], where),
        "feat_extract_norm": (
            "group" if _value(model_cfg, "extractor_mode", "default") == "default" else "layer"
        ),
        "do_stable_layer_norm": get_bool(model_cfg, "layer_norm_first", False, where),
        "num_conv_pos_embeddings": get_int(model_cfg, "conv_pos", d["conv_pos"], where),
        "num_conv_pos_embedding_groups": get_int(
            model_cfg, "conv_pos_groups", d["conv_pos_groups"], where
        ),
        "hidden_dropout": get_float(model_cfg, "dropout", d["dropout"], where),
        "attention_dropout": get_float(
            model_cfg, "attention_dropout", d["attention_dropout"], where
        ),
        "activation_dropout": get_float(
            model_cfg, "activation_dropout", d["activation_dropout"], where
        ),
        "feat_proj_dropout": get_float(model_cfg, "dropout_input", d["dropout_input"], where),
        "normalize_waveform": normalize,
    }
    if family == "wavlm":
        # The release's WavLMConfig defaults (320 buckets, max_distance 1280) apply when
        # the file leaves them out; the published files set 320 and 800.
        values["num_buckets"] = get_int(model_cfg, "num_buckets", 320, where)
        values["max_bucket_distance"] = get_int(model_cfg, "max_distance", 1280, where)
    return values


def wav2vec2_head_values(model_cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The pre-training head of a fairseq wav2vec2 config, in HF `Wav2Vec2Config` terms.

    fairseq: `final_dim` (0: the encoder width) is the contrastive space, `latent_dim`
    (0: `final_dim`) the quantized vectors' width, split over `latent_groups` codebooks
    of `latent_vars` entries; `logit_temp` divides the cosine logits; `dropout_features`
    drops the quantizer's input in training (absent: None, the file does not say).
    """
    hidden = get_int(model_cfg, "encoder_embed_dim", DEFAULTS["encoder_embed_dim"], where)
    final_dim = get_int(model_cfg, "final_dim", 0, where) or hidden
    latent_dim = get_int(model_cfg, "latent_dim", 0, where) or final_dim
    dropout = None
    if model_cfg.get("dropout_features") is not None:
        dropout = get_float(model_cfg, "dropout_features", 0.0, where)
    return {
        "num_codevector_groups": get_int(model_cfg, "latent_groups", 2, where),
        "num_codevectors_per_group": get_int(model_cfg, "latent_vars", 320, where),
        "codevector_dim": latent_dim,
        "proj_codevector_dim": final_dim,
        "contrastive_logits_temperature": get_float(model_cfg, "logit_temp", 0.1, where),
        "feat_quantizer_dropout": dropout,
    }
