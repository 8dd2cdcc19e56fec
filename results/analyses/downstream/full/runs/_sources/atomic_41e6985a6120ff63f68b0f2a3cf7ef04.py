"""Every file the project writes goes through here: written to a temporary file beside its target, flushed and
fsynced, then renamed into place (``os.replace``), so a reader never sees a half-written file and a failure leaves
the previous file, if any, and no temporary file behind. Files get the usual permissions (0666 minus the umask),
not ``mkstemp``'s 0600.

* :func:`write_atomic` (any writer callback), :func:`write_bytes_atomic`, :func:`write_json_atomic`,
  :func:`write_lines_atomic`, :func:`write_npz_atomic`, :func:`save_torch_atomic` (``torch.save``: train states,
  checkpoints, the stage-1 generator).
* :func:`write_files_atomic`: a *set* of files as one step. Every file is staged first (temporary files beside
  the targets, fsynced), then a journal naming the pairs is written (atomically) in the targets' common folder,
  then the renames run and the journal is removed. A process killed during the renames leaves the journal: the
  next write of a set into that folder (or :func:`recover`) completes the renames first, so the set never stays
  a mix of old and new files. Temporary files of a process that no longer runs are removed at the same time.
* :class:`StagedFolder`: a folder of many files as one step (staged beside the target, renamed onto it);
  :func:`write_staged` writes each file into it.
* :func:`load_torch`: the one reader of the project's own torch files, ``torch.load(weights_only=True)``: no file
  the project reads runs code (a pickled object other than tensors and plain containers is refused, one line).
* A full disk (``ENOSPC``, ``EDQUOT``, or the process's file-size limit, ``EFBIG``) is one line,
  :class:`DiskFullError` ``no space left on device: <path>``; the temporary file is removed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

#: Every temporary file this module makes is named ``.<target name>.<TAG><pid>-<random>.tmp``.
TAG = "cfsm-tmp-"
JOURNAL_PREFIX = ".cfsm-journal-"
_TMP_RE = re.compile(r"^\..*\." + re.escape(TAG) + r"(?P<pid>[0-9]+)-[^.]*\.tmp$")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(OSError):
    """No space left where a file was being written (the message names the target, one line)."""

    def __init__(self, path: str, cause: OSError | None = None):
        detail = " (the process's file size limit)" if cause is not None and cause.errno == errno.EFBIG else ""
        super().__init__(errno.ENOSPC, f"no space left on device: {path}{detail}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if "No space left on device" in str(exc) or "File too large" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (``kill(pid, 0)``; a process of another user counts as running).
    Used to tell a killed writer's temporary files, and a killed run's lock (:class:`harness.core.runtime.PathLock`),
    from a live one's."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mkstemp(path: str) -> tuple[int, str]:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{TAG}{os.getpid()}-", suffix=".tmp", dir=folder)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _clean_stale_for(path: str) -> None:
    """Remove the temporary files of ``path`` left by writers that were killed (their process is gone): this
    module's ``.<name>.cfsm-tmp-<pid>-*.tmp`` and the ``<name>.tmp-<pid>`` of earlier versions of the project."""
    folder, base = os.path.split(os.path.abspath(path))
    legacy = re.compile(re.escape(base) + r"\.tmp-(?P<pid>[0-9]+)$")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _TMP_RE.match(name) if name.startswith(f".{base}.") else legacy.match(name)
        if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            _unlink(os.path.join(folder, name))


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
    """``write(f)`` into a temporary file beside ``path`` (text: UTF-8), fsync, ``os.replace``. On any failure the
    temporary file is removed and ``path`` is untouched; a full disk raises :class:`DiskFullError`. Temporary files
    of ``path`` left by a killed writer are removed first."""
    path = os.fspath(path)
    _clean_stale_for(path)
    try:
        fd, tmp = _mkstemp(path)
    except OSError as exc:
        if _is_full(exc):
            raise DiskFullError(path, exc) from None
        raise
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        if _is_full(exc):
            raise DiskFullError(path, exc if isinstance(exc, OSError) else None) from None
        raise


def write_bytes_atomic(data: bytes, path: str) -> None:
    write_atomic(path, lambda f: f.write(data), binary=True)


