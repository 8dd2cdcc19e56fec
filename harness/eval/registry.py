"""The benchmark registry: every benchmark registers itself here, and the rest of the harness loops over it.

In the spirit of ClassyVision's ``register_meter`` / ``build_meter`` and DomainBed's ``ENVIRONMENTS`` list (and of
:mod:`methods.base`'s ``@register`` for methods): a :class:`Benchmark` declares, in one place,

- its config name (``eval.benchmarks``: ``IJBB``, ``IJBC``, ``IJBS``, ``TinyFace``, ``VerificationBins``) and the
  names of the result rows it writes (``IJB-B``, ``IJB-B 1:N``, ..., the ``benchmark`` field of a row);
- ``evaluate(cfg, backbone, device, with_items)``: built from the run config, it scores a model and returns its
  ``(row, items)`` pairs (:func:`evaluate_all` is ``harness.run.evaluate_model``'s loop);
- ``metrics(row)``: the compact metric keys of one of its rows (``tar@0.0001``, ``joined.rank1``, ``V2S.rank1``,
  ``rank1``, ``acc``): the one place the key grammar of ``dvc metrics`` / ``harness.run.compact_metrics`` is written;
  the tables read a number back with :func:`metric_value`, never by taking a key string apart;
- ``sections``: its table :class:`Section` s, whose :class:`Column` s carry the bootstrap metric factory of their
  item group (``metric(run, keys) -> (per-item subject ids, metric)``);
- ``cli``: its ``python -m harness.evaluate --benchmark`` commands (:class:`CliCommand`: name, options, runner,
  row-order writer); ``curves``: its plots (:class:`Curve`); ``data``: its ``harness.check_data`` entries
  (:class:`DataEntry`).

Registration order is the order everywhere (CLI choices, table sections, plots). The built-in benchmarks live in
:mod:`harness.eval.benchmarks`; :func:`load` imports them (and every module of :data:`MODULES`) on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Column",
    "Section",
    "CliCommand",
    "Curve",
    "DataEntry",
    "Benchmark",
    "register_benchmark",
    "REGISTRY",
    "MODULES",
    "load",
    "benchmarks",
    "get_benchmark",
    "config_names",
    "row_names",
    "benchmark_of_row",
    "row_metrics",
    "metric_value",
    "MISSING",
    "check_eval_config",
    "sections",
    "cli_commands",
    "metric_patterns",
    "data_files",
    "curves",
    "data_entries",
    "evaluate_all",
]

#: The modules whose import registers the benchmarks, in registration order (an explicit list, as
#: ``methods/__init__.py`` lists the methods).
MODULES = ("harness.eval.benchmarks", "harness.eval.verification_bin", "harness.eval.validation")


@dataclass(frozen=True)
class Column:
    """One table column: the result row ``benchmark``, the compact metric key, the header label and the item group
    of the bootstrap (``None``: no per-item arrays, no CI). ``metric`` builds the group's bootstrap metric from a
    run's items: ``metric(run, keys) -> (per-item subject ids, metric) | None`` (None: this run's items cannot
    give the group, e.g. items written before an array existed; no CI for it), ``keys`` the group's columns the run
    reports."""

    benchmark: str
    key: str
    label: str
    group: str | None
    metric: Callable | None = field(default=None, compare=False, repr=False)
    arg: Any = field(default=None, compare=False, repr=False)  # what ``metric`` needs of this column (a FAR, a rank)

    @property
    def name(self) -> str:
        return f"{self.benchmark} {self.key}"


@dataclass(frozen=True)
class Section:
    """One table. Sections of several benchmarks with the same ``id`` and ``shared=True`` are joined into one,
    placed after the benchmarks' own sections (the IJB-B/C domain-gap table)."""

    id: str
    title: str
    columns: tuple[Column, ...]
    claim: tuple[str, ...] = ()  # keys of the columns on which the paper claims its ordering (low-quality cells)
    shared: bool = False


@dataclass(frozen=True)
class CliCommand:
    """One ``python -m harness.evaluate --benchmark NAME``: scores precomputed features.

    ``options``: the benchmark-specific options it takes (argparse dests; the options themselves are added by
    ``add_arguments(parser)``, called once per distinct function); ``required``: ``(dest, what)`` of the options it
    needs besides ``--features`` and ``--out`` to evaluate (not taken with ``--write-order``);
    ``run(args) -> (result row, printed text)``; ``write_order(args) -> files written``; ``order_help``: its line(s)
    of the ``--help`` epilog."""

    name: str
    description: str
    run: Callable
    write_order: Callable
    options: tuple[str, ...] = ()
    required: tuple[tuple[str, str], ...] = ()
    add_arguments: Callable | None = None
    order_help: str = ""


@dataclass(frozen=True)
class Curve:
    """One plot of ``harness.plots``: ``kind`` ``"roc"`` (from the row's ``scores``/``labels`` items) or ``"cmc"``;
    ``row`` the result row it draws; ``stem`` the output file stem."""

    kind: str
    row: str
    stem: str


