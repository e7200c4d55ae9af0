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

from papt_jax.convert import fairseq, mapping, torch_io
from papt_jax.convert.conversion_errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConversionError,
    OutputExistsError,
)
from papt_jax.convert.hf_config import hf_config, saves_mask_embedding, to_hf_config
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models.config import HubertConfig
from papt_jax.models.heads import PretrainHead, PretrainHeadConfig
from papt_jax.models.hubert import HubertModel
from papt_jax.models.stack import to_layout

logger = logging.getLogger(__name__)

# fairseq's dictionary puts 4 special symbols (<s>, <pad>, </s>, <unk>) before the labels.
FAIRSEQ_LABEL_OFFSET = fairseq.DEFAULT_LABEL_OFFSET
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
        'safetensors', 'state_dict', 'fairseq', 'fairseq_finetuned').
      notes: what the conversion dropped, initialised or assumed (also logged, and
        stored in `conversion.json`).
    """

    config: HubertConfig
    params: Params
    head_config: PretrainHeadConfig | None
    head_params: Params | None
    source_format: str
    notes: tuple[str, ...] = ()


def count_params(params: Params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def abstract_params(config: HubertConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat path -> shape/dtype of every `HubertModel(config)` parameter, without allocating.

    The paths follow the config's layout: `encoder/layers/...` with a leading layer axis
    when `config.scan_layers`, else `encoder/layers_{i}/...`.
    """
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
    context: str,
) -> HubertConfig:
    """The encoder config from what the checkpoint carries (or its shapes and a preset)."""
    overrides = dict(overrides)
    if torch_io.SPEAKER_KEY in state_dict:
        overrides.setdefault("num_speakers", int(state_dict[torch_io.SPEAKER_KEY].shape[0]))
        if raw.speaker_fusion:
            overrides.setdefault("speaker_fusion", raw.speaker_fusion)
    has_config = raw.fairseq_model_cfg is not None or raw.hf_config is not None
    if has_config and preset is not None:
        logger.info("ignoring preset %r: the checkpoint carries its own config", preset)
    if raw.fairseq_model_cfg is not None:
        config = fairseq.fairseq_config(raw.fairseq_model_cfg, raw.fairseq_task_cfg, context)
        try:
            return config.replace(**overrides)
        except (TypeError, ValueError) as err:
            raise CheckpointFormatError(f"config overrides {overrides}: {err}") from err
    if raw.hf_config is not None:
        return hf_config(raw.hf_config, raw.preprocessor, overrides)
    return torch_io.infer_config(state_dict, preset, overrides)


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


# Seed of the mask embedding created for HF models saved without one.
MASK_EMBEDDING_SEED = 0


def _add_missing_mask_embedding(
    raw: torch_io.RawCheckpoint, state_dict: dict[str, np.ndarray], hidden_size: int
) -> str | None:
    """Creates `masked_spec_embed` where transformers never saved one; returns a note.

    transformers' `HubertModel` has the parameter only when `mask_time_prob` or
    `mask_feature_prob` is positive. With both 0 nothing is saved; it is created here
    as transformers creates it (uniform in [0, 1)), from a fixed seed. It only
    matters if the model is trained with masking.
    """
    if "masked_spec_embed" in state_dict or raw.hf_config is None:
        return None
    if saves_mask_embedding(raw.hf_config):
        return None  # It should be there: left to the key check, which reports it missing.
    rng = np.random.default_rng(MASK_EMBEDDING_SEED)
    state_dict["masked_spec_embed"] = rng.uniform(0.0, 1.0, hidden_size).astype(np.float32)
    return (
        "masked_spec_embed is not in the checkpoint (saved with mask_time_prob=0 and "
        "mask_feature_prob=0): initialised uniform in [0, 1) as transformers does "
        f"(seed {MASK_EMBEDDING_SEED}); it only matters when training with masking"
    )


