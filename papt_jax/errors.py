"""The one base class for mistakes a user can make and fix.

A `UserError` is an expected problem with the user's input (a missing path, a refused
file, a bad config value). Command-line tools print it as one message with an optional
hint and exit with code 2 (see `papt_jax.cli`); any other exception is a bug and keeps
its traceback. Library callers catch it like any exception.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected, fixable problem with the user's input.

    Attributes:
      message: what is wrong, in the user's terms (paths, config keys, values).
      hint: how to fix it, or None.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"