@dataclass(frozen=True)
class DataEntry:
    """A ``harness.check_data`` entry: dataset key, name, paths relative to the data root (``{rec}`` is filled in),
    where to obtain it, and an optional ``probe(root, rec) -> problem | None`` beyond the paths' existence."""

    key: str
    name: str
    paths: tuple[str, ...]
    obtain: str
    needed_by: str = "evaluation"
    probe: Callable | None = None
    default: bool = True  # checked by ``harness.check_data`` without ``--need`` (the default runs' data)


@dataclass(frozen=True)
class Benchmark:
    name: str  # config name (eval.benchmarks)
    rows: tuple[str, ...]  # result-row names it writes (the row's "benchmark")
    evaluate: Callable  # (cfg: RunConfig, backbone, device: str, with_items: bool) -> list[(row, items)]
    metrics: Callable[[dict], dict]  # compact metric keys of one of its rows -> raw values
    sections: tuple[Section, ...] = ()
    cli: tuple[CliCommand, ...] = ()
    curves: tuple[Curve, ...] = ()
    data: tuple[DataEntry, ...] = ()
    description: str = ""
    check: Callable | None = None  # check(eval_cfg): raise ValueError for a bad knob of its own (eval.bin_sets)
    # data_files(name, rec) -> {row: paths under the data root}: the files of its rows, for the result's data
    # provenance (harness.eval.provenance), when they are not one of the fixed layouts there; name: config or row name
    data_files: Callable | None = None
    # row name -> regex of the metric keys its rows report (the published-number CSVs may only name these)
    metric_patterns: Mapping[str, re.Pattern] = field(default_factory=dict)


REGISTRY: dict[str, Benchmark] = {}
_LOADED = False
_ORIGIN: dict[str, str] = {}  # benchmark name -> the module that registered it


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Add ``bench`` to :data:`REGISTRY` (its config name, row names and CLI names must be new)."""
    if bench.name in REGISTRY:
        raise ValueError(f"benchmark {bench.name!r} is registered twice")
    taken = {r: b.name for b in REGISTRY.values() for r in b.rows}
    for r in bench.rows:
        if r in taken:
            raise ValueError(f"benchmark {bench.name!r}: result row {r!r} is already {taken[r]!r}'s")
    clis = {c.name: c for b in REGISTRY.values() for c in b.cli}
    for c in bench.cli:
        if c.name in clis and clis[c.name] is not c:
            raise ValueError(f"benchmark {bench.name!r}: --benchmark {c.name} is already another command")
    REGISTRY[bench.name] = bench
    _ORIGIN[bench.name] = sys._getframe(1).f_globals.get("__name__", "")
    return bench


def load() -> dict[str, Benchmark]:
    """Import every module of :data:`MODULES` (each registers its benchmarks) once; returns :data:`REGISTRY`, in
    the order of :data:`MODULES` (then of registration within a module, then of later registrations), whichever of
    them was imported first (a test importing :mod:`harness.eval.verification_bin` before anything else must not
    put its benchmark first)."""
    global _LOADED
    if not _LOADED:
        for m in MODULES:
            importlib.import_module(m)
        rank = {m: i for i, m in enumerate(MODULES)}
        ordered = sorted(REGISTRY.values(), key=lambda b: rank.get(_ORIGIN.get(b.name, ""), len(MODULES)))
        REGISTRY.clear()
        REGISTRY.update((b.name, b) for b in ordered)
        _LOADED = True
    return REGISTRY


def benchmarks() -> list[Benchmark]:
    return list(load().values())


def config_names() -> tuple[str, ...]:
    """The valid ``eval.benchmarks`` names, in registration order."""
    return tuple(load())


def get_benchmark(name: str) -> Benchmark:
    reg = load()
    if name not in reg:
        raise ValueError(f"config eval.benchmarks: unknown benchmark {name!r}; valid: {', '.join(reg)}")
    return reg[name]


def check_eval_config(eval_cfg) -> None:
    """``eval.benchmarks`` names registered benchmarks, and each one's own knobs are valid (its ``check``): a one-line
    ``ValueError`` ``config eval.benchmarks='X': expected one of ...`` otherwise. For config validation, before
    anything runs."""
    valid = config_names()
    for name in eval_cfg.benchmarks:
        if name not in valid:
            raise ValueError(f"config eval.benchmarks={name!r}: expected one of {', '.join(valid)}")
    for name in dict.fromkeys(eval_cfg.benchmarks):
        if REGISTRY[name].check is not None:
            REGISTRY[name].check(eval_cfg)


def row_names() -> tuple[str, ...]:
    """Every registered result-row name, in registration order."""
    return tuple(r for b in benchmarks() for r in b.rows)


def benchmark_of_row(row_name: str) -> Benchmark | None:
    return next((b for b in benchmarks() if row_name in b.rows), None)


def row_metrics(row: dict) -> dict[str, Any]:
    """``{compact key: raw value}`` of one result row, by the benchmark that writes it (a row no registered
    benchmark writes: ``{}``)."""
    b = benchmark_of_row(row.get("benchmark"))
    return b.metrics(row) if b is not None else {}


MISSING = object()  # metric_value: the row does not report the key


def metric_value(row: dict, key: str):
    """The number the compact key ``key`` names in a result row: a float, ``None`` (reported as undefined) or
    :data:`MISSING` (not reported). A value that is not a number is a ``ValueError``."""
    m = row_metrics(row)
    if key not in m:
        return MISSING
    v = m[key]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key} is {v!r}, not a number")
    return float(v)


def sections() -> tuple[Section, ...]:
    """The table sections: each benchmark's own, in registration order, then the shared ones (joined by id)."""
    own: list[Section] = []
    shared: dict[str, Section] = {}
    for b in benchmarks():
        for s in b.sections:
            if not s.shared:
                own.append(s)
            elif s.id in shared:
                prev = shared[s.id]
                shared[s.id] = Section(s.id, prev.title, prev.columns + s.columns, prev.claim + s.claim, True)
            else:
                shared[s.id] = s
    return tuple(own) + tuple(shared.values())


