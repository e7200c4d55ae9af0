"""Shared command-line behaviour for every `python -m papt_jax...` tool.

Each tool defines its absl flags and a `main(argv)`, then calls `cli.run(main)`, which:

* accepts `--flag-name` as well as `--flag_name` (absl spells flags with underscores);
* prints a flag-parsing mistake (unknown flag, missing required flag, bad value) as one
  line and exits with code 2;
* prints a `papt_jax.errors.UserError` raised by `main` as `error: ...` (plus its hint)
  on stderr and exits with code 2;
* prints a failure of the operating system to store a file (disk full, file-size limit,
  read-only file system, permission denied), however deep a library raised it, as one
  `error:` line naming the path, exit code 2 (`papt_jax.storage.os_failure`);
* prints `papt_jax.interrupts.Interrupted` (SIGTERM / SIGINT while the command handles
  them) as one line saying what was saved and how to resume, exit code 75; a plain Ctrl-C
  elsewhere is one line too, exit code 130;
* leaves every other exception alone, so a bug shows its traceback;
* `--traceback` shows the traceback of user errors too (for bug reports).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags

from papt_jax import interrupts, storage
from papt_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2
# What a shell reports for a process ended by Ctrl-C (128 + SIGINT).
KEYBOARD_INTERRUPT_EXIT_CODE = 130

_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "Show the full Python traceback of expected user errors too."
)


def _normalise_flag_names(argv: Sequence[str]) -> list[str]:
    """`--allow-unsafe-pickle` -> `--allow_unsafe_pickle`; values and `--config.a.b` kept."""
    out = [argv[0]] if argv else []
    for arg in argv[1:]:
        if arg.startswith("--") and not arg.startswith("--config"):
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        out.append(arg)
    return out


def fail(message: str, hint: str | None = None) -> NoReturn:
    """Prints one user-error message (and hint) to stderr and exits with code 2."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


def _last_line(text: str) -> str:
    """The flag name and the error's last line: config files report whole tracebacks."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return text.strip()
    return f"{lines[0].rstrip(':')} {lines[-1]}"


def _unknown_config_key(text: str, argv: Sequence[str]) -> tuple[str, str | None]:
    """(message, hint) for an override of a config key that does not exist."""
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    culprit = next((o for o in overrides if o.split(".")[-1] in names), None)
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    hint = f"did you mean `{suggestion.group(1)}`?" if suggestion else "list the keys with --help"
    return f"{culprit or 'a --config override'}: no such config key", hint


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing where a mistake is one line and exit code 2, not a usage dump."""
    try:
        return flags.FLAGS(_normalise_flag_names(argv))
    except flags.Error as e:
        fail(_last_line(str(e)), "run with --help to list the flags")
    except (AttributeError, KeyError) as e:  # ml_collections: --config.KEY that does not exist
        if "--traceback" in argv:
            raise
        fail(*_unknown_config_key(str(e), argv))
    except UserError as e:  # e.g. a config file's own validation
        if "--traceback" in argv:
            raise
        fail(e.message, e.hint)


class _NoTracebackForWriteFailures(logging.Filter):
    """Drops the traceback of a log record caused by a refused write (Orbax logs one from its
    saving thread); the message stays, and the command's one error line follows."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if failure is not None and storage.os_failure(failure) is not None:
            record.exc_info, record.exc_text = None, None
        return True


def _is_late_loop_callback(kind, value, tb) -> bool:
    """Whether an exception is asyncio's "Event loop is closed" from `_check_closed`.

    When a save fails (a full disk), tensorstore still completes the other writes of that
    save and hands each result to Orbax's event loop, which is closed by then; each such
    callback raises this, and tensorstore reports it as an unraisable exception (about 200
    tracebacks for one checkpoint). They carry no information: the failure itself is
    reported once.
    """
    if kind is not RuntimeError or str(value) != "Event loop is closed" or tb is None:
        return False
    last = traceback.extract_tb(tb)[-1:]
    return bool(last) and last[0].name == "_check_closed"


def quiet_write_failure_noise() -> None:
    """Keeps a refused write (disk full, read-only) to its one error line: no traceback on
    the log records it causes, none for late event-loop callbacks (see above).

    Call again after replacing the root logger's handlers (`logging.basicConfig(force=True)`).
    """
    if not getattr(sys.unraisablehook, "papt_jax_quiet", False):
        default_unraisable, default_except = sys.unraisablehook, sys.excepthook

        def unraisablehook(unraisable):
            kind, value = unraisable.exc_type, unraisable.exc_value
            if not _is_late_loop_callback(kind, value, unraisable.exc_traceback):
                default_unraisable(unraisable)

        def excepthook(kind, value, tb):
            if not _is_late_loop_callback(kind, value, tb):
                default_except(kind, value, tb)

        unraisablehook.papt_jax_quiet = True
        sys.unraisablehook, sys.excepthook = unraisablehook, excepthook
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoTracebackForWriteFailures) for f in handler.filters):
            handler.addFilter(_NoTracebackForWriteFailures())


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Runs `main` under absl with papt_jax's error conventions (see the module docstring)."""

    def guarded(args: list[str]) -> int | None:
        quiet_write_failure_noise()
        try:
            return main(args)
        except UserError as e:
            if _TRACEBACK.value:
                raise
            fail(e.message, e.hint)
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            return 0
        except interrupts.Interrupted as e:
            if _TRACEBACK.value:
                raise
            print(e.message(), file=sys.stderr)
            sys.exit(interrupts.INTERRUPTED_EXIT_CODE)
        except KeyboardInterrupt:
            if _TRACEBACK.value:
                raise
            print("interrupted (Ctrl-C)", file=sys.stderr)
            sys.exit(KEYBOARD_INTERRUPT_EXIT_CODE)
        except Exception as e:
            failure = storage.os_failure(e)
            if failure is None or _TRACEBACK.value:
                raise
            fail(failure.message, failure.hint)

    app.run(guarded, argv=list(sys.argv if argv is None else argv), flags_parser=parse_flags)
