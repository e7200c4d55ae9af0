"""`python -m papt_jax.main`: user mistakes are one clear message and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ["--config=configs/papt.py:smoke", "--config.finetune.peak_lrr=1"],
            "--config.finetune.peak_lrr: no such config key",
            "did you mean `peak_lr`?",
        ),
        (["--config=configs/nope.py"], "--config=configs/nope.py: no such file", "configs/"),
        (
            ["--config=configs/papt.py:smoke", "--config.data.batch_size=0"],
            "--config.data.batch_size=0 must be an integer >= 1",
            None,
        ),
        (["--config=configs/papt.py", "--no_such_flag"], "Unknown command line flag", "--help"),
        (
            ["--config=configs/papt.py"],
            "--config.data.corpus_dir is not set",
            None,
        ),
    ],
)
def test_user_mistakes_print_one_message_and_exit_2(tmp_path, args, message, hint):
    proc = main(*args, f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert message in proc.stderr
    if hint:
        assert "hint: " in proc.stderr and hint in proc.stderr
    assert not (tmp_path / "w" / "corpus").exists()


def test_traceback_flag_shows_the_trace_of_a_user_error(tmp_path):
    proc = main("--config=configs/papt.py", f"--workdir={tmp_path}", "--traceback")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_show_config_lists_every_key_with_overrides():
    proc = main("--config=configs/papt.py:smoke", "--show_config", "--config.evaluate.pldc_k=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--config.evaluate.pldc_k=2" in proc.stdout
    assert "--config.finetune.label_scaling='none'" in proc.stdout
