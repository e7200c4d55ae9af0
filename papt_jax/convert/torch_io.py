"""Reading PyTorch HuBERT checkpoints safely, and their configurations.

Formats, detected from the path:

* a Hugging Face directory: `config.json` plus `model.safetensors` (preferred) or
  `pytorch_model.bin`, optionally `preprocessor_config.json` (waveform
  normalisation) and `speaker_embedding.safetensors` (written by `export_hf`);
* a `.safetensors` file or a pickled PyTorch state dict (`.bin`, `.pt`, `.pth`);
* a fairseq HuBERT checkpoint (`.pt` with `model` plus `cfg` or `args`).

Pickles are read with `torch.load(weights_only=True)`. fairseq stores its config
as an `argparse.Namespace` (old) or a dict that may hold them (new), which the
safe unpickler refuses by default: those classes (and omegaconf's containers, when
omegaconf is installed) are allow-listed. Anything else needs the explicit
`allow_unsafe_pickle=True` opt-in, because full unpickling runs code from the file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import pickle
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.models.config import HubertConfig, from_hf_config, get_preset

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
TORCH_BIN_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
SPEAKER_NAME = "speaker_embedding.safetensors"
SPEAKER_KEY = "speaker_embedding.weight"


class CheckpointFormatError(ValueError):
    """The path is not a checkpoint format this converter reads."""


class UnsafePickleError(RuntimeError):
    """The pickle holds objects outside the allow-list and no opt-in was given."""


class UnsafePickleWarning(UserWarning):
    """Emitted when a checkpoint is fully unpickled under `allow_unsafe_pickle=True`."""


class ConfigInferenceError(ValueError):
    """The checkpoint does not determine the architecture and no preset/overrides fill it."""


@dataclasses.dataclass
class RawCheckpoint:
    """A checkpoint as read from disk, before any renaming.

    Attributes:
      state_dict: key -> float32 (or integer) NumPy array, in the source's naming.
      source_format: 'hf_safetensors', 'hf_bin', 'safetensors', 'state_dict' or 'fairseq'.
      hf_config: the HF `config.json` dict, if any.
      preprocessor: the HF `preprocessor_config.json` dict, if any.
      fairseq_model_cfg: fairseq model config as a dict (fairseq only).
      fairseq_task_cfg: fairseq task config as a dict (fairseq only).
      speaker_fusion: from the metadata of `speaker_embedding.safetensors`, if any.
    """

    state_dict: dict[str, np.ndarray]
    source_format: str
    hf_config: dict[str, Any] | None = None
    preprocessor: dict[str, Any] | None = None
    fairseq_model_cfg: dict[str, Any] | None = None
    fairseq_task_cfg: dict[str, Any] | None = None
    speaker_fusion: str | None = None


def _import_torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - torch is in requirements.txt
        raise ImportError(
            "reading PyTorch checkpoints needs torch: pip install 'papt_jax[convert]'"
        ) from err
    return torch


def tensor_to_numpy(tensor) -> np.ndarray:
    """A CPU copy of a torch tensor; half-precision floats are widened to float32."""
    torch = _import_torch()
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor.numpy().copy()


def _state_dict_to_numpy(state_dict: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    torch = _import_torch()
    out, skipped = {}, []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            out[key] = tensor_to_numpy(value)
        else:
            skipped.append(key)
    if skipped:
        logger.warning("%s: skipped %d non-tensor entries: %s", where, len(skipped), skipped)
    return out


def _safe_globals() -> list[Any]:
    """Classes fairseq checkpoints hold in their configs, which are safe to rebuild."""
    allowed: list[Any] = [argparse.Namespace]
    try:
        import omegaconf
        from omegaconf import base, nodes
    except ImportError:
        return allowed
    # Untested here (omegaconf is not a dependency): the classes a pickled DictConfig names.
    allowed += [
        typing.Any,
        omegaconf.DictConfig,
        omegaconf.ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.StringNode,
        nodes.IntegerNode,
        nodes.FloatNode,
        nodes.BooleanNode,
    ]
    return allowed


def load_pickle(path: str | Path, *, allow_unsafe_pickle: bool = False) -> Any:
    """Loads a pickled PyTorch object, safely unless explicitly told otherwise.

    Tries `torch.load(weights_only=True)`, then again with the fairseq config
    classes allow-listed, and only then, if `allow_unsafe_pickle`, a full unpickle
    with a loud warning.

    Raises:
      UnsafePickleError: the file needs full unpickling and no opt-in was given.
    """
    torch = _import_torch()
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line or "Unsupported" in line), "")
        if not allow_unsafe_pickle:
            raise UnsafePickleError(
                f"{path} holds Python objects outside the safe allow-list "
                f"({detail.strip() or 'see torch.load'}). Loading it needs full unpickling, "
                "which can run arbitrary code from the file. If you trust its source, pass "
                "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle)."
            ) from err
    message = (
        f"UNSAFE: fully unpickling {path} (allow_unsafe_pickle=True). This runs any code "
        "the file contains; only do this for checkpoints from a source you trust."
    )
    logger.warning(message)
    warnings.warn(message, UnsafePickleWarning, stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise CheckpointFormatError(
            f"{path} refers to module {err.name!r}, which is not installed; fairseq configs "
            "saved as omegaconf objects need `pip install omegaconf`"
        ) from err


def _as_dict(cfg: Any) -> dict[str, Any] | None:
    """A fairseq config section (dict, Namespace or DictConfig) as a plain dict."""
    if cfg is None:
        return None
    if isinstance(cfg, argparse.Namespace):
        return dict(vars(cfg))
    if isinstance(cfg, Mapping):
        return {key: cfg[key] for key in cfg}
    raise CheckpointFormatError(f"cannot read a fairseq config of type {type(cfg).__name__}")


def _is_fairseq(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "model" in obj and ("cfg" in obj or "args" in obj)


def _read_fairseq(obj: Mapping[str, Any], path: Path) -> RawCheckpoint:
    model_cfg = task_cfg = None
    cfg = obj.get("cfg")
    if cfg is not None:
        cfg = _as_dict(cfg)
        model_cfg = _as_dict(cfg.get("model"))
        task_cfg = _as_dict(cfg.get("task"))
    if model_cfg is None and obj.get("args") is not None:
        # Old checkpoints: one Namespace holds model and task options alike.
        model_cfg = task_cfg = _as_dict(obj["args"])
    return RawCheckpoint(
        state_dict=_state_dict_to_numpy(obj["model"], str(path)),
        source_format="fairseq",
        fairseq_model_cfg=model_cfg,
        fairseq_task_cfg=task_cfg,
    )


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        return {key: tensor_to_numpy(f.get_tensor(key)) for key in f.keys()}, metadata  # noqa: SIM118


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_hf_dir(directory: Path, allow_unsafe_pickle: bool) -> RawCheckpoint:
    if (directory / f"{SAFETENSORS_NAME}.index.json").exists() or (
        directory / f"{TORCH_BIN_NAME}.index.json"
    ).exists():
        raise CheckpointFormatError(f"{directory}: sharded checkpoints are not supported")
    if (directory / SAFETENSORS_NAME).is_file():
        state_dict, _ = _read_safetensors(directory / SAFETENSORS_NAME)
        source_format = "hf_safetensors"
    elif (directory / TORCH_BIN_NAME).is_file():
        obj = load_pickle(directory / TORCH_BIN_NAME, allow_unsafe_pickle=allow_unsafe_pickle)
        state_dict = _state_dict_to_numpy(obj, str(directory / TORCH_BIN_NAME))
        source_format = "hf_bin"
    else:
        raise CheckpointFormatError(
            f"{directory} holds neither {SAFETENSORS_NAME} nor {TORCH_BIN_NAME}"
        )
    raw = RawCheckpoint(
        state_dict=state_dict,
        source_format=source_format,
        hf_config=_read_json(directory / CONFIG_NAME),
        preprocessor=_read_json(directory / PREPROCESSOR_NAME),
    )
    if (directory / SPEAKER_NAME).is_file():
        speaker, metadata = _read_safetensors(directory / SPEAKER_NAME)
        if set(speaker) != {SPEAKER_KEY}:
            raise CheckpointFormatError(
                f"{directory / SPEAKER_NAME} must hold exactly {SPEAKER_KEY!r}, "
                f"got {sorted(speaker)}"
            )
        raw.state_dict.update(speaker)
        raw.speaker_fusion = metadata.get("speaker_fusion")
    return raw


def read_checkpoint(path: str | Path, *, allow_unsafe_pickle: bool = False) -> RawCheckpoint:
    """Reads any supported checkpoint into NumPy arrays plus whatever config it carries.

    Raises:
      FileNotFoundError: no such path.
      CheckpointFormatError: an unsupported layout.
      UnsafePickleError: see `load_pickle`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_file() and path.name in (SAFETENSORS_NAME, TORCH_BIN_NAME):
        path = path.parent  # Read the config beside it too.
    if path.is_dir():
        return _read_hf_dir(path, allow_unsafe_pickle)
    if path.suffix == ".safetensors":
        state_dict, _ = _read_safetensors(path)
        return RawCheckpoint(state_dict=state_dict, source_format="safetensors")
    obj = load_pickle(path, allow_unsafe_pickle=allow_unsafe_pickle)
    if _is_fairseq(obj):
        return _read_fairseq(obj, path)
    torch = _import_torch()
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict = _state_dict_to_numpy(obj, str(path))
        return RawCheckpoint(state_dict=state_dict, source_format="state_dict")
    raise CheckpointFormatError(
        f"{path}: neither a fairseq checkpoint (dict with 'model' and 'cfg'/'args') nor a "
        f"state dict of tensors (got {type(obj).__name__})"
    )


