"""The stages of an experiment: one short function each, and the table that describes them.

  corpus -> prepare -> bootstrap -> pseudo_labels -> pretrain -> finetune -> evaluate -> report

Each `Stage` says which stages it reads (`needs`), which config keys decide its outputs
(`keys`: the fingerprint that `run.py` compares on a rerun), where its outputs live
(`outputs`: removed when the stage must be redone; `damaged`: checked before a finished
stage is reused) and whether a started attempt can be resumed (training stages resume
from their checkpoints; the others start over).

A stage function returns a dict of facts for its completion record, or None when it
stopped early on purpose (`stop_after_steps`) and should resume on the next run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from papt_jax import storage
from papt_jax.experiment import objectives, output_checks, settings
from papt_jax.experiment.evaluation import run_evaluate, run_report
from papt_jax.experiment.finetuning import run_finetune, run_speaker_weights
from papt_jax.experiment.pretraining import (
    DROPOUT_KEYS,
    bootstrap_needed,
    run_bootstrap,
    run_pretrain,
    run_pseudo_labels,
)
from papt_jax.experiment.workspace import Workspace, atomic_dir

log = logging.getLogger(__name__)

csv = settings.csv


# Keys that change only speed or logging, never what a stage writes. (`model.scan_layers`
# is not one: scanned and unrolled layers agree to ~5e-7, not bit for bit.)
SPEED_ONLY_KEYS = (
    "num_devices",
    "log_every",
    "data.worker_count",
    "model.remat",
    "train.checkpoint_every_minutes",
    "data.verify_audio",
)


def run_corpus(ws: Workspace) -> dict[str, Any]:
    preset = ws.config.data.synthetic_preset
    if not preset:
        return {"corpus": str(ws.corpus_dir)}
    from papt_jax.data import synthetic

    with atomic_dir(ws.corpus_dir) as tmp:
        synthetic.generate_corpus(tmp, preset=preset, seed=int(ws.config.seed), overwrite=True)
    return {"corpus": str(ws.corpus_dir)}


def corpus_config(ws: Workspace):
    """The MSP-Podcast reader options of this run."""
    from papt_jax.data import msp_podcast

    d = ws.config.data
    splits = dict(msp_podcast.DEFAULT_SPLITS)
    splits.update(
        train=csv(d.train_splits), validation=csv(d.validation_splits), test=csv(d.test_splits)
    )
    return msp_podcast.CorpusConfig(
        corpus_dir=ws.corpus_dir,
        labels_file=Path(d.labels_file) if d.labels_file else None,
        new_labels_file=Path(d.new_labels_file) if d.new_labels_file else None,
        new_corpus_dir=Path(d.new_corpus_dir) if d.new_corpus_dir else None,
        splits=splits,
        test_c_splits=csv(d.new_test_splits),
        test_a_seconds=float(d.test_a_seconds),
        on_bad_rows=d.on_bad_rows,
        on_bad_audio=d.on_bad_audio,
        resample=bool(d.resample),
    )


def check_prepare_inputs(ws: Workspace) -> None:
    """The corpus folder and labels files can be read, and a dataset outside the workdir
    (shared, never removed from here) can be reused or built; raises a `UserError` if not."""
    from papt_jax.data import dataset_files, msp_podcast

    config = corpus_config(ws)
    if not ws.config.data.synthetic_preset:  # the embedded corpus is made by stage corpus
        msp_podcast.check_release_dir(config.corpus_dir, "data.corpus_dir")
        config.resolve_labels_file()
        config.resolve_new_labels_file()
    if ws.workdir not in ws.data_dir.parents:
        storage.check_output_dir(ws.data_dir, "--config.data.data_dir", [config.corpus_dir])
        if (ws.dataset_dir / "dataset_info.json").is_file():
            record = dataset_files.config_record(config)
            dataset_files.check_reusable(ws.dataset_dir, record, ws.config.data.verify_audio)


def run_prepare(ws: Workspace) -> dict[str, Any]:
    from papt_jax.data import prepare

    out = prepare.prepare(corpus_config(ws), ws.data_dir, verify_audio=ws.config.data.verify_audio)
    train_speakers = ws.split_speakers("train")
    if train_speakers is not None:
        settings.validate_against_data(ws.config, train_speakers)
    return {"dataset": str(out)}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
      name: the stage's name (as in `--config.stages`).
      run: the stage function.
      needs: config -> the stages whose outputs it reads.
      keys: config -> the config keys (or key prefixes ending in '.') that decide its outputs.
      outputs: workspace -> the paths it writes (removed when it must be redone).
      damaged: (workspace, the record's facts) -> what is missing or damaged among the
        finished stage's outputs, or None (`output_checks.py`).
      resumable: a started, unfinished attempt continues from its checkpoints.
      check_inputs: workspace -> None, raising a `UserError` when what the stage reads from
        outside the workdir cannot be used; run before a redo removes anything.
    """

    name: str
    run: Callable[[Workspace], dict[str, Any] | None]
    needs: Callable[[ml_collections.ConfigDict], tuple[str, ...]]
    keys: Callable[[ml_collections.ConfigDict], tuple[str, ...]]
    outputs: Callable[[Workspace], tuple[Path, ...]]
    damaged: Callable[[Workspace, dict[str, Any]], str | None]
    resumable: bool = False
    check_inputs: Callable[[Workspace], None] | None = None


