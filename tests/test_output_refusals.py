"""Commands that write (predict, export, convert, prepare) never destroy a user's file.

Each output is checked before any work: one that is an input, an existing folder where a
file goes, or a place that cannot be written is refused with one `error:` line and exit
code 2, and the input is left byte for byte as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.file_systems import read_only_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _tool(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _refused(proc, *words) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    # Refused before the model was loaded or any file predicted.
    assert "predicting" not in proc.stderr and "wrote" not in proc.stderr
    return errors[0]


def _a_recording(smoke_run, tmp_path) -> Path:
    source = next((smoke_run.workdir / "corpus" / "Audios").glob("*.wav"))
    return Path(shutil.copy(source, tmp_path / "victim.wav"))


def test_predict_never_writes_over_its_own_input(smoke_run, tmp_path):
    victim = _a_recording(smoke_run, tmp_path)
    before = victim.read_bytes()
    run = f"--workdir={smoke_run.workdir}"
    # Before: the recording was replaced by CSV text, exit code 0.
    _refused(
        _tool("papt_jax.predict", run, f"--audio={victim}", f"--out={victim}"),
        "is one of the inputs",
    )
    _refused(
        _tool(
            "papt_jax.predict",
            run,
            f"--enroll={tmp_path}",
            f"--save_profile={victim}",
        ),
        "--save_profile",
        "is one of the inputs",
    )
    assert victim.read_bytes() == before


def test_predict_refuses_a_folder_or_a_read_only_place_before_predicting(smoke_run, tmp_path):
    victim = _a_recording(smoke_run, tmp_path)
    run = f"--workdir={smoke_run.workdir}"
    folder = tmp_path / "results"
    folder.mkdir()
    # Before: an IsADirectoryError traceback once every prediction had been computed.
    _refused(_tool("papt_jax.predict", run, f"--audio={victim}", f"--out={folder}"), "folder")
    with read_only_dir(tmp_path / "ro") as (ro, words):
        out = ro / "pred.csv"
        _refused(_tool("papt_jax.predict", run, f"--audio={victim}", f"--out={out}"), words)


def test_export_refuses_the_run_it_reads_and_a_folder_holding_it(smoke_run, tmp_path):
    workdir = smoke_run.workdir
    for out in (workdir, workdir.parent):
        proc = _tool("papt_jax.export", f"--workdir={workdir}", f"--out={out}", "--overwrite")
        _refused(proc, "an input")
    assert (workdir / "stages" / "report.json").is_file()


def test_convert_refuses_its_source_as_output(smoke_run, tmp_path):
    source = Path(shutil.copytree(smoke_run.workdir / "bootstrap" / "encoder", tmp_path / "enc"))
    files = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    proc = _tool(
        "papt_jax.convert", "--to_hf", f"--source={source}", f"--out={source}", "--overwrite"
    )
    _refused(proc, "is an input")
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == files
    with read_only_dir(tmp_path / "ro") as (ro, words):
        proc = _tool("papt_jax.convert", "--to_hf", f"--source={source}", f"--out={ro / 'hf'}")
        _refused(proc, words)


def test_prepare_refuses_the_corpus_as_output_and_a_read_only_place(smoke_run, tmp_path):
    corpus = Path(shutil.copytree(smoke_run.workdir / "corpus", tmp_path / "corpus"))
    proc = _tool("papt_jax.data.prepare", f"--corpus_dir={corpus}", f"--out={corpus}")
    _refused(proc, "is an input")
    assert not (corpus / "papt_msp_podcast").exists()
    with read_only_dir(tmp_path / "ro") as (ro, words):
        proc = _tool("papt_jax.data.prepare", f"--corpus_dir={corpus}", f"--out={ro / 'data'}")
        _refused(proc, words)
