"""Running an experiment: which stages to run, which to redo, and the run itself.

A stage's completion record holds its *fingerprint* (the values of the config keys that
decide its outputs), the record ids of the stages it read and fingerprints of the files it
read from outside the workdir (`inputs`). A finished stage is reused only while all of them
still hold and its outputs are whole (`outputs`); otherwise it is stale: its outputs are
removed before any work starts (once the inputs of the stages to redo are known to be
usable), the log says what changed, and it is redone, which makes every stage that read it
stale too. So `config.json` always describes the outputs present. `redo` forces stages to
run again the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import ml_collections

from papt_jax import interrupts
from papt_jax.eval import tables
from papt_jax.eval.results import load_summary
from papt_jax.experiment import inputs, settings
from papt_jax.experiment.stages import SPEED_ONLY_KEYS, STAGES
from papt_jax.experiment.workspace import RunLock, Workspace, remove

log = logging.getLogger(__name__)


def stage_values(config: ml_collections.ConfigDict, stage: str) -> dict[str, Any]:
    """The config values that decide `stage`'s outputs, by key."""
    flat = settings.flatten(config)
    wanted = STAGES[stage].keys(config)
    values = {}
    for key, value in flat.items():
        if key in SPEED_ONLY_KEYS or key.endswith(".stop_after_steps"):
            continue
        if any(key == w or (w.endswith(".") and key.startswith(w)) for w in wanted):
            values[key] = value
    return values


def fingerprint(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]


class Planner:
    """Decides, before any work, which stages are reused, redone or run."""

    def __init__(self, config: ml_collections.ConfigDict, ws: Workspace):
        self.config = config
        self.ws = ws

    def inputs(self, stage: str) -> dict[str, str | None]:
        """Record ids of the stages `stage` reads, as they are now."""
        needs = STAGES[stage].needs(self.config)
        return {need: (self.ws.record(need) or {}).get("id") for need in needs}

    def stale_reason(self, stage: str, stale: set[str]) -> str | None:
        """Why a completed stage cannot be reused, or None if it can (or is not complete)."""
        record = self.ws.record(stage)
        if record is None:
            return None
        values = stage_values(self.config, stage)
        if record.get("fingerprint") != fingerprint(values):
            changes = _changes(record.get("values", {}), values)
            return "config changed (" + "; ".join(changes or ["fingerprint"]) + ")"
        for need in STAGES[stage].needs(self.config):
            if need in stale:
                return f"it reads stage {need}, which is redone"
            if record.get("inputs", {}).get(need) != (self.ws.record(need) or {}).get("id"):
                return f"stage {need} was redone since"
        changes = inputs.path_changes(record.get("paths"), values)
        if stage == "prepare":
            verify = self.config.data.verify_audio
            changes += inputs.data_changes(self.ws.dataset_dir, verify)
        if changes:
            return "its input files changed (" + "; ".join(changes) + ")"
        problem = STAGES[stage].damaged(self.ws, record.get("facts") or {})
        if problem:
            return f"its outputs are missing or damaged: {problem}"
        return None

    def unfinished_reason(self, stage: str, stale: set[str]) -> str | None:
        """Why an unfinished attempt of `stage` cannot be continued, or None if it can (or
        there is none): resumable stages continue from their checkpoints only if that
        attempt ran with the same settings, stage results and input files."""
        started = self.ws.started(stage)
        if started is None or self.ws.record(stage) is not None:
            return None
        if not STAGES[stage].resumable:
            return "an earlier attempt did not finish"
        values = stage_values(self.config, stage)
        same = started.get("fingerprint") == fingerprint(values)
        same = same and started.get("inputs") == self.inputs(stage)
        same = same and not any(need in stale for need in STAGES[stage].needs(self.config))
        same = same and not inputs.path_changes(started.get("paths"), values)
        return None if same else "an unfinished attempt ran with other settings or inputs"

    def invalidate(self, redo: tuple[str, ...]) -> set[str]:
        """Removes the outputs of every stale or forced stage; returns their names.

        Every reason is found first; nothing is removed until the inputs from outside the
        workdir of the stages to redo are known to be usable (a missing labels file stops
        the run here, with every result still in place).
        """
        self.ws.discard_unreadable_records()
        reasons: dict[str, str] = {}
        for stage in settings.STAGES:
            if stage in redo:
                reasons[stage] = "forced with --redo"
                continue
            reason = self.stale_reason(stage, set(reasons))
            reason = reason or self.unfinished_reason(stage, set(reasons))
            if reason is not None:
                reasons[stage] = reason
        for stage in reasons:
            if STAGES[stage].check_inputs is not None:
                STAGES[stage].check_inputs(self.ws)
        for stage, reason in reasons.items():
            known = self.ws.record(stage) is not None or self.ws.started(stage) is not None
            if known or stage in redo:
                log.info("stage %s: starts over: %s", stage, reason)
            for path in STAGES[stage].outputs(self.ws):
                remove(path)
            self.ws.forget(stage)
        return set(reasons)

    def plan(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """The requested stages plus every incomplete prerequisite, in pipeline order."""
        chosen = set(wanted)
        pending = list(wanted)
        while pending:
            for need in STAGES[pending.pop()].needs(self.config):
                if need not in chosen and self.ws.record(need) is None:
                    log.info("stage %s is needed first (not complete yet)", need)
                    chosen.add(need)
                    pending.append(need)
        return tuple(s for s in settings.STAGES if s in chosen)


# What each stage does, for its "starting" line.
STAGE_WORK = {
    "corpus": "generating the embedded synthetic corpus",
    "prepare": "building the dataset's array_record files",
    "bootstrap": "pre-training a small HuBERT from scratch on MFCC k-means labels",
    "pseudo_labels": "clustering the teacher's frame features into pseudo-labels",
    "pretrain": "continued pre-training of the encoder, PAPT or TAPT",
    "speaker_weights": "B2 speaker weights, if the system is B2",
    "finetune": "fine-tuning one regressor per emotion dimension",
    "evaluate": "predicting the test splits, with PLDC",
    "report": "writing the report: tables, analyses, figures",
}


def _summary(ws: Workspace, stages: tuple[str, ...], ran: set[str]) -> str:
    """The run's last words: stage times, the results tables, and the report's path last.

    The tables are the paper-shaped ones of `results.md` (one per test split); the rest of
    the report (analyses, their explanations, figures) stays in the file.
    """
    lines = ["stage            wall time"]
    for stage in stages:
        record = ws.record(stage) or {}
        wall = record.get("wall_s")
        when = "this run" if stage in ran else "earlier run, reused"
        shown = f"{wall:8.1f} s" if wall is not None else "       -"
        lines.append(f"{stage:<16} {shown}  ({when})")
    report = ws.path("report", "results.md")
    summary_path = ws.path("report", "summary.json")
    if summary_path.is_file():
        summary = load_summary(summary_path)
        for split in summary["splits"]:
            lines += ["", f"{split}:", tables.results_table(summary, split)]
    if report.is_file():
        lines += ["", f"report: {report}"]
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | Path, redo: tuple[str, ...] = ()) -> bool:
    """Runs the configured stages in `workdir`.

    Args:
      config: the experiment config (validated here first).
      workdir: the run's folder.
      redo: stages to run again even if complete (everything reading them follows).

    Returns:
      False when a stage stopped early on purpose (`stop_after_steps`); run again to resume.

    Raises:
      settings.ConfigError: the config cannot run (every problem listed).
      WorkdirBusyError: another run holds the workdir.
    """
    wanted = settings.validate(config)
    unknown = [s for s in redo if s not in STAGES]
    if unknown:
        raise settings.ConfigError(
            f"--redo names unknown stages {unknown}; choose from {list(settings.STAGES)}"
        )
    ws = Workspace(config, workdir)
    lock = RunLock(ws.workdir)
    lock.acquire()
    try:
        return _run_locked(config, ws, wanted, redo)
    finally:
        lock.release()


