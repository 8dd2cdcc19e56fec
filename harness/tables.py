"""Paper-style tables, confidence intervals, paired method differences and the reproduction report.

``python -m harness.tables [RESULTS_DIR_OR_FILES ...] --out-dir results/tables --report results/REPORT.md
[--paper results/paper | --no-paper] [--n-boot 1000] [--seed 0] [--reference source_only] [--params params.yaml]``

Reads the ``<method>-s<seed>.json`` result documents of ``harness.run`` (default folder ``results/eval/``) and the
per-item arrays saved beside each (``<method>-s<seed>.items.npz``, named by the document's ``items`` field), and
writes, each atomically (temporary file + ``os.replace``, all staged before the first rename; nothing is written
when any input is bad). With ``--params``, the first input is the results folder and only the params file's
``methods`` (+ ``cfsm_methods``) x ``seeds`` are read from it; further inputs (e.g. ``results/imported/*.json`` of
``python -m harness.import_weights --evaluate ... --result``) join the table in full.

- ``<out-dir>/tables.md``: the tables (IJB-B, IJB-C, IJB-S, TinyFace, the domain gap), significance marks, the
  protocol knobs; below them, clearly separated, the published numbers of ``results/paper/*.csv``.
- ``<out-dir>/tables.tex``: the same tables in LaTeX (booktabs), each cell with its 95% CI on a second line, plus
  one table per section of the paired differences from the reference with their CIs.
- ``<out-dir>/tables.csv``: long format, one row per (method, benchmark, metric): ``method, n_seeds, seeds,
  benchmark, metric, mean, std, ci_low, ci_high, diff_vs_reference, diff_ci_low, diff_ci_high, significant,
  ci_method, mark_note, data, published, published_source, diff_vs_published, diff_vs_published_ci_low,
  diff_vs_published_ci_high`` and then one column per protocol knob (the union over all rows; a row leaves the knobs
  its benchmark does not have empty). Values are percentages (4 decimals; ``published`` as printed, several matches
  joined by `` | ``); ``benchmark``/``metric`` are the result row's benchmark and the ``harness.run.compact_metrics``
  key, the names ``results/paper/*.csv`` uses.
- ``--report``: ``REPORT.md``, the tables, then whether our runs reproduce the ordering the paper claims (CFSM
  guided >= random > source-only on the low-quality sets; each claim assessed when both of its methods have
  results), the other methods against the reference, on real data our cells against the published ones, and the
  published numbers. Every number in it is computed from the input files.

Data labels
-----------

Each result's data comes from its provenance (:mod:`harness.eval.provenance`: the document's ``data`` entry, else a
look-up at its ``config.data.release``): a dataset inside a SynthFace release (a ``synthface.json`` at the release
root, found through symbolic links) is SynthFace, anything else the real benchmark. The title says what all inputs
are on; when they differ (or some are unknown), every section names the data of each of its results. On real data,
a cell whose model is a published one (:func:`harness.report.paper_numbers.published_model`: ``source_only`` = "ArcFace",
``cfsm_guided`` = "ArcFace+CFSM" with an r50 ArcFace head trained on MS1MV2 = ``faces_emore``, and so on) gets the
published number of the same benchmark and metric beside it, with ours - published and our CI shifted by it.
SynthFace results are never matched; imported checkpoints neither (their documents do not say how they were trained).

Statistics
----------

What existing projects report: DomainBed's ``collect_results`` prints mean ± *standard error* over trial seeds
(``X`` for missing cells); the CFSM README (``liufeng2915/CFSM GuidedFaceRecognition/README.md``) and the AdaFace
README (``mk-minchul/AdaFace``) print one number per model, with no seeds, spreads or intervals. Here:

- **Cells** are mean ± *sample standard deviation* (n - 1) over the method's seeds, in percent with two decimals,
  of the numbers in the result documents (the evaluators' own numbers); the seed count is the ``n`` column. A cell
  is ``-`` where no seed has the metric or its value is ``None`` (undefined); a cell averaged over fewer seeds than
  the method has says ``(n=k)``. (DomainBed's standard error is the std divided by sqrt(n).)
- **Subject bootstrap** (:mod:`harness.report.bootstrap`): the benchmark items (IJB template pairs, probes) are not
  independent, so each resample draws the benchmark's *probe subjects* with replacement and keeps every item of
  each drawn subject (templates and pairs of one person move together). Draw ``b`` depends only on ``--seed`` and
  the subject set, so every method and seed is evaluated on exactly the same resamples; results whose items hold
  different subject sets are refused. The metrics are the evaluators' definitions (``TarAtFar``: insightface's
  nearest ROC vertex; ``RankK``; ``IJBSTpirAtFpir``: PFE's FPIR threshold rule), recomputed on each resample from the
  saved arrays; on the full data they must give the document's numbers (checked: a stale items file is an error).
- **Several seeds: two-level bootstrap** (:func:`harness.report.bootstrap.two_level_samples`): on each resample the
  training seeds of a method are drawn with replacement (:func:`harness.report.bootstrap.seed_draws`, keyed by the seed
  numbers, so two methods with the same seeds pair seed by seed) and the drawn seeds' metrics on the resample's
  subject draw are averaged. The test subjects are one sample shared by every run, so one subject draw per resample
  serves every drawn seed and every method. The interval of the seed mean shown in the cell then covers training
  randomness as well as the test subjects (issue 19: the same seed on another CPU moved numbers by up to 10 points).
- **One seed**: the interval is that run's subject bootstrap, which treats training as fixed; no mark is printed for
  a difference where either side has one seed in the cell, and the legends, the CSV (``mark_note``, ``ci_method``)
  and the REPORT say so ("one seed: training randomness not covered, no marks").
- **Percentile CIs**: 2.5 % and 97.5 % quantiles (``np.quantile``, linear) of the valid resamples (resamples where
  the metric is undefined, e.g. no genuine pair drawn, are left out).
- **Paired differences**: method minus reference (``--reference``, default ``source_only``) on the *same* subject
  resamples (and, where the seeds are the same, the same seed draws), resample by resample; its percentile interval
  is the CI of the difference. A method against itself gives exactly 0 on every resample, CI [0, 0].
- **Marks** (both sides with two or more seeds): ``▲`` (LaTeX ``$\\uparrow$``) when the difference's CI lies
  entirely above 0, ``▼`` (``$\\downarrow$``) when it lies entirely below 0; no mark when it includes 0 (an endpoint at exactly 0 counts as including it). At
  95 % per cell, about one cell in twenty is marked by chance when nothing differs: there is no multiple-comparison
  correction.
- **Domain gap** (IJB TAR@1e-3, probes of clean stills vs probes holding video frames): each split is its own item
  group (the pairs with ``probe_video`` 0 or 1 and their probe subjects), bootstrapped like the full list. Items
  files written before ``probe_video`` existed give these cells means and stds only, no CIs or marks.

Speed: TAR@FAR on a resample is computed from the top of the score list only (:class:`TopTarAtFar`): the few
thousand highest scores decide every FAR up to 1e-3, and the ROC there is the evaluator's own vertex computation
(``harness.eval.roc``), bit-identical to :class:`harness.report.bootstrap.TarAtFar` (which it falls back to whenever the
top part cannot decide a resample). The other metrics are the counts-based ``bind``/``on_counts`` paths of
:mod:`harness.report.bootstrap`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.report.bootstrap import (
    Samples,
    SubjectGroups,
    TarAtFar,
    TopTarAtFar,
    bootstrap_samples,
    ci_from_samples,
    paired_from_samples,
    two_level_samples,
)
from harness.core.atomic import write_files_atomic
from harness.core.runtime import maybe_traceback
from harness.core.errors import DataFormatError
from harness.eval import benchmarks as _benchmarks
from harness.eval.registry import MISSING, Column, Section, metric_value, row_names, sections
from harness.eval.roc import far_key
from harness.report.paper_numbers import DEFAULT_DIR as PAPER_DIR
from harness.report.paper_numbers import PaperNumber, load_paper_numbers, matching, published_model
from harness.eval.provenance import DataProvenance, data_label, doc_provenance

__all__ = ["Column", "Section", "SECTIONS", "TopTarAtFar", "Tables", "load_runs", "build_tables", "render", "main"]

PROG = "harness.tables"
ALPHA = 0.05
UP, DOWN = "▲", "▼"
CLAIM_METHODS = ("cfsm_guided", "cfsm_random")  # the paper's ordering: guided >= random > reference


# ---------------------------------------------------------------------------------------------------- columns


# Columns and sections come from the benchmark registry (harness.eval.registry): each benchmark declares its table
# sections, its columns' compact metric keys and the bootstrap metric of each column group.
TABLE_FARS = _benchmarks.TABLE_FARS
GAP_FAR = far_key(_benchmarks.GAP_FAR)
_far_label = _benchmarks.far_label
SECTIONS: tuple[Section, ...] = sections()
COLUMNS: tuple[Column, ...] = tuple(c for s in SECTIONS for c in s.columns)

_MISSING = MISSING


def row_value(row: dict, key: str):
    """The number ``harness.run.compact_metrics`` names ``key`` in a result row: a float, ``None`` (reported as
    undefined) or ``_MISSING`` (not reported); the benchmark that wrote the row says (:func:`metric_value`)."""
    return metric_value(row, key)


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass
class Run:
    """One result document and its items file."""

    method: str
    seed: int
    path: str
    items_path: str
    rows: dict
    _items: dict = field(default_factory=dict, repr=False)
    train: dict = field(default_factory=dict)  # the document's train info (seconds, images/s, device), if any
    data: DataProvenance | None = None  # where its data came from (harness.eval.provenance)
    model: tuple[str, str, str] | None = None  # the published (method, backbone, train set) it reproduces, if any

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def array_names(self) -> list[str]:
        self._load()
        return list(self._items)

    def _load(self) -> None:
        if not self._items:
            try:
                with np.load(self.items_path, allow_pickle=False) as z:
                    self._items = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise DataFormatError(self.items_path, None, f"not a readable items file ({_one_line(exc)})") from None

    def array(self, key: str) -> np.ndarray:
        self._load()
        if key not in self._items:
            raise DataFormatError(self.items_path, f"array {key}", f"missing (needed for the {key.split('/')[0]} rows of {self.name})")
        return self._items[key]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _result_files(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".json") and not f.startswith("."))
            if not found:
                raise FileNotFoundError(f"{p}: no result files (*.json) in this folder")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def load_runs(paths: Sequence[str]) -> list[Run]:
    """Every result document of ``paths`` (files, or folders: their ``*.json``), validated; its items file must exist."""
    runs: list[Run] = []
    seen: dict[tuple, str] = {}
    for p in _result_files(paths):
        try:
            with open(p, encoding="utf-8") as f:
                doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataFormatError(p, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError:
            raise DataFormatError(p, None, "not a UTF-8 text file") from None
        if not isinstance(doc, dict):
            raise DataFormatError(p, None, "not a harness.run result document (not a JSON object)")
        for key in ("method", "seed", "results"):
            if key not in doc:
                raise DataFormatError(p, f"field {key}", "missing; not a harness.run result document")
        method, seed, results = doc["method"], doc["seed"], doc["results"]
        if not isinstance(method, str) or not method:
            raise DataFormatError(p, "field method", f"{method!r} is not a method name")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataFormatError(p, "field seed", f"{seed!r} is not an integer")
        if not isinstance(results, list) or not all(isinstance(r, dict) and isinstance(r.get("benchmark"), str) for r in results):
            raise DataFormatError(p, "field results", "must be a list of rows, each with a benchmark name")
        rows: dict[str, dict] = {}
        for r in results:
            if r["benchmark"] in rows:
                raise DataFormatError(p, "field results", f"benchmark {r['benchmark']} appears twice")
            rows[r["benchmark"]] = r
        items = doc.get("items") or os.path.basename(os.path.splitext(p)[0] + ".items.npz")
        if not isinstance(items, str) or os.path.isabs(items) or os.sep in items:
            raise DataFormatError(p, "field items", f"{items!r} is not a file name beside the result")
        items_path = os.path.join(os.path.dirname(p), items)
        if not os.path.isfile(items_path):
            raise DataFormatError(items_path, None, f"items file of {p} not found (the per-item arrays the bootstrap needs)")
        key = (method, seed)
        if key in seen:
            raise DataFormatError(p, None, f"method {method} seed {seed} is also in {seen[key]}")
        seen[key] = p
        for col in COLUMNS:
            if col.benchmark in rows:
                try:
                    row_value(rows[col.benchmark], col.key)
                except ValueError as exc:
                    raise DataFormatError(p, f"benchmark {col.benchmark}", str(exc)) from None
        train = doc.get("train") if isinstance(doc.get("train"), dict) else {}
        data = doc_provenance(doc, p)
        model_cfg = doc.get("config", {}).get("model", {}) if isinstance(doc.get("config"), dict) else {}
        model_cfg = model_cfg if isinstance(model_cfg, dict) and "imported" not in doc else {}
        model = published_model(method, model_cfg.get("head"), model_cfg.get("backbone"), data.train_set)
        runs.append(Run(method, seed, p, items_path, rows, train=train, data=data, model=model))
    return runs


# ---------------------------------------------------------------------------------------------------- bootstrap


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
            keys = [k for k, v in values.items() if v is not _MISSING]
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
                raise DataFormatError(run.items_path, f"arrays {group}", _one_line(exc)) from None
            if first is None:
                first = (batch[1].subjects, run.items_path, i)
            elif batch[1].subjects != first[0]:
                bench = group.split("/")[0]
                kinds = [runs[k].data.kind(bench) if runs[k].data else "unknown" for k in (i, first[2])]
                why = f" (this result's {bench} is {kinds[0]} data, that one's {kinds[1]})" if kinds[0] != kinds[1] else ""
                raise DataFormatError(run.items_path, f"array {group}/probe_subject",
                                      f"holds other subjects than {first[1]}{why}: results of different benchmark releases cannot share one table")
            batch[2][i] = (metric, values, keys)
        for _, g, members in batches:
            try:
                res = bootstrap_samples(g, {i: m for i, (m, _, _) in members.items()}, n_boot, seed)
            except ValueError as exc:
                raise DataFormatError(runs[min(members)].items_path, f"arrays {group}", _one_line(exc)) from None
            for i, (_, values, keys) in members.items():
                s = res[i]
                for k in keys:
                    want, got = values[k], s.estimate.get(k, math.nan)
                    if want is not None and not (math.isfinite(got) and abs(got - want) <= 1e-9):
                        raise DataFormatError(runs[i].items_path, f"arrays {group}",
                                              f"give {k} = {got!r} on the full data, {runs[i].name} says {want!r}: the items file does not belong to this result")
                out[(i, group)] = s
    return out


# ---------------------------------------------------------------------------------------------------- cells


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

    def cell(self, method: str, col: Column) -> Cell | None:
        return self.cells.get((method, col.name))


def _mark(ci: tuple[float, float] | None) -> int:
    if ci is None or not all(math.isfinite(x) for x in ci):
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def _published(cell: Cell, runs: list[Run], numbers: list[PaperNumber], col: Column) -> list:
    """The published numbers beside ``cell``: only when every run of it is on real data for the column's benchmark
    and all its seeds reproduce one published model (:func:`harness.report.paper_numbers.published_model`); SynthFace
    results are never matched."""
    models = {r.model for r in runs}
    if len(models) != 1 or None in models or any(r.data is None or r.data.kind(col.benchmark) != "real" for r in runs):
        return []
    out = []
    for n in matching(numbers, models.pop(), col.benchmark, col.key):
        ci = (cell.ci[0] - n.fraction, cell.ci[1] - n.fraction) if cell.ci and all(map(math.isfinite, cell.ci)) else None
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


def build_tables(paths: Sequence[str], n_boot: int = 1000, seed: int = 0, reference: str = "source_only",
                 paper: str | Sequence[str] | None = PAPER_DIR) -> Tables:
    """Read the results (and the published numbers unless ``paper`` is None), bootstrap every run on the shared
    subject draws, and summarise each (method, column) as a :class:`Cell`."""
    if n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {n_boot}")
    runs = load_runs(paths)
    methods_all = sorted({r.method for r in runs})
    if reference not in methods_all:
        raise ValueError(f"reference method {reference!r} has no results (methods: {', '.join(methods_all)}); compare "
                         f"with one of these instead (--reference {methods_all[0]}) or add the {reference} results to the inputs")
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
            have = [(i, row_value(runs[i].rows[col.benchmark], col.key)) for i in by_method[m] if col.benchmark in runs[i].rows]
            defined = [(i, v) for i, v in have if v is not _MISSING and v is not None]
            if not defined:
                continue
            vals = [v for _, v in defined]
            cell = Cell(vals, [runs[i].seed for i, _ in defined], float(np.mean(vals)),
                        float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                        knobs=_cell_knobs([runs[i].rows[col.benchmark].get("knobs", {}) for i, _ in have]))
            if col.group and all((i, col.group) in samples for i, _ in defined):
                per_seed = [samples[(i, col.group)] for i, _ in defined]
                per_seed = [Samples({col.key: s.estimate[col.key]}, {col.key: s.samples[col.key]}, s.seed, s.n_subjects, False)
                            for s in per_seed]
                cell.samples = two_level_samples(per_seed, [runs[i].seed for i, _ in defined])
                ci = ci_from_samples(cell.samples, ALPHA)[col.key]
                cell.ci = (ci.low, ci.high)
            if paper_numbers:
                cell.published = _published(cell, [runs[i] for i, _ in have], paper_numbers, col)
            cells[(m, col.name)] = cell
        ref = cells.get((reference, col.name))
        for m in methods:
            cell = cells.get((m, col.name))
            if cell is None or ref is None:
                continue
            if cell.samples is not None and ref.samples is not None:
                d = paired(cell, ref, col.key)
                cell.diff, cell.diff_ci = d[0], (d[1], d[2])
                cell.mark = _mark(cell.diff_ci) if cell.two_level and ref.two_level else 0
            else:
                cell.diff = cell.mean - ref.mean
    present = {b for r in runs for b in r.rows}
    return Tables(runs, methods, reference, seeds, cells, int(n_boot), int(seed), paper_numbers, present)


# ---------------------------------------------------------------------------------------------------- formatting


def _pct(x: float) -> str:
    s = f"{100 * x:.2f}"
    return "0.00" if s == "-0.00" else s


def _signed(x: float) -> str:
    s = f"{100 * x:+.2f}"
    return "+0.00" if s == "-0.00" else s


def _n_note(t: Tables, m: str, cell: Cell) -> str:
    return f" (n={len(cell.values)})" if len(cell.values) < len(t.seeds[m]) else ""


def _md_cell(t: Tables, m: str, cell: Cell | None) -> str:
    if cell is None:
        return "-"
    s = _pct(cell.mean) + (f" ± {_pct(cell.std)}" if cell.std is not None else "")
    return s + _n_note(t, m, cell) + {1: UP, -1: DOWN}.get(cell.mark, "")


def _sections(t: Tables) -> list[Section]:
    return [s for s in SECTIONS if any(c.benchmark in t.present for c in s.columns)]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _seed_text(t: Tables) -> str:
    return "; ".join(f"{m} {len(t.seeds[m])} ({', '.join(map(str, t.seeds[m]))})" for m in t.methods)


ONE_SEED = "one seed: training randomness not covered, no marks"


def _legend(t: Tables, where: str) -> list[str]:
    multi = any(len(t.seeds[m]) >= 2 for m in t.methods)
    text = (f"Cells: mean ± sample std over seeds (n = seeds), in %; `-`: not reported or undefined; `(n=k)`: defined "
            f"for k seeds only. ")
    if multi:
        text += (f"{UP} / {DOWN}: the 95% CI of the paired difference from `{t.reference}` lies above / below 0; no "
                 f"mark: the CI includes 0. CIs: two-level bootstrap ({t.n_boot} resamples, seed {t.seed}): the training seeds resampled with "
                 f"replacement (two methods with the same seeds paired seed by seed), then the probe subjects with all "
                 f"their items (one subject draw per resample, shared by every seed and method), so they cover training "
                 f"randomness as well as the test subjects. Marks only where both methods have two or more seeds in the "
                 f"cell; a method with one seed (n = 1) gets the subject-bootstrap CI of that run and no mark ({ONE_SEED}). ")
    else:
        text += (f"No significance marks ({UP} / {DOWN}): every method has one seed here ({ONE_SEED}). The CIs are subject-bootstrap intervals of one training "
                 f"run each ({t.n_boot} resamples, seed {t.seed}: probe subjects resampled with all their items, every "
                 f"method on the same resamples); they do not cover training randomness. ")
    text += f"The CI of every cell and of every difference: {where}."
    out = [text]
    if any(c.published for c in t.cells.values()):
        out += ["", "`↳ published`: the published number of the same model (method, backbone, training set), benchmark and "
                "metric, as printed by its source; `↳ ours − published`: our mean minus it (percentage points) with our "
                "cell's 95% CI shifted by it (the published number has no interval). Only results on the real benchmark "
                "data are matched; SynthFace results never are."]
    return out


def _data_label(t: Tables, benchmarks) -> tuple[str, str]:
    return data_label([(r.name.removesuffix(".json"), r.data) for r in t.runs if r.data is not None], benchmarks)


def _section_data(t: Tables, s: Section) -> list[str]:
    """A section's data line, when the inputs are not all on one kind of data (the title says it otherwise)."""
    if _data_label(t, t.present)[0] in ("synthface", "real"):
        return []
    return [f"Data: {_data_label(t, [c.benchmark for c in s.columns])[1]}.", ""]


