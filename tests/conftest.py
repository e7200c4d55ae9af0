"""Test setup, applied before JAX initialises its backends.

- Emulate 8 CPU devices so sharding tests run on any machine.
- Compile for speed of compilation: the test models are tiny, so compile time dominates
  and run time does not matter. LLVM's optimisations are off (3-5x less compile time on
  CPU) and XLA's CPU back end emits element-wise code with its older emitters instead of
  its fusion emitters (`--xla_cpu_use_fusion_emitters=false`: a tiny train step compiles
  in 1.5 s instead of 3.2 s; the whole suite ran in 14 min instead of 19). Both are
  float32 throughout; they may round a reduction differently in the last bits, so the
  tests whose bounds sit at float32's rounding floor compile as a user's run does
  (tests/fixtures/xla_options.py). Benchmarks never use these settings.
- Every `python -m papt_jax.main` the tests start shares one persistent compilation cache
  in the checkout (`.cache/xla-tests`, not the user's `~/.cache/papt_jax/xla`): the many
  runs that copy and resume the smoke run compile each step once, and a second suite run
  reuses them all. In-process tests keep JAX's default (no persistent cache), so tests
  that count compilations see them.
"""

import atexit
import json
import os
import sys
from pathlib import Path

# Constants only: importing them initialises nothing.
from fixtures.xla_options import TEST_CODEGEN_FLAGS

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_CODEGEN_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "PAPT_JAX_COMPILATION_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "xla-tests")
)


import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402
from fixtures.main_runs import MainRun, run_main  # noqa: E402

# Longest test files first across the xdist workers (and --record-file-durations);
# pytester runs small pytest sessions for tests/test_schedule.py.
pytest_plugins = ("fixtures.schedule", "pytester")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):  # an xdist worker, its session over
        atexit.register(_end_the_worker_without_teardown)


def _end_the_worker_without_teardown():
    """Ends an xdist worker as the interpreter starts exiting, skipping the rest.

    By then the worker has sent every report to the controller, and the controller waits
    for each worker to exit before it ends the run: the exit handlers of what the tests
    imported (JAX's frees the thousands of programs they compiled) and the interpreter's
    teardown took 3-6 s after the last test, with nothing else left to do. Registered last
    (when the worker's session is over), this runs first of the exit handlers and ends
    the process instead of running the others. A tool that writes its data at exit (e.g.
    `coverage run`) therefore measures workers only with `-n 0`, as the README's coverage
    command runs.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, request) -> MainRun:
    """The one uninterrupted `configs/papt.py:smoke` run that pipeline tests share.

    Under pytest-xdist every worker is its own process with its own session, so the run is
    made once in the directory all workers share (the parent of each worker's base temp)
    by whichever worker needs it first, under a file lock; the others wait and read it.
    Tests only read this workdir (those that resume or change a run copy it first).
    """
    if not hasattr(request.config, "workerinput"):  # Not distributed: the session's own.
        return _smoke_run_in(tmp_path_factory.mktemp("smoke"))
    shared = tmp_path_factory.getbasetemp().parent / "smoke-shared"
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared / ".lock")):
        return _smoke_run_in(shared)


def _smoke_run_in(folder: Path) -> MainRun:
    """Runs the smoke config into `folder/w`, or reads the finished run found there."""
    workdir, record = folder / "w", folder / "run.json"
    if record.exists():
        return MainRun(**{**json.loads(record.read_text()), "workdir": workdir})
    run = run_main(workdir, "--config=configs/papt.py:smoke")
    assert run.returncode == 0, run.stderr[-4000:]
    record.write_text(
        json.dumps({"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr})
    )
    return run
