"""Converting HuBERT checkpoints between PyTorch (HF, fairseq) and Flax, and storing them.

* `load_pytorch` / `load_pytorch_checkpoint`: PyTorch checkpoint -> Flax params
  (plus fairseq's pre-training head), checked against `jax.eval_shape(model.init)`.
* `save_converted` / `load_converted`: the converted result on disk (Orbax params,
  JSON configs).
* `export_hf`: Flax params -> a Hugging Face directory that
  `transformers.HubertModel.from_pretrained` loads. The PAPT speaker table has no
  place in HF's HuBERT and is written beside it as `speaker_embedding.safetensors`
  (key `speaker_embedding.weight`, (num_speakers, hidden); metadata
  `speaker_fusion`); `load_pytorch` on that directory reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from papt_jax.convert import mapping, torch_io
from papt_jax.models.config import HubertConfig, to_hf_config
from papt_jax.models.heads import PretrainHead, PretrainHeadConfig
from papt_jax.models.hubert import HubertModel

logger = logging.getLogger(__name__)

# fairseq's dictionary puts 4 special symbols (<s>, <pad>, </s>, <unk>) before the labels.
FAIRSEQ_LABEL_OFFSET = 4
WEIGHT_NORM_STYLES = ("parametrizations", "legacy")

_PARAMS_DIR = "params"
_HEAD_DIR = "head"
_CONFIG_JSON = "config.json"
_HEAD_CONFIG_JSON = "head_config.json"
_CONVERSION_JSON = "conversion.json"

Params = dict[str, Any]


@dataclasses.dataclass
class ConvertedCheckpoint:
    """A converted checkpoint.

    Attributes:
      config: the encoder's architecture.
      params: `HubertModel` parameters (nested dict of arrays).
      head_config: fairseq's masked-prediction head, if the source had one.
      head_params: `PretrainHead` parameters, if the source had them.
      source_format: how the source was stored ('hf_safetensors', 'hf_bin',
        'safetensors', 'state_dict', 'fairseq').
    """

    config: HubertConfig
    params: Params
    head_config: PretrainHeadConfig | None
    head_params: Params | None
    source_format: str


def count_params(params: Params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def abstract_params(config: HubertConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat path -> shape/dtype of every `HubertModel(config)` parameter, without allocating."""
    model = HubertModel(config)
    audio = jnp.zeros((1, config.receptive_field), jnp.float32)
    speaker = jnp.zeros((1,), jnp.int32) if config.num_speakers > 0 else None
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), audio, speaker=speaker))
    return flatten_dict(shapes["params"], sep="/")


