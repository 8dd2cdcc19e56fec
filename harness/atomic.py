"""Writing several result files as one step: each goes to a temporary file beside its target (fsync), then all are
renamed into place; a failure before the renames leaves no target touched and no temporary file behind, so a
half-written set of outputs never looks complete. Files get the usual permissions (0666 minus the umask), not
``mkstemp``'s 0600."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_files_atomic(files: Mapping[str, bytes | str]) -> list[str]:
    """``{path: content}`` (``str`` is written as UTF-8, newlines untouched); returns the paths, in order."""
    staged: list[tuple[str, str]] = []
    mode = 0o666 & ~_umask()
    try:
        for path, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            staged.append((tmp, path))
            os.chmod(tmp, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return [path for _, path in staged]
