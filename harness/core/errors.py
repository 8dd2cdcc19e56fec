"""One error type for bad input on disk, always naming the file and the line, record or field."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """Raised for any malformed, truncated or inconsistent dataset file.

    The message is one line: ``<path>:<where>: <what is wrong>``, where ``where`` is a 1-based line number
    (``line 7``), a record key (``record 12``), a byte offset or a field name. Nothing is ever skipped silently.
    """

    def __init__(self, path: str | os.PathLike, where: str | None, message: str):
        self.path = os.fspath(path)
        self.where = where
        self.reason = message
        location = f"{self.path}:{where}" if where else self.path
        super().__init__(f"{location}: {message}")


def require_dir(path: str | os.PathLike, what: str) -> str:
    """Return ``path`` if it is a directory, else raise a one-line error saying which dataset root is missing."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: {what} not found (no such directory)")
    return path


def require_file(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found (no such file)")
    return path
