"""Running an experiment: which stages to run, which to redo, and the run itself.

A stage's completion record holds its *fingerprint* (the values of the config keys that
decide its outputs) and the record ids of the stages it read. A finished stage is reused
only while both still hold; otherwise it is stale: its outputs are removed before any work
starts, the log names the keys that changed, and it is redone, which makes every stage that
read it stale too. So `config.json` always describes the outputs present. `redo` forces
stages to run again the same way.
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

from papt_jax.eval import tables
from papt_jax.eval.results import load_summary
from papt_jax.experiment import settings
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
        """Why a completed stage cannot be reused, or None if it can."""
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
        return None

    def invalidate(self, redo: tuple[str, ...]) -> set[str]:
        """Removes the outputs of every stale or forced stage; returns their names."""
        stale: set[str] = set()
        for stage in settings.STAGES:
            reason = "forced with --redo" if stage in redo else self.stale_reason(stage, stale)
            started = self.ws.started(stage)
            if reason is None and self.ws.record(stage) is None and started is not None:
                # An unfinished attempt: resumable stages continue from their checkpoints
                # only if that attempt ran with the same settings and inputs.
                same = started.get("fingerprint") == fingerprint(stage_values(self.config, stage))
                same = same and started.get("inputs") == self.inputs(stage)
                if not STAGES[stage].resumable:
                    reason = "an earlier attempt did not finish"
                elif not same:
                    reason = "an unfinished attempt ran with other settings or inputs"
            if reason is None:
                continue
            if self.ws.record(stage) is not None or started is not None or stage in redo:
                log.info("stage %s: starts over: %s", stage, reason)
            stale.add(stage)
            for path in STAGES[stage].outputs(self.ws):
                remove(path)
            self.ws.forget(stage)
        return stale

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
        started = {"fingerprint": fingerprint(values), "inputs": planner.inputs(name)}
        ws.write_started(name, started)
        log.info("stage %s: starting (%d of %d: %s)", name, number, len(stages), STAGE_WORK[name])
        start = time.time()
        facts = STAGES[name].run(ws)
        wall = time.time() - start
        if facts is None:
            log.info("stage %s: stopped early after %.1f s; run again to resume", name, wall)
            return False
        ws.write_record(
            name,
            dict(started, id=uuid.uuid4().hex, values=values, wall_s=round(wall, 2), facts=facts),
        )
        ran.add(name)
        outputs = ", ".join(str(p) for p in STAGES[name].outputs(ws) if p.exists()) or "-"
        log.info("stage %s: done in %.1f s (outputs: %s)", name, wall, outputs)
    print(_summary(ws, stages, ran), flush=True)
    return True
