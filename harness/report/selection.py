"""Model selection without the test sets (``harness.tables --select validation``).

DomainBed's protocol (Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021, section 3 and
its ``model_selection.py``): every method gets the same number of hyperparameter draws; for each method the draw
with the best mean over training seeds of a *validation* metric is selected, and only that draw's test numbers are
reported; an *oracle* selection (the draw with the best test metric) is shown beside it for contrast only, since
selecting on test data inflates every number.

A draw is one method's resolved hyperparameters: the result document's ``hparams_seed`` and ``hparams`` (written by
``harness.run``); its runs are the training seeds with those hyperparameters. The validation metric is a compact
metric key of a validation row (default: ``tar@0.001`` of ``Validation 1:1``, the ``val11`` benchmark,
:mod:`harness.eval.validation`, whose identities no test benchmark has). Ties go to the smaller ``hparams_seed``
(then the first in file order). A draw whose runs do not report the validation metric cannot be selected; a method
with no draw that reports it is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.report.cells import md_table, pct, signed
from harness.report.documents import ResultDocument
from harness.report.sections import MISSING, row_value

__all__ = [
    "Draw",
    "Selection",
    "draw_key",
    "group_draws",
    "draw_mean",
    "select",
    "parse_metric",
    "selection_markdown",
    "selection_csv",
    "DEFAULT_VALIDATION",
    "DEFAULT_ORACLE",
]

DEFAULT_VALIDATION = "Validation 1:1:tar@0.001"
DEFAULT_ORACLE = "IJB-C:tar@0.001"


def parse_metric(text: str, what: str) -> tuple[str, str]:
    """``ROW:KEY`` (the row's benchmark name, then a compact metric key; the row name may hold colons, as
    ``IJB-B 1:N:joined.rank1``) -> ``(row, key)``."""
    row, sep, key = text.rpartition(":")
    if not sep or not row or not key:
        raise ValueError(f"{what} {text!r}: expected ROW:KEY, e.g. {DEFAULT_VALIDATION!r}")
    return row, key


def draw_key(run: ResultDocument) -> tuple[str, object, str]:
    """(method, hparams_seed, the resolved hparams as canonical JSON)."""
    return run.method, run.hparams_seed, json.dumps(run.hparams, sort_keys=True)


@dataclass
class Draw:
    """One hyperparameter draw of a method and its runs (one per training seed)."""

    method: str
    hparams_seed: object
    hparams: dict
    runs: list[ResultDocument]
    label: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


def group_draws(runs: Sequence[ResultDocument]) -> dict[str, list[Draw]]:
    """``{method: [Draw]}``, draws in order of ``hparams_seed`` (then first appearance); two runs of one draw with
    the same training seed are an error."""
    found: dict[tuple, Draw] = {}
    for r in runs:
        k = draw_key(r)
        d = found.setdefault(k, Draw(r.method, r.hparams_seed, r.hparams, []))
        other = next((x for x in d.runs if x.seed == r.seed), None)
        if other is not None:
            raise ValueError(
                f"{r.path}: method {r.method} seed {r.seed} with the same hyperparameters is also in {other.path}"
            )
        d.runs.append(r)
    out: dict[str, list[Draw]] = {}
    for d in found.values():
        out.setdefault(d.method, []).append(d)
    for _method, draws in out.items():
        draws.sort(key=lambda d: (d.hparams_seed is None, d.hparams_seed if isinstance(d.hparams_seed, int) else 0))
        seeds = [d.hparams_seed for d in draws]
        for d in draws:
            d.label = f"h{d.hparams_seed}"
            if seeds.count(d.hparams_seed) > 1:  # same hparams_seed, other fixed overrides
                d.label += "-" + hashlib.sha256(json.dumps(d.hparams, sort_keys=True).encode()).hexdigest()[:6]
    return dict(sorted(out.items()))


def draw_mean(draw: Draw, row: str, key: str) -> tuple[float | None, int]:
    """(mean over the draw's seeds of ``key`` in row ``row``, the number of seeds that have it); None when none."""
    vals = []
    for r in draw.runs:
        if row in r.rows:
            v = row_value(r.rows[row], key)
            if v is not MISSING and v is not None and math.isfinite(v):
                vals.append(v)
    return (float(np.mean(vals)) if vals else None), len(vals)


@dataclass
class Selection:
    method: str
    draws: list[Draw]
    selected: Draw
    validation: float  # the selected draw's validation metric (mean over seeds)
    oracle: Draw | None  # the draw best on the oracle's test metric (None: no draw reports it)
    selected_test: float | None  # the selected draw's oracle metric
    oracle_test: float | None
    ties: int = 1  # draws sharing the best validation value


def _best(draws: list[Draw], row: str, key: str) -> tuple[Draw | None, float | None, int]:
    scored = [(d, draw_mean(d, row, key)[0]) for d in draws]
    scored = [(d, v) for d, v in scored if v is not None]
    if not scored:
        return None, None, 0
    top = max(v for _, v in scored)
    best = [d for d, v in scored if v == top]
    return best[0], top, len(best)  # draws are in hparams_seed order: ties go to the smaller one


def select(runs: Sequence[ResultDocument], validation: tuple[str, str], oracle: tuple[str, str]) -> list[Selection]:
    """Per method, the draw selected on ``validation`` (row, key) and the oracle draw on ``oracle`` (row, key)."""
    out = []
    for method, draws in group_draws(runs).items():
        chosen, val, ties = _best(draws, *validation)
        if chosen is None:
            raise ValueError(
                f"method {method}: none of its {len(draws)} draws reports {validation[0]} {validation[1]} "
                f"(evaluate the validation benchmark, e.g. eval.benchmarks=...,val11, or name another "
                f"with --select-metric ROW:KEY)"
            )
        best, best_test, _ = _best(draws, *oracle)
        out.append(Selection(method, draws, chosen, val, best, draw_mean(chosen, *oracle)[0], best_test, ties))
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else pct(x)


def selection_markdown(
    sel: list[Selection], validation: tuple[str, str], oracle: tuple[str, str], level: str = "##"
) -> list[str]:
    """The selection: per method the draws, the selected one and its validation number, and the oracle contrast."""
    budget = {s.method: len(s.draws) for s in sel}
    equal = len(set(budget.values())) <= 1
    head = (
        f"Each method's hyperparameter draw selected on `{validation[0]}` `{validation[1]}` (mean over the draw's "
        f"training seeds; a validation release sharing no identity with any test set); the tables show the "
        f"selected draws' test numbers only. **Oracle** (for contrast only, never a result): the draw best on the "
        f"test metric `{oracle[0]}` `{oracle[1]}`, which selection on test data would have picked."
    )
    out = [f"{level} Model selection on validation", "", head, ""]
    if not equal:
        counts = ", ".join(f"`{m}` {n} draw{'s' if n != 1 else ''}" for m, n in budget.items())
        out += [
            f"**Unequal tuning budget**: {counts} (the protocol gives every method the same number of draws; "
            f"compare with care).",
            "",
        ]
    rows = []
    for s in sel:
        diff = "-" if s.selected_test is None or s.oracle_test is None else signed(s.selected_test - s.oracle_test)
        rows.append(
            [
                s.method,
                str(len(s.draws)),
                s.selected.label + (f" ({s.ties}-way tie)" if s.ties > 1 else ""),
                ", ".join(map(str, s.selected.seeds)),
                pct(s.validation),
                _num(s.selected_test),
                f"{s.oracle.label} (oracle)" if s.oracle else "-",
                _num(s.oracle_test),
                diff,
            ]
        )
    out += md_table(
        [
            "method",
            "draws",
            "selected draw",
            "seeds",
            f"validation {validation[1]} %",
            f"test {oracle[0]} {oracle[1]} %",
            "oracle draw",
            f"oracle test {oracle[1]} %",
            "selected − oracle",
        ],
        rows,
    )
    out += ["", "Selected hyperparameters:", ""]
    out += [
        f"- `{s.method}` {s.selected.label} (hparams_seed {s.selected.hparams_seed}): "
        f"`{json.dumps(s.selected.hparams, sort_keys=True)}`"
        for s in sel
    ]
    return out + [""]


def selection_csv(sel: list[Selection], validation: tuple[str, str], oracle: tuple[str, str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["method", "selection", "draws", "draw", "hparams_seed", "hparams", "seeds", "metric_row", "metric", "value"]
    )
    for s in sel:
        picks = [("validation", s.selected, validation, s.validation)]
        picks.append(("validation", s.selected, oracle, s.selected_test))
        if s.oracle is not None:
            picks.append(("oracle", s.oracle, oracle, s.oracle_test))
        for kind, d, (row, key), v in picks:
            w.writerow(
                [
                    s.method,
                    kind,
                    len(s.draws),
                    d.label,
                    d.hparams_seed,
                    json.dumps(d.hparams, sort_keys=True),
                    ";".join(map(str, d.seeds)),
                    row,
                    key,
                    "" if v is None else f"{100 * v:.4f}",
                ]
            )
    return buf.getvalue()