def cli_commands() -> dict[str, CliCommand]:
    """``{--benchmark name: command}`` in registration order (a command several benchmarks share appears once)."""
    out: dict[str, CliCommand] = {}
    for b in benchmarks():
        for c in b.cli:
            out.setdefault(c.name, c)
    return out


def metric_patterns() -> dict[str, re.Pattern]:
    """``{row name: regex of its compact metric keys}`` over every benchmark (``harness.report.paper_numbers`` checks
    the published numbers' metric names with it)."""
    return {row: p for b in benchmarks() for row, p in b.metric_patterns.items()}


def data_files(name: str, rec: str) -> dict[str, tuple[str, ...]]:
    """``{row: paths relative to the data root}`` of the benchmark with config or row name ``name`` (its
    ``data_files``; ``{}`` when it states none)."""
    b = REGISTRY.get(name) if name in load() else benchmark_of_row(name)
    return dict(b.data_files(name, rec)) if b is not None and b.data_files is not None else {}


def curves() -> tuple[Curve, ...]:
    return tuple(c for b in benchmarks() for c in b.curves)


def data_entries() -> tuple[DataEntry, ...]:
    return tuple(d for b in benchmarks() for d in b.data)


def evaluate_all(cfg, backbone, device: str, items: dict | None = None) -> list[dict]:
    """Every benchmark of ``cfg.eval.benchmarks``, in that order, through its registered ``evaluate``; each row gets
    ``seconds`` (the benchmark's wall time divided over its rows) and, in its ``knobs``, ``eval_amp``: the precision
    of the embedding pass this function applied (:func:`eval_precision`, from ``eval.amp``). With ``items`` (a dict),
    the per-item arrays are added to it as ``<row benchmark>/<array>``."""
    check_eval_config(cfg.eval)  # every name and knob, before the first evaluation starts
    want = items is not None
    rows: list[dict] = []
    with eval_precision(backbone, cfg.eval.amp == "on", device) as precision:
        for name in cfg.eval.benchmarks:
            bench = get_benchmark(name)
            t0 = time.perf_counter()
            found = bench.evaluate(cfg, backbone, device, want)
            if want:
                for row, arrays in found:
                    items.update({f"{row['benchmark']}/{key}": arr for key, arr in arrays.items()})
            found = [row for row, _ in found]
            seconds = (time.perf_counter() - t0) / max(len(found), 1)
            for row in found:
                row["seconds"] = seconds
                row["knobs"] = {**row.get("knobs", {}), "eval_amp": precision}
            rows += found
    return rows


@contextlib.contextmanager
def eval_precision(backbone, amp: bool, device: str):
    """The embedding pass's precision, set on ``backbone`` for the duration and restored afterwards; yields its name
    (``"float32"``, ``"bfloat16"`` on the CPU, ``"float16"`` on CUDA).

    ``amp`` on: the convolutional trunk runs under autocast and ``fc`` / ``features`` in float32, the backbone's own
    ``fp16`` switch (insightface's ``iresnet(fp16=True)``, which arcface_torch's verification callbacks evaluate
    with during training); off: float32 throughout, as the published IJB / TinyFace / IJB-S scripts run it, even for
    a model trained with AMP (the trainer hands over its backbone with ``fp16`` set). A backbone without that switch
    (not an IResNet) runs float32 when off and raises a one-line ``ValueError`` when on."""
    from harness.models.build import autocast_dtype

    has = hasattr(backbone, "fp16")
    if amp and not has:
        raise ValueError(f"config eval.amp='on': {type(backbone).__name__} has no fp16 trunk switch; use eval.amp=off")
    before = backbone.fp16 if has else False
    if has:
        backbone.fp16 = bool(amp)
    try:
        yield autocast_dtype(device) if amp else "float32"
    finally:
        if has:
            backbone.fp16 = before
