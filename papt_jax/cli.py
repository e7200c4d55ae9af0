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
* `--traceback` shows the traceback of user errors too (for bug reports);
* `--help` (and `--helpshort`, `--helpfull`) prints the flags and exits with code 0;
* reads `--config.KEY=VALUE` overrides of a config flag (ml_collections) itself, so that
  every unknown key and unparsable value is found, not only the first
  (`config_overrides`); `override_problems()` returns them for the tool to list.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags

from papt_jax import config_overrides, interrupts, storage
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


# absl's help flags print the usage and end the parse with sys.exit(1); asking for help
# is no mistake, so it exits with 0.
_HELP_FLAGS = ("-?", "--help", "--helpshort", "--helpfull", "--helpxml")

_override_problems: list[str] = []


def override_problems() -> list[str]:
    """Problems of the `--config.KEY=VALUE` overrides of the last `parse_flags` (see
    `config_overrides`); the overrides without a problem are applied."""
    return list(_override_problems)


def _config_flag_names() -> list[str]:
    # ml_collections' config flags are the flags that name a config file.
    return [name for name in flags.FLAGS if hasattr(type(flags.FLAGS[name]), "config_filename")]


def _config_flag_args() -> list[str]:
    return [f"--{name}" for name in _config_flag_names()]


def _parse_with_overrides(argv: list[str]) -> list[str]:
    """absl parsing with the config overrides applied afterwards, every problem collected."""
    rest, overrides = config_overrides.split(argv, _config_flag_names())
    # ml_collections looks for overrides in sys.argv itself: it must not find them there.
    saved, sys.argv = sys.argv, rest
    try:
        remaining = flags.FLAGS(rest)
    finally:
        sys.argv = saved
    _override_problems.clear()
    for name in dict.fromkeys(o.flag for o in overrides):
        config = flags.FLAGS[name].value
        if isinstance(config, ml_collections.ConfigDict):  # else no such file: the tool says so
            mine = [o for o in overrides if o.flag == name]
            _override_problems.extend(config_overrides.apply(config, mine))
    return remaining


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing where a mistake is one line and exit code 2, not a usage dump."""
    argv = _normalise_flag_names(argv)
    try:
        return _parse_with_overrides(argv)
    except SystemExit as e:
        if e.code == 1 and any(a in _HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        fail(_last_line(str(e)), "run with --help to list the flags")
    except (SyntaxError, NameError, AttributeError, ImportError) as e:
        # Raised while a config file is executed: the user's file, not this program.
        files = [a for a in argv[1:] if a.split("=")[0] in _config_flag_args()]
        if not files or "--traceback" in argv:
            raise
        fail(
            f"{files[-1]}: the config file cannot be loaded ({type(e).__name__}: {e})",
            "--traceback shows where; a config file defines get_config(variant='')",
        )
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