def _run_locked(config, ws: Workspace, wanted: tuple[str, ...], redo: tuple[str, ...]) -> bool:
    planner = Planner(config, ws)
    planner.invalidate(redo)
    stages = planner.plan(tuple(dict.fromkeys(wanted + redo)))
    # Written after stale outputs are gone: config.json describes what is left and what
    # this run writes.
    ws.write_config()
    log.info("workdir %s, %d device(s), stages %s", ws.workdir, ws.mesh.size, ",".join(stages))
    ran: set[str] = set()
    for number, name in enumerate(stages, 1):
        if ws.record(name) is not None:
            log.info("stage %s: done earlier with the same settings, reused", name)
            continue
        values = stage_values(config, name)
        started = {
            "fingerprint": fingerprint(values),
            "inputs": planner.inputs(name),
            "paths": inputs.path_fingerprints(values),
        }
        ws.write_started(name, started)
        log.info("stage %s: starting (%d of %d: %s)", name, number, len(stages), STAGE_WORK[name])
        start = time.time()
        try:
            facts = STAGES[name].run(ws)
            interrupts.raise_if_lost()  # a signal Python dropped: this stage starts over
        except interrupts.Interrupted as e:
            e.where = f"stage {name}"
            if e.saved is None and STAGES[name].resumable:
                e.saved = "this stage continues from its newest checkpoint (if it saved one)"
            raise
        wall = time.time() - start
        if facts is None:
            log.info("stage %s: stopped early after %.1f s; run again to resume", name, wall)
            return False
        problem = STAGES[name].damaged(ws, facts)
        if problem is not None:  # a bug: never record success over missing outputs
            raise RuntimeError(f"stage {name} finished, but {problem}")
        ws.write_record(
            name,
            dict(started, id=uuid.uuid4().hex, values=values, wall_s=round(wall, 2), facts=facts),
        )
        ran.add(name)
        written = ", ".join(str(p) for p in STAGES[name].outputs(ws) if p.exists()) or "-"
        log.info("stage %s: done in %.1f s (outputs: %s)", name, wall, written)
    print(_summary(ws, stages, ran), flush=True)
    return True
