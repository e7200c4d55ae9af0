"""Writes a finished run as one self-contained folder that `Predictor.from_export` loads.

The layout is documented in `papt_jax.predict.assets` (which also reads it). The arrays are
the ones `assets.from_workdir` builds, stored unchanged (Orbax trees with sha256 manifests,
`.npz` for the reference statistics), so an export predicts bit for bit as its workdir does.
The folder is written under `<out>.partial` and renamed into place when complete; an
earlier export it replaces stays in place until then.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from papt_jax import storage
from papt_jax.errors import UserError
from papt_jax.predict import assets as assets_lib
from papt_jax.predict.assets import RunAssets

HF_DIR = "hf"


class ExportExistsError(UserError, FileExistsError):
    """The output folder exists and is not an export that may be replaced."""


def check_out(out: Path, overwrite: bool, workdir: Path | None = None) -> None:
    """Raises `ExportExistsError` (or `storage.OutputError`) when `out` may not be written:
    a file, the workdir or a folder holding it, a place that cannot be written, or a
    non-empty folder that is not an earlier export (or is one, without `overwrite`)."""
    storage.check_output_dir(out, "--out", [workdir] if workdir is not None else [])
    if out.exists() and not out.is_dir():
        raise ExportExistsError(f"--out {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportExistsError(
            f"{out} is not empty", hint="choose a new folder, or pass --overwrite to replace it"
        )
    if not (out / assets_lib.BUNDLE_MANIFEST).is_file():
        raise ExportExistsError(
            f"{out} is not an earlier export (no {assets_lib.BUNDLE_MANIFEST}): not replaced",
            hint="choose an empty or new folder",
        )


def reference_arrays(assets: RunAssets) -> dict[str, np.ndarray]:
    """The `reference.npz` arrays: each dimension's PLDC statistics and the original's."""
    arrays = {}
    for dim, ref in assets.references.items():
        arrays.update(
            {
                f"{dim}/speaker_index": ref.speaker_index,
                f"{dim}/vectors": ref.vectors,
                f"{dim}/label_mean": ref.label_mean,
                f"{dim}/label_std": ref.label_std,
            }
        )
    original = assets.original.reference
    arrays[f"{assets_lib.ORIGINAL}/speaker_index"] = original.speaker_index
    arrays[f"{assets_lib.ORIGINAL}/vectors"] = original.vectors
    return arrays


def manifest(assets: RunAssets) -> dict:
    return {
        "format": assets_lib.BUNDLE_FORMAT,
        "version": assets_lib.BUNDLE_VERSION,
        "model_id": assets.model_id,
        "name": assets.config.get("name", ""),
        "dimensions": list(assets.dimensions),
        "pldc_k": assets.pldc_k,
        "label_scaling": {d: r.label_scaling for d, r in assets.regressors.items()},
        "num_speakers": len(assets.speakers),
        "num_training_speakers": int(next(iter(assets.references.values())).speaker_index.size),
        # Prediction refuses recordings much shorter than this (`predict.limits`).
        "shortest_train_s": assets.shortest_train_s,
        "source": str(assets.source),
    }


def _write_contents(assets: RunAssets, tmp: Path, to_hf: bool) -> None:
    from papt_jax.convert import ConvertedCheckpoint, export_hf, save_converted
    from papt_jax.export import card
    from papt_jax.train.checkpoint import save_tree

    (tmp / assets_lib.BUNDLE_CONFIG).write_text(json.dumps(assets.config, indent=1) + "\n")
    speakers = {"speakers": list(assets.speakers)}
    (tmp / assets_lib.BUNDLE_SPEAKERS).write_text(json.dumps(speakers, indent=1) + "\n")
    for dim, reg in assets.regressors.items():
        folder = tmp / assets_lib.BUNDLE_REGRESSORS / dim
        folder.mkdir(parents=True)
        save_tree(folder / assets_lib.VARIABLES, reg.variables)
        (folder / assets_lib.ENCODER_CONFIG).write_text(reg.encoder_config.to_json())
    np.savez(tmp / assets_lib.BUNDLE_REFERENCE, **reference_arrays(assets))
    original = assets.original
    save_converted(
        ConvertedCheckpoint(
            original.config,
            original.params,
            None,
            None,
            "papt_jax",
            notes=("the run's original encoder (model.init): speaker retrieval for enrollment",),
        ),
        tmp / assets_lib.BUNDLE_ORIGINAL,
    )
    if assets.summary is not None:
        (tmp / assets_lib.BUNDLE_SUMMARY).write_text(json.dumps(assets.summary, indent=1) + "\n")
    if to_hf:
        for dim, reg in assets.regressors.items():
            export_hf(reg.encoder_config, reg.variables["params"]["hubert"], tmp / HF_DIR / dim)
        adapted = assets.source / "pretrain" / "encoder"
        if adapted.is_dir():
            from papt_jax.convert import load_converted

            ckpt = load_converted(adapted)
            export_hf(ckpt.config, ckpt.params, tmp / HF_DIR / "adapted")
    info = manifest(assets)
    (tmp / "README.md").write_text(card.model_card(assets, info, to_hf=to_hf))
    # Written last: a folder with a manifest is a complete export.
    (tmp / assets_lib.BUNDLE_MANIFEST).write_text(json.dumps(info, indent=1) + "\n")


def write_bundle(
    assets: RunAssets, out: str | Path, *, to_hf: bool = False, overwrite: bool = False
) -> Path:
    """Writes `assets` as an export folder at `out`.

    Args:
      assets: from `assets.from_workdir`.
      out: the folder to create.
      to_hf: also write Hugging Face HuBERT directories under `hf/`: each regressor's
        fine-tuned encoder (`hf/<dimension>`, speaker table as `speaker_embedding.safetensors`)
        and, when the run has one, the adapted (PAPT/TAPT) encoder before fine-tuning
        (`hf/adapted`).
      overwrite: replace an earlier export at `out`.

    Returns:
      The folder.

    Raises:
      ExportExistsError: `out` is not empty (and not an export with `overwrite`).
    """
    out = Path(out).absolute()
    check_out(out, overwrite)
    with storage.staged_dir(out) as tmp:  # an earlier export stays until this one is whole
        _write_contents(assets, tmp, to_hf)
    return out
