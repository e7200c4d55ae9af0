"""Worker processes that end with the process that started them, whatever ended it.

Grain's worker processes (`data.worker_count > 0`) and the dataset builder's readers are
started with multiprocessing's "spawn". Neither notices on its own when its parent dies:
after a SIGKILL (out of memory, `kill -9`, a scheduler's hard stop) they live on as
orphans, each holding hundreds of megabytes and a core. Their initialiser, `init_worker`,
starts a watchdog thread that ends the worker as soon as its parent is gone (it is then
re-parented, so `os.getppid()` changes). A thread, not `PR_SET_PDEATHSIG`: that signal fires
when the *thread* that started the worker ends, and Grain starts workers from short-lived
threads.

The worker also ignores SIGINT and SIGTERM. Ctrl-C reaches every process of the terminal's
process group, and a scheduler's SIGTERM every process of the job; the main process handles
them (`papt_jax.interrupts`: it saves, then shuts its workers down), so a worker that died
first would only print a traceback and break the batch the main process is waiting for.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

POLL_SECONDS = 0.5


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(0)  # the parent is gone: nothing here is worth finishing


def init_worker(parent_pid: int, *_: object) -> None:
    """Worker initialiser: end with `parent_pid`; leave SIGINT/SIGTERM to the parent.

    Args:
      parent_pid: `os.getpid()` of the process that starts the worker, taken there (a worker
        whose parent died before this runs ends at once).
      *_: ignored (Grain passes the worker index and count).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="parent-watch").start()


def worker_initializer() -> functools.partial:
    """`init_worker` bound to this process's id: pass it as a pool's or Grain's initialiser."""
    return functools.partial(init_worker, os.getpid())