def abstract_head_params(
    head_config: PretrainHeadConfig, hidden_size: int
) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat path -> shape/dtype of every `PretrainHead(head_config)` parameter."""
    head = PretrainHead(head_config)
    frames = jnp.zeros((1, 1, hidden_size), jnp.float32)
    shapes = jax.eval_shape(lambda: head.init(jax.random.key(0), frames))
    return flatten_dict(shapes["params"], sep="/")


def _to_tree(flat: Mapping[str, np.ndarray]) -> Params:
    return unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()}, sep="/")


def _to_flat_numpy(params: Params) -> dict[str, np.ndarray]:
    return {path: np.asarray(value) for path, value in flatten_dict(params, sep="/").items()}


def _split_fairseq(state_dict: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """fairseq state dict -> (HF-named encoder arrays, head arrays in fairseq naming)."""
    head = {k: v for k, v in state_dict.items() if k in mapping.FAIRSEQ_HEAD_KEYS}
    encoder = {k: v for k, v in state_dict.items() if k not in head}
    return mapping.rename_keys(encoder, mapping.FAIRSEQ_RENAMES), head


def _build_config(
    raw: torch_io.RawCheckpoint,
    state_dict: Mapping[str, np.ndarray],
    preset: str | None,
    overrides: dict[str, Any],
) -> tuple[HubertConfig, int | None]:
    """The encoder config (and fairseq's head width) from what the checkpoint carries."""
    overrides = dict(overrides)
    if torch_io.SPEAKER_KEY in state_dict:
        overrides.setdefault("num_speakers", int(state_dict[torch_io.SPEAKER_KEY].shape[0]))
        if raw.speaker_fusion:
            overrides.setdefault("speaker_fusion", raw.speaker_fusion)
    has_config = raw.fairseq_model_cfg is not None or raw.hf_config is not None
    if has_config and preset is not None:
        logger.info("ignoring preset %r: the checkpoint carries its own config", preset)
    if raw.fairseq_model_cfg is not None:
        config, final_dim = torch_io.fairseq_config(raw.fairseq_model_cfg, raw.fairseq_task_cfg)
        return config.replace(**overrides), final_dim
    if raw.hf_config is not None:
        return torch_io.hf_config(raw.hf_config, raw.preprocessor, overrides), None
    return torch_io.infer_config(state_dict, preset, overrides), None


def _add_fresh_speaker_table(
    state_dict: dict[str, np.ndarray], expected: Mapping[str, jax.ShapeDtypeStruct]
) -> None:
    """Adds a zero speaker table when the model has one and the checkpoint does not.

    Zeros, as `HubertModel` initialises it: the converted model then computes
    exactly what the pre-trained encoder computes.
    """
    path = "speaker_embedding/embedding"
    if path in expected and torch_io.SPEAKER_KEY not in state_dict:
        shape = expected[path].shape
        logger.info("adding a zero-initialised speaker table %s", shape)
        state_dict[torch_io.SPEAKER_KEY] = np.zeros(shape, np.float32)


def _convert_head(
    head_state: dict[str, np.ndarray], final_dim: int | None, hidden_size: int, context: str
) -> tuple[PretrainHeadConfig | None, Params | None]:
    """fairseq's head; `final_dim` None (no config): read off `final_proj`, as fairseq would."""
    if "label_embs_concat" not in head_state:
        if head_state:
            logger.warning(
                "%s: dropping %d head parameters %s: no label_embs_concat (a fine-tuning "
                "checkpoint has no label embeddings)",
                context,
                len(head_state),
                sorted(head_state),
            )
        return None, None
    if final_dim is None:
        proj = head_state.get("final_proj.weight")
        final_dim = hidden_size if proj is None else int(proj.shape[0])
    head_config = PretrainHeadConfig(
        final_dim=final_dim,
        num_label_rows=int(head_state["label_embs_concat"].shape[0]),
        label_offset=FAIRSEQ_LABEL_OFFSET,
    )
    expected = abstract_head_params(head_config, hidden_size)
    flat = mapping.torch_to_flax(head_state, expected, mapping.HEAD_RULES, f"{context}, head")
    return head_config, _to_tree(flat)


def load_pytorch_checkpoint(
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    preset: str | None = None,
    **config_overrides: Any,
) -> ConvertedCheckpoint:
    """Converts a PyTorch HuBERT checkpoint (HF directory or file, fairseq .pt) to Flax.

    Args:
      path: a HF directory, a `.safetensors`/`.bin`/`.pt` file, or a fairseq `.pt`.
      allow_unsafe_pickle: permit full unpickling of files that hold objects outside
        the safe allow-list (runs code from the file; only for trusted files).
      preset: 'base'/'large'/...: fills what a bare state dict does not determine
        (ignored when the checkpoint carries a config).
      **config_overrides: `HubertConfig` fields that replace the checkpoint's, e.g.
        `num_speakers=1000, speaker_fusion='last'` (adds a zero speaker table) or
        `dtype='bfloat16'`.

    Returns:
      The converted checkpoint, with fairseq's `final_proj`/`label_embs_concat` as
      `head_params` when present.

    Raises:
      mapping.ConversionError: missing, unexpected or mis-shaped parameters (all listed).
      torch_io.UnsafePickleError, torch_io.CheckpointFormatError,
      torch_io.ConfigInferenceError, ValueError (unsupported architecture).
    """
    context = str(path)
    raw = torch_io.read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    head_state: dict[str, np.ndarray] = {}
    state_dict = raw.state_dict
    if raw.source_format == "fairseq":
        state_dict, head_state = _split_fairseq(state_dict)
    state_dict = mapping.normalize_hf_keys(state_dict)
    config, final_dim = _build_config(raw, state_dict, preset, config_overrides)
    expected = abstract_params(config)
    _add_fresh_speaker_table(state_dict, expected)
    flat = mapping.torch_to_flax(state_dict, expected, mapping.HF_RULES, context)
    head_config, head_params = _convert_head(head_state, final_dim, config.hidden_size, context)
    return ConvertedCheckpoint(
        config=config,
        params=_to_tree(flat),
        head_config=head_config,
        head_params=head_params,
        source_format=raw.source_format,
    )


def load_pytorch(
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    preset: str | None = None,
    **config_overrides: Any,
) -> tuple[HubertModel, Params]:
    """The encoder of a PyTorch checkpoint as `(HubertModel, params)`.

    Same arguments as `load_pytorch_checkpoint`; a fairseq pre-training head, if
    any, is not returned (use `load_pytorch_checkpoint` to keep it).
    """
    ckpt = load_pytorch_checkpoint(
        path, allow_unsafe_pickle=allow_unsafe_pickle, preset=preset, **config_overrides
    )
    if ckpt.head_params is not None:
        logger.info("load_pytorch returns the encoder only; the fairseq head is not returned")
    return HubertModel(ckpt.config), ckpt.params


def params_to_torch(
    config: HubertConfig, params: Params, *, weight_norm_style: str = "parametrizations"
) -> dict[str, np.ndarray]:
    """Flax encoder params -> HF-named NumPy state dict (speaker table included, if any).

    Args:
      config: the architecture `params` must fit (checked).
      params: `HubertModel` parameters.
      weight_norm_style: 'parametrizations' (`...parametrizations.weight.original0/1`,
        what current transformers writes) or 'legacy' (`...weight_g/weight_v`).
    """
    if weight_norm_style not in WEIGHT_NORM_STYLES:
        raise ValueError(f"weight_norm_style must be one of {WEIGHT_NORM_STYLES}")
    flat = _to_flat_numpy(params)
    mapping.check_params(flat, abstract_params(config), "Flax params vs config")
    state_dict = mapping.flax_to_torch(flat, mapping.HF_RULES)
    if weight_norm_style == "legacy":
        state_dict = mapping.rename_keys(
            state_dict, mapping.LEGACY_WEIGHT_NORM_RENAMES, reverse=True
        )
    return state_dict


def _hf_preprocessor_config(config: HubertConfig) -> dict[str, Any]:
    # What `Wav2Vec2FeatureExtractor` needs to prepare audio the way this model expects.
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16_000,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": config.normalize_waveform,
        # HF convention: group-norm (base) models must not be given an attention mask.
        "return_attention_mask": config.feat_extract_norm == "layer",
    }


