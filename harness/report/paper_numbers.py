"""Published numbers as data: the CSV files under ``results/paper/`` and their loader.

Each file is long format, one published number per row, with a header row and these columns (all required, in any
order; ``source_version`` and ``notes`` may be empty)::

    source             exact document: "github:<owner>/<repo> <path in the repo>"
    source_version     commit / date of the document where known
    method             as the source names it: "ArcFace", "ArcFace+CFSM", "AdaFace", ...
    backbone           "R50", "R100", or "unstated"
    train_set          "MS1MV2", "WebFace12M", ..., or "unstated"
    benchmark          the ``benchmark`` of our result rows: IJB-B, IJB-C, IJB-B 1:N, IJB-C 1:N, IJB-S, TinyFace
    protocol           the evaluation protocol in words (script that defines it)
    metric             the key ``harness.run.compact_metrics`` gives the same number: tar@1e-05, joined.rank1,
                       V2S.tpir@fpir=0.01, rank1, ...
    value              the number as printed, in percent (two decimals kept as text in ``value_text``)
    metric_definition  the exact definition of the number
    notes              discrepancies between sources, caveats

Our evaluators report fractions in [0, 1]; :attr:`PaperNumber.fraction` is ``value / 100``.

Validation (:func:`load_paper_csv`): header present with every required column, every row with the header's
number of fields, required fields non-empty, ``value`` a plain decimal in [0, 100], ``benchmark`` one of ours and
``metric`` a key of that benchmark, and ``(source, method, backbone, train_set, benchmark, metric)`` unique across
all files loaded together. Errors are one line, ``<file>:line <n>: <what>``
(:class:`~harness.core.errors.DataFormatError`).

``python -m harness.paper_numbers [DIR_OR_CSV ...]`` (:mod:`harness.paper_numbers`) validates the files and prints
one line per file.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.core.errors import DataFormatError
from harness.eval.registry import metric_patterns

__all__ = [
    "PaperNumber",
    "REQUIRED_COLUMNS",
    "KEY_COLUMNS",
    "DEFAULT_DIR",
    "load_paper_csv",
    "load_paper_numbers",
    "select",
    "published_model",
    "matching",
]

DEFAULT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "results", "paper"
)
REQUIRED_COLUMNS = (
    "source",
    "source_version",
    "method",
    "backbone",
    "train_set",
    "benchmark",
    "protocol",
    "metric",
    "value",
    "metric_definition",
    "notes",
)
OPTIONAL_EMPTY = ("source_version", "notes")
KEY_COLUMNS = ("source", "method", "backbone", "train_set", "benchmark", "metric")

#: row benchmark -> the metric keys our evaluators report for it (``compact_metrics`` names), from the benchmark
#: registry (:func:`harness.eval.registry.metric_patterns`)
METRIC_PATTERNS = metric_patterns()
_VALUE_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]+)?")


@dataclass(frozen=True)
class PaperNumber:
    """One published number (a CSV row); ``value`` in percent, as printed."""

    source: str
    source_version: str
    method: str
    backbone: str
    train_set: str
    benchmark: str
    protocol: str
    metric: str
    value: float
    value_text: str
    metric_definition: str
    notes: str
    file: str
    line: int

    @property
    def fraction(self) -> float:
        """``value / 100``: the scale our evaluators report."""
        return self.value / 100.0

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, c) for c in KEY_COLUMNS)

    @property
    def where(self) -> str:
        return f"{self.file}:line {self.line}"


def load_paper_csv(path: str | os.PathLike, _seen: dict | None = None) -> list[PaperNumber]:
    """Read and validate one CSV file (see the module docstring); raises :class:`DataFormatError` naming the line."""
    path = os.fspath(path)
    seen: dict = {} if _seen is None else _seen
    out: list[PaperNumber] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise DataFormatError(path, "line 1", "empty file (expected a header row)")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataFormatError(
                    path,
                    "line 1",
                    f"header lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}",
                )
            dup = sorted({c for c in header if header.count(c) > 1})
            if dup:
                raise DataFormatError(path, "line 1", f"header repeats column(s) {', '.join(dup)}")
            col = {c: header.index(c) for c in REQUIRED_COLUMNS}
            start = reader.line_num + 1
            for fields in reader:
                line = start
                start = reader.line_num + 1
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                if len(fields) != len(header):
                    raise DataFormatError(path, f"line {line}", f"{len(fields)} fields, the header has {len(header)}")
                row = {c: fields[i] for c, i in col.items()}
                out.append(_validate(row, path, line, seen))
        except csv.Error as exc:
            raise DataFormatError(path, f"line {reader.line_num}", f"malformed CSV ({exc})") from None
    return out


def _validate(row: dict[str, str], path: str, line: int, seen: dict) -> PaperNumber:
    where = f"line {line}"
    for c in REQUIRED_COLUMNS:
        v = row[c]
        if v != v.strip():
            raise DataFormatError(path, where, f"{c} {v!r} has leading or trailing spaces")
        if not v and c not in OPTIONAL_EMPTY:
            raise DataFormatError(path, where, f"empty {c}")
    text = row["value"]
    if not _VALUE_RE.fullmatch(text):
        raise DataFormatError(path, where, f"value {text!r} is not a plain decimal number (percent, e.g. 87.26)")
    value = float(text)
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise DataFormatError(path, where, f"value {text} is outside [0, 100] (values are percentages)")
    bench, metric = row["benchmark"], row["metric"]
    if bench not in METRIC_PATTERNS:
        raise DataFormatError(path, where, f"benchmark {bench!r} is not one of {', '.join(METRIC_PATTERNS)}")
    if not METRIC_PATTERNS[bench].fullmatch(metric):
        raise DataFormatError(
            path,
            where,
            f"metric {metric!r} is not a key harness.run.compact_metrics gives for {bench} "
            f"(e.g. tar@1e-05, joined.rank1, V2S.tpir@fpir=0.01, rank1)",
        )
    num = PaperNumber(
        **{c: row[c] for c in REQUIRED_COLUMNS if c != "value"}, value=value, value_text=text, file=path, line=line
    )
    if num.key in seen:
        raise DataFormatError(path, where, f"duplicate of {seen[num.key]} (same {', '.join(KEY_COLUMNS)})")
    seen[num.key] = num.where
    return num


def load_paper_numbers(paths: str | os.PathLike | Iterable[str | os.PathLike] = DEFAULT_DIR) -> list[PaperNumber]:
    """Every number of the given CSV files or directories (their ``*.csv``, sorted); the key must be unique across
    all of them. Default: ``results/paper/``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "*.csv")))
            if not found:
                raise FileNotFoundError(f"{p}: no *.csv files of published numbers")
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    seen: dict = {}
    out: list[PaperNumber] = []
    for f in files:
        out.extend(load_paper_csv(f, seen))
    return out


