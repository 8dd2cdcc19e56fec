"""The one reader of result documents: finding, loading and validating the ``harness.run`` result JSON files and
their per-item arrays, for every report (``harness.tables``, ``harness.plots``).

A result document (``<method>-s<seed>.json``, written by :mod:`harness.run` and ``harness.import_weights
--evaluate --result``) is a JSON object with at least ``method`` (a name), ``seed`` (an integer) and ``results`` (a
list of rows, each with its ``benchmark`` name, no name twice); its per-item arrays sit beside it in the ``.npz``
its ``items`` field names (default ``<stem>.items.npz``, :func:`harness.eval.results.items_path`). Anything else is
a :class:`~harness.core.errors.DataFormatError` naming the file (and the line or field): one line, no traceback.
The arrays are read on demand (``allow_pickle=False``) and kept.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.core.atomic import load_json_object
from harness.core.errors import DataFormatError
from harness.eval.provenance import DataProvenance
from harness.eval.results import items_path as default_items_path

__all__ = [
    "RESULT_NAME",
    "DEFAULT_RELEASE",
    "ResultDocument",
    "one_line",
    "result_files",
    "read_document",
    "load_documents",
    "load_named",
    "check_unique",
]

#: ``<method>-s<seed>.json``: the name ``harness.run`` gives a result in ``results/eval``
RESULT_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)\.json$")
DEFAULT_RELEASE = "datasets/synthface/default"  # harness.core.config DataConfig.release


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split())


@dataclass
class ResultDocument:
    """One result document (``doc``, as read) and its items file."""

    method: str
    seed: int
    path: str
    items_path: str
    doc: dict
    rows: dict  # {row benchmark name: row}
    data: DataProvenance | None = None  # where its data came from (harness.eval.provenance), when asked for
    model: tuple[str, str, str] | None = None  # the published (method, backbone, train set) it reproduces, if any
    _items: dict = field(default_factory=dict, repr=False)
    _zip: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def train(self) -> dict:
        """The document's train info (seconds, images/s, device), ``{}`` when it has none."""
        return self.doc.get("train") if isinstance(self.doc.get("train"), dict) else {}

    @property
    def release(self) -> str:
        """``config.data.release`` (the harness default when the document does not say)."""
        data = self.doc.get("config", {}).get("data", {}) if isinstance(self.doc.get("config"), dict) else {}
        rel = data.get("release") if isinstance(data, dict) else None
        return rel if isinstance(rel, str) and rel else DEFAULT_RELEASE

    @property
    def hparams_seed(self):
        return self.doc.get("hparams_seed")

    @property
    def hparams(self) -> dict:
        return self.doc.get("hparams") if isinstance(self.doc.get("hparams"), dict) else {}

    def row(self, benchmark: str) -> dict | None:
        return self.rows.get(benchmark)

    def _open(self):
        if self._zip is None:
            try:
                self._zip = np.load(self.items_path, allow_pickle=False)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise DataFormatError(self.items_path, None, f"not a readable items file ({one_line(exc)})") from None
            if not hasattr(self._zip, "files"):
                raise DataFormatError(self.items_path, None, "not a readable items file (not an .npz archive)")
        return self._zip

    def array_names(self) -> list[str]:
        return list(self._open().files)

    def array(self, key: str) -> np.ndarray:
        """Array ``key`` of the items file; a missing, unreadable or malformed file or array is a
        :class:`DataFormatError` naming the file."""
        if key in self._items:
            return self._items[key]
        z = self._open()
        if key not in z.files:
            raise DataFormatError(
                self.items_path, f"array {key}", f"missing (needed for the {key.split('/')[0]} rows of {self.name})"
            )
        try:
            arr = z[key]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as exc:
            reason = one_line(exc) or type(exc).__name__
            raise DataFormatError(
                self.items_path, f"array {key}", f"not a readable items file ({type(exc).__name__}: {reason})"
            ) from None
        self._items[key] = arr
        return arr

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def result_files(paths: Sequence[str], recursive: bool = False) -> list[str]:
    """The result files of ``paths``: a file as given; a folder's ``*.json`` (not hidden), sorted. ``recursive``:
    every ``<method>-s<seed>.json`` anywhere under a folder (per-job folders of a sweep), sorted by path."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            if recursive:
                found = sorted(
                    os.path.join(d, f)
                    for d, dirs, names in os.walk(p)
                    for f in names
                    if RESULT_NAME.match(f) and not f.startswith(".")
                )
                what = "<method>-s<seed>.json"
            else:
                found = sorted(
                    os.path.join(p, f) for f in os.listdir(p) if f.endswith(".json") and not f.startswith(".")
                )
                what = "*.json"
            if not found:
                raise FileNotFoundError(f"{p}: no result files ({what}) in this folder")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def read_document(path: str) -> ResultDocument:
    """Read and check one result document (see the module docstring); its items file must exist."""
    doc = load_json_object(path, "a harness.run result document")
    for key in ("method", "seed", "results"):
        if key not in doc:
            raise DataFormatError(path, f"field {key}", "missing; not a harness.run result document")
    method, seed, results = doc["method"], doc["seed"], doc["results"]
    if not isinstance(method, str) or not method:
        raise DataFormatError(path, "field method", f"{method!r} is not a method name")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataFormatError(path, "field seed", f"{seed!r} is not an integer")
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and isinstance(r.get("benchmark"), str) for r in results
    ):
        raise DataFormatError(path, "field results", "must be a list of rows, each with a benchmark name")
    rows: dict[str, dict] = {}
    for r in results:
        if r["benchmark"] in rows:
            raise DataFormatError(path, "field results", f"benchmark {r['benchmark']} appears twice")
        rows[r["benchmark"]] = r
    items = doc.get("items") or os.path.basename(default_items_path(path))
    if not isinstance(items, str) or os.path.isabs(items) or os.path.basename(items) != items:
        raise DataFormatError(path, "field items", f"{items!r} is not a file name beside the result")
    items_path = os.path.join(os.path.dirname(path), items)
    if not os.path.isfile(items_path):
        raise DataFormatError(
            items_path, None, f"items file of {path} not found (the per-item arrays the bootstrap needs)"
        )
    return ResultDocument(method, seed, path, items_path, doc, rows)


def load_documents(paths: Sequence[str], recursive: bool = False) -> list[ResultDocument]:
    """Every result document of ``paths`` (:func:`result_files`), read and checked (:func:`read_document`)."""
    return [read_document(p) for p in result_files(paths, recursive)]


def load_named(results_dir: str, only: Sequence[str] | None = None) -> list[ResultDocument]:
    """Every ``<method>-s<seed>.json`` of the folder ``results_dir`` (``only``: just these file names), sorted by name;
    the document's method and seed must be the file name's."""
    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"{results_dir}: results folder not found (no such directory)")
    names = sorted(os.listdir(results_dir)) if only is None else sorted(only)
    docs = []
    for name in names:
        m = RESULT_NAME.match(name)
        if not m:
            continue
        d = read_document(os.path.join(results_dir, name))
        if d.method != m["method"] or d.seed != int(m["seed"]):
            raise DataFormatError(
                d.path,
                "field method",
                f"document says method={d.method!r} seed={d.seed!r}, "
                f"the file name {m['method']!r} seed {int(m['seed'])}",
            )
        docs.append(d)
    if not docs:
        raise FileNotFoundError(f"{results_dir}: no <method>-s<seed>.json result files")
    return docs


def check_unique(
    docs: Sequence[ResultDocument], key: Callable[[ResultDocument], tuple], what: Callable[[tuple], str]
) -> None:
    """No two documents with the same ``key`` (e.g. method and seed): a one-line error naming both files."""
    seen: dict[tuple, str] = {}
    for d in docs:
        k = key(d)
        if k in seen:
            raise DataFormatError(d.path, None, f"{what(k)} is also in {seen[k]}")
        seen[k] = d.path