def _published_groups(t: Tables, m: str, s: Section) -> dict:
    """``{(source, method, backbone, train set): {column name: (number, diff, ci)}}`` beside method m's row."""
    out: dict = {}
    for c in s.columns:
        cell = t.cell(m, c)
        for n, d, ci in (cell.published if cell else []):
            out.setdefault((n.source, n.method, n.backbone, n.train_set), {})[c.name] = (n, d, ci)
    return out


def _published_rows(t: Tables, m: str, s: Section, diff_fmt) -> list[list[str]]:
    rows = []
    for (source, pm, bb, ts), got in _published_groups(t, m, s).items():
        rows.append([f"↳ published: {pm} {bb} {ts} ({source})", ""] + [got[c.name][0].value_text if c.name in got else "-" for c in s.columns])
        rows.append(["↳ ours − published", ""] + [diff_fmt(*got[c.name][1:]) if c.name in got else "-" for c in s.columns])
    return rows


def _md_pub_diff(d: float, ci: tuple[float, float] | None) -> str:
    return _signed(d) + (f" [{_signed(ci[0])}, {_signed(ci[1])}]" if ci else "")


def synthface_markdown(t: Tables, where: str = "`tables.csv` (ci_low/ci_high, diff_ci_low/diff_ci_high) and `tables.tex`",
                       level: str = "##") -> list[str]:
    """The result tables (whatever the data; the name is historical), the training cost and the protocol knobs."""
    out = [f"Methods and seeds: {_seed_text(t)}. Reference: `{t.reference}`.", "", *_legend(t, where), ""]
    for s in _sections(t):
        rows = []
        for m in t.methods:
            rows.append([m, str(len(t.seeds[m]))] + [_md_cell(t, m, t.cell(m, c)) for c in s.columns])
            rows += _published_rows(t, m, s, _md_pub_diff)
        out += [f"{level} {s.title}", "", *_section_data(t, s), *_md_table(["method", "n"] + [c.label for c in s.columns], rows), ""]
    out += _cost_markdown(t, level)
    out += [f"{level} Protocol knobs", ""]
    for b in sorted(t.present, key=_bench_order):
        sets: dict[str, list[str]] = {}
        for r in t.runs:
            if b in r.rows:
                sets.setdefault(json.dumps(r.rows[b].get("knobs", {}), sort_keys=True), []).append(r.name.removesuffix(".json"))
        for k, names in sets.items():
            who = "every result" if len(sets) == 1 else ", ".join(names)
            out.append(f"- {b} ({who}): `{k}`")
    return out + [""]