def export_hf(
    config: HubertConfig,
    params: Params,
    out_dir: str | Path,
    *,
    weight_norm_style: str = "parametrizations",
) -> Path:
    """Writes a Hugging Face HuBERT directory from Flax params.

    Files: `config.json`, `model.safetensors` (HF key names),
    `preprocessor_config.json` (waveform normalisation) and, when the model has a
    speaker table, `speaker_embedding.safetensors` (ignored by transformers).

    Returns:
      The output directory.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_dict = params_to_torch(config, params, weight_norm_style=weight_norm_style)
    speaker = state_dict.pop(torch_io.SPEAKER_KEY, None)
    save_file(state_dict, str(out / torch_io.SAFETENSORS_NAME), metadata={"format": "pt"})
    (out / torch_io.CONFIG_NAME).write_text(json.dumps(to_hf_config(config), indent=2))
    (out / torch_io.PREPROCESSOR_NAME).write_text(
        json.dumps(_hf_preprocessor_config(config), indent=2)
    )
    speaker_file = out / torch_io.SPEAKER_NAME
    if speaker is not None:
        save_file(
            {torch_io.SPEAKER_KEY: speaker},
            str(speaker_file),
            metadata={"format": "pt", "speaker_fusion": config.speaker_fusion},
        )
    elif speaker_file.exists():
        speaker_file.unlink()  # A stale table from an earlier export would be read back.
    return out


def save_converted(ckpt: ConvertedCheckpoint, out_dir: str | Path, *, overwrite: bool = False):
    """Stores a converted checkpoint: Orbax params (+ head) and JSON configs.

    Layout: `params/` (Orbax), `head/` (Orbax, if any), `config.json`
    (`HubertConfig.to_json`), `head_config.json` (if any), `conversion.json`.

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False, or it does
        not look like a converted checkpoint (never deletes anything else).
    """
    import orbax.checkpoint as ocp

    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass overwrite=True to replace it)")
        if not (out / _CONFIG_JSON).is_file() or not (out / _PARAMS_DIR).is_dir():
            raise FileExistsError(f"{out} does not look like a converted checkpoint: not touched")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out / _PARAMS_DIR, ckpt.params)
    if ckpt.head_params is not None:
        checkpointer.save(out / _HEAD_DIR, ckpt.head_params)
    checkpointer.wait_until_finished()
    (out / _CONFIG_JSON).write_text(ckpt.config.to_json())
    if ckpt.head_config is not None:
        head_json = json.dumps(dataclasses.asdict(ckpt.head_config), indent=2, sort_keys=True)
        (out / _HEAD_CONFIG_JSON).write_text(head_json)
    (out / _CONVERSION_JSON).write_text(json.dumps({"source_format": ckpt.source_format}))
    return out


def load_converted(out_dir: str | Path) -> ConvertedCheckpoint:
    """Reads what `save_converted` wrote, checking the params against the config.

    Raises:
      FileNotFoundError: not a converted checkpoint directory.
      mapping.ConversionError: params that do not fit the stored config.
    """
    import orbax.checkpoint as ocp

    out = Path(out_dir).absolute()
    if not (out / _CONFIG_JSON).is_file() or not (out / _PARAMS_DIR).is_dir():
        raise FileNotFoundError(f"{out} is not a converted checkpoint (no config.json/params)")
    config = HubertConfig.from_dict(json.loads((out / _CONFIG_JSON).read_text()))
    checkpointer = ocp.StandardCheckpointer()
    flat = _to_flat_numpy(checkpointer.restore(out / _PARAMS_DIR))
    mapping.check_params(flat, abstract_params(config), str(out / _PARAMS_DIR))
    head_config = head_params = None
    if (out / _HEAD_CONFIG_JSON).is_file():
        head_config = PretrainHeadConfig(**json.loads((out / _HEAD_CONFIG_JSON).read_text()))
        head_flat = _to_flat_numpy(checkpointer.restore(out / _HEAD_DIR))
        expected = abstract_head_params(head_config, config.hidden_size)
        mapping.check_params(head_flat, expected, str(out / _HEAD_DIR))
        head_params = _to_tree(head_flat)
    source_format = "unknown"
    if (out / _CONVERSION_JSON).is_file():
        source_format = json.loads((out / _CONVERSION_JSON).read_text())["source_format"]
    return ConvertedCheckpoint(config, _to_tree(flat), head_config, head_params, source_format)
