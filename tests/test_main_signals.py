"""End to end: SIGTERM, SIGINT and SIGKILL sent to `python -m papt_jax.main` mid-stage.

Each test copies the shared smoke run, forgets its last stages and reruns them, signalling
the process (and, as a terminal's Ctrl-C or a scheduler does, its whole process group)
while a stage runs. Fine-tuning reads its batches through Grain worker processes here
(`data.worker_count=2`, a key that changes no result), so the tests also see the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
from fixtures.main_runs import alive, descendants, run_main, start_main, wait_for
from test_main_e2e import assert_same_finetuned, copy_run, finetuned_of

from papt_jax.interrupts import INTERRUPTED_EXIT_CODE

pytestmark = pytest.mark.slow

SMOKE = "--config=configs/papt.py:smoke"
FINETUNE = "--config.stages=finetune"
# Arousal alone: a dimension trains on the same seed and batches whatever the others are,
# so its model equals the smoke run's (which also trained valence), as asserted below.
AROUSAL = "--config.finetune.dimensions=arousal"
# Hang guards only: on a loaded 2-core machine these stages take a minute or two.
STAGE_TIMEOUT_S = 1200


def _forget(w, *stages):
    for stage in stages:
        for record in (w / "stages").glob(f"{stage}.*json"):
            record.unlink()
        shutil.rmtree(w / stage, ignore_errors=True)


def _train_steps(logs):
    """Steps with a training record in `logs/metrics.jsonl` (one per step at log_every=1)."""
    path = logs / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(ln)["step"] for ln in lines if ln.endswith("}") and "train/loss" in ln]


def _signal_group(proc, sig):
    """Sends `sig` to the process's group while it is stopped, so it lands between steps
    of a known one (the process saw it when continued)."""
    os.killpg(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, sig)
    os.killpg(proc.pid, signal.SIGCONT)


def test_sigterm_mid_epoch_saves_exits_75_and_the_resumed_run_is_identical(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    expected = finetuned_of(w, ["arousal"])
    _forget(w, "finetune", "evaluate", "report")
    # Fine-tuning alone: evaluation and the report read only its models (their own kill
    # tests in test_main_e2e.py show them deterministic), so equal models make an equal run.
    proc = start_main(
        w,
        SMOKE,
        FINETUNE,
        AROUSAL,
        "--config.log_every=1",
        "--config.data.worker_count=2",
        log=tmp_path / "log.txt",
        start_new_session=True,
    )
    logs = w / "finetune" / "arousal" / "logs"
    wait_for(lambda: _train_steps(logs), STAGE_TIMEOUT_S, "fine-tuning's first step", proc)
    workers = descendants(proc.pid)
    assert len(workers) >= 2, workers  # Grain's worker processes (and spawn's tracker)
    _signal_group(proc, signal.SIGTERM)
    assert proc.wait(timeout=STAGE_TIMEOUT_S) == INTERRUPTED_EXIT_CODE
    log = (tmp_path / "log.txt").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM during stage finetune; finetune[arousal] saved")
    assert last.endswith("rerun the same command to resume")
    steps = sorted(int(p.name) for p in (w / "finetune/arousal/checkpoints/latest").iterdir())
    per_epoch = json.loads((smoke_run.workdir / "finetune/arousal/result.json").read_text())
    assert steps and steps[-1] < per_epoch["steps"]  # mid-way, not at an epoch's end
    wait_for(lambda: not alive(workers), 300, "the workers to end")  # a hang guard

    resumed = run_main(w, SMOKE, FINETUNE, AROUSAL)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"finetune[arousal]: resumed from step {steps[-1]}" in resumed.stderr
    assert_same_finetuned(expected, finetuned_of(w, ["arousal"]))


def test_no_worker_outlives_a_sigkilled_run(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    _forget(w, "finetune", "evaluate", "report")
    proc = start_main(
        w, SMOKE, "--config.log_every=1", "--config.data.worker_count=2", log=tmp_path / "log"
    )
    logs = w / "finetune" / "arousal" / "logs"
    wait_for(lambda: _train_steps(logs), STAGE_TIMEOUT_S, "fine-tuning's first step", proc)
    workers = descendants(proc.pid)
    assert len(workers) >= 2, workers
    proc.kill()
    proc.wait()
    # Before: the workers lived on (orphans, each with its copy of the pipeline).
    wait_for(lambda: not alive(workers), 30, f"the workers {sorted(alive(workers))} to end")


def test_ctrl_c_outside_training_is_one_line_and_keeps_finished_stages(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    finetune_record = (w / "stages" / "finetune.json").read_text()
    _forget(w, "evaluate", "report")
    proc = start_main(w, SMOKE, log=tmp_path / "log.txt", start_new_session=True)
    log = tmp_path / "log.txt"
    wait_for(
        lambda: "stage evaluate: starting" in log.read_text(), STAGE_TIMEOUT_S, "evaluate", proc
    )
    time.sleep(2)  # inside the evaluation passes
    _signal_group(proc, signal.SIGINT)
    assert proc.wait(timeout=STAGE_TIMEOUT_S) == INTERRUPTED_EXIT_CODE
    text = log.read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        "interrupted by SIGINT during stage evaluate; finished stages are kept, this one "
        "starts over; rerun the same command to resume"
    )
    assert (w / "stages" / "finetune.json").read_text() == finetune_record
    assert not (w / "stages" / "evaluate.json").exists()