def _convert_head(
    head_state: dict[str, np.ndarray],
    facts: fairseq.HeadFacts | None,
    hidden_size: int,
    context: str,
) -> tuple[PretrainHeadConfig | None, Params | None, list[str]]:
    """fairseq's pre-training head, checked against its config: (config, params, notes)."""
    if "label_embs_concat" not in head_state:
        if not head_state:
            return None, None, []
        note = (
            f"dropped {sorted(head_state)}: without label_embs_concat they are no usable "
            "pre-training head"
        )
        return None, None, [note]
    facts = facts or fairseq.HeadFacts()
    rows, width = head_state["label_embs_concat"].shape
    final_dim = facts.final_dim if facts.final_dim is not None else int(width)
    proj = head_state.get("final_proj.weight")
    if proj is not None and proj.shape[0] != final_dim:
        sets = proj.shape[0] / final_dim
        raise CheckpointFormatError(
            f"{context}: final_proj has {proj.shape[0]} outputs, {sets:g} x final_dim "
            f"{final_dim} (untie_final_proj with several label sets): only one label set is "
            "supported"
        )
    if facts.num_label_rows is not None and facts.num_label_rows != rows:
        raise CheckpointFormatError(
            f"{context}: label_embs_concat has {rows} rows but the label dictionary has "
            f"{facts.num_label_rows} symbols"
        )
    head_config = PretrainHeadConfig(
        final_dim=final_dim,
        num_label_rows=int(rows),
        label_offset=facts.label_offset,
        logit_temp=facts.logit_temp,
    )
    expected = abstract_head_params(head_config, hidden_size)
    flat = mapping.torch_to_flax(head_state, expected, mapping.HEAD_RULES, f"{context}, head")
    return head_config, _to_tree(flat), []


def load_pytorch_checkpoint(
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    preset: str | None = None,
    **config_overrides: Any,
) -> ConvertedCheckpoint:
    """Converts a PyTorch HuBERT checkpoint (HF directory or file, fairseq .pt) to Flax.

    Args:
      path: a HF directory (possibly sharded), a `.safetensors`/`.bin`/`.pt` file, or
        a fairseq `.pt` (pre-training, or fine-tuned: its encoder is converted).
      allow_unsafe_pickle: permit full unpickling of files that hold objects outside
        the safe list (runs code from the file; only for trusted files).
      preset: 'base'/'large'/...: fills what a bare state dict does not determine
        (ignored when the checkpoint carries a config).
      **config_overrides: `HubertConfig` fields that replace the checkpoint's, e.g.
        `num_speakers=1000, speaker_fusion='last'` (adds a zero speaker table) or
        `dtype='bfloat16'`.

    Returns:
      The converted checkpoint, with fairseq's `final_proj`/`label_embs_concat` as
      `head_params` when present, and notes on whatever was dropped or created.

    Raises:
      papt_jax.errors.UserError subclasses: CheckpointNotFoundError,
      CheckpointFormatError (unsupported layout or variant), UnsafePickleError,
      ConfigInferenceError, ConversionError (missing, unexpected or mis-shaped keys).
    """
    context = str(path)
    raw = torch_io.read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    notes = list(raw.notes)
    head_state: dict[str, np.ndarray] = {}
    state_dict = raw.state_dict
    if raw.source_format.startswith("fairseq"):
        state_dict, head_state = _split_fairseq(state_dict)
    state_dict = mapping.normalize_hf_keys(state_dict, notes)
    config = _build_config(raw, state_dict, preset, config_overrides, context)
    mask_note = _add_missing_mask_embedding(raw, state_dict, config.hidden_size)
    if mask_note is not None:
        logger.info("%s: %s", context, mask_note)
        notes.append(mask_note)
    # The mapping table names layers one by one, as PyTorch does; a scanned model gets
    # them stacked afterwards.
    expected = abstract_params(config.replace(scan_layers=False))
    _add_fresh_speaker_table(state_dict, expected)
    flat = mapping.torch_to_flax(state_dict, expected, mapping.HF_RULES, context)
    head_config, head_params, head_notes = _convert_head(
        head_state, raw.fairseq_head, config.hidden_size, context
    )
    for note in head_notes:
        logger.warning("%s: %s", context, note)
    return ConvertedCheckpoint(
        config=config,
        params=to_layout(_to_tree(flat), config.scan_layers),
        head_config=head_config,
        head_params=head_params,
        source_format=raw.source_format,
        notes=tuple(notes + head_notes),
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
      params: `HubertModel` parameters, layers stacked or not.
      weight_norm_style: 'parametrizations' (`...parametrizations.weight.original0/1`,
        what current transformers writes) or 'legacy' (`...weight_g/weight_v`).
    """
    if weight_norm_style not in WEIGHT_NORM_STYLES:
        raise ValueError(f"weight_norm_style must be one of {WEIGHT_NORM_STYLES}")
    flat = _to_flat_numpy(to_layout(params, scan_layers=False))
    per_layer = abstract_params(config.replace(scan_layers=False))
    mapping.check_params(flat, per_layer, "Flax params vs config")
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
        "sampling_rate": SAMPLE_RATE,
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


def is_converted_dir(path: str | Path) -> bool:
    """Whether `path` looks like a directory `save_converted` wrote."""
    path = Path(path)
    return (path / _CONFIG_JSON).is_file() and (path / _PARAMS_DIR).is_dir()


def check_output_dir(out_dir: str | Path, *, overwrite: bool, converted: bool = True) -> None:
    """Fails early when `out_dir` may not be written.

    Args:
      out_dir: the output directory.
      overwrite: whether replacing an existing output was asked for.
      converted: the output is a converted checkpoint (replacing one deletes the
        directory first, so only a directory that looks like one may be replaced).

    Raises:
      OutputExistsError: `out_dir` is a file, or is not empty and `overwrite` is
        False, or (for `converted`) is not a converted checkpoint.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} is a file, not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(
            f"output directory {out} is not empty",
            hint="pass overwrite=True (command line: --overwrite) to replace it",
        )
    if converted and not is_converted_dir(out):
        raise OutputExistsError(
            f"{out} does not look like a converted checkpoint (no config.json and params/): "
            "not replaced",
            hint="choose an empty or new output directory",
        )


