"""The expected ways a checkpoint conversion fails, each a `papt_jax.errors.UserError`.

Each class also keeps the built-in base it had before (`ValueError`, `RuntimeError`,
`FileNotFoundError`, `FileExistsError`), so code that catches those keeps working.
The command line prints any of them as one `error: ...` message and exits with code 2.
"""

from __future__ import annotations

from papt_jax.errors import UserError

UNSAFE_HINT = (
    "full unpickling runs any code the file contains; if you trust where the file came "
    "from, pass allow_unsafe_pickle=True (command line: --allow_unsafe_pickle)"
)


class CheckpointFormatError(UserError, ValueError):
    """The path is not a checkpoint this converter reads, or a variant it does not support."""


class CheckpointNotFoundError(CheckpointFormatError, FileNotFoundError):
    """No checkpoint (or no converted checkpoint) at the given path."""


class OutputExistsError(UserError, FileExistsError):
    """The output directory is not empty and overwriting was not asked for."""


class UnsafePickleError(UserError, RuntimeError):
    """The pickle names a global outside the safe list and no opt-in was given."""


class UnsafePickleWarning(UserWarning):
    """Emitted when a checkpoint is fully unpickled under `allow_unsafe_pickle=True`."""


class ConfigInferenceError(UserError, ValueError):
    """The checkpoint does not determine the architecture and no preset/overrides fill it."""


# Keys listed per category in a `ConversionError`; the rest are counted.
_MAX_LISTED = 20


class ConversionError(UserError, ValueError):
    """Parameters do not fit the model: lists the missing, unexpected and mis-shaped keys.

    Attributes:
      missing: expected parameters the checkpoint does not fill (all of them).
      unexpected: checkpoint keys without a rule or a target in the model (all of them).
      mismatched: keys whose rank or shape is wrong (all of them).
    """

    def __init__(self, missing=(), unexpected=(), mismatched=(), context: str = ""):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        lines = [f"checkpoint does not match the model{f' ({context})' if context else ''}:"]
        for title, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mis-shaped", self.mismatched),
        ):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines.extend(f"    {item}" for item in items[:_MAX_LISTED])
                if len(items) > _MAX_LISTED:
                    lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
        super().__init__(
            "\n".join(lines),
            hint="check that the checkpoint holds an encoder of the family its config names "
            "and that --preset (or the checkpoint's own config) describes its architecture",
        )