def _cost_markdown(t: Tables, level: str) -> list[str]:
    """Training time per method from the documents' train info (absent when no result carries one): what each
    method costs on the machine that trained it, against the reference trained there too."""
    secs = {m: [float(r.train["seconds"]) for r in t.runs if r.method == m and isinstance(r.train.get("seconds"), (int, float))]
            for m in t.methods}
    if not any(secs.values()):
        return []
    ref = float(np.mean(secs[t.reference])) if secs.get(t.reference) else None
    rows = []
    for m in t.methods:
        if not secs[m]:
            rows.append([m, "0", "-", "-", "-", "-"])
            continue
        runs = [r for r in t.runs if r.method == m and "seconds" in r.train]
        mean = float(np.mean(secs[m]))
        ips = [float(r.train["images_per_second"]) for r in runs if isinstance(r.train.get("images_per_second"), (int, float))]
        devices = sorted({str(r.train.get("device", "?")) for r in runs})
        rows.append([m, str(len(secs[m])), f"{mean:.0f}" + (f" ± {np.std(secs[m], ddof=1):.0f}" if len(secs[m]) > 1 else ""),
                     f"{np.mean(ips):.0f}" if ips else "-", f"{mean / ref:.2f}" if ref else "-", ", ".join(devices)])
    return [f"{level} Training cost", "",
            "Wall-clock seconds of each training run (mean over seeds), images/s and the ratio to the reference, from "
            "the result files' train info; the runs share one schedule, so the ratio is the method's cost per step "
            "(measured on whatever else the machine was doing at the time).", "",
            *_md_table(["method", "n", "seconds", "images/s", f"x {t.reference}", "device"], rows), ""]


