"""Converting encoder checkpoints between PyTorch (HF, fairseq, releases) and Flax.

* `load_pytorch_checkpoint` / `load_pytorch`: a PyTorch checkpoint of any encoder family
  (HuBERT, wav2vec2, WavLM, data2vec-audio; see `sources`) -> Flax params, plus whatever
  heads it carries (`heads`), checked against `jax.eval_shape(model.init)` (`shapes`).
* `export_hf`: Flax params -> a Hugging Face directory of the encoder's family that
  transformers' `<Family>Model.from_pretrained` loads. The PAPT speaker table has no
  place in transformers' models and is written beside it as
  `speaker_embedding.safetensors` (key `speaker_embedding.weight`, (num_speakers,
  hidden); metadata `speaker_fusion`); `load_pytorch` on that directory reads it back.
* `save_converted` / `load_converted` (`storage`): the converted result on disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.convert import families, heads, mapping, sources, torch_io
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.families.naming import LEGACY_WEIGHT_NORM_RENAMES
from papt_jax.convert.hf_config import saves_mask_embedding, to_hf_config
from papt_jax.convert.shapes import abstract_head_params, abstract_params
from papt_jax.convert.storage import (
    ConvertedCheckpoint,
    check_output_dir,
    count_params,
    is_converted_dir,
    load_converted,
    save_converted,
)
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models.config import HubertConfig
from papt_jax.models.hubert import HubertModel
from papt_jax.models.stack import to_layout

__all__ = [
    "ConvertedCheckpoint",
    "abstract_head_params",
    "abstract_params",
    "check_output_dir",
    "count_params",
    "export_hf",
    "is_converted_dir",
    "load_converted",
    "load_pytorch",
    "load_pytorch_checkpoint",
    "params_to_torch",
    "save_converted",
]

logger = logging.getLogger(__name__)

# fairseq's dictionary puts 4 special symbols (<s>, <pad>, </s>, <unk>) before the labels.
FAIRSEQ_LABEL_OFFSET = 4
WEIGHT_NORM_STYLES = ("parametrizations", "legacy")

Params = dict[str, Any]


def _build_config(
    raw: torch_io.RawCheckpoint,
    source: sources.Source,
    preset: str | None,
    overrides: dict[str, Any],
    context: str,
) -> HubertConfig:
    """The encoder config from what the checkpoint carries (or its shapes and a preset)."""
    overrides = dict(overrides)
    if torch_io.SPEAKER_KEY in source.encoder:
        overrides.setdefault("num_speakers", int(source.encoder[torch_io.SPEAKER_KEY].shape[0]))
        if raw.speaker_fusion:
            overrides.setdefault("speaker_fusion", raw.speaker_fusion)
    overrides = {**heads.emotion_input_overrides(source), **overrides}
    if source.config_values is None:
        return torch_io.infer_config(source.encoder, preset, overrides, source.naming.family)
    if preset is not None:
        logger.info("ignoring preset %r: the checkpoint carries its own config", preset)
    values = {**source.config_values, "family": source.naming.family, **overrides}
    try:
        return HubertConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise CheckpointFormatError(
            f"{context}: its config with the overrides {overrides} is not a valid encoder "
            f"config: {err}"
        ) from err


def _add_fresh_speaker_table(state_dict: dict[str, np.ndarray], expected: dict) -> None:
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

    transformers' models have the parameter only when `mask_time_prob` or
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


def load_pytorch_checkpoint(
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    preset: str | None = None,
    backbone_config: dict[str, Any] | None = None,
    **config_overrides: Any,
) -> ConvertedCheckpoint:
    """Converts a PyTorch encoder checkpoint of any family (and its heads) to Flax.

    Args:
      path: a HF directory (possibly sharded; a task model's too), a
        `.safetensors`/`.bin`/`.pt` file, a fairseq `.pt` (HuBERT or wav2vec2,
        pre-training or fine-tuned), a WavLM release `.pt`, or one of the published
        emotion models' folders (see `emotion_models`).
      allow_unsafe_pickle: permit full unpickling of files that hold objects outside
        the safe list (runs code from the file; only for trusted files).
      preset: 'base', 'wavlm-large', ...: fills what a bare state dict does not
        determine (ignored when the checkpoint carries a config).
      backbone_config: the HF `config.json` dict of the MSP-Podcast challenge model's
        WavLM (its files do not carry it; default microsoft/wavlm-large's).
      **config_overrides: `HubertConfig` fields that replace the checkpoint's, e.g.
        `num_speakers=1000, speaker_fusion='last'` (adds a zero speaker table) or
        `dtype='bfloat16'`.

    Returns:
      The converted checkpoint with every head the source carries, and notes on
      whatever was dropped or created.

    Raises:
      papt_jax.errors.UserError subclasses: CheckpointNotFoundError,
      CheckpointFormatError (unsupported layout or variant), UnsafePickleError,
      ConfigInferenceError, ConversionError (missing, unexpected or mis-shaped keys).
    """
    context = str(path)
    raw = torch_io.read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    source = sources.classify(raw, context, backbone_config)
    notes = list(source.notes)
    state_dict = source.encoder
    config = _build_config(raw, source, preset, config_overrides, context)
    mask_note = _add_missing_mask_embedding(raw, state_dict, config.hidden_size)
    if mask_note is not None:
        logger.info("%s: %s", context, mask_note)
        notes.append(mask_note)
    # The tables name Transformer layers one by one, as PyTorch does; a scanned model
    # gets them stacked afterwards.
    expected = abstract_params(config)
    _add_fresh_speaker_table(state_dict, expected)
    flat = mapping.torch_to_flax(state_dict, expected, source.naming.rules, context)
    head_config, head_params, head_notes = heads.hubert_head(
        source.hubert_head, raw.fairseq_head, config.hidden_size, context
    )
    for note in head_notes:
        logger.warning("%s: %s", context, note)
    quantizer_config, quantizer_params = heads.quantizer_head(source, config, context)
    emotion_config, emotion_params = heads.emotion_head(source, config.hidden_size, context)
    return ConvertedCheckpoint(
        config=config,
        params=to_layout(mapping.to_tree(flat), config.scan_layers),
        head_config=head_config,
        head_params=head_params,
        source_format=raw.source_format,
        notes=tuple(notes + head_notes),
        quantizer_config=quantizer_config,
        quantizer_params=quantizer_params,
        emotion_head_config=emotion_config,
        emotion_head_params=emotion_params,
    )


def load_pytorch(
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    preset: str | None = None,
    **config_overrides: Any,
) -> tuple[HubertModel, Params]:
    """The encoder of a PyTorch checkpoint as `(HubertModel, params)`.

    Same arguments as `load_pytorch_checkpoint`; heads, if any, are not returned (use
    `load_pytorch_checkpoint` to keep them).
    """
    ckpt = load_pytorch_checkpoint(
        path, allow_unsafe_pickle=allow_unsafe_pickle, preset=preset, **config_overrides
    )
    if any(
        p is not None for p in (ckpt.head_params, ckpt.quantizer_params, ckpt.emotion_head_params)
    ):
        logger.info("load_pytorch returns the encoder only; the checkpoint's heads are not")
    return HubertModel(ckpt.config), ckpt.params


def params_to_torch(
    config: HubertConfig, params: Params, *, weight_norm_style: str = "parametrizations"
) -> dict[str, np.ndarray]:
    """Flax encoder params -> the family's HF-named NumPy state dict (+ speaker table).

    Args:
      config: the architecture `params` must fit (checked).
      params: `HubertModel` parameters, layers stacked or not.
      weight_norm_style: 'parametrizations' (`...parametrizations.weight.original0/1`,
        what current transformers writes) or 'legacy' (`...weight_g/weight_v`).
    """
    if weight_norm_style not in WEIGHT_NORM_STYLES:
        raise ValueError(f"weight_norm_style must be one of {WEIGHT_NORM_STYLES}")
    flat = mapping.to_flat_numpy(to_layout(params, scan_layers=False))
    mapping.check_params(flat, abstract_params(config), "Flax params vs config")
    state_dict = mapping.flax_to_torch(flat, families.FAMILIES[config.family].rules)
    if weight_norm_style == "legacy":
        state_dict = mapping.rename_keys(state_dict, LEGACY_WEIGHT_NORM_RENAMES, reverse=True)
    return state_dict


def _hf_preprocessor_config(config: HubertConfig) -> dict[str, Any]:
    # What `Wav2Vec2FeatureExtractor` needs to prepare audio the way this model expects.
    values = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": SAMPLE_RATE,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": config.normalize_waveform,
        # HF convention: group-norm (base) models must not be given an attention mask.
        "return_attention_mask": config.feat_extract_norm == "layer",
    }
    if config.input_shift != 0.0 or config.input_scale != 1.0:
        values.update(input_shift=config.input_shift, input_scale=config.input_scale)
        logger.warning(
            "this encoder expects its waveform as (x - %g) * %g before the model; the "
            "exported preprocessor_config.json records it, transformers does not apply it",
            config.input_shift,
            config.input_scale,
        )
    return values


def export_hf(
    config: HubertConfig,
    params: Params,
    out_dir: str | Path,
    *,
    weight_norm_style: str = "parametrizations",
) -> Path:
    """Writes a Hugging Face directory of the encoder's family from Flax params.

    Files: `config.json` (`<Family>Model`), `model.safetensors` (HF key names),
    `preprocessor_config.json` (waveform normalisation) and, when the model has a
    speaker table, `speaker_embedding.safetensors` (ignored by transformers).

    An encoder that normalises its input with fixed statistics (`input_shift`,
    `input_scale`: the MSP-Podcast challenge model) gets them in
    `preprocessor_config.json` as `input_shift`/`input_scale` (read back by
    `load_pytorch`); transformers' feature extractor does not apply them, so a warning
    says to.

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