def save_converted(ckpt: ConvertedCheckpoint, out_dir: str | Path, *, overwrite: bool = False):
    """Stores a converted checkpoint: Orbax params (+ head) and JSON configs.

    Layout: `params/` (Orbax), `head/` (Orbax, if any), `config.json`
    (`HubertConfig.to_json`), `head_config.json` (if any), `conversion.json`
    (source format and the conversion notes). The parameters are stored one layer
    at a time (`encoder/layers_{i}`, as PyTorch names them and as every folder written
    before the layers were scanned), whatever the layout in memory.

    Raises:
      OutputExistsError: `out_dir` is not empty and `overwrite` is False, or it does
        not look like a converted checkpoint (never deletes anything else).
    """
    import orbax.checkpoint as ocp

    out = Path(out_dir).absolute()
    check_output_dir(out, overwrite=overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out / _PARAMS_DIR, to_layout(ckpt.params, scan_layers=False))
    if ckpt.head_params is not None:
        checkpointer.save(out / _HEAD_DIR, ckpt.head_params)
    checkpointer.wait_until_finished()
    (out / _CONFIG_JSON).write_text(ckpt.config.to_json())
    if ckpt.head_config is not None:
        head_json = json.dumps(dataclasses.asdict(ckpt.head_config), indent=2, sort_keys=True)
        (out / _HEAD_CONFIG_JSON).write_text(head_json)
    conversion = {"source_format": ckpt.source_format, "notes": list(ckpt.notes)}
    (out / _CONVERSION_JSON).write_text(json.dumps(conversion, indent=2))
    return out


def load_converted(out_dir: str | Path) -> ConvertedCheckpoint:
    """Reads what `save_converted` wrote, checking the params against the config.

    The params come in the stored config's layout (stacked layers when it scans them),
    whichever layout the folder holds.

    Raises:
      CheckpointNotFoundError: not a converted checkpoint directory.
      ConversionError: params that do not fit the stored config.
    """
    import orbax.checkpoint as ocp

    out = Path(out_dir).absolute()
    if not is_converted_dir(out):
        raise CheckpointNotFoundError(
            f"{out} is not a converted checkpoint (no config.json and params/)",
            hint="convert a PyTorch checkpoint first: python -m papt_jax.convert "
            "--source ... --out ...",
        )
    config = HubertConfig.from_dict(json.loads((out / _CONFIG_JSON).read_text()))
    checkpointer = ocp.StandardCheckpointer()
    restored = checkpointer.restore(out / _PARAMS_DIR)
    try:
        restored = to_layout(restored, config.scan_layers)
    except ValueError as err:  # e.g. layers_0, layers_2 without layers_1
        raise ConversionError(unexpected=[str(err)], context=str(out / _PARAMS_DIR)) from err
    flat = _to_flat_numpy(restored)
    mapping.check_params(flat, abstract_params(config), str(out / _PARAMS_DIR))
    head_config = head_params = None
    if (out / _HEAD_CONFIG_JSON).is_file():
        head_config = PretrainHeadConfig(**json.loads((out / _HEAD_CONFIG_JSON).read_text()))
        head_flat = _to_flat_numpy(checkpointer.restore(out / _HEAD_DIR))
        expected = abstract_head_params(head_config, config.hidden_size)
        mapping.check_params(head_flat, expected, str(out / _HEAD_DIR))
        head_params = _to_tree(head_flat)
    conversion = {}
    if (out / _CONVERSION_JSON).is_file():
        conversion = json.loads((out / _CONVERSION_JSON).read_text())
    return ConvertedCheckpoint(
        config,
        _to_tree(flat),
        head_config,
        head_params,
        conversion.get("source_format", "unknown"),
        tuple(conversion.get("notes", ())),
    )
