"""`python -m papt_jax.export` refusals that need no finished run: one error line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, hide: str | None = None) -> subprocess.CompletedProcess:
    """The command line; `hide` makes that package unimportable (as if not installed)."""
    prelude = f"import sys; sys.modules[{hide!r}] = None; " if hide else "import sys; "
    code = (
        prelude + "import runpy; sys.argv = ['papt_jax.export', *sys.argv[1:]]; "
        "runpy.run_module('papt_jax.export', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: "), proc.stderr
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("package", ["jax2onnx", "onnxruntime"])
def test_a_missing_onnx_package_names_the_extra_to_install(tmp_path, package):
    proc = _cli(
        f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'out'}", "--format=onnx", hide=package
    )
    lines = _one_error_line(proc)
    # Named, with any other missing one (where the extra is not installed at all).
    assert lines[0].startswith("error: --format onnx needs "), lines[0]
    assert package in lines[0].split(" needs ")[1] and "not installed" in lines[0]
    assert lines[1].startswith("hint: install the 'export' extra: pip install -e '.[export]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format=onnx", "--to_hf"], "error: --to_hf belongs to --format=folder"),
        (
            ["--speaker=3"],
            "error: --speaker and --profile fold a speaker into --format=onnx or stablehlo",
        ),
        (
            ["--format=stablehlo", "--speaker=3", "--profile=p.json"],
            "error: give at most one of --speaker and --profile",
        ),
    ],
)
def test_flags_that_do_not_go_together(tmp_path, args, message):
    proc = _cli(f"--workdir={tmp_path}", f"--out={tmp_path / 'out'}", *args)
    assert _one_error_line(proc)[0] == message