_TRAIN_DATA_KEYS = ("seed", "data.max_seconds", "data.num_buckets", "data.batch_seconds")


_TRAIN_DATA_KEYS += ("data.batch_size", "model.dtype", "model.scan_layers")
# Accumulation and sharded parameters change the order of float sums (and accumulation the
# head's BatchNorm statistics in fine-tuning): results differ in the last bits, so they are
# part of what a training stage's outputs depend on.
_TRAIN_DATA_KEYS += ("train.accumulate_steps", "train.param_sharding")


def _corpus_keys(c) -> tuple[str, ...]:
    return ("data.synthetic_preset", "data.corpus_dir") + (
        ("seed",) if c.data.synthetic_preset else ()
    )


def _prepare_keys(c) -> tuple[str, ...]:
    return tuple(
        f"data.{k}"
        for k in (
            "labels_file",
            "new_labels_file",
            "new_corpus_dir",
            "train_splits",
            "validation_splits",
            "test_splits",
            "new_test_splits",
            "test_a_seconds",
            "on_bad_rows",
            "on_bad_audio",
            "resample",
            "data_dir",
        )
    )


def _bootstrap_keys(c) -> tuple[str, ...]:
    if not bootstrap_needed(c):
        return ("model.init", "pseudo_labels.teacher")
    # The bootstrap reads the pre-training settings except these (its own, or fixed).
    overridden = {"epochs", "peak_lr", "mask_prob", "features_pen_weight", "speaker_fusion"}
    overridden |= {"train_splits", "eval_split"}
    overridden |= set(DROPOUT_KEYS)
    shared = tuple(f"pretrain.{k}" for k in c.pretrain if k not in overridden)
    return ("bootstrap.", "model.init", "pseudo_labels.teacher") + shared + _TRAIN_DATA_KEYS


def _labels_needed(c) -> bool:
    return objectives.labels_needed(settings.flatten(c))


def _pseudo_label_keys(c) -> tuple[str, ...]:
    if not _labels_needed(c):  # the contrastive objective: the stage writes nothing
        return ("pretrain.objective", "model.init", "bootstrap.preset")
    keys = ("pseudo_labels.", "pretrain.train_splits", "pretrain.eval_split", "seed")
    return keys + ("model.dtype", "model.scan_layers")


def _pretrain_keys(c) -> tuple[str, ...]:
    return ("pretrain.", "model.init", "pseudo_labels.centroids") + _TRAIN_DATA_KEYS


