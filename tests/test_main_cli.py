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
            "--config.finetune.peak_lrr is not a known setting (did you mean "
            "--config.finetune.peak_lr?)",
            "--show_config",
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
    assert_one_error(proc, message, hint)
    assert not (tmp_path / "w" / "corpus").exists()


def assert_one_error(proc, message: str, hint: str | None = None):
    """Exit code 2, no traceback, stderr starting with `error: ` and holding `message`
    (and `hint:` with `hint`, when given)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert message in proc.stderr
    if hint:
        assert "hint: " in proc.stderr and hint in proc.stderr


@pytest.mark.slow
def test_a_noise_folder_without_audio_is_one_error_before_any_work(tmp_path):
    (tmp_path / "noise").mkdir()
    proc = main(
        "--config=configs/papt_wavlm.py:smoke",
        f"--config.pretrain.noise_dir={tmp_path / 'noise'}",
        f"--workdir={tmp_path / 'w'}",
    )
    assert_one_error(proc, f"the noise folder {tmp_path / 'noise'} holds no audio file")
    assert "hint: " in proc.stderr
    assert not (tmp_path / "w" / "corpus").exists()


@pytest.mark.slow
def test_a_pytorch_init_that_is_no_checkpoint_is_one_error_before_any_work(tmp_path):
    text = tmp_path / "model.pt"
    text.write_text("not a checkpoint\n")
    proc = main(
        "--config=configs/papt_wavlm.py:smoke",
        f"--config.model.init=pytorch:{text}",
        f"--workdir={tmp_path / 'w'}",
    )
    assert_one_error(proc, f"{text} is not a PyTorch checkpoint")
    assert "it looks like a text file" in proc.stderr and "hint: " in proc.stderr
    assert not (tmp_path / "w").exists()  # refused by the config check: nothing ran


@pytest.mark.slow
def test_traceback_flag_shows_the_trace_of_a_user_error(tmp_path):
    proc = main("--config=configs/papt.py", f"--workdir={tmp_path}", "--traceback")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_show_config_lists_every_key_with_overrides():
    proc = main("--config=configs/papt.py:smoke", "--show_config", "--config.evaluate.pldc_k=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--config.evaluate.pldc_k=2" in proc.stdout
    assert "--config.finetune.label_scaling='none'" in proc.stdout


def test_every_override_problem_is_listed_at_once_with_the_config_problems(tmp_path):
    proc = main(
        "--config=configs/papt.py:smoke",
        f"--workdir={tmp_path / 'w'}",
        "--config.finetune.peak_lrr=1",  # a typo
        "--config.finetune.peak_lr=abc",  # unparsable
        "--config.finetune.epochs=1.5",  # not an integer
        "--config.data.corpus_dir=/no/such/folder",  # a bad path
        "--config.finetune.epochs2=3",
        "--config.finetune",  # a group, not a key
        "--config.evaluate.pldc_k=0",  # out of range
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "error: cannot run this configuration:",
        "  - --config.finetune.peak_lrr is not a known setting "
        "(did you mean --config.finetune.peak_lr?)",
        "  - --config.finetune.peak_lr='abc' is not a number",
        "  - --config.finetune.epochs='1.5' is not an integer",
        "  - --config.finetune.epochs2 is not a known setting "
        "(did you mean --config.finetune.epochs?)",
        "  - --config.finetune is a group of settings: set one of its keys",
        "  - --config.data.corpus_dir='/no/such/folder' is not a folder",
        "  - --config.evaluate.pldc_k=0 must be an integer >= 1",
        "hint: every setting with its value and meaning: add --show_config to the command",
    ]
    assert not (tmp_path / "w").exists()


def test_overrides_of_every_type_apply():
    proc = main(
        "--config=configs/papt.py:smoke",
        "--show_config",
        "--config.finetune.peak_lr=0.25",
        "--config.finetune.epochs=5",
        "--noconfig.finetune.freeze_feature_extractor",
        "--config.finetune.speaker_dependent",
        "--config.name=Mine",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for shown in (
        "--config.finetune.peak_lr=0.25 ",
        "--config.finetune.epochs=5 ",
        "--config.finetune.freeze_feature_extractor=False ",
        "--config.finetune.speaker_dependent=True ",
        "--config.name='Mine' ",
    ):
        assert shown in proc.stdout


def test_show_config_with_a_bad_override_names_it():
    proc = main("--config=configs/papt.py:smoke", "--show_config", "--config.evaluate.pldc_kk=2")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[:2] == [
        "error: cannot apply these overrides:",
        "  - --config.evaluate.pldc_kk is not a known setting "
        "(did you mean --config.evaluate.pldc_k?)",
    ]


@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_lists_the_flags_and_exits_0(flag):
    proc = main(flag)
    assert proc.returncode == 0, proc.stderr
    assert "--workdir" in proc.stdout and "--show_config" in proc.stdout
    # The config keys are listed by --show_config, which --help points to.
    assert "--show_config" in proc.stdout.split("flags:")[0]


@pytest.mark.parametrize(
    ("text", "error"),
    [("def get_config(:\n", "SyntaxError"), ("x = 1\n", "AttributeError")],
)
def test_a_config_file_that_cannot_load_is_one_line(tmp_path, text, error):
    config = tmp_path / "mine.py"
    config.write_text(text)
    proc = main(f"--config={config}", f"--workdir={tmp_path / 'w'}", "--config.finetune.epochs=2")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    first, hint = proc.stderr.splitlines()
    assert first.startswith(f"error: --config={config}: the config file cannot be loaded ({error}")
    assert hint.startswith("hint: --traceback shows where")