# ---------------------------------------------------------------------------------------
# Configurations.


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
    "final_dim": 0,
}

# Options of fairseq HuBERT whose other values this port does not implement.
_FAIRSEQ_SUPPORTED = {
    "activation_fn": ("gelu",),
    "layer_type": ("transformer",),
    "conv_pos_batch_norm": (False,),
    "pos_conv_depth": (1,),
    "untie_final_proj": (False,),
    "target_glu": (False,),
}


def fairseq_config(
    model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any] | None
) -> tuple[HubertConfig, int]:
    """Translates a fairseq HuBERT config into a `HubertConfig` and the head's final_dim.

    Raises:
      ValueError: for architectures this port does not implement, naming each option.
    """
    unsupported = [
        f"{key}={model_cfg[key]!r} (supported: {allowed})"
        for key, allowed in _FAIRSEQ_SUPPORTED.items()
        if key in model_cfg and model_cfg[key] not in allowed
    ]
    if unsupported:
        raise ValueError("unsupported fairseq HuBERT architecture: " + "; ".join(unsupported))
    cfg = {key: model_cfg.get(key, default) for key, default in _FAIRSEQ_DEFAULTS.items()}
    if cfg["extractor_mode"] not in ("default", "layer_norm"):
        raise ValueError(f"unknown fairseq extractor_mode {cfg['extractor_mode']!r}")
    layers = parse_conv_feature_layers(cfg["conv_feature_layers"])
    config = HubertConfig(
        hidden_size=int(cfg["encoder_embed_dim"]),
        num_hidden_layers=int(cfg["encoder_layers"]),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        intermediate_size=int(cfg["encoder_ffn_embed_dim"]),
        conv_dim=tuple(dim for dim, _, _ in layers),
        conv_kernel=tuple(kernel for _, kernel, _ in layers),
        conv_stride=tuple(stride for _, _, stride in layers),
        conv_bias=bool(cfg["conv_bias"]),
        feat_extract_norm="group" if cfg["extractor_mode"] == "default" else "layer",
        do_stable_layer_norm=bool(cfg["layer_norm_first"]),
        num_conv_pos_embeddings=int(cfg["conv_pos"]),
        num_conv_pos_embedding_groups=int(cfg["conv_pos_groups"]),
        hidden_dropout=float(cfg["dropout"]),
        attention_dropout=float(cfg["attention_dropout"]),
        activation_dropout=float(cfg["activation_dropout"]),
        feat_proj_dropout=float(cfg["dropout_input"]),
        normalize_waveform=bool((task_cfg or {}).get("normalize", False)),
    )
    final_dim = int(cfg["final_dim"]) if int(cfg["final_dim"]) > 0 else config.hidden_size
    return config, final_dim