def _speaker_weight_keys(c) -> tuple[str, ...]:
    if c.finetune.speaker_weighting != "b2":
        return ("finetune.speaker_weighting",)
    return ("finetune.speaker_weighting", "b2.", "seed")


def _finetune_keys(c) -> tuple[str, ...]:
    keys = ("finetune.",) + _TRAIN_DATA_KEYS
    return keys + (("model.init",) if c.finetune.init == "model" else ())


def _evaluate_keys(c) -> tuple[str, ...]:
    keys = ("evaluate.", "finetune.dimensions", "finetune.label_scaling", "model.dtype")
    keys += ("model.scan_layers",)
    return keys + (("model.init",) if "test_c" in csv(c.evaluate.splits) else ())


def _uses_bootstrap(spec: str) -> tuple[str, ...]:
    """("bootstrap",) when an encoder spec names the bootstrap encoder: only then does a
    stage wait for (and get redone after) the bootstrap."""
    return ("bootstrap",) if spec == "bootstrap" else ()


def _data_outputs(ws: Workspace) -> tuple[Path, ...]:
    # A dataset outside the workdir may be shared by other runs: never removed from here
    # (prepare refuses to reuse one built with other options).
    inside = ws.workdir in ws.data_dir.parents
    return (ws.data_dir,) if inside else ()


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "corpus",
            run_corpus,
            lambda c: (),
            _corpus_keys,
            lambda ws: (ws.path("corpus"),),
            output_checks.corpus,
        ),
        Stage(
            "prepare",
            run_prepare,
            lambda c: ("corpus",),
            _prepare_keys,
            _data_outputs,
            output_checks.prepare,
            check_inputs=check_prepare_inputs,
        ),
        Stage(
            "bootstrap",
            run_bootstrap,
            lambda c: ("prepare",),
            _bootstrap_keys,
            lambda ws: (ws.path("bootstrap"),),
            output_checks.bootstrap,
            resumable=True,
        ),
        Stage(
            "pseudo_labels",
            run_pseudo_labels,
            lambda c: ("prepare",) + _uses_bootstrap(c.pseudo_labels.teacher),
            _pseudo_label_keys,
            lambda ws: (ws.path("pseudo_labels"),),
            output_checks.pseudo_labels,
        ),
        Stage(
            "pretrain",
            run_pretrain,
            lambda c: (
                ("prepare",)
                + (("pseudo_labels",) if _labels_needed(c) else ())
                + _uses_bootstrap(c.model.init)
            ),
            _pretrain_keys,
            lambda ws: (ws.path("pretrain"),),
            output_checks.pretrain,
            resumable=True,
        ),
        Stage(
            "speaker_weights",
            run_speaker_weights,
            lambda c: ("prepare",),
            _speaker_weight_keys,
            lambda ws: (ws.path("speaker_weights"),),
            output_checks.speaker_weights,
            # Its ComParE feature cache is kept and reused when an attempt is resumed.
            resumable=True,
        ),
        Stage(
            "finetune",
            run_finetune,
            lambda c: (
                ("prepare", "speaker_weights")
                + _uses_bootstrap(c.model.init)
                + (("pretrain",) if c.finetune.init == "pretrain" else ())
            ),
            _finetune_keys,
            lambda ws: (ws.path("finetune"),),
            output_checks.finetune,
            resumable=True,
        ),
        Stage(
            "evaluate",
            run_evaluate,
            lambda c: ("prepare", "finetune") + _uses_bootstrap(c.model.init),
            _evaluate_keys,
            lambda ws: (ws.path("evaluate"),),
            output_checks.evaluate,
        ),
        Stage(
            "report",
            run_report,
            lambda c: ("evaluate",),
            lambda c: ("name",),
            lambda ws: (ws.path("report"),),
            output_checks.report,
        ),
    )
}


assert tuple(STAGES) == settings.STAGES
