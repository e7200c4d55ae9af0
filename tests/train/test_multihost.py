"""Multi-host data parallelism: two JAX processes on localhost take the single-process step.

Two worker processes (tests/train/multihost_worker.py) join one `jax.distributed` job over TCP,
each with 2 emulated CPU devices, build one 4-device mesh and take three pre-training steps,
each process feeding only its half of every global batch through `shard_batch`. A third
process with 4 local devices takes the same steps on the full batches. Parameters and
losses must agree: this is the path SLURM and TPU-pod runs take, on CPU with Gloo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import portpicker
import pytest
from fixtures.xla_options import TEST_CODEGEN_FLAGS

WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 1800


def _env(local_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    # The suite's compile-speed settings (conftest): the model is tiny, compile time dominates.
    devices = f"--xla_force_host_platform_device_count={local_devices}"
    env["XLA_FLAGS"] = f"{devices} {TEST_CODEGEN_FLAGS}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _start(process_id: int, num_processes: int, port: int, out: Path, local_devices: int):
    cmd = [
        sys.executable,
        str(WORKER),
        f"--process-id={process_id}",
        f"--num-processes={num_processes}",
        f"--port={port}",
        f"--out={out}",
    ]
    return subprocess.Popen(
        cmd, env=_env(local_devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait(procs) -> None:
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"worker failed (rc={proc.returncode}):\n{out[-4000:]}"


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one(tmp_path):
    port = portpicker.pick_unused_port()
    procs = [_start(i, 2, port, tmp_path / f"multi{i}.npz", local_devices=2) for i in range(2)]
    procs.append(_start(0, 1, 0, tmp_path / "single.npz", local_devices=4))
    _wait(procs)

    multi0, multi1, single = (
        _params(tmp_path / name) for name in ("multi0.npz", "multi1.npz", "single.npz")
    )
    assert int(multi0["num_processes"]) == 2 and int(multi0["num_devices"]) == 4
    assert int(single["num_processes"]) == 1 and int(single["num_devices"]) == 4
    param_keys = [k for k in single if k.startswith("param:")]
    assert len(param_keys) > 10 and sorted(param_keys) == sorted(
        k for k in multi0 if k.startswith("param:")
    )
    # Both processes hold the same replicated state, bit for bit.
    for key in param_keys:
        np.testing.assert_array_equal(multi0[key], multi1[key], err_msg=key)
    np.testing.assert_allclose(multi0["losses"], single["losses"], rtol=1e-5)
    changed = 0
    for key in param_keys:
        np.testing.assert_allclose(multi0[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
        changed += not np.array_equal(multi0[key], single["init:" + key[len("param:") :]])
    assert changed > 0.8 * len(param_keys), "the steps should have moved the parameters"
