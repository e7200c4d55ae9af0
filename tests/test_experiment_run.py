"""The runner: stage fingerprints, redo, resume decisions, config history, the run lock.

The stage functions are replaced by fast fakes that write a file, so these tests check
the runner's decisions alone; tests/test_main_e2e.py runs the real stages.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from papt_jax.experiment import run as run_lib
from papt_jax.experiment import stages as stages_lib
from papt_jax.experiment import workspace as workspace_lib
from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config

REPO = Path(__file__).resolve().parents[1]


def smoke():
    return apply_embedded_corpus(base_config(), "smoke")


@pytest.fixture
def fake_stages(monkeypatch):
    """Every stage writes `<workdir>/<stage>/out.txt` and counts its calls."""
    calls: list[str] = []

    def fake(name):
        def run(ws):
            calls.append(name)
            out = ws.stage_dir(name)
            (out / "out.txt").write_text(name)
            return {"fake": True}

        return run

    def damaged(name):
        def check(ws, facts):
            out = ws.path(name, "out.txt")
            return None if out.is_file() and out.read_text() == name else f"{out} is missing"

        return check

    for name, stage in list(stages_lib.STAGES.items()):
        outputs = (lambda n: lambda ws: (ws.path(n),))(name)
        fake_stage = dataclasses.replace(
            stage, run=fake(name), outputs=outputs, damaged=damaged(name), check_inputs=None
        )
        monkeypatch.setitem(stages_lib.STAGES, name, fake_stage)
    return calls


def test_a_finished_run_is_reused_when_nothing_changed(tmp_path, fake_stages, capsys):
    assert run_lib.run(smoke(), tmp_path)
    assert fake_stages == list(stages_lib.STAGES)
    fake_stages.clear()
    assert run_lib.run(smoke(), tmp_path)
    assert fake_stages == []
    out = capsys.readouterr().out
    assert "earlier run, reused" in out


def test_a_changed_key_redoes_its_stage_and_everything_downstream(tmp_path, fake_stages, caplog):
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    config = smoke()
    config.finetune.peak_lr = 1e9
    with caplog.at_level(logging.INFO):
        run_lib.run(config, tmp_path)
    assert fake_stages == ["finetune", "evaluate", "report"]
    assert "finetune.peak_lr: 0.001 -> 1000000000.0" in caplog.text
    # config.json describes the outputs present; the old config is kept in the history.
    assert json.loads((tmp_path / "config.json").read_text())["finetune"]["peak_lr"] == 1e9
    (old,) = (tmp_path / "config_history").iterdir()
    assert json.loads(old.read_text())["finetune"]["peak_lr"] == 1e-3


def test_fusion_change_redoes_pretraining_onwards(tmp_path, fake_stages):
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    config = smoke()
    config.pretrain.speaker_fusion = "none"
    run_lib.run(config, tmp_path)
    assert fake_stages == ["pretrain", "finetune", "evaluate", "report"]


def test_speed_only_keys_change_nothing(tmp_path, fake_stages):
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    config = smoke()
    config.log_every = 3
    config.data.worker_count = 2
    config.finetune.stop_after_steps = 5
    config.model.remat = "dots_saveable"
    run_lib.run(config, tmp_path)
    assert fake_stages == []


@pytest.mark.parametrize(
    "key, value",
    [("model.scan_layers", False), ("train.accumulate_steps", 2), ("train.param_sharding", "fsdp")],
)
def test_keys_that_change_float_rounding_redo_the_training_stages(
    tmp_path, fake_stages, key, value
):
    """Unrolled layers, micro-batches and sharded parameters agree with the default only to
    float rounding, so every stage that trains (or, for the layers, runs an encoder) is
    redone; remat stays a speed-only key."""
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    config = smoke()
    section, field = key.split(".")
    config[section][field] = value
    config.model.remat = "full"
    config.num_devices = 1  # speed-only; 8 rows split into 2 micro-batches on one device
    run_lib.run(config, tmp_path)
    trained = ["bootstrap", "pseudo_labels", "pretrain", "finetune", "evaluate", "report"]
    assert fake_stages == trained


def test_a_stale_stage_outside_the_requested_ones_is_removed(tmp_path, fake_stages):
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    config = smoke()
    config.evaluate.pldc_k = 2
    config.stages = "finetune"
    run_lib.run(config, tmp_path)
    assert fake_stages == []
    # evaluate and report no longer describe config.json: they are gone, not kept stale.
    assert not (tmp_path / "evaluate").exists() and not (tmp_path / "report").exists()
    assert (tmp_path / "finetune" / "out.txt").is_file()


def test_redo_forces_a_stage_and_its_readers(tmp_path, fake_stages):
    run_lib.run(smoke(), tmp_path)
    fake_stages.clear()
    run_lib.run(smoke(), tmp_path, redo=("pseudo_labels",))
    assert fake_stages == ["pseudo_labels", "pretrain", "finetune", "evaluate", "report"]
    with pytest.raises(run_lib.settings.ConfigError, match="unknown stages"):
        run_lib.run(smoke(), tmp_path, redo=("pretrian",))


def test_unfinished_attempts_resume_only_when_they_can(tmp_path, fake_stages):
    config = smoke()
    config.stages = "corpus,prepare,bootstrap,pseudo_labels"
    run_lib.run(config, tmp_path)
    ws = workspace_lib.Workspace(config, tmp_path)
    planner = run_lib.Planner(smoke(), ws)

    # A resumable stage started with the same settings keeps its partial outputs.
    started = {
        "fingerprint": run_lib.fingerprint(run_lib.stage_values(smoke(), "pretrain")),
        "inputs": planner.inputs("pretrain"),
    }
    ws.write_started("pretrain", started)
    (ws.stage_dir("pretrain") / "checkpoint").write_text("partial")
    assert planner.invalidate(()) == set()
    assert (tmp_path / "pretrain" / "checkpoint").is_file()

    # The same partial state under other settings is removed, never resumed.
    other = smoke()
    other.pretrain.peak_lr = 1.0
    assert run_lib.Planner(other, ws).invalidate(()) == {"pretrain"}
    assert not (tmp_path / "pretrain").exists()

    # A non-resumable stage (evaluation) that did not finish always starts over.
    ws.write_started("evaluate", {"fingerprint": "x", "inputs": {}})
    (ws.stage_dir("evaluate") / "half.npz").write_text("half")
    assert "evaluate" in planner.invalidate(())
    assert not (tmp_path / "evaluate").exists()


def test_a_stage_stopped_early_is_not_recorded(tmp_path, fake_stages, monkeypatch):
    stage = stages_lib.STAGES["pretrain"]
    monkeypatch.setitem(
        stages_lib.STAGES, "pretrain", dataclasses.replace(stage, run=lambda ws: None)
    )
    assert run_lib.run(smoke(), tmp_path) is False
    ws = workspace_lib.Workspace(smoke(), tmp_path)
    assert ws.record("pseudo_labels") is not None
    assert ws.record("pretrain") is None and ws.started("pretrain") is not None


def test_atomic_dir_never_leaves_a_half_folder_under_the_final_name(tmp_path):
    final = tmp_path / "encoder"
    with pytest.raises(RuntimeError), workspace_lib.atomic_dir(final) as tmp:
        (tmp / "params").write_text("half")
        raise RuntimeError("killed")
    assert not final.exists()
    assert (tmp_path / "encoder.partial").exists()  # what a kill leaves behind
    with workspace_lib.atomic_dir(final) as tmp:  # the next attempt starts clean
        assert list(tmp.iterdir()) == []
        (tmp / "params").write_text("whole")
    assert (final / "params").read_text() == "whole"
    assert not (tmp_path / "encoder.partial").exists()


@pytest.mark.slow
def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
    first = workspace_lib.RunLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(workspace_lib.WorkdirBusyError, match=f"pid {os.getpid()}"):
            workspace_lib.RunLock(tmp_path).acquire()
        # Another process: one clear line, exit code 2, before any work.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "papt_jax.main",
                "--config=configs/papt.py:smoke",
                f"--workdir={tmp_path}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "is in use by another run" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "corpus").exists()
    finally:
        first.release()
    workspace_lib.RunLock(tmp_path).acquire()  # free again once released


def test_a_run_that_fine_tunes_a_given_encoder_never_trains_a_bootstrap(tmp_path, fake_stages):
    """The personalization-gap and baseline runs on the embedded corpus fine-tune a finished
    run's bootstrap encoder; the pseudo-label teacher left at 'bootstrap' must not make them
    train their own."""
    config = smoke()
    config.finetune.init = "model"
    config.model.init = "converted:elsewhere/bootstrap/encoder"
    assert config.pseudo_labels.teacher == "bootstrap"
    config.stages = "prepare,finetune,evaluate,report"
    ws = workspace_lib.Workspace(config, tmp_path)
    assert "bootstrap" not in run_lib.Planner(config, ws).plan(("finetune", "evaluate", "report"))
    config.stages = "prepare,pseudo_labels"  # the teacher is read here: bootstrap first
    assert "bootstrap" in run_lib.Planner(config, ws).plan(("pseudo_labels",))
