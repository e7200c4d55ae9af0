"""fairseq HuBERT and wav2vec2 checkpoints: their layout (pre-training or fine-tuned).

A fairseq checkpoint is a whole training state (see `safe_unpickle`). What matters here:

* pre-training (HuBERT: `hubert_base_ls960.pt`, `hubert_large_ll60k.pt`; wav2vec2:
  `wav2vec_small.pt`, `libri960_big.pt`, `wav2vec_vox_new.pt`, XLS-R `xlsr2_300m.pt`):
  the model's state dict under `model`, its config in `cfg['model']` / `cfg['task']` (a
  dict or a `DictConfig`) or, in old files, in the flat `args` Namespace; HuBERT's
  label dictionaries in `task_state['dictionaries']`.
* fine-tuned (`hubert_large_ll60k_finetune_ls960.pt`, `wav2vec_small_960h.pt`):
  `HubertCtc` / `Wav2VecCtc`, whose keys are the pre-trained encoder under
  `w2v_encoder.w2v_model.` plus the CTC output layer `w2v_encoder.proj`; the encoder's
  own config is nested in `cfg['model']['w2v_args']` (or `args.w2v_args`), with
  dropout rates overridden by the fine-tuning config.

`split_checkpoint` turns either into the encoder's state dict, its family, and its
model and task config; `encoder_config_values` translates those (see `fairseq_config`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from papt_jax.convert import fairseq_config
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.safe_unpickle import plain, resolve_interpolations

FINETUNED_PREFIX = "w2v_encoder.w2v_model."
# Each family's pre-training head parameters (fairseq names); a fine-tuned encoder may
# still carry some of them (older fairseq did not remove them before fine-tuning).
HEAD_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")
WAV2VEC2_HEAD_PREFIXES = ("quantizer.", "project_q.", "final_proj.")
_MODEL_NAMES = {"hubert": "hubert", "wav2vec2": "wav2vec2"}
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
      state_dict: the model's arrays in fairseq naming (pre-training head included for
        pre-training checkpoints; prefix stripped for fine-tuned ones).
      model_cfg: the model options as a plain dict, or None (no config).
      task_cfg: the task options (waveform normalisation, labels), or None.
      finetuned: whether the file is a fine-tuned (`*_ctc`) checkpoint.
      head: facts about HuBERT's pre-training head (HuBERT pre-training checkpoints).
      notes: what was dropped or assumed, for the log and `conversion.json`.
      family: 'hubert' or 'wav2vec2'.
    """

    state_dict: dict[str, np.ndarray]
    model_cfg: dict[str, Any] | None
    task_cfg: dict[str, Any] | None
    finetuned: bool
    head: HeadFacts
    notes: list[str]
    family: str = "hubert"


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


def _family(model_cfg: Mapping[str, Any], where: str) -> str:
    """'hubert' or 'wav2vec2' from a model config's `_name` (or old files' `arch`)."""
    name = model_cfg.get("_name")
    arch = model_cfg.get("arch")
    if isinstance(name, str):
        family = _MODEL_NAMES.get(name)
        found = name
    elif isinstance(arch, str):
        family = next((f for f in _MODEL_NAMES.values() if arch.startswith(f)), None)
        found = arch
    else:
        return "hubert"  # No name at all: the weights decide (see `split_checkpoint`).
    if family is None:
        raise CheckpointFormatError(
            f"{where} is a fairseq {found!r} checkpoint: only HuBERT and wav2vec2 "
            "pre-training checkpoints and their fine-tuned (hubert_ctc, wav2vec_ctc) form "
            "convert"
        )
    return family


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
        final_dim = fairseq_config.get_int(model_cfg, "final_dim", 0, where)
        facts["final_dim"] = final_dim if final_dim > 0 else None
        facts["logit_temp"] = fairseq_config.get_float(model_cfg, "logit_temp", 0.1, where)
    if dictionaries:
        symbols = dictionaries[0].get("symbols")
        nspecial = dictionaries[0].get("nspecial")
        if type(nspecial) is int:
            facts["label_offset"] = nspecial
        if isinstance(symbols, list):
            facts["num_label_rows"] = len(symbols)
    return HeadFacts(**facts)


def _family_from_keys(state_dict: Mapping[str, np.ndarray]) -> str:
    # Without a config only the pre-training head tells the two apart (their encoders
    # have the same names and compute the same function).
    return "wav2vec2" if "quantizer.vars" in state_dict else "hubert"


def _leftover_head(encoder: Mapping[str, np.ndarray], family: str) -> list[str]:
    if family == "wav2vec2":
        return sorted(k for k in encoder if k.startswith(WAV2VEC2_HEAD_PREFIXES))
    return sorted(k for k in encoder if k in HEAD_KEYS)


def split_checkpoint(
    obj: Mapping[str, Any], state_dict: dict[str, np.ndarray], where: str
) -> FairseqParts:
    """Reduces a fairseq training state to the encoder (+ head), its family and its config.

    Args:
      obj: the unpickled checkpoint (see `is_fairseq`).
      state_dict: `obj['model']` as NumPy arrays.
      where: the file, for messages.

    Raises:
      CheckpointFormatError: neither HuBERT nor wav2vec2, several label sets, or a
        fine-tuned layout that contradicts its config.
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
        family = _family_from_keys(state_dict)
        if model_cfg is not None and (model_cfg.get("_name") or model_cfg.get("arch")):
            family = _family(model_cfg, where)
        head = HeadFacts()
        if family == "hubert":
            head = _head_facts(model_cfg, task_cfg, _dictionaries(obj), where)
        return FairseqParts(state_dict, model_cfg, task_cfg, False, head, notes, family)

    encoder = {
        k[len(FINETUNED_PREFIX) :]: v
        for k, v in state_dict.items()
        if k.startswith(FINETUNED_PREFIX)
    }
    task_head = sorted(k for k in state_dict if not k.startswith(FINETUNED_PREFIX))
    if task_head:
        listed = ", ".join(f"{k} ({_shape(state_dict[k])})" for k in task_head)
        notes.append(f"dropped the fine-tuning task head (not part of the encoder): {listed}")
    if model_cfg is None:
        inner_model = inner_task = None
    else:
        inner_model, inner_task = _nested_encoder_sections(model_cfg, task_cfg, where)
    if inner_model is None:
        family = _family_from_keys(encoder)
        notes.append(
            "the fine-tuned checkpoint does not carry its encoder's config (w2v_args); the "
            "architecture comes from the parameter shapes and the preset"
        )
    else:
        family = _family(inner_model, where)
    leftover = _leftover_head(encoder, family)
    if leftover:
        notes.append(
            "dropped pre-training head parameters left in the fine-tuned encoder "
            f"(fine-tuning does not use them): {', '.join(leftover)}"
        )
        encoder = {k: v for k, v in encoder.items() if k not in set(leftover)}
    return FairseqParts(encoder, inner_model, inner_task, True, HeadFacts(), notes, family)


def encoder_config_values(parts: FairseqParts, where: str) -> dict[str, Any]:
    """The encoder config values of a checkpoint that carries its config.

    Raises:
      CheckpointFormatError: unsupported options (named), values of the wrong type.
    """
    assert parts.model_cfg is not None
    task = parts.task_cfg or {}
    normalize = fairseq_config.get_bool(task, "normalize", False, where)
    return fairseq_config.encoder_values(parts.model_cfg, normalize, parts.family, where)
