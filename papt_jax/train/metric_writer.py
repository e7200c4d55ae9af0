"""Metric writers: tensorboardX event files plus a JSON-lines log in the workdir.

CLU's writers need TensorFlow, which this project does not install. Only process 0
writes, so multi-host runs produce one log.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax


class MetricWriter:
    """Writes scalars to `<logdir>/events.*` (TensorBoard) and `<logdir>/metrics.jsonl`."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._enabled = jax.process_index() == 0
        self._tb = None
        self._jsonl = None
        if self._enabled:
            os.makedirs(logdir, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir)
            self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        if not self._enabled:
            return
        record = {"step": int(step), "time": time.time()}
        for name, value in scalars.items():
            value = float(value)
            tag = f"{prefix}{name}"
            self._tb.add_scalar(tag, value, int(step))
            record[tag] = value if math.isfinite(value) else str(value)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self._enabled:
            self._tb.close()
            self._jsonl.close()
