"""What prediction needs from a finished run, read from its workdir or from an exported folder.

A `RunAssets` holds, for every emotion dimension, the fine-tuned regressor (encoder with its
speaker table, head, batch statistics, label scaling) and PLDC's reference statistics of the
training speakers (`profiles.Reference`: mean fine-tuned representation, label mean and std);
and, for enrolling new speakers, the original encoder (the run's `model.init`, before
adaptation) with the training speakers' mean original-encoder representations.

Both sources give the same arrays: the workdir's are computed from the evaluation stage's
saved passes (`evaluate/passes/*.npz`) with the functions evaluation uses, and an export
stores those very arrays (`papt_jax.export`), so both predict bit for bit alike.

Exported folder layout (`BUNDLE_*` names below)::

    manifest.json                 format, version, model_id, dimensions, PLDC k, label scaling,
                                  the training split's shortest utterance (`shortest_train_s`)
    config.json                   the run's config
    speakers.json                 {"speakers": [...]}: speaker id of each embedding row
    regressors/<dim>/encoder_config.json, regressors/<dim>/variables/   (Orbax, sha256 manifest)
    reference.npz                 '<dim>/speaker_index|vectors|label_mean|label_std',
                                  'original/speaker_index|vectors'
    original_encoder/             converted checkpoint (`papt_jax.convert.save_converted`)
    summary.json                  the run's scores (report/summary.json), when it has one
    README.md                     model card
    hf/                           with --to_hf: Hugging Face HuBERT directories
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.errors import UserError
from papt_jax.models.config import HubertConfig
from papt_jax.predict import limits
from papt_jax.predict.profiles import Reference

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "papt_jax.export"
BUNDLE_VERSION = 1
BUNDLE_MANIFEST = "manifest.json"
BUNDLE_CONFIG = "config.json"
BUNDLE_SPEAKERS = "speakers.json"
BUNDLE_REGRESSORS = "regressors"
BUNDLE_REFERENCE = "reference.npz"
BUNDLE_ORIGINAL = "original_encoder"
BUNDLE_SUMMARY = "summary.json"
ENCODER_CONFIG = "encoder_config.json"
VARIABLES = "variables"
ORIGINAL = "original"


class RunNotReadyError(UserError, ValueError):
    """A workdir or export that lacks what prediction needs."""


@dataclasses.dataclass(frozen=True)
class Regressor:
    """One fine-tuned regressor.

    Attributes:
      dimension: 'arousal' or 'valence'.
      encoder_config: its encoder's architecture (speaker table included).
      variables: {'params': {'hubert', 'head'}, 'batch_stats': ...}.
      label_scaling: `finetune.LabelScaling` mode.
    """

    dimension: str
    encoder_config: HubertConfig
    variables: dict
    label_scaling: str


@dataclasses.dataclass(frozen=True)
class OriginalEncoder:
    """The encoder before adaptation (no speaker table) and its training-speaker vectors."""

    config: HubertConfig
    params: dict
    reference: Reference


@dataclasses.dataclass
class RunAssets:
    """Everything `Predictor` needs (see the module docstring).

    Attributes:
      source: the workdir or export folder.
      config: the run's config (JSON dict).
      speakers: speaker id of each embedding row (speakers.json order).
      pldc_k: PLDC neighbours the evaluation used.
      regressors: {dimension: Regressor}.
      references: {dimension: Reference} in the fine-tuned model's space, with labels.
      load_original: returns the `OriginalEncoder` (loaded on first use: it is only needed
        to enroll new speakers).
      summary: the run's report/summary.json, or None.
      shortest_train_s: duration of the training split's shortest utterance, or None when
        the run did not record it (`limits.min_seconds` then takes its fallback).
    """

    source: Path
    config: dict[str, Any]
    speakers: tuple[str, ...]
    pldc_k: int
    regressors: dict[str, Regressor]
    references: dict[str, Reference]
    load_original: Callable[[], OriginalEncoder]
    summary: dict[str, Any] | None = None
    shortest_train_s: float | None = None

    @property
    def min_seconds(self) -> float:
        """The shortest recording this model predicts (`limits.min_seconds`)."""
        return limits.min_seconds(self.shortest_train_s)

    @functools.cached_property
    def original(self) -> OriginalEncoder:
        original = self.load_original()
        first = next(iter(self.references.values()))
        if not np.array_equal(original.reference.speaker_index, first.speaker_index):
            raise RunNotReadyError(
                f"{self.source}: the original encoder's training speakers differ from PLDC's"
            )
        return original

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.regressors)

    @functools.cached_property
    def model_id(self) -> str:
        """A short hash of what decides the predictions and profiles (weights via their vectors)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.speakers, self.pldc_k]).encode())
        for dim, reg in self.regressors.items():
            h.update(f"{dim}/{reg.label_scaling}/{reg.encoder_config.identity_json()}".encode())
            ref = self.references[dim]
            for a in (ref.speaker_index, ref.vectors, ref.label_mean, ref.label_std):
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


