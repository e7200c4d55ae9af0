"""Reading PyTorch checkpoints safely, and inferring a HuBERT config from their shapes.

Formats, detected from the path:

* a Hugging Face directory: `config.json` plus `model.safetensors` (preferred) or
  `pytorch_model.bin`, either possibly sharded (`model.safetensors.index.json`,
  `pytorch_model.bin.index.json`), optionally `preprocessor_config.json` (waveform
  normalisation) and `speaker_embedding.safetensors` (written by `export_hf`);
* the MSP-Podcast challenge's release folder (`final_ssl.pt`, `final_pool.pt`,
  `final_ser.pt`, `train_norm_stat.pkl`; see `papt_jax.convert.emotion_models`);
* a `.safetensors` file or a pickled PyTorch state dict (`.bin`, `.pt`, `.pth`);
* a WavLM release file (`.pt` with a flat `cfg` and `model`; see
  `papt_jax.convert.wavlm_release`);
* a fairseq HuBERT or wav2vec2 checkpoint (`.pt` with `model` plus `cfg` or `args`),
  pre-training or fine-tuned (see `papt_jax.convert.fairseq`).

Pickles are read by `papt_jax.convert.safe_unpickle`: tensors and the harmless classes
fairseq files hold, nothing else, unless `allow_unsafe_pickle=True`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.convert import emotion_models, fairseq, wavlm_release
from papt_jax.convert.conversion_errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigInferenceError,
)
from papt_jax.convert.safe_unpickle import import_torch, load_pickle
from papt_jax.models.config import HubertConfig, get_preset

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
TORCH_BIN_NAME = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
SPEAKER_NAME = "speaker_embedding.safetensors"
SPEAKER_KEY = "speaker_embedding.weight"


@dataclasses.dataclass
class RawCheckpoint:
    """A checkpoint as read from disk, before any renaming.

    Attributes:
      state_dict: key -> float32 (or integer) NumPy array, in the source's naming
        (fairseq: the model's keys, a fine-tuned model's prefix stripped; the
        challenge's release folder: its files' keys under the HF package's prefixes).
      source_format: 'hf_safetensors', 'hf_bin', 'safetensors', 'state_dict',
        'fairseq', 'fairseq_finetuned', 'wavlm_release' or 'msp_release'.
      hf_config: the HF `config.json` dict, if any.
      preprocessor: the HF `preprocessor_config.json` dict, if any.
      family: the encoder family, when the file's own layout says it (fairseq, the
        WavLM release); HF folders say it in `hf_config`.
      config_values: the encoder config values translated from the file's own
        fairseq-style config (fairseq, the WavLM release), if it carries one.
      fairseq_head: what the fairseq config says about HuBERT's pre-training head.
      fairseq_model_cfg: fairseq's model options (fairseq only), for the head.
      norm_stat: the challenge release's (wav_mean, wav_std).
      speaker_fusion: from the metadata of `speaker_embedding.safetensors`, if any.
      notes: what reading dropped or assumed, for the log and `conversion.json`.
    """

    state_dict: dict[str, np.ndarray]
    source_format: str
    hf_config: dict[str, Any] | None = None
    preprocessor: dict[str, Any] | None = None
    family: str | None = None
    config_values: dict[str, Any] | None = None
    fairseq_head: fairseq.HeadFacts | None = None
    fairseq_model_cfg: dict[str, Any] | None = None
    norm_stat: tuple[float, float] | None = None
    speaker_fusion: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def tensor_to_numpy(tensor) -> np.ndarray:
    """A CPU copy of a torch tensor; half-precision floats are widened to float32."""
    torch = import_torch()
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor.numpy().copy()


def _state_dict_to_numpy(state_dict: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    torch = import_torch()
    if not isinstance(state_dict, Mapping):
        raise CheckpointFormatError(
            f"{where}: expected a state dict of tensors, got {type(state_dict).__name__}"
        )
    out, skipped = {}, []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            out[key] = tensor_to_numpy(value)
        else:
            skipped.append(key)
    if skipped:
        logger.warning("%s: skipped %d non-tensor entries: %s", where, len(skipped), skipped)
    return out


def _read_fairseq(obj: Mapping[str, Any], path: Path) -> RawCheckpoint:
    state_dict = _state_dict_to_numpy(obj["model"], f"{path} ('model')")
    parts = fairseq.split_checkpoint(obj, state_dict, str(path))
    for note in parts.notes:
        logger.info("%s: %s", path, note)
    values = None
    if parts.model_cfg is not None:
        values = fairseq.encoder_config_values(parts, str(path))
    return RawCheckpoint(
        state_dict=parts.state_dict,
        source_format="fairseq_finetuned" if parts.finetuned else "fairseq",
        family=parts.family,
        config_values=values,
        fairseq_head=parts.head,
        fairseq_model_cfg=parts.model_cfg,
        notes=list(parts.notes),
    )


def _read_wavlm_release(obj: Mapping[str, Any], cfg: dict[str, Any], path: Path):
    state_dict = _state_dict_to_numpy(obj["model"], f"{path} ('model')")
    return RawCheckpoint(
        state_dict=state_dict,
        source_format="wavlm_release",
        family="wavlm",
        config_values=wavlm_release.config_values(cfg, str(path)),
    )


def _read_msp_release(directory: Path, allow_unsafe_pickle: bool) -> RawCheckpoint:
    """The challenge's release folder, its files' keys put under the HF package's prefixes."""
    state_dict: dict[str, np.ndarray] = {}
    for name, prefix in emotion_models.MSP_RELEASE_FILES.items():
        if not (directory / name).is_file():
            raise CheckpointFormatError(
                f"{directory} holds final_ssl.pt but no {name}: an incomplete release of "
                "the MSP-Podcast challenge model"
            )
        tensors = _read_weights_file(directory / name, allow_unsafe_pickle)
        state_dict.update({prefix + key: value for key, value in tensors.items()})
    stat_file = directory / emotion_models.MSP_NORM_STAT_FILE
    if not stat_file.is_file():
        raise CheckpointFormatError(
            f"{directory} has no {emotion_models.MSP_NORM_STAT_FILE}: the model's input "
            "normalisation (the training audio's mean and std) is unknown",
            hint="copy the file from the release folder the .pt files came from",
        )
    return RawCheckpoint(
        state_dict=state_dict,
        source_format="msp_release",
        family="wavlm",
        norm_stat=emotion_models.read_norm_stat(stat_file),
    )


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            return {key: tensor_to_numpy(f.get_tensor(key)) for key in f.keys()}, metadata  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointFormatError(f"{path} is not a readable safetensors file: {err}") from err


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object")
    return value


