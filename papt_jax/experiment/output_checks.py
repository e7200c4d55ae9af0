"""What each finished stage must have left in the workdir, checked before it is reused.

A stage record says the stage finished; the function named after the stage (`Stage.damaged`
in `stages.py`), given the workspace and the record's `facts`, checks that its outputs are
still there and whole (a file deleted or cut short by hand or by a full disk). The
checks are cheap: presence, sizes against the manifests of saved arrays, the CRCs of
`.npz` members, the sizes of the dataset's record files. A finished stage whose outputs
fail is redone on a plain rerun, naming why, and so is everything that read it; a stage
that just ran is checked the same way before it is recorded, so no stage reports success
over missing outputs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from papt_jax import pseudo_label_files
from papt_jax.data import dataset_files, input_pipeline
from papt_jax.experiment import settings
from papt_jax.experiment.workspace import Workspace


def _missing(*paths: Path) -> str | None:
    for path in paths:
        if not path.exists():
            return f"{path} is missing"
    return None


def _npz(path: Path) -> str | None:
    """An `.npz` file whose every member matches its CRC (reads it once, no arrays built)."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"{path} is damaged ({e})"
    return None if bad is None else f"{path} is damaged (member {bad} fails its CRC)"


def _json(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} is missing"
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return f"{path} is damaged ({type(e).__name__})"
    return None


def _converted(folder: Path) -> str | None:
    """A converted-checkpoint folder (`convert.save_converted`): its config and params."""
    problem = _json(folder / "config.json")
    if problem:
        return problem
    params = folder / "params"
    if not params.is_dir() or not any(params.iterdir()):
        return f"{params} is missing or empty"
    return None


def _labels(folder: Path) -> str | None:
    return _npz(folder / pseudo_label_files.LABELS_FILE) or _missing(
        folder / pseudo_label_files.CENTROIDS_FILE
    )


def corpus(ws: Workspace, facts: dict[str, Any]) -> str | None:
    if not ws.config.data.synthetic_preset:
        return None  # the user's corpus: its files are fingerprinted by the dataset
    labels = ws.corpus_dir / "Labels"
    audios = ws.corpus_dir / "Audios"
    if not labels.is_dir() or not any(labels.iterdir()):
        return f"{labels} is missing or empty"
    if not audios.is_dir() or not any(audios.iterdir()):
        return f"{audios} is missing or empty"
    return None


def prepare(ws: Workspace, facts: dict[str, Any]) -> str | None:
    out = ws.dataset_dir
    problem = _json(out / "dataset_info.json") or _missing(out / dataset_files.BUILD_CONFIG_FILE)
    problem = problem or _json(out / "speakers.json")
    if problem:
        return problem
    info = json.loads((out / "dataset_info.json").read_text())
    for split in [s.get("name") for s in info.get("splits", [])]:
        problem = _json(out / "index" / f"{split}.json")
        if problem:
            return problem
        try:
            input_pipeline.check_files(ws.data_dir, split)
        except input_pipeline.DatasetDamagedError as e:
            return e.message
    return None


def bootstrap(ws: Workspace, facts: dict[str, Any]) -> str | None:
    if facts.get("needed") is False:
        return None
    out = ws.path("bootstrap")
    if facts.get("objective") == "contrastive":  # trained without pseudo-labels
        return _converted(out / "encoder")
    return _labels(out / "pseudo_labels") or _converted(out / "encoder")


def pseudo_labels(ws: Workspace, facts: dict[str, Any]) -> str | None:
    if facts.get("needed") is False:  # the contrastive objective reads none
        return None
    return _labels(ws.path("pseudo_labels"))


def pretrain(ws: Workspace, facts: dict[str, Any]) -> str | None:
    return _converted(ws.path("pretrain", "encoder"))


def speaker_weights(ws: Workspace, facts: dict[str, Any]) -> str | None:
    if facts.get("needed") is False:
        return None
    return _json(ws.path("speaker_weights", "weights.json"))


def finetune(ws: Workspace, facts: dict[str, Any]) -> str | None:
    from papt_jax.experiment.finetuning import model_problem

    for dimension in settings.csv(ws.config.finetune.dimensions):
        problem = model_problem(ws.path("finetune", dimension))
        if problem:
            return problem
    return None


def evaluate(ws: Workspace, facts: dict[str, Any]) -> str | None:
    out = ws.path("evaluate")
    names = list(facts.get("results", []))
    names += [f"passes/{d}.npz" for d in settings.csv(ws.config.finetune.dimensions)]
    for name in names:
        problem = _npz(out / name)
        if problem:
            return problem
    return None


def report(ws: Workspace, facts: dict[str, Any]) -> str | None:
    out = ws.path("report")
    return _missing(out / "results.md") or _json(out / "summary.json")