def _bench_order(b: str) -> tuple:
    order = list(row_names())
    return (order.index(b) if b in order else len(order), b)


def _paper_blocks(numbers: list[PaperNumber]) -> list[tuple[tuple[str, str, str], list[PaperNumber]]]:
    blocks: dict[tuple[str, str, str], list[PaperNumber]] = {}
    for n in numbers:
        blocks.setdefault((n.source, n.backbone, n.train_set), []).append(n)
    return list(blocks.items())


def _paper_tables(ns: list[PaperNumber]):
    """[(section, columns, methods, {(method, column name): text})] of one block, and the numbers outside them."""
    got = {(n.method, f"{n.benchmark} {n.metric}"): n.value_text for n in ns}
    methods = list(dict.fromkeys(n.method for n in ns))
    out = []
    for s in SECTIONS:
        cols = [c for c in s.columns if any((m, c.name) in got for m in methods)]
        if cols:
            ms = [m for m in methods if any((m, c.name) in got for c in cols)]
            out.append((s, cols, ms, got))
    used = {c.name for _, cols, _, _ in out for c in cols}
    extra = [n for n in ns if f"{n.benchmark} {n.metric}" not in used]
    return out, extra


PAPER_TITLE = "Published numbers (real datasets, not comparable with SynthFace)"


