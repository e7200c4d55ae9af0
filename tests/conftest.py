"""Test setup, applied before JAX initialises its backends.

- Emulate 8 CPU devices so sharding tests run on any machine.
- Compile with XLA's backend optimisations off: the test models are tiny, so compile
  time (3-5x lower this way on CPU) dominates and run time does not matter. Numerics
  are unchanged (fp32 throughout); benchmarks never use this setting.
- Every `python -m papt_jax.main` the tests start shares one persistent compilation cache
  in the checkout (`.cache/xla-tests`, not the user's `~/.cache/papt_jax/xla`): the many
  runs that copy and resume the smoke run compile each step once, and a second suite run
  reuses them all. In-process tests keep JAX's default (no persistent cache), so tests
  that count compilations see them.
"""

import os
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "PAPT_JAX_COMPILATION_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "xla-tests")
)


import pytest  # noqa: E402
from fixtures.main_runs import MainRun, run_main  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> MainRun:
    """The one uninterrupted `configs/papt.py:smoke` run that pipeline tests share."""
    workdir = tmp_path_factory.mktemp("smoke") / "w"
    run = run_main(workdir, "--config=configs/papt.py:smoke")
    assert run.returncode == 0, run.stderr[-4000:]
    return run
