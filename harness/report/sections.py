"""The tables' sections and columns, from the benchmark registry (:func:`harness.eval.registry.sections`): each
benchmark declares its table sections, its columns' compact metric keys and the bootstrap metric of each column
group; a number is read back from a result row by its benchmark (:func:`harness.eval.registry.metric_value`)."""

from __future__ import annotations

from collections.abc import Iterable

from harness.eval import benchmarks as builtin
from harness.eval.registry import MISSING, Column, Section, metric_value, row_names, sections
from harness.eval.roc import far_key

__all__ = [
    "TABLE_FARS",
    "GAP_FAR",
    "far_label",
    "SECTIONS",
    "COLUMNS",
    "MISSING",
    "row_value",
    "present_sections",
    "claim_columns",
    "column_text",
    "bench_order",
    "CLAIM_METHODS",
]

TABLE_FARS = builtin.TABLE_FARS
GAP_FAR = far_key(builtin.GAP_FAR)
far_label = builtin.far_label
SECTIONS: tuple[Section, ...] = sections()
COLUMNS: tuple[Column, ...] = tuple(c for s in SECTIONS for c in s.columns)
CLAIM_METHODS = ("cfsm_guided", "cfsm_random")  # the paper's ordering: guided >= random > reference


def row_value(row: dict, key: str):
    """The number ``harness.run.compact_metrics`` names ``key`` in a result row: a float, ``None`` (reported as
    undefined) or :data:`MISSING` (not reported); the benchmark that wrote the row says (:func:`metric_value`)."""
    return metric_value(row, key)


def present_sections(present: Iterable[str]) -> list[Section]:
    """The sections with a column on a benchmark of ``present`` (the result rows some input has)."""
    present = set(present)
    return [s for s in SECTIONS if any(c.benchmark in present for c in s.columns)]


def claim_columns(present: Iterable[str]) -> list[Column]:
    """The columns on which the paper claims its ordering (the low-quality cells), of the present sections."""
    return [c for s in present_sections(present) for c in s.columns if c.key in s.claim]


def column_text(c: Column) -> str:
    if c.benchmark in ("IJB-B", "IJB-C"):
        return f"{c.benchmark} TAR@{c.label}"
    return f"{c.benchmark} {c.label}"


def bench_order(b: str) -> tuple:
    """Sort key of a result-row name: registration order, unknown names last."""
    order = list(row_names())
    return (order.index(b) if b in order else len(order), b)
