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


import pytest  # noqa: E402
from fixtures.main_runs import MainRun, run_main  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> MainRun:
    """The one uninterrupted `configs/papt.py:smoke` run that pipeline tests share."""
    workdir = tmp_path_factory.mktemp("smoke") / "w"
    run = run_main(workdir, "--config=configs/papt.py:smoke")
    assert run.returncode == 0, run.stderr[-4000:]
    return run
