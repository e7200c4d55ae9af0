"""Every config key with its value and its one-line description, for `--show_config`.

The descriptions are the end-of-line comments of `papt_jax/experiment/config_defaults.py`, the one
place the settings are documented, so the listing and the file cannot disagree.
"""

from __future__ import annotations

import inspect
import re

import ml_collections

from papt_jax.experiment import config_defaults, settings

_SECTION = re.compile(r"^\s*c\.(\w+) = (\w+) = ml_collections\.ConfigDict\(\)")
_FIELD = re.compile(r"^\s*(\w+)\.(\w+) = .*?#\s*(.+)$")


def descriptions() -> dict[str, str]:
    """{'data.batch_size': 'utterances per batch ...', ...} from the defaults' comments."""
    alias = {"c": ""}
    out = {}
    source = inspect.getsource(config_defaults.base_config)
    for line in source.splitlines():
        section = _SECTION.match(line)
        if section:
            alias[section.group(2)] = section.group(1) + "."
            continue
        field = _FIELD.match(line)
        if field and field.group(1) in alias:
            out[alias[field.group(1)] + field.group(2)] = field.group(3).strip()
    return out


def describe(config: ml_collections.ConfigDict) -> str:
    """One line per key: `--config.KEY=VALUE  description`, grouped by section."""
    notes = descriptions()
    values = settings.flatten(config)
    width = 48
    lines = []
    section = None
    for key, value in values.items():
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            lines.append(f"\n[{top or 'run'}]")
        flag = f"--config.{key}={value!r}"
        note = notes.get(key, "")
        if len(flag) > width:  # long values: the description goes on its own line
            lines += [f"  {flag}", f"  {'':<{width}}  {note}".rstrip()]
        else:
            lines.append(f"  {flag:<{width}}  {note}".rstrip())
    return "\n".join(lines).lstrip("\n")