def _title(t: Tables) -> str:
    kind, text = _data_label(t, t.present)
    if kind == "synthface":
        return "SynthFace results (a procedural stand-in benchmark; these are not the paper's numbers)"
    if kind == "real":
        return f"Results on {text}"
    if kind == "unknown":
        return f"Results on {text}"
    return "Results on mixed data (each section names its data)"


def _paper_title(t: Tables) -> tuple[str, str]:
    """The published block's title and the sentence under it, by what our results are on."""
    kind = _data_label(t, t.present)[0]
    printed = ("As printed by each source (in %), on the real IJB-B/C, IJB-S and TinyFace with full-size models trained "
               "on real data.")
    if kind == "real":
        return ("Published numbers (as printed by each source)",
                f"{printed} The numbers of the same model, benchmark and metric as one of our rows also stand beside that "
                f"row above, with the difference.")
    if kind == "synthface":
        return PAPER_TITLE, f"{printed} Never compare these with the SynthFace tables above."
    if kind == "unknown":
        return ("Published numbers (real datasets)",
                f"{printed} Our results do not record their data (see above), so none of them is matched with these.")
    return (PAPER_TITLE, f"{printed} Never compare these with the SynthFace results above; the published numbers of the "
                         f"same model as a row on real data stand beside that row.")


def paper_markdown(t: Tables, level: str = "#") -> list[str]:
    if t.paper is None:
        return []
    sub = level + "#"
    title, sentence = _paper_title(t)
    out = ["---", "", f"{level} {title}", "", sentence, ""]
    for (source, backbone, train_set), ns in _paper_blocks(t.paper):
        out += [f"{sub} {source}: backbone {backbone}, train set {train_set}", ""]
        tables, extra = _paper_tables(ns)
        for s, cols, ms, got in tables:
            rows = [[m] + [got.get((m, c.name), "-") for c in cols] for m in ms]
            out += [f"{s.title.split(':')[0]}:", "", *_md_table(["method"] + [c.label for c in cols], rows), ""]
        if extra:
            out += ["Also published: " + "; ".join(f"{n.method} {n.benchmark} {n.metric} {n.value_text}" for n in extra), ""]
    return out


def tables_markdown(t: Tables) -> str:
    out = [f"# {_title(t)}", ""]
    out += synthface_markdown(t)
    out += paper_markdown(t)
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------- LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "–": "--", "−": "-",
        "↳": r"$\hookrightarrow$"}


def tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _tex_num(x: float, signed: bool = False) -> str:
    return (_signed if signed else _pct)(x).replace("-", "$-$")


def _tex_cell(t: Tables, m: str, cell: Cell | None) -> tuple[str, str]:
    if cell is None:
        return "--", ""
    v = _pct(cell.mean) + (rf" \pm {_pct(cell.std)}" if cell.std is not None else "")
    mark = {1: r"^{\uparrow}", -1: r"^{\downarrow}"}.get(cell.mark, "")
    main = f"${v}{mark}$" + tex(_n_note(t, m, cell))
    ci = rf"{{\tiny [{_tex_num(cell.ci[0])}, {_tex_num(cell.ci[1])}]}}" if cell.ci and all(map(math.isfinite, cell.ci)) else ""
    return main, ci


def _tex_table(caption: str, head: list[str], rows: list[list[str]]) -> list[str]:
    return [r"\begin{table}[ht]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
            r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule",
            *[" & ".join(r) + r" \\" for r in rows], r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""]


