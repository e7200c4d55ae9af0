"""fairseq HuBERT checkpoints: their layout (pre-training or fine-tuned) and their config.

A fairseq checkpoint is a whole training state (see `safe_unpickle`). What matters here:

* pre-training (`hubert_base_ls960.pt`, `hubert_large_ll60k.pt`,
  `hubert_xtralarge_ll60k.pt`): the `HubertModel` state dict under `model`, its config
  in `cfg['model']` / `cfg['task']` (a dict or a `DictConfig`) or, in old files, in
  the flat `args` Namespace; the label dictionaries in `task_state['dictionaries']`.
* fine-tuned (`hubert_large_ll60k_finetune_ls960.pt`): `HubertCtc`, whose keys are the
  pre-trained encoder under `w2v_encoder.w2v_model.` plus the CTC output layer
  `w2v_encoder.proj`; the encoder's own config is nested in `cfg['model']['w2v_args']`
  (or `args.w2v_args`), with dropout rates overridden by the fine-tuning config.

`split_checkpoint` turns either into the encoder's state dict plus its model and task
config; `fairseq_config` translates those into a `HubertConfig` and `HeadFacts`.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.safe_unpickle import plain, resolve_interpolations
from papt_jax.models.config import HubertConfig

FINETUNED_PREFIX = "w2v_encoder.w2v_model."
# The pre-training head's parameters; a fine-tuned encoder may still carry some of them.
HEAD_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")
# fairseq's Dictionary puts <s>, <pad>, </s>, <unk> before the labels.
DEFAULT_LABEL_OFFSET = 4
# HubertCtcConfig options that replace the pre-trained encoder's (fairseq's HubertEncoder).
_FINETUNE_OVERRIDES = ("dropout", "attention_dropout", "activation_dropout", "dropout_input")


@dataclasses.dataclass(frozen=True)
class HeadFacts:
    """What the config and dictionaries say about the pre-training head.

    Attributes:
      final_dim: projection width (None: read it off `final_proj`).
      logit_temp: cosine-logit temperature.
      label_offset: dictionary rows before the first label (the special symbols).
      num_label_rows: rows of the label dictionary, if the checkpoint carries it.
    """

    final_dim: int | None = None
    logit_temp: float = 0.1
    label_offset: int = DEFAULT_LABEL_OFFSET
    num_label_rows: int | None = None


@dataclasses.dataclass
class FairseqParts:
    """A fairseq checkpoint reduced to what the converter uses.

    Attributes:
      state_dict: the HuBERT model's arrays in fairseq naming (pre-training head
        included for pre-training checkpoints; prefix stripped for fine-tuned ones).
      model_cfg: the HuBERT model options as a plain dict, or None (no config).
      task_cfg: the task options (waveform normalisation, labels), or None.
      finetuned: whether the file is a fine-tuned `HubertCtc` checkpoint.
      head: facts about the pre-training head (pre-training checkpoints).
      notes: what was dropped or assumed, for the log and `conversion.json`.
    """

    state_dict: dict[str, np.ndarray]
    model_cfg: dict[str, Any] | None
    task_cfg: dict[str, Any] | None
    finetuned: bool
    head: HeadFacts
    notes: list[str]


def is_fairseq(obj: Any) -> bool:
    """Whether an unpickled object looks like a fairseq training state."""
    return isinstance(obj, Mapping) and "model" in obj and ("cfg" in obj or "args" in obj)


def _as_mapping(value: Any, what: str, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CheckpointFormatError(
            f"{where}: {what} is a {type(value).__name__}, expected a config mapping"
        )
    return dict(value)


def _config_sections(obj: Mapping[str, Any], where: str) -> tuple[dict | None, dict | None]:
    """(model options, task options) from `cfg` (new files) or the flat `args` (old ones)."""
    cfg = _as_mapping(plain(obj.get("cfg")), "'cfg'", where)
    if cfg is not None and cfg.get("model") is not None:
        cfg = resolve_interpolations(cfg, cfg, skip=("w2v_args",))
        model = _as_mapping(cfg.get("model"), "cfg['model']", where)
        return model, _as_mapping(cfg.get("task"), "cfg['task']", where)
    args = _as_mapping(plain(obj.get("args")), "'args'", where)
    if args is not None:
        args = resolve_interpolations(args, args, skip=("w2v_args",))
    return args, args  # One Namespace holds model and task options alike.


def _nested_encoder_sections(outer_model: dict, outer_task: dict | None, where: str):
    """The pre-trained encoder's (model, task) options inside a fine-tuned config."""
    inner = _as_mapping(outer_model.get("w2v_args"), "the fine-tuned 'w2v_args'", where)
    if inner is None:
        return None, None
    inner = resolve_interpolations(inner, inner)
    if isinstance(inner.get("model"), Mapping):
        model = dict(inner["model"])
        task = _as_mapping(inner.get("task"), "w2v_args['task']", where) or {}
    else:  # An old flat Namespace.
        model, task = dict(inner), dict(inner)
    for key in _FINETUNE_OVERRIDES:
        if outer_model.get(key) is not None:
            model[key] = outer_model[key]
    if outer_task is not None and isinstance(outer_task.get("normalize"), bool):
        task = {**task, "normalize": outer_task["normalize"]}
    return model, task


