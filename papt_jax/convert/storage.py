"""A converted checkpoint in memory (`ConvertedCheckpoint`) and on disk.

Folder layout (`save_converted`)::

    config.json                the encoder's `HubertConfig` (its `family` included)
    params/                    encoder parameters (Orbax), one layer at a time
    head/, head_config.json    HuBERT's masked-prediction head (fairseq files)
    quantizer/, quantizer_config.json        wav2vec2's pre-training head
    emotion_head/, emotion_head_config.json  a published emotion model's head
    conversion.json            source format and the conversion notes

Folders written before families existed have no `family` in `config.json`: they load as
HuBERT, which they are. Parameters are stored per layer (`encoder/layers_{i}`) whatever
the layout in memory, and come back in the stored config's layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from papt_jax import storage as file_storage
from papt_jax.convert import mapping, shapes
from papt_jax.convert.conversion_errors import (
    CheckpointNotFoundError,
    ConversionError,
    OutputExistsError,
)
from papt_jax.models.config import HubertConfig
from papt_jax.models.emotion_heads import EmotionHeadConfig
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.quantizer import QuantizerHeadConfig
from papt_jax.models.stack import to_layout

_PARAMS_DIR = "params"
_CONFIG_JSON = "config.json"
_CONVERSION_JSON = "conversion.json"
# (attribute stem, folder, JSON file) of each optional head.
_HEADS = (
    ("head", "head", "head_config.json"),
    ("quantizer", "quantizer", "quantizer_config.json"),
    ("emotion_head", "emotion_head", "emotion_head_config.json"),
)

Params = dict[str, Any]


@dataclasses.dataclass
class ConvertedCheckpoint:
    """A converted checkpoint.

    Attributes:
      config: the encoder's architecture (its family included).
      params: `HubertModel` parameters (nested dict of arrays).
      head_config: fairseq HuBERT's masked-prediction head, if the source had one.
      head_params: `PretrainHead` parameters, if the source had them.
      source_format: how the source was stored (see `torch_io.RawCheckpoint`).
      notes: what the conversion dropped, initialised or assumed (also logged, and
        stored in `conversion.json`).
      quantizer_config: wav2vec2's pre-training head, if the source had one.
      quantizer_params: `QuantizerHead` parameters.
      emotion_head_config: a published emotion model's head, if the source is one.
      emotion_head_params: its parameters.
    """

    config: HubertConfig
    params: Params
    head_config: PretrainHeadConfig | None
    head_params: Params | None
    source_format: str
    notes: tuple[str, ...] = ()
    quantizer_config: QuantizerHeadConfig | None = None
    quantizer_params: Params | None = None
    emotion_head_config: EmotionHeadConfig | None = None
    emotion_head_params: Params | None = None


def count_params(params: Params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


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


def _config_json(config) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def save_converted(ckpt: ConvertedCheckpoint, out_dir: str | Path, *, overwrite: bool = False):
    """Stores a converted checkpoint (layout in the module docstring).

    Raises:
      OutputExistsError: `out_dir` is not empty and `overwrite` is False, or it does
        not look like a converted checkpoint (never deletes anything else).
    """
    import orbax.checkpoint as ocp

    out = Path(out_dir).absolute()
    check_output_dir(out, overwrite=overwrite)
    # Written under <out>.partial: an earlier checkpoint at `out` stays until this one is whole.
    with file_storage.staged_dir(out) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / _PARAMS_DIR, to_layout(ckpt.params, scan_layers=False))
        for stem, folder, _ in _HEADS:
            params = getattr(ckpt, f"{stem}_params")
            if params is not None:
                checkpointer.save(tmp / folder, params)
        checkpointer.wait_until_finished()
        (tmp / _CONFIG_JSON).write_text(ckpt.config.to_json())
        for stem, _, name in _HEADS:
            config = getattr(ckpt, f"{stem}_config")
            if config is not None:
                (tmp / name).write_text(_config_json(config))
        conversion = {"source_format": ckpt.source_format, "notes": list(ckpt.notes)}
        (tmp / _CONVERSION_JSON).write_text(json.dumps(conversion, indent=2))
    return out


def _restore_head(checkpointer, out: Path, stem: str, config: HubertConfig):
    folder, name = next((f, n) for s, f, n in _HEADS if s == stem)
    if not (out / name).is_file():
        return None, None
    values = json.loads((out / name).read_text())
    if stem == "head":
        head_config = PretrainHeadConfig(**values)
        expected = shapes.abstract_head_params(head_config, config.hidden_size)
    elif stem == "quantizer":
        head_config = QuantizerHeadConfig(**values)
        expected = shapes.abstract_quantizer_params(head_config, config)
    else:
        head_config = EmotionHeadConfig.from_dict(values)
        expected = shapes.abstract_emotion_head_params(head_config, config.hidden_size)
    flat = mapping.to_flat_numpy(checkpointer.restore(out / folder))
    mapping.check_params(flat, expected, str(out / folder))
    return head_config, mapping.to_tree(flat)


def load_converted(out_dir: str | Path) -> ConvertedCheckpoint:
    """Reads what `save_converted` wrote, checking every part against its config.

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
        per_layer = to_layout(restored, scan_layers=False)
    except ValueError as err:  # e.g. layers_0, layers_2 without layers_1
        raise ConversionError(unexpected=[str(err)], context=str(out / _PARAMS_DIR)) from err
    flat = mapping.to_flat_numpy(per_layer)
    mapping.check_params(flat, shapes.abstract_params(config), str(out / _PARAMS_DIR))
    heads = {stem: _restore_head(checkpointer, out, stem, config) for stem, _, _ in _HEADS}
    conversion = {}
    if (out / _CONVERSION_JSON).is_file():
        conversion = json.loads((out / _CONVERSION_JSON).read_text())
    return ConvertedCheckpoint(
        config,
        to_layout(mapping.to_tree(flat), config.scan_layers),
        *heads["head"],
        conversion.get("source_format", "unknown"),
        tuple(conversion.get("notes", ())),
        *heads["quantizer"],
        *heads["emotion_head"],
    )
