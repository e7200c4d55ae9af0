"""SIGTERM and SIGINT (Ctrl-C): stop at a safe point, say what was saved, exit with one code.

Schedulers announce a preemption with SIGTERM (SLURM before the time limit with
`--signal`, a TPU VM before maintenance); a person stops a run with Ctrl-C (SIGINT). Both
are handled alike while `handling()` is active (the experiment's command line):

* inside a training loop (`deferred()`), the signal only sets a flag; the loop reads it
  between steps (a host-side bool: no device sync), saves a checkpoint at the current
  step with the input position, and raises `Interrupted` naming what it saved;
* anywhere else, `Interrupted` is raised at once, like `KeyboardInterrupt` (a stage that is
  not a training loop starts over on the next run; finished stages are kept);
* a second signal while a save is pending stops at once (the newest checkpoint is kept);
* Python drops an exception raised while the main thread runs a finalizer or a garbage
  collector callback (JAX registers one), so a signal landing there would be lost and the
  run would go on; `handling()` notes such a dropped `Interrupted` and raises it again at
  the next safe point (`raise_if_lost()`: the experiment calls it after each stage) or when
  the handled block ends.

`papt_jax.cli` prints `Interrupted` as one line and exits with `INTERRUPTED_EXIT_CODE`
(75, `EX_TEMPFAIL` in sysexits.h: "try again later"), so a batch script can requeue on it.
`Interrupted` derives from `BaseException`, as `KeyboardInterrupt` does, so no
`except Exception` on the way (a checkpoint restore that tries several steps, say) can
take it for an ordinary failure.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

INTERRUPTED_EXIT_CODE = 75
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RESUME_HINT = "rerun the same command to resume"


class Interrupted(BaseException):  # noqa: N818 - named like KeyboardInterrupt
    """The run stopped on SIGTERM / SIGINT.

    Attributes:
      signal_name: "SIGTERM" or "SIGINT".
      saved: what was saved before stopping (one clause), or None.
      where: what was running (e.g. "stage finetune"), or None.
    """

    def __init__(self, signal_name: str, saved: str | None = None, where: str | None = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.saved = saved
        self.where = where

    def message(self) -> str:
        """One line: the signal, what was running, what was saved, how to resume."""
        text = f"interrupted by {self.signal_name}"
        if self.where:
            text += f" during {self.where}"
        if self.saved:
            text += f"; {self.saved}"
        elif self.where:
            text += "; finished stages are kept, this one starts over"
        return f"{text}; {RESUME_HINT}"


class _State:
    """What the handler does now; one per process (signals go to the main thread)."""

    def __init__(self):
        self.active = False
        self.deferring = 0
        self.pending: str | None = None
        self.lost: Interrupted | None = None  # raised in a finalizer: Python dropped it


_state = _State()


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    name = signal.Signals(signum).name
    if _state.deferring and _state.pending is None:
        _state.pending = name  # read by the training loop between steps
        return
    raise Interrupted(name)


@contextlib.contextmanager
def handling(signals: tuple[signal.Signals, ...] = HANDLED_SIGNALS) -> Iterator[None]:
    """Handles `signals` as described in the module docstring while active.

    Args:
      signals: the signals to handle. A multi-host run leaves SIGTERM to JAX's preemption
        notifier (installed by `jax.distributed.initialize`), which makes every host save
        the same step (see `papt_jax.train.preemption`).

    Installs nothing outside the main thread (Python delivers signals only there). The
    previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in signals}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _note_lost(previous_hook)
    _state.active, _state.pending, _state.lost = True, None, None
    try:
        yield
        raise_if_lost()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = previous_hook
        _state.active, _state.pending, _state.deferring, _state.lost = False, None, 0, None


def _note_lost(previous_hook):
    """An unraisable-exception hook that keeps a dropped `Interrupted` for
    `raise_if_lost()` and passes anything else on to `previous_hook`."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            _state.lost = _state.lost or unraisable.exc_value
            return
        previous_hook(unraisable)

    return hook


def raise_if_lost() -> None:
    """Raises the `Interrupted` that Python dropped (its signal landed while a finalizer or
    a garbage collector callback ran), if any; call it at safe points of the main thread."""
    if _state.lost is not None:
        lost, _state.lost = _state.lost, None
        raise Interrupted(lost.signal_name)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals inside this block only set the flag that `pending()` reads.

    A signal that arrived after the block's last look at the flag is not lost: leaving the
    block raises `Interrupted` for it.
    """
    _state.deferring += 1
    try:
        yield
    except BaseException:
        _state.deferring -= 1
        if not _state.deferring:
            _state.pending = None
        raise
    _state.deferring -= 1
    if not _state.deferring and _state.pending is not None:
        name, _state.pending = _state.pending, None
        raise Interrupted(name)


def pending() -> str | None:
    """The name of a signal received inside `deferred()` and not yet acted on, or None."""
    return _state.pending