def tables_tex(t: Tables) -> str:
    multi = any(len(t.seeds[m]) >= 2 for m in t.methods)
    out = [r"% Generated by python -m harness.tables; needs \usepackage{booktabs}.",
           f"% Data: {_data_label(t, t.present)[1]}. {t.n_boot} two-level bootstrap resamples (training seeds, then probe "
           f"subjects), seed {t.seed}; where a method has one seed: {ONE_SEED}.", ""]
    ref = tex(t.reference)
    ci_text = ("95\\% two-level bootstrap CI (training seeds, then probe subjects; one seed: probe subjects only)" if multi
               else "95\\% subject-bootstrap CI of the one training run")
    for s in _sections(t):
        head = ["method", "$n$"] + [tex(c.label) for c in s.columns]
        rows = []
        for m in t.methods:
            pairs = [_tex_cell(t, m, t.cell(m, c)) for c in s.columns]
            rows.append([tex(m), str(len(t.seeds[m]))] + [p[0] for p in pairs])
            if any(p[1] for p in pairs):
                rows.append(["", ""] + [p[1] for p in pairs])
            rows += [[tex(x) for x in r[:2]] + [tex(x).replace("-", "$-$") if x != "-" else "--" for x in r[2:]]
                     for r in _published_rows(t, m, s, _md_pub_diff)]
        data = tex(_data_label(t, [c.benchmark for c in s.columns])[1])
        out += _tex_table(
            f"{tex(s.title)}. Data: {data}. Mean $\\pm$ sample std over $n$ seeds; below: {ci_text} "
            f"({t.n_boot} resamples). $\\uparrow$/$\\downarrow$: the 95\\% CI of the paired difference from {ref} "
            f"lies above/below 0, printed only where both methods have two or more seeds (otherwise: {tex(ONE_SEED)})."
            + (" Published: the same model's published number; ours $-$ published with our CI shifted by it."
               if any(_published_groups(t, m, s) for m in t.methods) else ""), head, rows)
        if not any(c.group for c in s.columns) or len(t.methods) < 2:
            continue
        drows = []
        for m in t.methods[1:]:
            cells = []
            for c in s.columns:
                cell = t.cell(m, c)
                if cell is None or cell.diff is None or cell.diff_ci is None or not all(map(math.isfinite, cell.diff_ci)):
                    cells.append("--")
                    continue
                mark = {1: r"$^{\uparrow}$", -1: r"$^{\downarrow}$"}.get(cell.mark, "")
                cells.append(f"{_tex_num(cell.diff, True)}{mark} {{\\tiny [{_tex_num(cell.diff_ci[0], True)}, {_tex_num(cell.diff_ci[1], True)}]}}")
            drows.append([tex(m)] + cells)
        out += _tex_table(f"{tex(s.title.split(':')[0])}: difference from {ref} (percentage points) and its 95\\% CI "
                          f"(paired two-level bootstrap, {t.n_boot} resamples; subjects only where a side has one seed, "
                          f"then no mark: {tex(ONE_SEED)}).",
                          ["method"] + [tex(c.label) for c in s.columns], drows)
    if t.paper is not None:
        out += [f"% {_paper_title(t)[0]}", ""]
        for (source, backbone, train_set), ns in _paper_blocks(t.paper):
            tables, _ = _paper_tables(ns)
            for s, cols, ms, got in tables:
                rows = [[tex(m)] + [tex(got.get((m, c.name), "--")) for c in cols] for m in ms]
                out += _tex_table(f"{tex(_paper_title(t)[0])}: {tex(s.title.split(':')[0])}, {tex(source)}, backbone {tex(backbone)}, "
                                  f"train set {tex(train_set)}.", ["method"] + [tex(c.label) for c in cols], rows)
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------- CSV

CSV_COLUMNS = ("method", "n_seeds", "seeds", "benchmark", "metric", "mean", "std", "ci_low", "ci_high",
               "diff_vs_reference", "diff_ci_low", "diff_ci_high", "significant", "ci_method", "mark_note", "data",
               "published", "published_source", "diff_vs_published", "diff_vs_published_ci_low", "diff_vs_published_ci_high")


def _csv_num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return ""
    s = f"{100 * x:.4f}"
    return "0.0000" if s == "-0.0000" else s


def tables_csv(t: Tables) -> str:
    knobs = sorted({k for c in t.cells.values() for k in c.knobs})
    head = list(CSV_COLUMNS) + [k if k not in CSV_COLUMNS else f"knob_{k}" for k in knobs]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for s in _sections(t):
        for c in s.columns:
            for m in t.methods:
                cell = t.cell(m, c)
                if cell is None:
                    continue
                ci = cell.ci or (None, None)
                dci = cell.diff_ci or (None, None)
                has_dci = cell.diff_ci is not None and all(map(math.isfinite, cell.diff_ci))
                ref = t.cell(t.reference, c)
                one_seed = has_dci and not (cell.two_level and ref is not None and ref.two_level)
                sig = "" if not has_dci or one_seed else ("true" if cell.mark else "false")
                method = "" if cell.samples is None else "seeds+subjects" if cell.two_level else "subjects (one seed)"
                kinds = sorted({r.data.kind(c.benchmark) for r in t.runs if r.method == m and c.benchmark in r.rows and r.data})
                pub = cell.published
                w.writerow([m, len(cell.values), ";".join(map(str, cell.seeds)), c.benchmark, c.key, _csv_num(cell.mean),
                            _csv_num(cell.std), _csv_num(ci[0]), _csv_num(ci[1]), _csv_num(cell.diff), _csv_num(dci[0]),
                            _csv_num(dci[1]), sig, method, ONE_SEED if one_seed else "", " | ".join(kinds),
                            " | ".join(n.value_text for n, _, _ in pub),
                            " | ".join(f"{n.source}: {n.method} {n.backbone} {n.train_set}" for n, _, _ in pub),
                            " | ".join(_csv_num(d) for _, d, _ in pub),
                            " | ".join(_csv_num(ci[0]) if ci else "" for _, _, ci in pub),
                            " | ".join(_csv_num(ci[1]) if ci else "" for _, _, ci in pub)]
                           + [cell.knobs.get(k, "") for k in knobs])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- report

VERDICT = {1: "reproduced", -1: "not reproduced", 0: "inconclusive: CI includes 0", "one seed": "no verdict (one seed)"}


def _claim_columns(t: Tables) -> list[Column]:
    return [c for s in _sections(t) for c in s.columns if c.key in s.claim]


def _col_text(c: Column) -> str:
    if c.benchmark in ("IJB-B", "IJB-C"):
        return f"{c.benchmark} TAR@{c.label}"
    return f"{c.benchmark} {c.label}"


def _diff_text(d: tuple[float, float, float]) -> str:
    return f"{_signed(d[0])} [{_signed(d[1])}, {_signed(d[2])}]"


def _compare(t: Tables, a: str, b: str, c: Column) -> tuple[tuple[float, float, float] | None, int | str | None]:
    """(difference and CI, verdict): +1 / -1 / 0 as :func:`_mark`, ``"one seed"`` when a side has one seed in the
    cell (no verdict), None when a side has no result or no CI."""
    ca, cb = t.cell(a, c), t.cell(b, c)
    if ca is None or cb is None:
        return None, None
    d = paired(ca, cb, c.key)
    if d is None or not (math.isfinite(d[1]) and math.isfinite(d[2])):
        return None, None
    return d, (_mark((d[1], d[2])) if ca.two_level and cb.two_level else "one seed")


def _resolution_note(t: Tables) -> list[str]:
    notes = []
    for b in ("IJB-B", "IJB-C"):
        n_imp = None
        for r in t.runs:
            if r.method == t.reference and b in r.rows:
                n_imp = r.rows[b].get("counts", {}).get("impostor")
                break
        if not isinstance(n_imp, int) or n_imp <= 0:
            continue
        low = [_far_label(x) for x in TABLE_FARS if x * n_imp < 1]
        if low:
            notes.append(f"{b} has {n_imp:,} impostor pairs, so TAR@FAR {', '.join(low)} {'is' if len(low) == 1 else 'are'} "
                         f"below its resolution")
    return ([f"Resolution: {'; '.join(notes)} (FAR × impostor pairs < 1: the nearest ROC vertex is at no false accept "
             f"or at a single one). These cells are shown as computed but say little.", ""] if notes else [])


