"""Shared command-line behaviour for every `python -m papt_jax...` tool.

Each tool defines its absl flags and a `main(argv)`, then calls `cli.run(main)`, which:

* accepts `--flag-name` as well as `--flag_name` (absl spells flags with underscores);
* prints a flag-parsing mistake (unknown flag, missing required flag, bad value) as one
  line and exits with code 2;
* prints a `papt_jax.errors.UserError` raised by `main` as `error: ...` (plus its hint)
  on stderr and exits with code 2;
* leaves every other exception alone, so a bug shows its traceback;
* `--traceback` shows the traceback of user errors too (for bug reports);
* `--help` (and `--helpshort`, `--helpfull`) prints the flags and exits with code 0;
* reads `--config.KEY=VALUE` overrides of a config flag (ml_collections) itself, so that
  every unknown key and unparsable value is found, not only the first
  (`config_overrides`); `override_problems()` returns them for the tool to list.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags

from papt_jax import config_overrides
from papt_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2

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


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Runs `main` under absl with papt_jax's error conventions (see the module docstring)."""

    def guarded(args: list[str]) -> int | None:
        try:
            return main(args)
        except UserError as e:
            if _TRACEBACK.value:
                raise
            fail(e.message, e.hint)
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            return 0

    app.run(guarded, argv=list(sys.argv if argv is None else argv), flags_parser=parse_flags)
