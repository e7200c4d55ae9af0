"""benchmarks/gpu.sh cannot fail on its GPU host for a typo: every command's arguments parse.

The script runs nowhere here (no GPU is lent to this project); `CHECK=1` runs each of its
commands with `--check_args`, which parses the arguments as the benchmark would and stops.
`SMOKE=1 benchmarks/gpu.sh DIR` runs them all for real on the CPU with the tiny model
(about 15 minutes on 2 cores, too long for the suite).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_gpu_script_command_parses_its_arguments(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["CHECK"] = "1"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    checked = [line for line in done.stdout.splitlines() if line.startswith("arguments ok:")]
    # 4 fp32/bf16 x remat runs, 2 policies, unrolled, accumulation, fsdp, 4 memory, compile.
    assert len(checked) >= 14
    for option in ("--remat dots_saveable", "--unrolled", "--accumulate 2", "fsdp", "--compile"):
        assert any(option in line for line in checked), option
