"""benchmarks/gpu.sh cannot fail on its GPU host for a typo: every command's arguments parse.

The script runs nowhere here (no GPU is lent to this project); `CHECK=1` records each of its
commands instead of running it, and benchmarks/check_commands.py then parses them all with
the benchmarks' own parsers in one process (one import of JAX and PyTorch, not fifteen).
`SMOKE=1 benchmarks/gpu.sh DIR` runs them all for real on the CPU with the tiny model
(about 15 minutes on 2 cores, too long for the suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "benchmarks" / "check_commands.py"


@pytest.mark.slow
def test_every_gpu_script_command_parses_its_arguments(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["CHECK"] = "1"
    # The script runs `python3` from PATH: this interpreter's, even from an unactivated venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
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
    # 4 fp32/bf16 x remat runs, 2 policies, unrolled, accumulation, fsdp, 4 memory, compile,
    # contrastive logits.
    assert len(checked) >= 15
    for option in (
        "--remat dots_saveable",
        "--unrolled",
        "--accumulate 2",
        "fsdp",
        "--compile",
        "--frames",
    ):
        assert any(option in line for line in checked), option


@pytest.mark.slow
def test_the_checker_refuses_a_bad_command_and_names_it(tmp_path):
    commands = tmp_path / "commands.txt"
    commands.write_text(
        "python benchmarks/memory.py --model tiny --remat full\n"
        "python benchmarks/encoder.py --model tiny --remat no_such_policy\n"
        "python benchmarks/encoder.py --model tiny --batch 3 --accumulate 2\n"
        "python benchmarks/train.py --model tiny\n"
    )
    done = subprocess.run(
        [sys.executable, str(CHECKER), str(commands)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["arguments ok: --model tiny --remat full"]
    assert "--remat 'no_such_policy'" in done.stderr
    assert "does not split into 2 micro-batches" in done.stderr
    assert "benchmarks/train.py: not a benchmark script this checker knows" in done.stderr
    assert done.stderr.count("refused:") == 3
