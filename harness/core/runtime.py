"""Process-level pieces shared by the command-line entry points: CPU tuning (:func:`tune_malloc`), one job in a
background thread (:func:`in_background`), the Sacred experiment (:func:`sacred_experiment`), exclusive output paths
(:class:`PathLock`) and one-line errors (:func:`report_error`; ``CFSM_TRACEBACK=1`` shows the traceback too).

glibc serves every allocation above its (dynamic) mmap threshold with a fresh ``mmap``, and returns freed heap
memory above its trim threshold to the kernel. A training step allocates and frees tens of MB of activations
each time, so with the defaults every step pays for page faults on fresh memory, which on this project's
2-core VMs made elementwise kernels and BatchNorm several times slower (``docs/cpu_profile.md`` section 3:
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=536870912`` gave up to
1.9x). ``mallopt`` sets the same three values from inside the process, so nobody has to export them.
Results are unchanged: only where the memory comes from differs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

from harness.core.atomic import pid_alive


def in_background(fn, *args) -> Future:
    """``fn(*args)`` started in a thread of its own: a :class:`~concurrent.futures.Future` whose ``result()`` waits
    for it and raises its error. For NumPy work that releases the GIL while the caller does other work."""
    pool = ThreadPoolExecutor(1)
    job = pool.submit(fn, *args)
    pool.shutdown(wait=False)  # the worker finishes its one job and exits
    return job


M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
_applied: dict[str, bool] = {}


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = (1 << 31) - 1, top_pad: int = 512 << 20) -> bool:
    """Apply the glibc settings once per process; returns False where there is no glibc (macOS, musl)."""
    if "done" in _applied:
        return _applied["done"]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
            ok &= bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
            ok &= bool(libc.mallopt(M_TOP_PAD, top_pad))
        except (OSError, AttributeError):
            ok = False
    _applied["done"] = ok
    return ok


#: URL schemes of the database run stores (anything else is a FileStorage folder). ``postgresql`` also takes a
#: driver suffix (``postgresql+psycopg://``), as SQLAlchemy URLs do.
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
MONGO_SCHEMES = ("mongodb", "mongodb+srv")


def store_kind(store: str) -> str:
    """What a run store string names: ``""`` (none), ``"file"`` (a FileStorage folder), ``"sql"`` (an SQLAlchemy URL:
    ``sqlite:///runs.db``, ``postgresql://host/db``) or ``"mongo"`` (``mongodb://host/db``)."""
    if not store:
        return ""
    scheme = store.split("://", 1)[0].split("+", 1)[0].lower() if "://" in store else ""
    if scheme in SQL_SCHEMES:
        return "sql"
    if scheme in ("mongodb",):
        return "mongo"
    if scheme:
        raise ValueError(
            f"run store {store!r}: unknown URL scheme {scheme!r}; a folder, sqlite:///FILE, "
            "postgresql://HOST/DB or mongodb://HOST/DB"
        )
    return "file"


def redact_url(store: str) -> str:
    """A store URL with its password replaced by ``***`` (for messages and listings)."""
    if "://" not in store or "@" not in store:
        return store
    scheme, rest = store.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else store


def make_observer(store: str):
    """The Sacred observer of a run store (:func:`store_kind`): ``FileStorageObserver(folder)``; Sacred's
    ``SqlObserver`` for ``sqlite://`` / ``postgresql://`` URLs (SQLAlchemy; PostgreSQL through psycopg 3, SQLAlchemy
    2.1's default driver: the ``postgres`` extra); Sacred's
    ``MongoObserver`` for ``mongodb://`` URLs (needs ``pymongo``, not installed by default; Omniboard reads that
    store). ``None`` for ``""``.

    Two changes to Sacred's SQL observer (sacred 0.8.7 ``sacred/observers/sql.py``): the run's return value goes to a
    ``Float`` column, so a non-number result (``harness.run`` returns its headline metrics as a dict, also kept in
    ``info["result"]``) is stored as NULL instead of failing the run at its end; and the run id, which Sacred takes as
    the largest id + 1, is taken again when another process inserted that id first (a sweep's jobs share a store)."""
    kind = store_kind(store)
    if kind == "":
        return None
    if kind == "file":
        from sacred.observers import FileStorageObserver

        return FileStorageObserver(store)
    if kind == "mongo":
        try:
            import pymongo  # noqa: F401
        except ImportError:
            raise ValueError(
                f"run store {redact_url(store)}: a MongoDB store needs pymongo (pip install pymongo)"
            ) from None
        from sacred.observers import MongoObserver

        return MongoObserver(url=store)
    try:
        import sqlalchemy
    except ImportError:
        raise ValueError(
            f"run store {redact_url(store)}: an SQL store needs SQLAlchemy (pip install sqlalchemy)"
        ) from None
    from sacred.observers import SqlObserver

    class NumericResultSqlObserver(SqlObserver):
        def started_event(self, *args, **kwargs):
            for attempt in range(20):
                try:
                    return super().started_event(*args, **kwargs)
                except sqlalchemy.exc.IntegrityError:  # another job took the same run id: take the next one
                    self.session.rollback()
                    if attempt == 19:
                        raise
                    time.sleep(0.05 * (attempt + 1))

        def heartbeat_event(self, info, captured_out, beat_time, result):
            return super().heartbeat_event(info, captured_out, beat_time, _number_or_none(result))

        def completed_event(self, stop_time, result):
            return super().completed_event(stop_time, _number_or_none(result))

    try:
        return NumericResultSqlObserver(store)  # Sacred's own engine and thread-local session
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:  # a bad URL, a missing driver (psycopg)
        raise ValueError(f"run store {redact_url(store)}: {one_line(exc)}") from None


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def sacred_experiment(name: str, observer_root: str, config: dict):
    """A Sacred ``Experiment`` as every entry point here uses it: stdout captured with ``sys`` (the default ``fd``
    capture loses prints and is empty under pytest), no git info (DVC records the code), the config as given,
    and the observer of the run store ``observer_root`` unless it is empty: a FileStorage folder (the default,
    ``results/runs``) or a database URL (:func:`make_observer`)."""
    from sacred import SETTINGS, Experiment

    SETTINGS.CAPTURE_MODE = "sys"
    ex = Experiment(name, save_git_info=False)
    observer = make_observer(observer_root)
    if observer is not None:
        ex.observers.append(observer)
    ex.add_config(config)
    return ex


# ----------------------------------------------------------------------------------------------- output locks
class LockHeldError(RuntimeError):
    """Another live run holds the output (the message names it, one line)."""


class PathLock:
    """Exclusive hold of an output path for one run: the file ``<path>.lock`` made with ``O_CREAT | O_EXCL`` and
    holding ``{"pid", "host", "start", "argv"}`` (JSON). A second run fails at once with :class:`LockHeldError`
    naming the holder. A lock whose process is gone (same host, pid not running) is stale: it is taken over, and the
    take-over is said on stderr. A lock from another host is never judged stale (its pid means nothing here): remove
    it by hand once that run is gone. Released (deleted) by :meth:`release` or on leaving the ``with`` block."""

    def __init__(self, path: str, what: str = "output"):
        self.target = os.path.abspath(path)
        self.path = self.target + ".lock"
        self.what = what
        self.held = False

    def _read(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.loads(f.read() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self) -> PathLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": " ".join(sys.argv)[:300],
        }
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    try:
                        age = time.time() - os.path.getmtime(self.path)
                    except FileNotFoundError:
                        continue
                    if age < 10:  # being written by its creator right now
                        time.sleep(0.2)
                        continue
                    holder = {}
                same_host = holder.get("host") == me["host"]
                pid = int(holder.get("pid", 0) or 0)
                if holder and (not same_host or pid_alive(pid)):
                    raise LockHeldError(
                        f"{self.target}: {self.what} in use by another run (pid {pid} on {holder.get('host')}, "
                        f"started {holder.get('start')}: {holder.get('argv', '')}); lock file {self.path} "
                        "(remove it only if that run is gone)"
                    ) from None
                stale = f"{self.path}.stale-{os.getpid()}"
                try:
                    os.rename(self.path, stale)  # only one taker wins the rename
                except FileNotFoundError:
                    continue
                os.unlink(stale)
                who = f"pid {pid} on {holder.get('host')}" if holder else "an unreadable lock"
                print(f"{self.path}: taking over a stale lock ({who} no longer runs)", file=sys.stderr)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise LockHeldError(f"{self.target}: could not take the lock {self.path} (contended)")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------- errors at the CLI
TRACEBACK_ENV = "CFSM_TRACEBACK"


def show_traceback() -> bool:
    """``CFSM_TRACEBACK=1`` in the environment: the entry points print the full traceback of an error as well."""
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


#: Errors whose message says what is wrong on its own (they name the file, key or path); any other type (a
#: RuntimeError from torch, a TypeError) is shown with its type name in front.
_SELF_EXPLAINING = (ValueError, LookupError, OSError, FloatingPointError, LockHeldError)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message, prefixed with its type unless the type is self-explaining."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if isinstance(exc, _SELF_EXPLAINING) else f"{type(exc).__name__}: {lines[0]}"


def report_error(prog: str, exc: BaseException) -> int:
    """Print ``<prog>: <one line>`` on stderr (and the traceback under ``CFSM_TRACEBACK=1``); returns 2."""
    if show_traceback():
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"{prog}: {one_line(exc)}", file=sys.stderr, flush=True)
    return 2


def quiet_sacred_failures(ex) -> None:
    """Sacred logs a failed run on stderr (``ERROR - <name> - Failed after ...!``) before the entry point prints
    its own one-line error: give the experiment a logger (Sacred's own format) that drops that record, so the one
    line is the only error line (the run is still recorded as FAILED, with its traceback, in ``run.json``)."""
    import logging

    class _NoFailed(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("Failed after")

    class _Stderr(logging.StreamHandler):  # the current sys.stderr at each record (it may be replaced)
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    logger = logging.getLogger("cfsm")
    if not logger.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        handler.addFilter(_NoFailed())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    ex.logger = logger


def maybe_traceback(exc: BaseException) -> None:
    """Print ``exc``'s traceback on stderr when ``CFSM_TRACEBACK=1`` (for entry points that print their own line)."""
    if show_traceback():
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
