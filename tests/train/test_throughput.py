"""Throughput figures: XLA's FLOP count, peak table, MFU, and what the loop logs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.train import sharding, throughput
from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.loop import LoopConfig, run_loop
from papt_jax.train.metric_writer import MetricWriter
from papt_jax.train.state import TrainState, guarded_update, make_optimizer
from papt_jax.train.throughput import StepCost, ThroughputMeter

M, K, N = 64, 48, 80


def test_cost_analysis_counts_a_matmul_as_2mnk():
    a, b = jnp.ones((M, K)), jnp.ones((K, N))
    cost = throughput.step_cost(jax.jit(jnp.matmul), a, b)
    assert cost.flops == 2 * M * N * K and cost.num_devices == 1
    # Split over 8 devices: XLA counts each device's share; the step's total is the same.
    mesh = sharding.make_mesh(8)
    split = jax.jit(
        jnp.matmul, in_shardings=(sharding.data_sharded(mesh), sharding.replicated(mesh))
    )
    cost = throughput.step_cost(split, a, b)
    assert cost.num_devices == 8 and cost.flops_per_device == 2 * M * N * K / 8
    assert cost.flops == 2 * M * N * K


def test_a_function_that_is_not_jitted_has_no_cost():
    assert throughput.step_cost(lambda a: a @ a, jnp.ones((2, 2))) is None


def test_peak_table():
    assert throughput.peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert throughput.peak_flops("nvidia h100 80gb hbm3", "float32") == pytest.approx(66.9e12)
    assert throughput.peak_flops("NVIDIA H100 PCIe") == pytest.approx(756.5e12)
    assert throughput.peak_flops("TPU v5 lite") == pytest.approx(197e12)
    assert throughput.peak_flops("TPU v4", "float32") is None  # no published fp32 rate
    assert throughput.peak_flops("cpu") is None
    assert throughput.peak_flops("NVIDIA GH200 480GB") is None  # not guessed from "H200"
    with pytest.raises(ValueError, match="dtype"):
        throughput.peak_flops("TPU v4", "float16")


def test_mfu_arithmetic():
    # 2 devices of 100 TFLOP/s; 10 steps/s of 1 TFLOP each use 10 of the 200 TFLOP/s.
    assert throughput.mfu(1e12, 10.0, 100e12, 2) == pytest.approx(0.05)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_meter_rates_leave_compilation_out(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    h100 = StepCost(flops_per_device=50e12, num_devices=2, device_kind="NVIDIA H100 80GB HBM3")
    batch = {"audio_mask": np.ones((2, 16_000), bool)}  # 2 s of audio
    meter = ThroughputMeter()
    with meter.excluded():
        clock.now += 30.0  # a compilation
    for _ in range(4):
        meter.add(batch, h100)
        clock.now += 0.5
    out = meter.read()
    assert out["audio_sec_per_sec"] == pytest.approx(8.0 / 2.0)
    assert out["flops_per_step"] == pytest.approx(100e12)
    assert out["mfu"] == pytest.approx(100e12 * 2.0 / (989.4e12 * 2))


def test_meter_without_a_known_peak_or_cost(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    batch = {"audio_mask": np.ones((1, 1600), bool)}
    meter = ThroughputMeter()
    meter.add(batch, StepCost(1e9, 1, "cpu"))
    clock.now += 1.0
    out = meter.read()
    assert out["flops_per_step"] == 1e9 and "mfu" not in out  # CPU: no peak, no MFU
    meter.add(batch, StepCost(1e9, 1, "cpu"))
    meter.add(batch, None)  # a step XLA gave no count for: no mean over part of the steps
    clock.now += 1.0
    assert set(meter.read()) == {"audio_sec_per_sec"}


def toy_step(state, batch, rng):
    def loss_fn(p):
        return jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state, _, finite = guarded_update(state, grads, loss)
    return state, {"loss": loss, "finite": finite}


def toy_batch(rs, rows: int, samples: int):
    x = rs.randn(rows, 4).astype(np.float32)
    return {
        "x": x,
        "y": x.sum(1),
        "audio_mask": np.arange(samples)[None] < rs.randint(400, samples + 1, (rows, 1)),
    }


def test_training_logs_flops_per_step_with_one_compilation_per_shape(tmp_path):
    rs = np.random.RandomState(0)
    batches = [toy_batch(rs, 4, 1600), toy_batch(rs, 8, 3200)]  # two bucket shapes

    class Batches:
        position = 0

        def __next__(self):
            self.position += 1
            return batches[(self.position - 1) % 2]

        def get_state(self):
            return {"position": self.position}

        def set_state(self, state):
            self.position = state["position"]

    tx = make_optimizer(0.01, 6, warmup_fraction=0.0, clip_norm=None)
    state = TrainState.create(apply_fn=None, params={"w": np.zeros(4, np.float32)}, tx=tx)
    mesh = sharding.make_mesh(1)
    compiled = []

    def listen(event, secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", ""))

    checkpoints = Checkpoints(str(tmp_path / "ckpt"))
    writer = MetricWriter(str(tmp_path / "logs"))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        run_loop(
            state=sharding.replicate(state, mesh),
            train_step=jax.jit(toy_step),
            evaluate=lambda s: {"loss": 0.0},
            train_iter=Batches(),
            mesh=mesh,
            rng=jax.random.PRNGKey(0),
            checkpoints=checkpoints,
            writer=writer,
            config=LoopConfig(total_steps=6, eval_every=6, log_every=2),
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
        writer.close()
        checkpoints.close()
    # The cost analysis compiles each shape once; the step's calls reuse those executables.
    assert sum("toy_step" in name for name in compiled) == 2, compiled
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    for record in train:
        # A 4-row and an 8-row step of (rows, 4) @ (4,) at least: forward and backward.
        assert record["train/flops_per_step"] > 2 * 6 * 4
        assert record["train/audio_sec_per_sec"] > 0
        assert "train/mfu" not in record  # CPU: no known peak
