"""User-facing errors.

Anything a user can cause (an unknown name, a missing file, a rate out of range) raises
:class:`UserError` with a one-line message that names the problem and the fix. The CLI prints that
line and exits non-zero; it never shows a traceback for one.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message is one line saying what is wrong and how to fix it."""


class DataError(UserError):
    """A dataset or label file that is missing, truncated, or does not match what it claims to be."""


class ConfigError(UserError):
    """An unknown configuration key, a value of the wrong type, or a value out of its valid range."""
