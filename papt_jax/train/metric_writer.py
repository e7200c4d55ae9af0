"""Metric writers: tensorboardX event files plus a JSON-lines log in the workdir.

CLU's writers need TensorFlow, which this project does not install. Only process 0
writes, so multi-host runs produce one log.

A run that resumes from step `s` starts the writer at `s`: `metrics.jsonl` is cut back to
the records of steps `<= s` (a killed run may have logged beyond its last checkpoint), and
a new TensorBoard event file begins with a purge marker at `s + 1`, which makes TensorBoard
hide the older files' events from step `s + 1` on. Every step is then shown once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping

import jax

log = logging.getLogger(__name__)

JSONL_FILE = "metrics.jsonl"


def _kept_record(line: str, step: int) -> bool:
    """Whether one line of metrics.jsonl is a whole record of a step <= `step`."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return (
        isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step
    )


def truncate_jsonl(path: str, step: int) -> int:
    """Keeps the records of steps <= `step` in a JSON-lines file, atomically.

    A line cut short by a kill, or anything that is not a record, is dropped too.

    Returns:
      How many lines were dropped.
    """
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines()
    kept = [ln for ln in lines if _kept_record(ln, step)]
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(ln + "\n" for ln in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class MetricWriter:
    """Writes scalars to `<logdir>/events.*` (TensorBoard) and `<logdir>/metrics.jsonl`.

    Call `start(step)` with the step the run starts (or resumes) from before writing.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._enabled = jax.process_index() == 0
        self._tb = None
        self._jsonl = None

    def start(self, step: int) -> None:
        """Opens the logs for a run that starts at `step` (0 for a fresh run).

        Records of later steps left by an earlier, killed run are removed from
        metrics.jsonl and hidden in TensorBoard.
        """
        if not self._enabled:
            return
        if self._tb is not None:
            raise RuntimeError(f"the metric writer for {self.logdir} was already started")
        os.makedirs(self.logdir, exist_ok=True)
        from tensorboardX import SummaryWriter

        path = os.path.join(self.logdir, JSONL_FILE)
        dropped = truncate_jsonl(path, step)
        if dropped:
            log.info(
                "%s: dropped %d record(s) after step %d (from a killed run)", path, dropped, step
            )
        # The file name holds the creation second; the nanosecond suffix keeps files made
        # within one second apart and in creation order, which is the order TensorBoard reads.
        self._tb = SummaryWriter(
            self.logdir, purge_step=int(step) + 1, filename_suffix=f".{time.time_ns():020d}"
        )
        self._jsonl = open(path, "a")  # noqa: SIM115 - closed in close()

    def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        """Writes one record; non-finite values are kept as the strings 'nan', 'inf', '-inf'."""
        if not self._enabled:
            return
        if self._tb is None:
            raise RuntimeError("MetricWriter.start(step) must be called before writing")
        record = {"step": int(step), "time": time.time()}
        for name, value in scalars.items():
            value = float(value)
            tag = f"{prefix}{name}"
            self._tb.add_scalar(tag, value, int(step))
            record[tag] = value if math.isfinite(value) else str(value)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._jsonl.close()
            self._tb = self._jsonl = None
