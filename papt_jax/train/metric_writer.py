"""Metric writers: tensorboardX event files plus a JSON-lines log in the workdir.

CLU's writers need TensorFlow, which this project does not install. Only process 0
writes, so multi-host runs produce one log.

A run that resumes from step `s` starts the writer at `s`: `metrics.jsonl` is cut back to
the records of steps `<= s` (a killed run may have logged beyond its last checkpoint; a
damaged line is dropped with a warning), and a new TensorBoard event file begins with a
purge marker at `s + 1`, which makes TensorBoard hide the older files' events from step
`s + 1` on. Every step is then shown once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping

import jax

log = logging.getLogger(__name__)

JSONL_FILE = "metrics.jsonl"


def _summary_writer_class():
    """tensorboardX's `SummaryWriter`, imported without importing PyTorch.

    tensorboardX imports torch whenever it is installed, only to accept torch tensors as
    values; these writers log Python floats. Importing torch costs a run about 1.5 s and a
    few hundred MB, so unless torch is loaded already it is hidden for this one import (a
    None entry in `sys.modules` makes `import torch` raise ImportError, which tensorboardX
    catches) and the entry is removed at once: a later `import torch` works as usual.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def _record_step(line: bytes) -> int | None:
    """The step of one line of metrics.jsonl, or None when it is not a whole record."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(record, dict) and isinstance(record.get("step"), int):
        return record["step"]
    return None


def truncate_jsonl(path: str, step: int) -> tuple[int, int]:
    """Keeps the records of steps <= `step` in a JSON-lines file, atomically.

    A line that is not a whole record (cut short by a kill, not UTF-8, not a JSON object
    with a step) is dropped too.

    Returns:
      (records of later steps dropped, damaged lines dropped).
    """
    if not os.path.exists(path):
        return 0, 0
    with open(path, "rb") as f:
        lines = [ln for ln in f.read().split(b"\n") if ln.strip()]
    steps = [_record_step(ln) for ln in lines]
    kept = [ln for ln, s in zip(lines, steps, strict=True) if s is not None and s <= step]
    damaged = sum(s is None for s in steps)
    later = len(lines) - len(kept) - damaged
    if later or damaged:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.writelines(ln + b"\n" for ln in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return later, damaged


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
        SummaryWriter = _summary_writer_class()

        path = os.path.join(self.logdir, JSONL_FILE)
        later, damaged = truncate_jsonl(path, step)
        if later:
            log.info(
                "%s: dropped %d record(s) after step %d (from a killed run)", path, later, step
            )
        if damaged:
            log.warning(
                "%s: dropped %d damaged line(s) (not a whole JSON record, or not UTF-8)",
                path,
                damaged,
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
