"""End to end: the command-line pipeline on the embedded smoke corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_main(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_paper_config_without_data_fails_at_once(tmp_path):
    start = time.time()
    proc = run_main("--config=configs/papt.py", f"--workdir={tmp_path / 'w'}", timeout=120)
    assert proc.returncode != 0
    assert "config.data.corpus_dir" in proc.stderr
    assert "config.model.init" in proc.stderr
    assert "config.pseudo_labels.teacher" in proc.stderr
    assert time.time() - start < 60


@pytest.mark.slow
def test_smoke_pipeline_writes_every_output_and_resumes(tmp_path):
    workdir = tmp_path / "w"
    proc = run_main("--config=configs/papt.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The results table is printed.
    assert "| + (μ, σ) shift |" in proc.stdout
    # Orbax's INFO chatter (dozens of lines per checkpoint) is filtered out by default.
    orbax_info = [line for line in proc.stderr.splitlines() if "checkpoint_manager.py" in line]
    assert not orbax_info, orbax_info[:3]
    for stage in (
        "corpus",
        "prepare",
        "bootstrap",
        "pseudo_labels",
        "pretrain",
        "finetune",
        "evaluate",
        "report",
    ):
        assert (workdir / stage / "DONE").is_file(), stage
    # Pseudo-labels and adapted encoder.
    assert (workdir / "pseudo_labels" / "labels.npz").is_file()
    assert (workdir / "pseudo_labels" / "centroids.npy").is_file()
    encoder_cfg = json.loads((workdir / "pretrain" / "encoder" / "config.json").read_text())
    assert encoder_cfg["speaker_fusion"] == "last" and encoder_cfg["num_speakers"] > 0
    # Logs: TensorBoard events and JSON lines for every training run.
    for run in ("bootstrap", "pretrain", "finetune/arousal", "finetune/valence"):
        assert list((workdir / run / "logs").glob("events.*")), run
        assert (workdir / run / "logs" / "metrics.jsonl").stat().st_size > 0, run
    report = workdir / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["splits"]) == {"test-b", "test-c"}
    for split in ("test-b", "test-c"):
        for dim in ("arousal", "valence"):
            for suffix in (
                "predictions.csv",
                "per_speaker.csv",
                "speaker_ccc.png",
                "pred_vs_true.png",
            ):
                assert (report / f"{split}_{dim}_{suffix}").is_file()
    assert "## test-c" in (report / "results.md").read_text()

    # A second run finds every stage complete and does no work.
    start = time.time()
    again = run_main("--config=configs/papt.py:smoke", f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already complete, skipped") == 8
    assert time.time() - start < 120
