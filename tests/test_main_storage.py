"""End to end: the file system says no (disk full, read-only, a file in the way).

`python -m papt_jax.main` must end with one `error:` line naming the path and exit code 2,
leave nothing damaged, and give the undisturbed run's result once the cause is fixed.

What each test simulates, and how, without faking the failure inside the program:
* a full disk: the child's file-size limit (RLIMIT_FSIZE, `ulimit -f`), which makes the
  kernel refuse the write that crosses it with EFBIG; with root, also a real full file
  system (a 2 MB tmpfs) that refuses with ENOSPC;
* a read-only workdir or cache: with root, a read-only tmpfs mount (EROFS); otherwise a
  folder without write permission (EACCES);
* a path through a file: a workdir or cache folder below a regular file (ENOTDIR/EEXIST).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fixtures.file_systems import mounted_tmpfs, read_only_dir
from fixtures.main_runs import run_main
from test_main_e2e import (
    STAGE_SPLITS,
    _records,
    assert_same_finetuned,
    copy_run,
    finetuned_of,
)

pytestmark = pytest.mark.slow

SMOKE = "--config=configs/papt.py:smoke"
DATA_STAGES = "--config.stages=corpus,prepare"
FINETUNE = "--config.stages=finetune"


def _copy_of_the_shared_compilation_cache(folder: Path) -> Path:
    """`folder`, holding a copy of the compilation cache the tests' `python -m
    papt_jax.main` runs share (tests/conftest.py), or empty when there is none."""
    shared = os.environ.get("PAPT_JAX_COMPILATION_CACHE", "")
    if shared and Path(shared).is_dir():
        return Path(shutil.copytree(shared, folder))
    folder.mkdir()
    return folder


def _assert_one_error_line(run, *words):
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert "\nhint: " in run.stderr


def _assert_same_records(a, b):
    for split in STAGE_SPLITS:
        assert a[split][0] == b[split][0], split
        for got, want in zip(a[split][1], b[split][1], strict=True):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split}:{key}")


def test_a_full_disk_while_building_the_dataset_is_one_line_and_the_rerun_is_identical(
    smoke_run, tmp_path
):
    w = tmp_path / "w"
    # 2 MB: the corpus fits, the training split's record file (about 3.7 MB) does not.
    full = run_main(w, SMOKE, DATA_STAGES, file_size_limit=2_000_000)
    # Before: a RuntimeError traceback from the record writer, exit code 1.
    _assert_one_error_line(full, "file too large")
    assert not (w / "stages" / "prepare.json").exists()
    again = run_main(w, SMOKE, DATA_STAGES)
    assert again.returncode == 0, again.stderr[-3000:]
    # The same records as the undisturbed smoke run's (the same config and corpus seed).
    _assert_same_records(_records(w / "data"), _records(smoke_run.workdir / "data"))


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_the_rerun_is_identical(
    smoke_run, tmp_path
):
    w = copy_run(smoke_run, tmp_path)
    expected = finetuned_of(w, ["arousal"])
    for stage in ("finetune", "evaluate", "report"):
        (w / "stages" / f"{stage}.json").unlink()
        shutil.rmtree(w / stage)
    # 120 kB: the logs fit, a checkpoint's array file (130-260 kB) does not. A copy of the
    # tests' compilation cache (it holds the smoke run's steps): a write that crosses the
    # limit would leave a truncated entry in the cache the other tests share.
    cache = _copy_of_the_shared_compilation_cache(tmp_path / "xla")
    # Arousal alone: its model is the smoke run's whatever the other dimensions are.
    arousal = "--config.finetune.dimensions=arousal"
    full = run_main(
        w, SMOKE, FINETUNE, arousal, f"--compilation_cache={cache}", file_size_limit=120_000
    )
    # Before: about 250 lines of Orbax and tensorstore tracebacks.
    _assert_one_error_line(full, "file too large")
    assert not (w / "stages" / "finetune.json").exists()
    # Evaluation and the report read only the fine-tuned models (their own kill tests in
    # test_main_e2e.py show them deterministic): equal models make an equal run.
    again = run_main(w, SMOKE, FINETUNE, arousal)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_finetuned(expected, finetuned_of(w, ["arousal"]))


def test_a_full_file_system_is_one_line_and_the_rerun_is_identical(smoke_run, tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "size=2m") as disk:
        args = (SMOKE, DATA_STAGES, f"--config.data.data_dir={disk}")
        full = run_main(tmp_path / "w", *args)
        _assert_one_error_line(full, "no space left on the device")
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_main(tmp_path / "w", *args)
        assert again.returncode == 0, again.stderr[-3000:]
        _assert_same_records(_records(disk), _records(smoke_run.workdir / "data"))


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for workdir in (tmp_path / "file", tmp_path / "file" / "run"):
        run = run_main(workdir, SMOKE)
        # Before: FileExistsError / NotADirectoryError tracebacks, exit code 1.
        _assert_one_error_line(run, f"--workdir={workdir}")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_read_only_workdir_is_one_line(tmp_path):
    with read_only_dir(tmp_path / "ro") as (folder, words):
        run = run_main(folder / "run", SMOKE)
        _assert_one_error_line(run, f"--workdir={folder / 'run'}", words)


def test_an_unusable_compilation_cache_is_one_warning_and_the_run_goes_on(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    (tmp_path / "file").write_text("x")
    with read_only_dir(tmp_path / "ro") as (folder, _):
        # The report stage compiles a few small programs: each would warn if it could. The
        # folder below a file is refused by the same start-up check (which turns the cache
        # off for the whole run), so a reused stage shows its one line.
        for cache, redo in ((folder, ["--redo=report"]), (tmp_path / "file" / "xla", [])):
            run = run_main(w, SMOKE, f"--compilation_cache={cache}", *redo)
            assert run.returncode == 0, run.stderr[-3000:]
            # Before: a traceback (cache below a file), or one warning per compiled step.
            cache_lines = [ln for ln in run.stderr.splitlines() if "cache" in ln.lower()]
            assert len(cache_lines) == 1, cache_lines
            assert f"--compilation_cache={cache}" in cache_lines[0]
