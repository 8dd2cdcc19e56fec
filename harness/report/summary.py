"""The tables' numbers: every result run through the subject bootstrap on shared draws, and each (method, column)
summarised as a :class:`Cell` (mean and std over seeds, the two-level CI, the paired difference from the reference
and its mark, the matching published numbers). The statistics are described in :mod:`harness.tables`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.core.errors import DataFormatError
from harness.eval.provenance import data_label, doc_provenance
from harness.eval.registry import Column
from harness.report.bootstrap import (
    Samples,
    SubjectGroups,
    bootstrap_samples,
    ci_from_samples,
    paired_from_samples,
    two_level_samples,
)
from harness.report.documents import ResultDocument, check_unique, load_documents, one_line
from harness.report.generators import GeneratorUse, generator_uses
from harness.report.paper_numbers import DEFAULT_DIR as PAPER_DIR
from harness.report.paper_numbers import PaperNumber, load_paper_numbers, matching, published_model
from harness.report.sections import COLUMNS, MISSING, row_value

__all__ = ["ALPHA", "Run", "load_runs", "Cell", "Tables", "build_tables", "paired", "mark_of"]

ALPHA = 0.05
Run = ResultDocument  # one result document and its items file (harness.report.documents)


def load_runs(paths: Sequence[str], recursive: bool = False, unique: bool = True) -> list[Run]:
    """Every result document of ``paths`` (files, or folders: their ``*.json``; ``recursive``: every
    ``<method>-s<seed>.json`` under them), validated (:func:`harness.report.documents.read_document`, and every table
    column's number), with its data provenance and the published model it reproduces, if any. ``unique``: one
    document per method and seed."""
    runs = load_documents(paths, recursive)
    if unique:
        check_unique(runs, lambda r: (r.method, r.seed), lambda k: f"method {k[0]} seed {k[1]}")
    for run in runs:
        for col in COLUMNS:
            if col.benchmark in run.rows:
                try:
                    row_value(run.rows[col.benchmark], col.key)
                except ValueError as exc:
                    raise DataFormatError(run.path, f"benchmark {col.benchmark}", str(exc)) from None
        doc = run.doc
        run.data = doc_provenance(doc, run.path)
        model_cfg = doc.get("config", {}).get("model", {}) if isinstance(doc.get("config"), dict) else {}
        model_cfg = model_cfg if isinstance(model_cfg, dict) and "imported" not in doc else {}
        run.model = published_model(run.method, model_cfg.get("head"), model_cfg.get("backbone"), run.data.train_set)
    return runs


def _bootstrap(runs: list[Run], n_boot: int, seed: int) -> dict[tuple[int, str], Samples]:
    """``{(run index, group): Samples}`` for every run and item group with a number in the tables; all runs of a
    group on the same subject draws."""
    out: dict[tuple[int, str], Samples] = {}
    groups = sorted({c.group for c in COLUMNS if c.group})
    for group in groups:
        cols = [c for c in COLUMNS if c.group == group]
        first: tuple[list, str, int] | None = None
        # runs whose items carry the same per-item subject array share one SubjectGroups and one bootstrap call
        batches: list[tuple[np.ndarray, SubjectGroups, dict[int, tuple]]] = []
        for i, run in enumerate(runs):
            values = {c.key: row_value(run.rows[c.benchmark], c.key) for c in cols if c.benchmark in run.rows}
            keys = [k for k, v in values.items() if v is not MISSING]
            if not keys:
                continue
            try:
                found = cols[0].metric(run, [c for c in cols if c.key in keys])  # the benchmark's bootstrap metric
                if found is None:
                    continue  # this run's items cannot give the group (e.g. written before the array existed): no CI
                subj, metric = found
                batch = next((b for b in batches if np.array_equal(b[0], subj)), None)
                if batch is None:
                    batch = (subj, SubjectGroups.from_ids(subj), {})
                    batches.append(batch)
            except DataFormatError:
                raise
            except ValueError as exc:
                raise DataFormatError(run.items_path, f"arrays {group}", one_line(exc)) from None
            if first is None:
                first = (batch[1].subjects, run.items_path, i)
            elif batch[1].subjects != first[0]:
                bench = group.split("/")[0]
                kinds = [runs[k].data.kind(bench) if runs[k].data else "unknown" for k in (i, first[2])]
                why = (
                    f" (this result's {bench} is {kinds[0]} data, that one's {kinds[1]})"
                    if kinds[0] != kinds[1]
                    else ""
                )
                raise DataFormatError(
                    run.items_path,
                    f"array {group}/probe_subject",
                    f"holds other subjects than {first[1]}{why}: "
                    "results of different benchmark releases cannot share one table",
                )
            batch[2][i] = (metric, values, keys)
        for _, g, members in batches:
            try:
                res = bootstrap_samples(g, {i: m for i, (m, _, _) in members.items()}, n_boot, seed)
            except ValueError as exc:
                raise DataFormatError(runs[min(members)].items_path, f"arrays {group}", one_line(exc)) from None
            for i, (_, values, keys) in members.items():
                s = res[i]
                for k in keys:
                    want, got = values[k], s.estimate.get(k, math.nan)
                    if want is not None and not (math.isfinite(got) and abs(got - want) <= 1e-9):
                        raise DataFormatError(
                            runs[i].items_path,
                            f"arrays {group}",
                            f"give {k} = {got!r} on the full data, {runs[i].name} says {want!r}: "
                            "the items file does not belong to this result",
                        )
                out[(i, group)] = s
    return out


@dataclass
class Cell:
    """One method's number for one column."""

    values: list[float]  # defined values, one per seed
    seeds: list[int]
    mean: float
    std: float | None
    ci: tuple[float, float] | None = None
    diff: float | None = None  # mean - reference mean
    diff_ci: tuple[float, float] | None = None
    mark: int = 0  # +1 / -1: the difference's CI lies above / below 0 (both sides with two or more seeds)
    samples: Samples | None = field(default=None, repr=False)  # two-level resamples of the seed mean (key: column key)
    knobs: dict = field(default_factory=dict)
    # matching published numbers (real data only): (number, ours - published, its CI or None)
    published: list[tuple[PaperNumber, float, tuple[float, float] | None]] = field(default_factory=list)

    @property
    def two_level(self) -> bool:
        """Its CI resamples training seeds too (two or more seeds with items)."""
        return self.samples is not None and len(self.values) >= 2


@dataclass
class Tables:
    runs: list[Run]
    methods: list[str]  # reference first
    reference: str
    seeds: dict[str, list[int]]
    cells: dict[tuple[str, str], Cell]  # (method, column name)
    n_boot: int
    seed: int
    paper: list[PaperNumber] | None
    present: set[str]  # benchmarks some result has
    generators: list[GeneratorUse] = field(default_factory=list)  # the CFSM generators behind the rows, with quality

    def cell(self, method: str, col: Column) -> Cell | None:
        return self.cells.get((method, col.name))

    def data_label(self, benchmarks) -> tuple[str, str]:
        """``(kind, text)`` of the data of ``benchmarks`` over every run
        (:func:`harness.eval.provenance.data_label`)."""
        return data_label([(r.name.removesuffix(".json"), r.data) for r in self.runs if r.data is not None], benchmarks)

    def multi_seed(self) -> bool:
        """Some method has two or more seeds."""
        return any(len(self.seeds[m]) >= 2 for m in self.methods)


def mark_of(ci: tuple[float, float] | None) -> int:
    if ci is None or not all(math.isfinite(x) for x in ci):
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def published_numbers(cell: Cell, runs: list[Run], numbers: list[PaperNumber], col: Column) -> list:
    """The published numbers beside ``cell``: only when every run of it is on real data for the column's benchmark
    and all its seeds reproduce one published model (:func:`harness.report.paper_numbers.published_model`); SynthFace
    results are never matched."""
    models = {r.model for r in runs}
    if len(models) != 1 or None in models or any(r.data is None or r.data.kind(col.benchmark) != "real" for r in runs):
        return []
    out = []
    for n in matching(numbers, models.pop(), col.benchmark, col.key):
        ci = (
            (cell.ci[0] - n.fraction, cell.ci[1] - n.fraction) if cell.ci and all(map(math.isfinite, cell.ci)) else None
        )
        out.append((n, cell.mean - n.fraction, ci))
    return out


def paired(a: Cell, b: Cell, key: str) -> tuple[float, float, float] | None:
    """(difference of the seed means, CI low, CI high) of ``a - b`` on the same subject resamples."""
    if a.samples is None or b.samples is None:
        return None
    p = paired_from_samples(a.samples, b.samples, ALPHA)[key]
    return (a.mean - b.mean, p.diff.low, p.diff.high)


def _knob_text(values: list) -> str:
    out = []
    for v in values:
        t = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        if t not in out:
            out.append(t)
    return " | ".join(out)


def _cell_knobs(knob_dicts: list[dict]) -> dict[str, str]:
    """``{knob: text}`` over the seeds of one cell (distinct values joined by `` | ``)."""
    names = sorted({k for d in knob_dicts for k in d})
    return {k: _knob_text([d[k] for d in knob_dicts if k in d]) for k in names}


def build_tables(
    paths: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    reference: str = "source_only",
    paper: str | Sequence[str] | None = PAPER_DIR,
    runs: list[Run] | None = None,
) -> Tables:
    """Read the results (and the published numbers unless ``paper`` is None), bootstrap every run on the shared
    subject draws, and summarise each (method, column) as a :class:`Cell`. ``runs``: documents already read
    (:func:`load_runs`), instead of reading ``paths``."""
    if n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {n_boot}")
    runs = load_runs(paths) if runs is None else runs
    methods_all = sorted({r.method for r in runs})
    if reference not in methods_all:
        raise ValueError(
            f"reference method {reference!r} has no results (methods: {', '.join(methods_all)}); compare "
            f"with one of these instead (--reference {methods_all[0]}) or add the {reference} results to the inputs"
        )
    paper_numbers = None if paper is None else load_paper_numbers(paper)
    samples = _bootstrap(runs, n_boot, seed)
    methods = [reference] + [m for m in methods_all if m != reference]
    by_method = {m: [i for i, r in enumerate(runs) if r.method == m] for m in methods}
    for m in methods:
        by_method[m].sort(key=lambda i: runs[i].seed)
    seeds = {m: [runs[i].seed for i in by_method[m]] for m in methods}
    cells: dict[tuple[str, str], Cell] = {}
    for col in COLUMNS:
        for m in methods:
            have = [
                (i, row_value(runs[i].rows[col.benchmark], col.key))
                for i in by_method[m]
                if col.benchmark in runs[i].rows
            ]
            defined = [(i, v) for i, v in have if v is not MISSING and v is not None]
            if not defined:
                continue
            vals = [v for _, v in defined]
            cell = Cell(
                vals,
                [runs[i].seed for i, _ in defined],
                float(np.mean(vals)),
                float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                knobs=_cell_knobs([runs[i].rows[col.benchmark].get("knobs", {}) for i, _ in have]),
            )
            if col.group and all((i, col.group) in samples for i, _ in defined):
                per_seed = [samples[(i, col.group)] for i, _ in defined]
                per_seed = [
                    Samples({col.key: s.estimate[col.key]}, {col.key: s.samples[col.key]}, s.seed, s.n_subjects, False)
                    for s in per_seed
                ]
                cell.samples = two_level_samples(per_seed, [runs[i].seed for i, _ in defined])
                ci = ci_from_samples(cell.samples, ALPHA)[col.key]
                cell.ci = (ci.low, ci.high)
            if paper_numbers:
                cell.published = published_numbers(cell, [runs[i] for i, _ in have], paper_numbers, col)
            cells[(m, col.name)] = cell
        ref = cells.get((reference, col.name))
        for m in methods:
            cell = cells.get((m, col.name))
            if cell is None or ref is None:
                continue
            if cell.samples is not None and ref.samples is not None:
                d = paired(cell, ref, col.key)
                cell.diff, cell.diff_ci = d[0], (d[1], d[2])
                cell.mark = mark_of(cell.diff_ci) if cell.two_level and ref.two_level else 0
            else:
                cell.diff = cell.mean - ref.mean
    present = {b for r in runs for b in r.rows}
    return Tables(
        runs, methods, reference, seeds, cells, int(n_boot), int(seed), paper_numbers, present, generator_uses(runs)
    )