def write_json_atomic(obj, path: str) -> None:
    """JSON (indent 2, sorted keys, no NaN), newline-terminated."""

    def write(f):
        json.dump(obj, f, indent=2, allow_nan=False, sort_keys=True)
        f.write("\n")

    write_atomic(path, write)


def write_lines_atomic(lines: list[str], path: str) -> None:
    """One item per line."""
    write_atomic(path, lambda f: f.write("".join(f"{ln}\n" for ln in lines)))


def write_npz_atomic(arrays: dict, path: str) -> None:
    """``np.savez_compressed``."""
    import numpy as np

    write_atomic(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def save_torch_atomic(obj: Any, path: str) -> None:
    """``torch.save`` (serialised in memory first, so a write error is the file system's own, not torch's)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    view = buf.getbuffer()
    try:
        write_atomic(path, lambda f: f.write(view), binary=True)
    finally:
        view.release()


# ----------------------------------------------------------------------------------------------- folders
#: A folder being staged is ``.<target name>.<STAGE_TAG><pid>-<random>`` beside its target (``...-old`` while the
#: target it replaces is removed); not ``.tmp``, so the file cleaners above never meet a folder.
STAGE_TAG = "cfsm-stage-"
_STAGE_RE = re.compile(r"^\..*\." + re.escape(STAGE_TAG) + r"(?P<pid>[0-9]+)-[^.]*$")


class StagedFolder:
    """A folder written as one step, for writers of many files (a SynthFace release, a folder of target crops):
    every file goes under :attr:`tmp`, a temporary folder beside ``out`` (written with :func:`write_staged`: plain
    writes, no temporary file or fsync per file, so thousands of images cost what they cost), and :meth:`publish`
    renames it onto ``out`` (an existing ``out`` is moved aside first and removed after), so a reader sees the old
    folder or the complete new one, never a part. :meth:`discard`, or leaving a ``with`` block by an exception,
    removes it. Staging folders of processes that no longer run are removed when a new one is made beside them.
    The folder gets the usual permissions (0777 minus the umask), not ``mkdtemp``'s 0700."""

    def __init__(self, out: str):
        self.out = os.path.abspath(os.fspath(out))
        parent, base = os.path.split(self.out)
        os.makedirs(parent, exist_ok=True)
        for name in os.listdir(parent):
            m = _STAGE_RE.match(name) if name.startswith(f".{base}.") else None
            if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        self.tmp = tempfile.mkdtemp(prefix=f".{base}.{STAGE_TAG}{os.getpid()}-", dir=parent)
        os.chmod(self.tmp, 0o777 & ~_umask())

    def path(self, *parts: str) -> str:
        """Where ``out/<parts>`` is staged."""
        return os.path.join(self.tmp, *parts)

    def publish(self) -> None:
        old = None
        if os.path.lexists(self.out):
            old = self.tmp + "-old"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        _fsync_dir(os.path.dirname(self.out))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StagedFolder:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self.discard()


def write_staged(path: str, data: bytes | str) -> None:
    """One file inside a :class:`StagedFolder` (or a folder published by one rename in the same way): a plain
    write, atomic through the folder's rename, not on its own. ``str`` is written as UTF-8 exactly as given (no
    newline translation). A full disk is :class:`DiskFullError`."""
    try:
        with open(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:
        if _is_full(exc):
            raise DiskFullError(path, exc) from None
        raise


def load_json_object(path: str, what: str) -> dict:
    """The JSON object in ``path``; bad JSON, a file that is not UTF-8 text or a value that is not an object is a
    one-line :class:`harness.core.errors.DataFormatError` naming ``path`` (and the line), ``what`` saying what the
    file should have been (e.g. ``"a harness.run result document"``)."""
    import json

    from harness.core.errors import DataFormatError

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DataFormatError(path, None, "not a UTF-8 text file") from None
    if not isinstance(doc, dict):
        raise DataFormatError(path, None, f"not {what} (not a JSON object)")
    return doc


def _numpy_globals() -> list:
    """What reading a numpy array needs (files written before the RNG states were stored as tensors held numpy's
    RNG state, a ``uint32`` array): the array reconstructor, ``ndarray`` and the dtype classes; nothing callable
    beyond building an array from bytes."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype] + sorted(
        {
            type(np.dtype(t))
            for t in (
                np.uint8,
                np.int8,
                np.uint16,
                np.int16,
                np.uint32,
                np.int32,
                np.uint64,
                np.int64,
                np.float16,
                np.float32,
                np.float64,
                np.bool_,
            )
        },
        key=lambda c: c.__name__,
    )


def load_torch(path: str, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, plain containers and numpy arrays
    only. A file that pickles anything else (code, custom classes) is refused without running it: one-line
    ValueError naming the file.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        if "Weights only load failed" in first or "weights_only" in str(exc):
            detail = next(
                (ln.strip() for ln in str(exc).splitlines() if ln.strip().startswith("WeightsUnpickler error")), first
            )
            raise ValueError(
                f"{path}: refused: this {what} holds pickled objects other than tensors and plain data "
                f"(loaded with weights_only=True; {detail})"
            ) from None
        raise ValueError(f"{path}: unreadable {what} ({first})") from None
    except (RuntimeError, EOFError, AttributeError, ImportError, IndexError, KeyError) as exc:  # truncated, not torch
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: unreadable {what} ({type(exc).__name__}: {first})") from None


# ----------------------------------------------------------------------------------------------- file sets
def _journal_folder(targets: list[str]) -> str:
    folders = [os.path.dirname(os.path.abspath(t)) for t in targets]
    return os.path.commonpath(folders) if folders else os.getcwd()


def clean_temporaries(folder: str) -> list[str]:
    """Remove this module's temporary files in ``folder`` whose process no longer runs; returns what was removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            _unlink(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


def recover(folder: str) -> list[str]:
    """Complete the file sets that a killed :func:`write_files_atomic` left half-renamed in ``folder`` (from their
    journals), then remove stale temporary files there and in every folder a journal names. Returns the targets
    completed."""
    completed: list[str] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return completed
    folders = {folder}
    for name in names:
        if not name.startswith(JOURNAL_PREFIX) or not name.endswith(".json"):
            continue
        journal = os.path.join(folder, name)
        pid = name[len(JOURNAL_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid))):
            continue  # a live writer's set
        try:
            with open(journal, encoding="utf-8") as f:
                pairs = json.load(f)["pairs"]
        except (OSError, ValueError, KeyError, TypeError):
            _unlink(journal)  # cannot be half-written (written atomically); unreadable means not ours
            continue
        for tmp, target in pairs:
            folders.add(os.path.dirname(tmp))
            if os.path.exists(tmp):
                os.replace(tmp, target)
                completed.append(target)
        _unlink(journal)
    for f in folders:
        clean_temporaries(f)
    return completed


def write_files_atomic(files: Mapping[str, bytes | str]) -> list[str]:
    """``{path: content}`` (``str`` is written as UTF-8, newlines untouched) as one set; returns the paths, in order.

    A failure before the renames leaves no target touched and no temporary file; a kill during the renames is
    completed by the next call for the same folder (see the module docstring)."""
    targets = [os.fspath(p) for p in files]
    folder = _journal_folder(targets)
    os.makedirs(folder, exist_ok=True)
    recover(folder)
    for f in {os.path.dirname(os.path.abspath(t)) for t in targets}:  # a writer killed while staging left these
        clean_temporaries(f)
    staged: list[tuple[str, str]] = []
    journal = ""
    try:
        for path, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            try:
                fd, tmp = _mkstemp(path)
            except OSError as exc:
                raise (DiskFullError(path, exc) if _is_full(exc) else exc) from None
            staged.append((tmp, os.path.abspath(path)))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise (DiskFullError(path, exc) if _is_full(exc) else exc) from None
        if len(staged) > 1:
            fd, journal = tempfile.mkstemp(prefix=f"{JOURNAL_PREFIX}{os.getpid()}-", suffix=".json", dir=folder)
            os.close(fd)
            write_json_atomic({"pairs": staged, "host": socket.gethostname()}, journal)
        for tmp, path in staged:
            os.replace(tmp, path)
        if journal:
            _fsync_dir(folder)
            _unlink(journal)
    except BaseException:
        if journal and os.path.exists(journal) and any(not os.path.exists(t) for t, _ in staged):
            # some renames done: finish the set rather than leave a mix (the data is all on disk)
            for tmp, path in staged:
                if os.path.exists(tmp):
                    try:
                        os.replace(tmp, path)
                    except OSError:
                        pass
        for tmp, _ in staged:
            _unlink(tmp)
        if journal:
            _unlink(journal)
        raise
    return targets
