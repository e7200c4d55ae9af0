"""`--config.KEY=VALUE` overrides read with every problem collected, not only the first.

ml_collections applies overrides while absl parses the command line, and the first unknown
key or unparsable value ends the parse, hiding every other mistake. `cli.parse_flags`
instead takes the overrides out of the command line (`split`), lets absl load the config
file alone, then applies them here (`apply`): each override is parsed for the type of the
value it replaces (bool, int, float, str; other types as a Python literal, as
ml_collections does) and a problem is recorded for an unknown key (with the closest known
key), an unparsable value or a missing value, while the others still apply. The caller
lists every problem at once (`papt_jax.main` merges them with the config's validation).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags

# "--config.a.b=v", "--noconfig.a.b" (a bool set to False), "--config.a.b" (a bool set to True).
_OVERRIDE = re.compile(
    r"^--?(?P<no>no)?(?P<flag>[A-Za-z_][A-Za-z0-9_]*)\.(?P<path>[^=]+)(?P<eq>=)?"
)

_PARSERS = {
    bool: (flags.BooleanParser(), "true or false"),
    int: (flags.IntegerParser(), "an integer"),
    float: (flags.FloatParser(), "a number"),
}


@dataclasses.dataclass(frozen=True)
class Override:
    """One `--FLAG.PATH=VALUE` argument.

    Attributes:
      flag: the config flag's name (e.g. 'config').
      path: the dotted key, e.g. 'finetune.peak_lr'.
      value: the text after '=', or None for the bare `--FLAG.PATH` / `--noFLAG.PATH` forms.
      negated: written `--noFLAG.PATH`.
    """

    flag: str
    path: str
    value: str | None
    negated: bool = False

    @property
    def shown(self) -> str:
        """How problems name it: `--config.finetune.peak_lr`."""
        return f"--{self.flag}.{self.path}"


def split(argv: Sequence[str], config_flags: Sequence[str]) -> tuple[list[str], list[Override]]:
    """(the arguments without the overrides of `config_flags`, the overrides in order)."""
    rest, overrides = [], []
    for i, arg in enumerate(argv):
        found = _OVERRIDE.match(arg) if i else None
        if found and found["flag"] in config_flags:
            value = arg[found.end() :] if found["eq"] else None
            overrides.append(Override(found["flag"], found["path"], value, bool(found["no"])))
        else:
            rest.append(arg)
    return rest, overrides


def _closest(config: ml_collections.ConfigDict, path: str) -> str | None:
    keys = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{prefix}{key}.")
            else:
                keys.append(f"{prefix}{key}")

    walk(config, "")
    found = difflib.get_close_matches(path, keys, n=1, cutoff=0.6)
    return found[0] if found else None


def _parse(override: Override, current: Any) -> Any:
    """The override's value for a key that holds `current`; raises ValueError with the reason."""
    if override.negated or override.value is None:
        if not isinstance(current, bool):
            raise ValueError(f"needs a value: {override.shown}=VALUE")
        return not override.negated
    kind = type(current)
    if kind in _PARSERS:
        parser, wanted = _PARSERS[kind]
        try:
            return parser.parse(override.value)
        except ValueError:
            raise ValueError(f"={override.value!r} is not {wanted}") from None
    if kind is str:
        return override.value
    try:  # None and other values: a Python literal, else the text itself (as ml_collections)
        return ast.literal_eval(override.value)
    except (ValueError, SyntaxError):
        return override.value


def apply(config: ml_collections.ConfigDict, overrides: Sequence[Override]) -> list[str]:
    """Applies every override that can be applied; returns one line per problem."""
    problems = []
    for override in overrides:
        *parents, leaf = override.path.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            close = _closest(config, override.path)
            hint = f" (did you mean --{override.flag}.{close}?)" if close else ""
            problems.append(f"{override.shown} is not a known setting{hint}")
            continue
        if isinstance(node[leaf], ml_collections.ConfigDict):
            problems.append(f"{override.shown} is a group of settings: set one of its keys")
            continue
        try:
            value = _parse(override, node[leaf])
            setattr(node, leaf, value)
        except (ValueError, TypeError) as e:
            reason = str(e)
            problems.append(f"{override.shown}{reason if reason.startswith('=') else ' ' + reason}")
    return problems
