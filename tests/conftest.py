"""Test setup, applied before JAX initialises its backends.

- Emulate 8 CPU devices so sharding tests run on any machine.
- Compile with XLA's backend optimisations off: the test models are tiny, so compile
  time (3-5x lower this way on CPU) dominates and run time does not matter. Numerics
  are unchanged (fp32 throughout); benchmarks never use this setting.
"""

import os

os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class MainRun:
    """One `python -m papt_jax.main` process: its workdir and captured output."""

    workdir: Path
    returncode: int
    stdout: str
    stderr: str


def run_main(workdir: Path, *args: str, timeout: int = 3600) -> MainRun:
    """Runs the command line as a user would (hang guard only: a healthy run never nears it)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "papt_jax.main", f"--workdir={workdir}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return MainRun(Path(workdir), proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> MainRun:
    """The one uninterrupted `configs/papt.py:smoke` run that pipeline tests share."""
    workdir = tmp_path_factory.mktemp("smoke") / "w"
    run = run_main(workdir, "--config=configs/papt.py:smoke")
    assert run.returncode == 0, run.stderr[-4000:]
    return run
