"""Process-level CPU tuning applied by the command-line entry points.

glibc serves every allocation above its (dynamic) mmap threshold with a fresh ``mmap``, and returns freed heap
memory above its trim threshold to the kernel. A training step allocates and frees tens of MB of activations
each time, so with the defaults every step pays for page faults on fresh memory, which on this project's
2-core VMs made elementwise kernels and BatchNorm several times slower (``shared/reference/environment.md``:
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=536870912`` gave up to
1.9x). ``mallopt`` sets the same three values from inside the process, so nobody has to export them.
Results are unchanged: only where the memory comes from differs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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


def sacred_experiment(name: str, observer_root: str, config: dict):
    """A Sacred ``Experiment`` as every entry point here uses it: stdout captured with ``sys`` (the default ``fd``
    capture loses prints and is empty under pytest), no git info (DVC records the code), the config as given,
    and a ``FileStorageObserver`` under ``observer_root`` unless it is empty."""
    from sacred import SETTINGS, Experiment
    from sacred.observers import FileStorageObserver

    SETTINGS.CAPTURE_MODE = "sys"
    ex = Experiment(name, save_git_info=False)
    if observer_root:
        ex.observers.append(FileStorageObserver(observer_root))
    ex.add_config(config)
    return ex
