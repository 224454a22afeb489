"""User-facing errors.

Anything a user can cause (an unknown name, a missing file, a rate out of range) raises
:class:`UserError` with a one-line message that names the problem and the fix. The CLI prints that
line and exits with status 2; it never shows a traceback for one. File-system errors
(:class:`OSError`) reaching the CLI are turned into one line by :func:`os_error_line`.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A mistake in the user's input; the message is one line saying what is wrong and how to fix it."""


class DataError(UserError):
    """A dataset or label file that is missing, truncated, or does not match what it claims to be."""


class ConfigError(UserError):
    """An unknown configuration key, a value of the wrong type, or a value out of its valid range."""


class DamagedFile(DataError):
    """A file ddlnl wrote earlier (record, artifact, run-directory file) that fails its check when
    read back: truncated, not parseable, a wrong checksum, or contents that make no sense.

    Callers that can recompute the file catch it, report it in one line and recompute; the
    others let it reach the CLI as a one-line error.
    """

    def __init__(self, path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is damaged ({reason})")


_OS_FIXES = {
    errno.EEXIST: "a file of that name is in the way: choose another path or remove it",
    errno.EISDIR: "a folder is where a file is expected: name a file inside it",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EACCES: "no permission: choose a folder you can write to (or fix its permissions)",
    errno.EPERM: "operation not permitted: choose another path",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOSPC: "the disk is full: free space or choose another folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter path",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another folder",
}


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: what failed, on which path, and what to do."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = exc.strerror or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or -1, "check the path and its permissions")
    return f"{what}: {where or '(no path)'}; {fix}"