def _read_weights_file(path: Path, allow_unsafe_pickle: bool) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)[0]
    obj = load_pickle(path, allow_unsafe_pickle=allow_unsafe_pickle)
    return _state_dict_to_numpy(obj, str(path))


def _read_sharded(index_file: Path, allow_unsafe_pickle: bool) -> dict[str, np.ndarray]:
    """Reads every shard an HF `*.index.json` names, checking them against its weight map."""
    index = _read_json(index_file) or {}
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointFormatError(f"{index_file} has no 'weight_map'")
    state_dict: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_file.parent / shard
        if not shard_path.is_file():
            raise CheckpointNotFoundError(f"{index_file} names shard {shard}, which is missing")
        tensors = _read_weights_file(shard_path, allow_unsafe_pickle)
        listed = {key for key, name in weight_map.items() if name == shard}
        if set(tensors) != listed:
            absent, extra = sorted(listed - set(tensors)), sorted(set(tensors) - listed)
            raise CheckpointFormatError(
                f"{shard_path} does not match {index_file.name}: "
                f"listed but absent {absent[:5]}, present but not listed {extra[:5]}"
            )
        state_dict.update(tensors)
    return state_dict


def _read_hf_weights(directory: Path, allow_unsafe_pickle: bool) -> tuple[dict, str, list[str]]:
    """(state dict, source format, notes) from the weights files of a HF directory."""
    for name, source_format in ((SAFETENSORS_NAME, "hf_safetensors"), (TORCH_BIN_NAME, "hf_bin")):
        if (directory / name).is_file():
            return _read_weights_file(directory / name, allow_unsafe_pickle), source_format, []
        index_file = directory / f"{name}{INDEX_SUFFIX}"
        if index_file.is_file():
            state_dict = _read_sharded(index_file, allow_unsafe_pickle)
            return state_dict, source_format, [f"read the shards listed in {index_file.name}"]
    raise CheckpointFormatError(
        f"{directory} holds no {SAFETENSORS_NAME}, {TORCH_BIN_NAME} or their sharded "
        f"{INDEX_SUFFIX} index: not a Hugging Face model directory",
        hint="pass the folder that from_pretrained would load, or a checkpoint file",
    )