def hf_config(
    hf: Mapping[str, Any], preprocessor: Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> HubertConfig:
    """`from_hf_config`, taking waveform normalisation from the feature extractor config."""
    values = dict(overrides)
    if preprocessor is not None and "do_normalize" in preprocessor:
        values.setdefault("normalize_waveform", bool(preprocessor["do_normalize"]))
    return from_hf_config(hf, **values)


# Fields a HF-named state dict cannot determine from shapes alone.
_UNDETERMINED = ("num_attention_heads", "conv_stride", "do_stable_layer_norm", "normalize_waveform")


def infer_config(
    state_dict: Mapping[str, np.ndarray],
    preset: str | None,
    overrides: Mapping[str, Any],
) -> HubertConfig:
    """Builds a config from a canonical HF-named state dict's shapes, a preset and overrides.

    Shapes fix the widths, depth, conv kernels, conv bias, extractor norm and the
    positional conv; heads, strides, layer-norm placement and waveform
    normalisation must come from `preset` or `overrides` (overrides win, then
    shapes, then the preset).

    Raises:
      ConfigInferenceError: naming the fields neither source provides.
    """
    inferred = _shape_facts(state_dict)
    values: dict[str, Any] = {}
    if preset is not None:
        values.update(get_preset(preset).to_dict())
        changed = {k: (values[k], v) for k, v in inferred.items() if values.get(k) != v}
        if changed:
            logger.info("shapes override preset %r on (preset, checkpoint): %s", preset, changed)
    values.update(inferred)
    values.update(overrides)
    lacking = [field for field in _UNDETERMINED if field not in values]
    if lacking:
        raise ConfigInferenceError(
            "this checkpoint has no config, and its shapes do not determine "
            f"{lacking}: pass preset='base' or 'large' (CLI --preset) or these as overrides"
        )
    return HubertConfig.from_dict(values)


def _shape_facts(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise ConfigInferenceError(f"cannot infer the architecture: no {key!r} in checkpoint")
        return tuple(state_dict[key].shape)

    num_convs = _count_indices(state_dict, "feature_extractor.conv_layers.")
    num_layers = _count_indices(state_dict, "encoder.layers.")
    conv = "feature_extractor.conv_layers"
    conv_shapes = [shape(f"{conv}.{i}.conv.weight") for i in range(num_convs)]
    hidden = shape("feature_projection.projection.weight")[0]
    weight_v = shape("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    facts: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": num_layers,
        "intermediate_size": shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
        "conv_dim": [s[0] for s in conv_shapes],
        "conv_kernel": [s[2] for s in conv_shapes],
        "conv_bias": f"{conv}.0.conv.bias" in state_dict,
        "feat_extract_norm": ("layer" if f"{conv}.1.layer_norm.weight" in state_dict else "group"),
        "num_conv_pos_embeddings": weight_v[2],
        "num_conv_pos_embedding_groups": hidden // weight_v[1],
    }
    if "speaker_embedding.weight" in state_dict:
        facts["num_speakers"] = int(state_dict["speaker_embedding.weight"].shape[0])
    return facts


def _count_indices(state_dict: Mapping[str, np.ndarray], prefix: str) -> int:
    indices = {
        int(key[len(prefix) :].split(".", 1)[0])
        for key in state_dict
        if key.startswith(prefix) and key[len(prefix) :].split(".", 1)[0].isdigit()
    }
    if not indices:
        raise ConfigInferenceError(f"cannot infer the architecture: no keys under {prefix!r}")
    if indices != set(range(len(indices))):
        raise ConfigInferenceError(f"non-contiguous indices under {prefix!r}: {sorted(indices)}")
    return len(indices)
