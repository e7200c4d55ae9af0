"""When a training loop saves between its evaluations: a stop request, or the clock.

`SaveSchedule.due(step)` is asked after every step and answers:

* a signal name ("SIGTERM", "SIGINT"): save the current step (with the input position)
  and stop. On one process this is the flag `papt_jax.interrupts` sets, a host-side bool
  (no device sync in the hot loop). With several processes every one must save the same
  step: a SIGTERM goes through JAX's preemption sync (`jax.distributed` installs its own
  SIGTERM notifier; `reached_preemption_sync_point` turns true on every host at one agreed
  step), and a flag set by Ctrl-C is shared at the `log_every` steps, where the loop
  synchronises anyway.
* "timer": `checkpoint_every_minutes` have passed since the last save; save and go on. This
  bounds what a SIGKILL (out of memory, a node failure, no grace period) loses. With
  several processes the clocks are compared at the `log_every` steps: one host past the
  interval makes every host save.
* None: nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np

from papt_jax import interrupts

TIMER = "timer"


def _multihost() -> bool:
    return jax.process_count() > 1


def _preemption_sync_point(step: int) -> bool:
    """JAX's agreed preemption step (False without `jax.distributed`)."""
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is turned off
        return False


def _any_host(flags: np.ndarray) -> np.ndarray:
    """Element-wise OR of a small int vector over every process (a collective)."""
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(flags.astype(np.int32))
    return np.asarray(gathered).reshape(-1, flags.size).max(axis=0)


class SaveSchedule:
    """Decides, between steps, whether to save outside the evaluation schedule.

    Args:
      every_minutes: minutes between saves (0: only at evaluations and on a stop).
      log_every: the loop's metric-read interval; with several processes the stop flag
        and the clock are compared across hosts only at these steps.
      clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        every_minutes: float,
        log_every: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.every_s = 60.0 * float(every_minutes)
        self.log_every = int(log_every)
        self.clock = clock
        self.last_save = clock()

    def saved(self) -> None:
        """Restarts the clock (call after every save of the latest checkpoint)."""
        self.last_save = self.clock()

    def _timer_due(self) -> bool:
        return self.every_s > 0 and self.clock() - self.last_save >= self.every_s

    def due(self, step: int) -> str | None:
        """A signal name (save and stop), `TIMER` (save and go on) or None."""
        if not _multihost():
            signal_name = interrupts.pending()
            if signal_name is not None:
                return signal_name
            return TIMER if self._timer_due() else None
        if _preemption_sync_point(step):
            return "SIGTERM"
        if step % self.log_every:
            return None
        stop, timer = _any_host(
            np.array([interrupts.pending() is not None, self._timer_due()], np.int32)
        )
        if stop:
            return interrupts.pending() or "SIGINT"
        return TIMER if timer else None