def _report_head(t: Tables) -> list[str]:
    kind, text = _data_label(t, t.present)
    if kind == "synthface":
        return ["# Reproduction report: CFSM and baselines on SynthFace", "",
                "SynthFace is a procedural stand-in benchmark written in the IJB-B/C, IJB-S and TinyFace layouts: **the "
                "SynthFace numbers below are not the paper's numbers** and cannot be compared with them; only the "
                "orderings of methods can be compared with the paper's claims.", ""]
    if kind == "real":
        return ["# Reproduction report: CFSM and baselines on the real benchmarks", "",
                f"Data: {text} (no `synthface.json` in any dataset's release folder). Where a row reproduces a published "
                f"model (same method, backbone, training set), the published number of each benchmark and metric stands "
                f"beside it, with the difference; see also \"Against the published numbers\" below.", ""]
    if kind == "unknown":
        return ["# Reproduction report: CFSM and baselines", "",
                f"Data: {text}: these results are not labelled SynthFace or real, and none is matched with the "
                f"published numbers.", ""]
    return ["# Reproduction report: CFSM and baselines on mixed data", "",
            f"The inputs are on different data: {text}. Each table section names its data; only results on the real "
            f"benchmark data are matched with published numbers, SynthFace results never are.", ""]


def _seed_scope(t: Tables) -> str:
    if any(len(t.seeds[m]) >= 2 for m in t.methods):
        return ("The intervals come from a two-level bootstrap (training seeds resampled with replacement, then the "
                "probe subjects), so they cover training randomness; a method with one seed gets the subject interval "
                f"of that run and no mark or verdict ({ONE_SEED}).")
    return (f"Every method has one seed: the intervals cover the sampling of test subjects only, not training "
            f"randomness, so no mark or verdict is given ({ONE_SEED}).")


def _one_seed_text(t: Tables, a: str, b: str, cells: list, listed: bool = True) -> str:
    """Why ``cells`` (``(column, difference)``) get no verdict, and which way their differences go."""
    one = [f"`{m}`" for m in (a, b) if len(t.seeds[m]) < 2]
    who = f"{' and '.join(one)} {'has' if len(one) == 1 else 'have'} one seed" if one else "a side has one seed in these cells"
    higher = sum(1 for _, d in cells if d[0] > 0)
    return (f"{who} ({ONE_SEED}); `{a}` is higher on {higher} of these {len(cells)} cells, lower or equal on "
            f"{len(cells) - higher}" + (f" ({', '.join(_col_text(c) for c, _ in cells)})" if listed else ""))


def _claims(t: Tables) -> list[str]:
    ref = t.reference
    guided, random_ = CLAIM_METHODS
    comps = [(guided, ref), (random_, ref), (guided, random_)]
    cols = _claim_columns(t)
    ok = [(a, b) for a, b in comps if a in t.methods and b in t.methods and a != b]
    out = []
    if ok:
        out += _resolution_note(t)
        rows, tally = [], {cmp: {1: [], -1: [], 0: [], "one seed": [], None: []} for cmp in ok}
        for c in cols:
            row = [_col_text(c)]
            for a, b in ok:
                d, verdict = _compare(t, a, b, c)
                tally[(a, b)][verdict].append((c, d))
                row.append("-" if d is None else f"{_diff_text(d)} {VERDICT[verdict]}")
            rows.append(row)
        out += _md_table(["cell"] + [f"`{a}` − `{b}`" for a, b in ok], rows) + [""]
    for a, b in comps:
        claim = ">=" if (a, b) == (guided, random_) else ">"
        missing = [m for m in dict.fromkeys((a, b)) if m not in t.methods]
        if a == b:
            out.append(f"- `{a}` {claim} `{b}`: not assessed: `{a}` is the reference itself.")
            continue
        if missing:
            out.append(f"- `{a}` {claim} `{b}`: not assessed: no results of {' and '.join(f'`{m}`' for m in missing)} in the inputs.")
            continue
        tl = tally[(a, b)]
        names = lambda k: ", ".join(_col_text(c) for c, _ in tl[k])  # noqa: E731
        n = len(tl[1]) + len(tl[-1]) + len(tl[0])  # cells tested (two or more seeds on both sides)
        if n == 0 and not tl["one seed"]:
            overall = "not assessed (no cell has both methods)"
        elif n == 0:
            overall = f"not tested: {_one_seed_text(t, a, b, tl['one seed'], False)}"
        elif tl[-1]:
            overall = f"not reproduced: the opposite ordering is significant on {len(tl[-1])} of {n} cells ({names(-1)})"
        elif len(tl[1]) == n:
            overall = f"reproduced on all {n} cells tested"
        else:
            overall = (f"partly reproduced: {len(tl[1])} of {n} cells show the claimed ordering significantly; the "
                       f"CIs of the other {len(tl[0])} include 0 (inconclusive)") if tl[1] else \
                f"inconclusive: the CIs of all {n} cells include 0"
        line = f"- `{a}` {claim} `{b}`: {overall}."
        if tl[1] and (tl[-1] or len(tl[1]) < n):
            line += f" Reproduced on: {names(1)}."
        if n and tl["one seed"]:
            line += f" Not tested on {len(tl['one seed'])} more: {_one_seed_text(t, a, b, tl['one seed'])}."
        if tl[None]:
            line += f" No result on: {names(None)}."
        out.append(line)
    return out + [""]


