"""Console progress: plain lines in a pipe, one bar at a time on a terminal (a real pty)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from papt_jax import progress

REPO = Path(__file__).resolve().parents[1]

# Training with a log line, a nested validation pass that logs, more training, then a log
# line after every bar is closed: what a stage of the pipeline prints.
SCRIPT = """
import logging, sys, time
from papt_jax import progress
logging.basicConfig(
    level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr, force=True
)
log = logging.getLogger("demo")
with progress.bar(total=4, desc="training", unit="steps") as outer:
    time.sleep(0.15)
    outer.update(1)
    log.info("log line while training")
    time.sleep(0.15)
    outer.update(1)
    for _ in progress.bar(range(3), desc="validation", unit="batches"):
        time.sleep(0.15)
        log.info("log line while validating")
    log.info("validation done")
    time.sleep(0.15)
    outer.set_postfix(loss=0.5)
    outer.update(2)
log.info("after the bars")
"""

LOG_LINES = [
    "INFO log line while training",
    "INFO log line while validating",
    "INFO log line while validating",
    "INFO log line while validating",
    "INFO validation done",
    "INFO after the bars",
]
BARS = ("training", "validation")


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)


def _run_on_a_terminal(width: int = 100) -> str:
    """The script's raw output on a pseudo-terminal of `width` columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdin=slave, stdout=slave, stderr=slave, env=_env()
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=1800) == 0
    return b"".join(chunks).decode()


class Screen:
    """The terminal's screen after the output: carriage return, line feed, cursor up, erase
    to the end of the line, and text that wraps at the width."""

    def __init__(self, width: int):
        self.width, self.rows, self.row, self.col = width, [[]], 0, 0
        self.most_bars = 0  # the most rows that showed a bar at the same time

    def _put(self, char: str) -> None:
        if self.col >= self.width:
            self._line_feed()
        line = self.rows[self.row]
        line.extend(" " * (self.col + 1 - len(line)))
        line[self.col] = char
        self.col += 1

    def _line_feed(self) -> None:
        self.row, self.col = self.row + 1, 0
        while len(self.rows) <= self.row:
            self.rows.append([])

    def feed(self, text: str) -> Screen:
        i = 0
        while i < len(text):
            escape = re.match(r"\x1b\[(\d*)([A-Za-z])", text[i:])
            if escape:
                count, command = int(escape.group(1) or 1), escape.group(2)
                if command == "A":
                    self.row = max(0, self.row - count)
                elif command == "K":
                    del self.rows[self.row][self.col :]
                i += escape.end()
                continue
            char = text[i]
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._line_feed()
            else:
                self._put(char)
            if char in "\r\n":
                self.most_bars = max(self.most_bars, len(self.bar_rows()))
            i += 1
        return self

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    def bar_rows(self) -> list[str]:
        return [line for line in self.lines() if any(f"{b}:" in line for b in BARS)]


def test_on_a_terminal_one_bar_at_a_time_cleared_and_never_on_a_log_line():
    raw = _run_on_a_terminal()
    # The bars were drawn (carriage-return updates), each on the one current line.
    assert "training:" in raw and "validation:" in raw and "\r" in raw
    assert "\x1b[A" not in raw  # no bar on a line of its own below another
    screen = Screen(100).feed(raw)
    # Every log line whole on its own line; nothing left of any bar.
    assert [line for line in screen.lines() if line] == LOG_LINES
    assert screen.most_bars == 1  # never two bars on screen at once


def test_in_a_pipe_no_carriage_returns_and_a_line_now_and_then():
    quiet = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), timeout=1800
    )
    assert quiet.returncode == 0, quiet.stderr
    # A run shorter than the interval (30 s) writes the log lines only.
    assert quiet.stderr.splitlines() == LOG_LINES

    every = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=_env(PAPT_JAX_PROGRESS_SECONDS="0"),
        timeout=1800,
    )
    assert every.returncode == 0, every.stderr
    assert "\r" not in every.stderr
    lines = every.stderr.splitlines()
    assert [line for line in lines if line.startswith("INFO ")] == LOG_LINES
    progress_lines = [line for line in lines if not line.startswith("INFO ")]
    assert progress_lines[0].startswith("training: 1/4 steps (25 %), 00:00 elapsed, about 00:0")
    assert progress_lines[-1].startswith("training: 4/4 steps (100 %), 00:0")
    assert progress_lines[-1].endswith(", loss=0.5")
    assert any(line.startswith("validation: 3/3 batches (100 %)") for line in progress_lines)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_bar_writes_at_most_one_line_per_interval():
    out, clock = io.StringIO(), Clock()
    bar = progress.LineBar(
        total=10, desc="finetune[arousal]", unit="steps", file=out, interval=30, clock=clock
    )
    for _ in range(10):
        clock.now += 10
        bar.update(1)
    bar.set_postfix({"loss": 0.61234, "lr": 1e-5})
    bar.close()
    assert out.getvalue().splitlines() == [
        "finetune[arousal]: 3/10 steps (30 %), 00:30 elapsed, about 01:10 left",
        "finetune[arousal]: 6/10 steps (60 %), 01:00 elapsed, about 00:40 left",
        "finetune[arousal]: 9/10 steps (90 %), 01:30 elapsed, about 00:10 left",
        "finetune[arousal]: 10/10 steps (100 %), 01:40 elapsed, loss=0.612, lr=1e-5",
    ]
    # A bar that never waited an interval writes nothing, not even when it closes.
    out = io.StringIO()
    with progress.LineBar(total=3, desc="short", file=out, clock=Clock()) as short:
        short.update(3)
    assert out.getvalue() == ""


def test_line_bar_resumed_and_share_only():
    out, clock = io.StringIO(), Clock()
    bar = progress.LineBar(total=100, initial=50, desc="PAPT", file=out, interval=0, clock=clock)
    clock.now = 10
    bar.update(10)  # 10 steps in 10 s since the resume: 40 left
    assert out.getvalue() == "PAPT: 60/100 (60 %), 00:10 elapsed, about 00:40 left\n"
    out = io.StringIO()
    bar = progress.bar(
        total=45.9, desc="enrolling 15.3 s of audio (3 model passes)", file=out, interval=0,
        show_count=False,
    )  # fmt: skip
    bar.update(15.3)
    assert out.getvalue().startswith("enrolling 15.3 s of audio (3 model passes): 33 %, ")
    assert isinstance(bar, progress.LineBar)  # StringIO is no terminal
