"""cli.py keeps a refused write to one line: no library traceback around it."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import sys

import pytest

from papt_jax import cli


class _LateCallback:
    """Calls into a closed event loop when collected, as tensorstore's write callbacks do
    after a failed Orbax save (Python reports it as an unraisable exception)."""

    def __init__(self, loop):
        self.loop = loop

    def __del__(self):
        self.loop.call_soon_threadsafe(print)


class _OtherFailure:
    def __del__(self):
        raise RuntimeError("a real bug")


@pytest.mark.slow
def test_late_event_loop_callbacks_are_silent_other_errors_are_not(capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    cli.quiet_write_failure_noise()
    loop = asyncio.new_event_loop()
    loop.close()
    _LateCallback(loop)
    gc.collect()
    _OtherFailure()
    gc.collect()
    err = capsys.readouterr().err
    # Before: one traceback per callback (about 200 for one failed checkpoint save).
    assert "Event loop is closed" not in err
    assert "a real bug" in err


def test_a_log_record_of_a_refused_write_keeps_its_message_not_its_traceback(caplog):
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        cli.quiet_write_failure_noise()
        records = []
        handler.emit = records.append
        log = logging.getLogger("orbax.test")
        try:
            raise ValueError("save failed") from OSError(errno.ENOSPC, "No space left", "/ckpt/x")
        except ValueError:
            log.exception("_SignalingThread.run() raised an exception")
        try:
            raise ValueError("shapes differ")
        except ValueError:
            log.exception("a real bug")
        assert records[0].exc_info is None and "raised an exception" in records[0].getMessage()
        assert records[1].exc_info is not None
    finally:
        logging.getLogger().removeHandler(handler)