def _others(t: Tables, tables_dir: str) -> list[str]:
    ref = t.reference
    cols = _claim_columns(t)
    others = [m for m in t.methods if m != ref and m not in CLAIM_METHODS]
    out = ["## Other methods against the reference", ""]
    if not others:
        besides = [f"`{m}`" for m in dict.fromkeys([ref, *CLAIM_METHODS]) if m in t.methods]
        return out + [f"No other method has results (besides {', '.join(besides)}).", ""]
    for m in others:
        marks: dict = {1: [], -1: [], 0: [], "one seed": [], None: []}
        for c in cols:
            d, verdict = _compare(t, m, ref, c)
            marks[verdict].append((c, d))
        n = len(cols) - len(marks[None])
        seeds = f"{len(t.seeds[m])} seed{'s' if len(t.seeds[m]) != 1 else ''}"
        n_t = len(marks[1]) + len(marks[-1]) + len(marks[0])
        head = f"- `{m}` ({seeds}) vs `{ref}` on the {n} low-quality cells: "
        if n_t:
            head += (f"significantly better on {len(marks[1])}, significantly worse on {len(marks[-1])}, inconclusive "
                     f"(CI includes 0) on {len(marks[0])}")
        if marks["one seed"]:
            head += ("; not tested on the other cells: " if n_t else "not tested: ") + _one_seed_text(t, m, ref, marks["one seed"], bool(n_t))
        if not n_t and not marks["one seed"]:
            head += "no cell has both methods"
        if marks[None]:
            head += f"; no result on {', '.join(_col_text(c) for c, _ in marks[None])}"
        out.append(head + ".")
        for mk, word in ((1, "better"), (-1, "worse")):
            if marks[mk]:
                out.append(f"  - {word}: " + "; ".join(f"{_col_text(c)} {_diff_text(d)}" for c, d in marks[mk]))
    return out + ["", f"Every cell's difference and CI, for every column: `{tables_dir}/tables.csv`.", ""]


def _against_published(t: Tables) -> list[str]:
    rows = []
    for s in _sections(t):
        for c in s.columns:
            for m in t.methods:
                cell = t.cell(m, c)
                for n, d, ci in (cell.published if cell else []):
                    rows.append([_col_text(c), f"`{m}` ({len(cell.values)} seed{'s' if len(cell.values) != 1 else ''})",
                                 f"{n.method} {n.backbone} {n.train_set} ({n.source})", _pct(cell.mean), n.value_text,
                                 _md_pub_diff(d, ci)])
    if not rows:
        return []
    return ["## Against the published numbers", "",
            "Every cell whose model, benchmark and metric a source publishes: our seed mean, the published number as "
            "printed, and ours − published in percentage points with our 95% CI shifted by the published number "
            "(the published number itself has no interval; a CI excluding 0 says our run differs from it beyond the "
            "sampling our CI covers).", "",
            *_md_table(["cell", "ours", "published model", "ours %", "published %", "ours − published"], rows), ""]


def report_markdown(t: Tables, tables_dir: str = "tables") -> str:
    """The report; ``tables_dir``: where the tables are, relative to the report's folder."""
    ref = t.reference
    kind = _data_label(t, t.present)[0]
    out = [
        *_report_head(t),
        f"Inputs: {len(t.runs)} result files ({', '.join(r.name for r in t.runs)}). Seeds per method: {_seed_text(t)}. "
        f"Bootstrap: {t.n_boot} resamples (seed {t.seed}), 95% percentile intervals; differences are paired (the same "
        f"resamples for every method). {_seed_scope(t)}",
        "",
        "## SynthFace tables" if kind == "synthface" else "## Tables",
        "",
        *synthface_markdown(t, f"`{tables_dir}/tables.csv` and `{tables_dir}/tables.tex`", "###"),
        "## The paper's claim",
        "",
        f"CFSM (Liu et al., ECCV 2022) claims that training with guided CFSM augmentation is at least as good as with "
        f"random CFSM augmentation, and that both beat training without it (`{ref}`), on the low-quality sets: "
        f"TinyFace, IJB-S, and IJB-B/C TAR at low FAR. Below, every such cell, as the difference of the seed means "
        f"(percentage points) with the 95% CI of the paired bootstrap. Verdict per cell: \"reproduced\" when "
        f"the CI lies entirely on the claimed side of 0, \"not reproduced\" when it lies entirely on the other side, "
        f"\"inconclusive: CI includes 0\" otherwise, and no verdict where a side has one seed ({ONE_SEED}). Each claim "
        f"is assessed when both of its methods have results.",
        "",
        *_claims(t),
        *_others(t, tables_dir),
        *_against_published(t),
    ]
    out += paper_markdown(t, "##")
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------- writing


def render(t: Tables, tables_dir: str = "tables") -> dict[str, str]:
    """``{file name: text}`` of the four outputs; ``tables_dir``: the tables' folder relative to the report's."""
    return {"tables.md": tables_markdown(t), "tables.tex": tables_tex(t), "tables.csv": tables_csv(t),
            "REPORT.md": report_markdown(t, tables_dir)}


def write_all(texts: dict[str, str]) -> None:
    """Every ``{path: text}`` written as one step (:func:`harness.core.atomic.write_files_atomic`): a failure leaves no
    file, new or temporary."""
    write_files_atomic(texts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="*", default=["results/eval"], help="result JSON files or folders (default results/eval)")
    ap.add_argument("--out-dir", default="results/tables", help="where tables.md, tables.tex, tables.csv go")
    ap.add_argument("--report", default="results/REPORT.md", help="the report's path")
    ap.add_argument("--paper", nargs="+", default=[PAPER_DIR], help="published-number CSV files or folders (default results/paper)")
    ap.add_argument("--no-paper", action="store_true", help="leave out the published numbers")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subject draws (default 0)")
    ap.add_argument("--reference", default="source_only", help="the method every other one is compared with")
    ap.add_argument("--params", help="read only the results this params file lists (methods, cfsm_methods x seeds) "
                                     "from the results folder given first, ignoring anything else in it; further "
                                     "result files or folders after it (e.g. results/imported/*.json of "
                                     "`harness.import_weights --evaluate --result`) join the table in full")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        results = args.results
        if args.params:
            from harness.core.pipeline import configured_results

            if not os.path.isdir(results[0]):
                raise ValueError(f"--params: {results[0]}: the first input must be the results folder the params file describes")
            results = configured_results(args.params, results[0]) + list(results[1:])
        t = build_tables(results, args.n_boot, args.seed, args.reference, None if args.no_paper else args.paper)
        rel = os.path.relpath(os.path.abspath(args.out_dir), os.path.dirname(os.path.abspath(args.report)))
        texts = render(t, rel.replace(os.sep, "/"))
    except (ValueError, OSError, KeyError) as exc:
        maybe_traceback(exc)  # CFSM_TRACEBACK=1
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 2
    outs = {os.path.join(args.out_dir, k): v for k, v in texts.items() if k != "REPORT.md"}
    outs[args.report] = texts["REPORT.md"]
    try:
        write_all(outs)
    except OSError as exc:
        maybe_traceback(exc)
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"{PROG}: {len(t.runs)} results, {len(t.methods)} methods, {t.n_boot} resamples; wrote {', '.join(outs)} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