# --- from a workdir ---------------------------------------------------------------------------


def _passes(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise RunNotReadyError(
            f"{path} is missing: the run's evaluate stage did not save its passes",
            hint="rerun the evaluate stage with this version of papt_jax "
            "(python -m papt_jax.main --workdir=... --config.stages=evaluate)",
        )
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def from_workdir(workdir: str | Path) -> RunAssets:
    """Reads a finished run (fine-tune and evaluate stages complete).

    Raises:
      RunNotReadyError: not a run folder, or its evaluation is missing.
    """
    workdir = Path(workdir).absolute()
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise RunNotReadyError(f"{workdir} is not a papt_jax run folder (no config.json)")
    record_path = workdir / "stages" / "evaluate.json"
    if not record_path.is_file():
        raise RunNotReadyError(
            f"{workdir}: the run has not finished its evaluate stage",
            hint="finish the run first: python -m papt_jax.main --workdir=... --config=...",
        )
    import ml_collections

    from papt_jax.data import msp_podcast
    from papt_jax.experiment import finetuning
    from papt_jax.experiment.settings import csv
    from papt_jax.experiment.workspace import Workspace

    config_dict = json.loads(config_path.read_text())
    record = json.loads(record_path.read_text())
    config = ml_collections.ConfigDict(config_dict)
    ws = Workspace(config, workdir)
    speakers = msp_podcast.read_speakers(ws.dataset_dir / "speakers.json")
    k = int((record.get("facts") or {}).get("pldc_k", config.evaluate.pldc_k))
    regressors, references, train = {}, {}, None
    for dim in csv(config.finetune.dimensions):
        run, variables = finetuning.load_finetuned(ws, dim)
        regressors[dim] = Regressor(dim, run.encoder_config, variables, run.label_scaling)
        passes = _passes(ws.path("evaluate", "passes", f"{dim}.npz"))
        references[dim] = Reference.from_utterances(
            passes["train/pooled"], passes["train/speaker"], passes[f"train/{dim}"]
        )
        train = {"key": passes["train/key"], "speaker": passes["train/speaker"]}
    summary_path = ws.path("report", "summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return RunAssets(
        source=workdir,
        config=config_dict,
        speakers=tuple(speakers),
        pldc_k=k,
        regressors=regressors,
        references=references,
        load_original=functools.partial(_original_from_workdir, ws, train),
        summary=summary,
        shortest_train_s=_shortest_train_s(record, ws),
    )


def _shortest_train_s(record: dict[str, Any], ws) -> float | None:
    """The evaluate stage's record of it; for runs evaluated before it was recorded, the
    dataset's index (when it is still there)."""
    shortest = (record.get("facts") or {}).get("shortest_train_s")
    if shortest is not None:
        return float(shortest)
    from papt_jax.experiment.evaluation import shortest_train_seconds

    try:
        return shortest_train_seconds(ws)
    except (OSError, ValueError, KeyError):
        log.warning("%s: the training split's durations are unknown", ws.workdir)
        return None


def _original_from_workdir(ws, train: dict[str, np.ndarray]) -> OriginalEncoder:
    """The run's `model.init` encoder as evaluation uses it, and its training-speaker vectors.

    The vectors come from `evaluate/passes/original_encoder.npz` (written when test-c was
    evaluated); without it they are computed over the training split as evaluation would.
    """
    from papt_jax.eval import evaluate as evaluate_lib
    from papt_jax.experiment.workspace import with_speakers
    from papt_jax.models.hubert import HubertModel

    cfg, params = with_speakers(ws.load_encoder(ws.config.model.init), "none", 0, ws.config)
    path = ws.path("evaluate", "passes", "original_encoder.npz")
    if path.is_file():
        original = _passes(path)
        keys, pooled = original["train/key"], original["train/pooled"]
    else:
        log.info("no original-encoder passes in %s: encoding the training split", path.parent)
        encode = evaluate_lib.make_encode_step(HubertModel(cfg), ws.mesh)
        batches, _ = ws.eval_batches("train")
        out = evaluate_lib.encode_pooled(encode, params, batches(), ws.mesh)
        keys, pooled = out["key"], out["pooled"]
    if not np.array_equal(np.asarray(keys).astype(str), np.asarray(train["key"]).astype(str)):
        raise RunNotReadyError(
            f"{ws.workdir}: original-encoder and fine-tuned training passes differ in order"
        )
    return OriginalEncoder(cfg, params, Reference.from_utterances(pooled, train["speaker"]))


# --- from an exported folder ------------------------------------------------------------------


def _reference(arrays: dict[str, np.ndarray], prefix: str, labels: bool) -> Reference:
    return Reference(
        arrays[f"{prefix}/speaker_index"],
        arrays[f"{prefix}/vectors"],
        arrays[f"{prefix}/label_mean"] if labels else None,
        arrays[f"{prefix}/label_std"] if labels else None,
    )


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / BUNDLE_MANIFEST
    if not path.is_file():
        raise RunNotReadyError(
            f"{directory} is not an exported papt_jax model (no {BUNDLE_MANIFEST})",
            hint="write one with: python -m papt_jax.export --workdir=RUN --out=DIR",
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise RunNotReadyError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this papt_jax reads {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}"
        )
    return manifest


def from_export(directory: str | Path) -> RunAssets:
    """Reads a folder written by `papt_jax.export` (no workdir needed).

    Raises:
      RunNotReadyError: not an export, or one of another format version.
    """
    from papt_jax.models.stack import to_layout
    from papt_jax.train.checkpoint import restore_tree

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    with np.load(directory / BUNDLE_REFERENCE) as z:
        arrays = {k: z[k] for k in z.files}
    regressors, references = {}, {}
    for dim in manifest["dimensions"]:
        folder = directory / BUNDLE_REGRESSORS / dim
        cfg = HubertConfig.from_dict(json.loads((folder / ENCODER_CONFIG).read_text()))
        # Exports made before the layers were scanned hold them one by one.
        variables = to_layout(restore_tree(folder / VARIABLES), cfg.scan_layers)
        regressors[dim] = Regressor(dim, cfg, variables, manifest["label_scaling"][dim])
        references[dim] = _reference(arrays, dim, labels=True)
    summary_path = directory / BUNDLE_SUMMARY
    assets = RunAssets(
        source=directory,
        config=json.loads((directory / BUNDLE_CONFIG).read_text()),
        speakers=tuple(json.loads((directory / BUNDLE_SPEAKERS).read_text())["speakers"]),
        pldc_k=int(manifest["pldc_k"]),
        regressors=regressors,
        references=references,
        load_original=functools.partial(_original_from_export, directory, arrays),
        summary=json.loads(summary_path.read_text()) if summary_path.is_file() else None,
        shortest_train_s=manifest.get("shortest_train_s"),
    )
    if assets.model_id != manifest["model_id"]:
        raise RunNotReadyError(
            f"{directory}: its arrays do not match the manifest's model_id (a damaged copy?)"
        )
    return assets


def _original_from_export(directory: Path, arrays: dict[str, np.ndarray]) -> OriginalEncoder:
    from papt_jax.convert import load_converted

    ckpt = load_converted(directory / BUNDLE_ORIGINAL)
    return OriginalEncoder(ckpt.config, ckpt.params, _reference(arrays, ORIGINAL, labels=False))


def load(path: str | Path) -> RunAssets:
    """A workdir or an exported folder, whichever `path` is."""
    path = Path(path)
    if (path / BUNDLE_MANIFEST).is_file():
        return from_export(path)
    return from_workdir(path)
