"""The metric writer: damaged JSON-lines records are dropped with a warning on resume, and
TensorBoard logging does not load PyTorch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from papt_jax.train.metric_writer import JSONL_FILE, MetricWriter


def test_a_damaged_line_is_dropped_with_one_warning_on_resume(tmp_path, caplog):
    path = tmp_path / JSONL_FILE
    good = [json.dumps({"step": s, "time": 0.0, "train/loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_bytes(
        b"\n".join(
            [
                good[0].encode(),
                b'{"step": 2, "train/loss": "\xff\xfe"}',  # not UTF-8
                good[1].encode(),
                b"[1, 2]",  # JSON, not a record
                good[2].encode(),
                good[3].encode(),
                b'{"step": 5, "train/lo',  # cut short by a kill
            ]
        )
        + b"\n"
    )
    writer = MetricWriter(str(tmp_path))
    with caplog.at_level(logging.INFO):
        writer.start(3)  # resumed from step 3
    writer.write_scalars(4, {"loss": 0.5}, prefix="train/")
    writer.close()
    # Before: UnicodeDecodeError on every resume.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 3 damaged line(s)" in warnings[0].getMessage()
    assert "dropped 1 record(s) after step 3" in caplog.text
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["train/loss"] == 0.5


@pytest.mark.slow  # a fresh process: imports JAX, then PyTorch
def test_the_writer_leaves_torch_unloaded_and_importable(tmp_path):
    """tensorboardX imports PyTorch when installed (1.5 s, hundreds of MB per run); the
    writer imports it without, and `import torch` still works after it."""
    script = f"""
import sys
from papt_jax.train.metric_writer import MetricWriter
writer = MetricWriter({str(tmp_path)!r})
writer.start(0)
writer.write_scalars(1, {{"loss": 0.25}}, prefix="train/")
writer.close()
print("torch loaded by the writer:", "torch" in sys.modules)
import torch
print("torch imports after:", torch.zeros(2).sum().item() == 0.0)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch loaded by the writer: False" in out.stdout
    assert "torch imports after: True" in out.stdout
    # The TensorBoard event file holds the scalar.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.25)]
