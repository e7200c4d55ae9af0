"""Progress on the console: one bar at a time, never on a log line, plain lines in a pipe.

`bar(...)` is the one way the pipeline shows progress (training and evaluation passes,
pseudo-labels, prediction). It returns a tqdm-like object (`update`, `set_postfix`,
`set_postfix_str`, `set_description_str`, `close`, iteration, `with`):

* **On a terminal** (the bar's stream is a tty): a tqdm bar on the current line, cleared when
  it closes (nothing is left behind). Only the bar opened last is drawn: a bar opened while
  another runs (the validation pass inside training) hides it until it closes, then the
  first is drawn again. While a bar is open, log records written to the same console by the
  root logger's stream handlers are printed above it (the bar is cleared, the line written,
  the bar redrawn), so a log line never shares a line with a bar.
* **Anywhere else** (a pipe, a file, a CI log): no carriage-return redraws. At most one plain
  line every `interval` seconds (`PAPT_JAX_PROGRESS_SECONDS`, default 30), e.g.
  `finetune[arousal]: 120/500 (24 %), 1:05 elapsed, about 3:26 left, loss=0.61`, and a last
  line when the bar closes if it wrote any, so a piped log stays small and readable.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

from tqdm import tqdm

INTERVAL_ENV = "PAPT_JAX_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def default_interval() -> float:
    """Seconds between plain progress lines (`PAPT_JAX_PROGRESS_SECONDS`, default 30)."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _postfix_text(ordered_dict: Mapping | None, kwargs: Mapping) -> str:
    """tqdm's `set_postfix` text: 'k=v, ...', numbers shortened as tqdm shows them."""
    items = {**(ordered_dict or {}), **kwargs}
    shown = []
    for key, value in items.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = tqdm.format_num(value)
        shown.append(f"{key}={str(value).strip()}")
    return ", ".join(shown)


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class LineBar:
    """Progress as a plain line now and then, for streams that are no terminal.

    Args:
      iterable: items to yield (one update each), or None.
      total: the count at the end (None: unknown).
      desc: what is in progress.
      unit: what is counted, after the numbers ('' for none).
      initial: the count at the start (a resumed run).
      file: the stream (default stderr).
      interval: least seconds between lines (default `default_interval()`).
      disable: write nothing (the count still advances).
      show_count: write the count and total; False writes the share done only (for counts
        that mean nothing to the reader, such as audio seconds summed over model passes).
      clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str = "",
        initial: float = 0,
        file: TextIO | None = None,
        interval: float | None = None,
        disable: bool = False,
        show_count: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.postfix = ""
        self.disable = disable
        self._show_count = show_count
        self._file = file
        self._interval = default_interval() if interval is None else interval
        self._clock = clock
        self._start = self._last = clock()
        self._initial = initial
        self._lines = 0
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._clock() - self._last >= self._interval:
            self._write()

    def set_postfix(self, ordered_dict: Mapping | None = None, refresh: bool = True, **kwargs):
        self.postfix = _postfix_text(ordered_dict, kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description = set_description_str

    def refresh(self) -> None:
        """Nothing to redraw: lines are only written as time passes."""

    def line(self) -> str:
        """The progress line as it would be written now."""
        elapsed = self._clock() - self._start
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{_count(self.n)}{unit}"]
        if self.total:
            share = f"{100 * self.n / self.total:.0f} %"
            counts = f"{_count(self.n)}/{_count(self.total)}{unit}"
            parts = [f"{counts} ({share})" if self._show_count else share]
        parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
        done = self.n - self._initial
        if self.total and done > 0 and self.n < self.total:
            left = elapsed / done * (self.total - self.n)
            parts.append(f"about {tqdm.format_interval(left)} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)

    def _write(self) -> None:
        self._last = self._clock()
        if self.disable:
            return
        file = self._file if self._file is not None else sys.stderr
        file.write(self.line() + "\n")
        file.flush()
        self._lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._lines:  # the reader saw it running: say where it ended
            self._write()


# Terminal bars that are open, oldest first; only the last one is drawn.
_open_bars: list[TerminalBar] = []
# Console log handlers whose stream writes above the bars while any is open: (handler, stream).
_redirected: list[tuple[logging.StreamHandler, TextIO]] = []


class _AboveBars:
    """A stream for log handlers: clears the bars, writes the record, redraws the bar."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        with tqdm.external_write_mode(file=self.stream):
            return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _console_handlers() -> list[logging.StreamHandler]:
    found = []
    for handler in logging.getLogger().handlers:
        # absl's handler holds the stream handler that does the writing.
        handler = getattr(handler, "python_handler", handler)
        console = isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        )
        if console and getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            found.append(handler)
    return found


def _redirect_logging() -> None:
    for handler in _console_handlers():
        old = handler.setStream(_AboveBars(handler.stream))
        _redirected.append((handler, old))


def _restore_logging() -> None:
    while _redirected:
        handler, stream = _redirected.pop()
        handler.setStream(stream)


class TerminalBar(tqdm):
    """A tqdm bar on the current terminal line, cleared when done; one shown at a time.

    Args:
      format_extra: values -> more fields for `bar_format` (computed from tqdm's own `n`,
        `total`, `elapsed`...), e.g. audio-hours from a count of milliseconds.
      Others: tqdm's.
    """

    def __init__(self, *args, format_extra: Callable[[dict], dict] | None = None, **kwargs):
        self._format_extra = format_extra
        kwargs = {"leave": False, "dynamic_ncols": True, **kwargs, "position": 0}
        if _open_bars:
            _open_bars[-1].clear()  # hidden until this one closes
        else:
            _redirect_logging()
        _open_bars.append(self)
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._forget()
            raise

    @property
    def format_dict(self) -> dict:
        values = super().format_dict
        extra = getattr(self, "_format_extra", None)
        return {**values, **extra(values)} if extra else values

    def display(self, msg=None, pos=None):
        if _open_bars and _open_bars[-1] is not self:
            return True  # another bar is on screen: this one waits
        return super().display(msg, pos)

    def _forget(self) -> None:
        if self in _open_bars:
            _open_bars.remove(self)
            if _open_bars:
                _open_bars[-1].refresh()
            else:
                _restore_logging()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._forget()


def bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    disable: bool = False,
    file: TextIO | None = None,
    bar_format: str | None = None,
    interval: float | None = None,
    show_count: bool = True,
    format_extra: Callable[[dict], dict] | None = None,
) -> TerminalBar | LineBar:
    """A progress bar for the console (see the module docstring).

    Args:
      iterable: items to wrap (each one counts 1), or None to call `update` yourself.
      total: the count at the end.
      desc: what is in progress, e.g. 'finetune[arousal]'.
      unit: what is counted ('it', 'batch', 's of audio').
      initial: the count at the start (resumed work).
      disable: show nothing (e.g. on every host but the first).
      file: the stream (default: stderr).
      bar_format: tqdm's format of the terminal bar (lines keep their own).
      interval: seconds between lines off a terminal (default `default_interval()`).
      show_count: show the count and total, not only the share done (see `LineBar`).
      format_extra: more fields for `bar_format` (see `TerminalBar`).
    """
    stream = file if file is not None else sys.stderr
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    if disable or not on_terminal:
        return LineBar(
            iterable,
            total=total,
            desc=desc,
            unit="" if unit == "it" else unit,
            initial=initial,
            file=stream,
            interval=interval,
            disable=disable,
            show_count=show_count,
        )
    if bar_format is None and not show_count:
        bar_format = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
    options = {"bar_format": bar_format} if bar_format else {}
    return TerminalBar(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=stream,
        format_extra=format_extra,
        **options,
    )