def _read_hf_dir(directory: Path, allow_unsafe_pickle: bool) -> RawCheckpoint:
    state_dict, source_format, notes = _read_hf_weights(directory, allow_unsafe_pickle)
    raw = RawCheckpoint(
        state_dict=state_dict,
        source_format=source_format,
        hf_config=_read_json(directory / CONFIG_NAME),
        preprocessor=_read_json(directory / PREPROCESSOR_NAME),
        notes=notes,
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
      CheckpointNotFoundError: no such path.
      CheckpointFormatError: an unsupported layout or variant.
      UnsafePickleError: see `safe_unpickle.load_pickle`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}")
    if path.is_file() and path.name in (SAFETENSORS_NAME, TORCH_BIN_NAME):
        path = path.parent  # Read the config beside it too.
    if path.is_file() and path.name.endswith(INDEX_SUFFIX):
        path = path.parent
    if path.is_dir() and (path / "final_ssl.pt").is_file():
        return _read_msp_release(path, allow_unsafe_pickle)
    if path.is_dir():
        return _read_hf_dir(path, allow_unsafe_pickle)
    if path.suffix == ".safetensors":
        state_dict, _ = _read_safetensors(path)
        return RawCheckpoint(state_dict=state_dict, source_format="safetensors")
    obj = load_pickle(path, allow_unsafe_pickle=allow_unsafe_pickle)
    release_cfg = wavlm_release.release_cfg(obj)
    if release_cfg is not None:
        return _read_wavlm_release(obj, release_cfg, path)
    if fairseq.is_fairseq(obj):
        return _read_fairseq(obj, path)
    torch = import_torch()
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict = _state_dict_to_numpy(obj, str(path))
        return RawCheckpoint(state_dict=state_dict, source_format="state_dict")
    raise CheckpointFormatError(
        f"{path}: neither a fairseq checkpoint (dict with 'model' and 'cfg'/'args') nor a "
        f"state dict of tensors (got {type(obj).__name__})"
    )


# ---------------------------------------------------------------------------------------
# Configurations of checkpoints without one.


# Fields a HF-named state dict cannot determine from shapes alone.
_UNDETERMINED = ("num_attention_heads", "conv_stride", "do_stable_layer_norm", "normalize_waveform")


def infer_config(
    state_dict: Mapping[str, np.ndarray],
    preset: str | None,
    overrides: Mapping[str, Any],
    family: str = "hubert",
) -> HubertConfig:
    """Builds a config from a canonical HF-named state dict's shapes, a preset and overrides.

    Shapes fix the widths, depth, conv kernels, conv bias, extractor norm and the
    positional conv (and WavLM's bucket count); heads, strides, layer-norm placement
    and waveform normalisation must come from `preset` or `overrides` (overrides win,
    then shapes, then the preset). The preset must be of the weights' `family`.

    Raises:
      ConfigInferenceError: naming the fields neither source provides, or a preset of
        another family.
    """
    inferred = _shape_facts(state_dict, family)
    values: dict[str, Any] = {"family": family}
    if preset is not None:
        preset_config = get_preset(preset)
        if preset_config.family != family:
            raise ConfigInferenceError(
                f"preset {preset!r} is a {preset_config.family} encoder, but the weights are "
                f"{family}'s: pass a {family} preset"
            )
        values.update(preset_config.to_dict())
        changed = {k: (values[k], v) for k, v in inferred.items() if values.get(k) != v}
        if changed:
            logger.info("shapes override preset %r on (preset, checkpoint): %s", preset, changed)
    values.update(inferred)
    values.update(overrides)
    lacking = [field for field in _UNDETERMINED if field not in values]
    if lacking:
        raise ConfigInferenceError(
            f"this {family} checkpoint has no config, and its shapes do not determine "
            f"{lacking}: pass a preset (CLI --preset, e.g. 'base', 'large', "
            "'wavlm-large') or these as overrides"
        )
    return HubertConfig.from_dict(values)


def _shape_facts(state_dict: Mapping[str, np.ndarray], family: str) -> dict[str, Any]:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise ConfigInferenceError(f"cannot infer the architecture: no {key!r} in checkpoint")
        return tuple(state_dict[key].shape)

    num_convs = _count_indices(state_dict, "feature_extractor.conv_layers.")
    num_layers = _count_indices(state_dict, "encoder.layers.")
    conv = "feature_extractor.conv_layers"
    conv_shapes = [shape(f"{conv}.{i}.conv.weight") for i in range(num_convs)]
    hidden = shape("feature_projection.projection.weight")[0]
    if family == "data2vec_audio":
        # A stack of plain convs; its extractor always has a LayerNorm per conv.
        pos = shape("encoder.pos_conv_embed.layers.0.conv.weight")
        pos_facts = {
            "num_conv_pos_layers": _count_indices(state_dict, "encoder.pos_conv_embed.layers."),
            "num_conv_pos_embeddings": pos[2],
            "num_conv_pos_embedding_groups": hidden // pos[1],
        }
    else:
        weight_v = shape("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
        pos_facts = {
            "num_conv_pos_embeddings": weight_v[2],
            "num_conv_pos_embedding_groups": hidden // weight_v[1],
        }
    if family == "wavlm":
        pos_facts["num_buckets"] = shape("encoder.layers.0.attention.rel_attn_embed.weight")[0]
    facts: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": num_layers,
        "intermediate_size": shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
        "conv_dim": [s[0] for s in conv_shapes],
        "conv_kernel": [s[2] for s in conv_shapes],
        "conv_bias": f"{conv}.0.conv.bias" in state_dict,
        "feat_extract_norm": ("layer" if f"{conv}.1.layer_norm.weight" in state_dict else "group"),
        **pos_facts,
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