def _check_is_hubert(model_cfg: Mapping[str, Any], where: str) -> None:
    name = model_cfg.get("_name")
    arch = model_cfg.get("arch")
    if isinstance(name, str) and name != "hubert":
        raise CheckpointFormatError(
            f"{where} is a fairseq {name!r} checkpoint, not HuBERT: only HuBERT pre-training "
            "checkpoints and their fine-tuned (hubert_ctc) form convert"
        )
    if name is None and isinstance(arch, str) and not arch.startswith("hubert"):
        raise CheckpointFormatError(
            f"{where} is a fairseq {arch!r} checkpoint, not HuBERT: only HuBERT pre-training "
            "checkpoints and their fine-tuned (hubert_ctc) form convert"
        )


def _shape(value: np.ndarray) -> str:
    return "x".join(str(d) for d in value.shape)


def _dictionaries(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    task_state = plain(obj.get("task_state")) or {}
    found = task_state.get("dictionaries") if isinstance(task_state, Mapping) else None
    if isinstance(found, Mapping):
        found = [found]
    return [d for d in found or [] if isinstance(d, Mapping)]


def _head_facts(
    model_cfg: Mapping[str, Any] | None,
    task_cfg: Mapping[str, Any] | None,
    dictionaries: list[dict[str, Any]],
    where: str,
) -> HeadFacts:
    labels = (task_cfg or {}).get("labels")
    if isinstance(labels, list | tuple) and len(labels) > 1 or len(dictionaries) > 1:
        count = max(len(labels) if isinstance(labels, list | tuple) else 0, len(dictionaries))
        raise CheckpointFormatError(
            f"{where} was pre-trained on {count} label sets ({labels}); only one label set "
            "is supported (the pre-training head here has one label embedding table)"
        )
    facts: dict[str, Any] = {}
    if model_cfg is not None:
        final_dim = _int(model_cfg, "final_dim", 0, where)
        facts["final_dim"] = final_dim if final_dim > 0 else None
        facts["logit_temp"] = _float(model_cfg, "logit_temp", 0.1, where)
    if dictionaries:
        symbols = dictionaries[0].get("symbols")
        nspecial = dictionaries[0].get("nspecial")
        if type(nspecial) is int:
            facts["label_offset"] = nspecial
        if isinstance(symbols, list):
            facts["num_label_rows"] = len(symbols)
    return HeadFacts(**facts)


def split_checkpoint(
    obj: Mapping[str, Any], state_dict: dict[str, np.ndarray], where: str
) -> FairseqParts:
    """Reduces a fairseq training state to the HuBERT encoder (+ head) and its config.

    Args:
      obj: the unpickled checkpoint (see `is_fairseq`).
      state_dict: `obj['model']` as NumPy arrays.
      where: the file, for messages.

    Raises:
      CheckpointFormatError: not HuBERT, several label sets, or a fine-tuned layout
        that contradicts its config.
    """
    model_cfg, task_cfg = _config_sections(obj, where)
    has_prefix = any(key.startswith(FINETUNED_PREFIX) for key in state_dict)
    nested = model_cfg is not None and model_cfg.get("w2v_args") is not None
    notes: list[str] = []
    if nested and not has_prefix:
        raise CheckpointFormatError(
            f"{where}: the config describes a fine-tuned model (it has w2v_args) but no "
            f"parameter starts with {FINETUNED_PREFIX!r}"
        )
    if not has_prefix:
        if model_cfg is not None:
            _check_is_hubert(model_cfg, where)
        head = _head_facts(model_cfg, task_cfg, _dictionaries(obj), where)
        return FairseqParts(state_dict, model_cfg, task_cfg, False, head, notes)

    encoder = {
        k[len(FINETUNED_PREFIX) :]: v
        for k, v in state_dict.items()
        if k.startswith(FINETUNED_PREFIX)
    }
    task_head = sorted(k for k in state_dict if not k.startswith(FINETUNED_PREFIX))
    if task_head:
        listed = ", ".join(f"{k} ({_shape(state_dict[k])})" for k in task_head)
        notes.append(f"dropped the fine-tuning task head (not part of the encoder): {listed}")
    leftover = sorted(k for k in encoder if k in HEAD_KEYS)
    if leftover:
        notes.append(
            "dropped pre-training head parameters left in the fine-tuned encoder "
            f"(fine-tuning does not use them): {', '.join(leftover)}"
        )
        encoder = {k: v for k, v in encoder.items() if k not in HEAD_KEYS}
    if model_cfg is None:
        inner_model = inner_task = None
    else:
        inner_model, inner_task = _nested_encoder_sections(model_cfg, task_cfg, where)
    if inner_model is None:
        notes.append(
            "the fine-tuned checkpoint does not carry its encoder's config (w2v_args); the "
            "architecture comes from the parameter shapes and the preset"
        )
    else:
        _check_is_hubert(inner_model, where)
    return FairseqParts(encoder, inner_model, inner_task, True, HeadFacts(), notes)


# --------------------------------------------------------------------------- config


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


# fairseq HubertConfig defaults, used when an (old) config omits a field.
_FAIRSEQ_DEFAULTS = {
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

# Options of fairseq HuBERT whose other values this port does not implement.
_FAIRSEQ_SUPPORTED = {
    "activation_fn": ("gelu",),
    "layer_type": ("transformer",),
    "conv_pos_batch_norm": (False,),
    "pos_conv_depth": (1,),
    "target_glu": (False,),
    "extractor_mode": ("default", "layer_norm"),
}


def _value(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    value = cfg.get(key)
    return default if value is None else value


def _int(cfg: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = _value(cfg, key, default)
    if type(value) is not int:
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not an integer")
    return value


def _float(cfg: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = _value(cfg, key, default)
    if type(value) not in (int, float) or not np.isfinite(value):
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not a number")
    return float(value)


def _bool(cfg: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = _value(cfg, key, default)
    if type(value) is not bool:
        raise CheckpointFormatError(f"{where}: config option {key}={value!r} is not true/false")
    return value


def fairseq_config(
    model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any] | None, where: str = "checkpoint"
) -> HubertConfig:
    """Translates a fairseq HuBERT model (and task) config into a `HubertConfig`.

    `untie_final_proj` is accepted: it only changes the head, and with one label set
    its shapes are the tied ones (checked when the head is converted).

    Raises:
      CheckpointFormatError: options this port does not implement (all named in one
        line) or values of the wrong type.
    """
    unsupported = [
        f"{key}={model_cfg[key]!r} (supported: {', '.join(map(repr, allowed))})"
        for key, allowed in _FAIRSEQ_SUPPORTED.items()
        if model_cfg.get(key) is not None and model_cfg[key] not in allowed
    ]
    if unsupported:
        raise CheckpointFormatError(
            f"{where}: unsupported fairseq HuBERT architecture: " + "; ".join(unsupported)
        )
    spec = _value(model_cfg, "conv_feature_layers", _FAIRSEQ_DEFAULTS["conv_feature_layers"])
    try:
        layers = parse_conv_feature_layers(spec)
    except ValueError as err:
        raise CheckpointFormatError(f"{where}: {err}") from err
    extractor_mode = _value(model_cfg, "extractor_mode", "default")
    task_cfg = task_cfg or {}
    d = _FAIRSEQ_DEFAULTS
    try:
        return HubertConfig(
            hidden_size=_int(model_cfg, "encoder_embed_dim", d["encoder_embed_dim"], where),
            num_hidden_layers=_int(model_cfg, "encoder_layers", d["encoder_layers"], where),
            num_attention_heads=_int(
                model_cfg, "encoder_attention_heads", d["encoder_attention_heads"], where
            ),
            intermediate_size=_int(
                model_cfg, "encoder_ffn_embed_dim", d["encoder_ffn_embed_dim"], where
            ),
            conv_dim=tuple(dim for dim, _, _ in layers),
            conv_kernel=tuple(kernel for _, kernel, _ in layers),
            conv_stride=tuple(stride for _, _, stride in layers),
            conv_bias=_bool(model_cfg, "conv_bias", d["conv_bias"], where),
            feat_extract_norm="group" if extractor_mode == "default" else "layer",
            do_stable_layer_norm=_bool(model_cfg, "layer_norm_first", False, where),
            num_conv_pos_embeddings=_int(model_cfg, "conv_pos", d["conv_pos"], where),
            num_conv_pos_embedding_groups=_int(
                model_cfg, "conv_pos_groups", d["conv_pos_groups"], where
            ),
            hidden_dropout=_float(model_cfg, "dropout", d["dropout"], where),
            attention_dropout=_float(model_cfg, "attention_dropout", d["attention_dropout"], where),
            activation_dropout=_float(
                model_cfg, "activation_dropout", d["activation_dropout"], where
            ),
            feat_proj_dropout=_float(model_cfg, "dropout_input", d["dropout_input"], where),
            normalize_waveform=_bool(task_cfg, "normalize", False, where),
        )
    except ValueError as err:
        if isinstance(err, CheckpointFormatError):
            raise
        raise CheckpointFormatError(f"{where}: inconsistent fairseq config: {err}") from err