def select(numbers: Iterable[PaperNumber], **where: str) -> list[PaperNumber]:
    """The numbers whose fields equal every ``field=value`` given, e.g. ``select(n, method="ArcFace",
    benchmark="IJB-S")``."""
    bad = [k for k in where if k not in REQUIRED_COLUMNS]
    if bad:
        raise KeyError(f"unknown field(s) {', '.join(bad)}; fields: {', '.join(REQUIRED_COLUMNS)}")
    return [n for n in numbers if all(getattr(n, k) == v for k, v in where.items())]


#: our method -> the published method name, per the model's FR head (``model.head``): the CFSM README's rows are
#: "ArcFace" (trained without CFSM) and "ArcFace+CFSM" (guided CFSM augmentation), likewise for AdaFace
PUBLISHED_METHODS = {"source_only": "{head}", "cfsm_guided": "{head}+CFSM"}
HEAD_NAMES = {"arcface": "ArcFace", "cosface": "CosFace", "adaface": "AdaFace"}
BACKBONE_NAMES = {"r18": "R18", "r34": "R34", "r50": "R50", "r100": "R100", "r200": "R200"}


def published_model(
    method: str, head: str | None, backbone: str | None, train_set: str | None
) -> tuple[str, str, str] | None:
    """``(method, backbone, train_set)`` as the published tables name the model our run of ``method`` trained
    (e.g. ``source_only`` with an r50 ArcFace head on MS1MV2 -> ``("ArcFace", "R50", "MS1MV2")``), or None when no
    published row can be the same model: another method, a backbone or head the tables do not use, or a training
    set that is not a published one (SynthFace, unknown). A published ``unstated`` backbone or training set never
    matches."""
    pattern = PUBLISHED_METHODS.get(method)
    if (
        pattern is None
        or head not in HEAD_NAMES
        or backbone not in BACKBONE_NAMES
        or not train_set
        or train_set in ("SynthFace", "unstated")
    ):
        return None
    return pattern.format(head=HEAD_NAMES[head]), BACKBONE_NAMES[backbone], train_set


def matching(
    numbers: Iterable[PaperNumber], model: tuple[str, str, str] | None, benchmark: str, metric: str
) -> list[PaperNumber]:
    """The published numbers of ``model`` (:func:`published_model`) for one result-row ``benchmark`` and
    ``compact_metrics`` key ``metric``, one per source."""
    if model is None:
        return []
    method, backbone, train_set = model
    return select(numbers, method=method, backbone=backbone, train_set=train_set, benchmark=benchmark, metric=metric)
