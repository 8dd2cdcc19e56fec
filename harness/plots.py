"""ROC (IJB-B/IJB-C 1:1) and CMC (TinyFace, IJB-S) plots from result files alone.

``python -m harness.plots [RESULTS_DIR] --out-dir results/plots`` (RESULTS_DIR defaults to ``results/eval``)

Inputs: every ``<method>-s<seed>.json`` result document in RESULTS_DIR (written by :mod:`harness.run`) and the
per-item arrays beside it (``<method>-s<seed>.items.npz``, the file the document's ``"items"`` field names). No model,
no dataset: only these files are read.

Outputs (each written to a temporary file first, then all moved into place with ``os.replace``; nothing is written
when any input is bad):

- ``roc_ijbb.png``, ``roc_ijbc.png``: TAR against FAR, log x from the smallest resolvable FAR (1 / impostor pairs)
  to 1, one curve per method; the evaluator's reported TAR@FAR values are marked with dots.
- ``cmc_tinyface.png``: identification rate against rank 1..20; ``cmc_ijbs.png``: V2S / V2B / V2V panels.
- ``data/roc_ijbb.csv``, ``data/roc_ijbc.csv`` (``method,far,tar``: a log-spaced grid of ~100 FARs per method from
  1 / impostor pairs to 1 plus exactly the evaluator's FARs) and ``data/cmc_tinyface.csv``, ``data/cmc_ijbs.csv``
  (``method,protocol,rank,rate``), for ``dvc plots``.

A plot whose benchmark no result holds is not written (and a stale copy of it in the output folder is removed).

``python -m harness.plots --dvc-templates .dvc/plots`` only writes the two Vega-Lite templates (:data:`DVC_TEMPLATES`)
that let ``dvc plots show`` draw the CSVs with one line per method (DVC's built-in templates cannot: see there).

Definitions (all from the evaluator, so that the plots agree with ``results/table.md`` digit for digit):

- ROC vertices: :func:`harness.eval.roc.roc_curve` = ``sklearn.metrics.roc_curve(labels, scores)`` with
  ``drop_intermediate=True`` (see that module's docstring). :func:`roc_points` returns them.
- The plotted TAR at a FAR ``f`` is insightface's TAR@FAR rule (``recognition/_evaluation_/ijb/ijb_11.py``:
  reversed ROC arrays, first vertex minimising ``|fpr - f|``, TAR = its ``tpr``; no interpolation), computed by the
  evaluator's own :func:`harness.eval.roc.tar_at_far_from_roc` on each grid FAR. At every vertex FAR this is the
  empirical ROC; between two vertex FARs it switches at the midpoint. This is what makes the plotted curve pass
  through the reported TAR@FAR values *at the reported FARs*: the usual right-continuous staircase does not (at a
  FAR nearer to the next vertex, insightface reports that vertex's TAR). Before plotting, the TAR@FAR recomputed
  from the items must equal the result document's ``tar_at_far`` (else the pair is rejected as mismatched).
- CMC: ``rate(k)`` = share of *mated* probes whose mate is among the k best-scored gallery entries
  (AdaFace/PFE ``DIR_FAR`` at FAR = 1, as :class:`harness.report.bootstrap.RankK` with ``denominator="mated"``), from
  the 0-based mate rank arrays the evaluators save: ``TinyFace/first_mate``
  (:func:`harness.eval.tinyface.closed_set_cmc`) and ``IJB-S/<protocol>/mate_rank``
  (:func:`harness.eval.ijbs.identification_metrics`); ``-1`` = unmated probe (left out of the denominator), a value
  ``>= cap`` = mate not in the top ``cap``, where ``cap`` = the largest rank the evaluator reported (``knobs.ranks`` of
  the row: 20 for TinyFace, 10 for IJB-S by default). Rates beyond ``cap`` are unknown from the items, so a CMC is drawn
  to ``min(20, cap)`` only. The recomputed rates at the reported ranks must equal the document's ``rank<k>``.
- Several seeds of one method: one curve, the *mean over seeds* of TAR at each grid FAR (vertical averaging,
  Fawcett 2006, "An introduction to ROC analysis", section 7.1) and of the rate at each rank; the legend says how
  many seeds. The CSVs hold the same means, under the method's name. With one seed it is that seed's curve.
- Titles carry "SynthFace (stand-in benchmark)" when every plotted result's data release (``config.data.release``)
  is a SynthFace release (a folder holding ``synthface.json``, or a path with a component naming ``synthface``; a
  document without the field used the harness default, ``datasets/synthface/default``); otherwise the release
  paths are named.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.atomic import write_files_atomic
from harness.core.errors import DataFormatError
from harness.core.figures import png_bytes, series_styles
from harness.eval.registry import curves as registry_curves
from harness.eval.roc import roc_curve, tar_at_far_from_roc
from harness.report.documents import ResultDocument, load_named

__all__ = [
    "roc_points",
    "tar_on_grid",
    "far_grid",
    "cmc",
    "load_runs",
    "write_plots",
    "write_dvc_templates",
    "main",
    "CMC_MAX_RANK",
    "DVC_TEMPLATES",
]

CMC_MAX_RANK = 20
CSV_POINTS = 100  # log-spaced FARs per method in the CSVs (plus the evaluator's FARs)
PNG_POINTS = 400  # denser for the PNG curves
DPI = 100
SYNTHFACE_LABEL = "SynthFace (stand-in benchmark)"
# The curves come from the benchmark registry (harness.eval.registry: each benchmark's ``curves``).
VERIFICATION = tuple((c.row, c.stem) for c in registry_curves() if c.kind == "roc")
CMC = tuple((c.row, c.stem) for c in registry_curves() if c.kind == "cmc")
IJBS_PROTOCOLS = ("V2S", "V2B", "V2V")
IJBS_TITLES = {
    "V2S": "V2S (surveillance video to single still)",
    "V2B": "V2B (video to booking)",
    "V2V": "V2V (video to video)",
}
OUTPUT_STEMS = tuple(c.stem for c in registry_curves())


# ---------------------------------------------------------------------------------------------------- metrics


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)``: the ROC vertices exactly as the evaluator computes them (:func:`harness.eval.roc.roc_curve`,
    i.e. ``sklearn.metrics.roc_curve(labels, scores)`` with ``drop_intermediate=True``: one candidate vertex per
    distinct score, collinear ones dropped, ``(0, 0)`` prepended). ``labels``: 1 genuine, 0 impostor; ``scores``:
    higher = more similar. Raises ``ValueError`` for non-finite scores or without genuine or impostor pairs."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def tar_on_grid(fpr, tpr, fars) -> np.ndarray:
    """TAR at each FAR of ``fars`` by the evaluator's rule (:func:`harness.eval.roc.tar_at_far_from_roc`: TPR of the
    nearest ROC vertex, the larger one on ties), as an array in the order of ``fars``."""
    fars = [float(x) for x in fars]
    got = tar_at_far_from_roc(fpr, tpr, fars)
    return np.array([got[x] for x in fars], dtype=np.float64)


def far_grid(n_impostor: int, fars: Sequence[float] = (), points: int = CSV_POINTS) -> np.ndarray:
    """``points`` log-spaced FARs from ``1 / n_impostor`` (the smallest resolvable FAR) to 1, merged with ``fars``
    (kept exactly, even below ``1 / n_impostor``); sorted, no duplicates."""
    if n_impostor < 1:
        raise ValueError(f"n_impostor must be >= 1, got {n_impostor}")
    grid = np.logspace(-math.log10(n_impostor), 0.0, int(points))
    grid[0], grid[-1] = 1.0 / n_impostor, 1.0
    return np.unique(np.concatenate([grid, np.asarray([float(x) for x in fars], dtype=np.float64)]))


def cmc(ranks, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: ``out[k - 1]`` = share of mated probes whose 0-based mate rank is ``< k``,
    for k = 1..``max_rank`` (Rank-k as :class:`harness.report.bootstrap.RankK`). ``ranks``: integers, ``-1`` (any
    negative) for an unmated probe, left out of the denominator. All NaN when no probe is mated. Non-decreasing in k."""
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {r.shape}")
    if r.dtype.kind not in "iu":
        raise ValueError(f"ranks must be integers (0-based mate ranks, -1 unmated), got {r.dtype}")
    max_rank = int(max_rank)
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    mated = r[r >= 0].astype(np.int64)
    if mated.size == 0:
        return np.full(max_rank, np.nan)
    counts = np.bincount(np.minimum(mated, max_rank), minlength=max_rank + 1)[:max_rank]
    return np.cumsum(counts) / mated.size


# ---------------------------------------------------------------------------------------------------- inputs


Run = ResultDocument  # one result document and its per-item arrays (harness.report.documents)


def load_runs(results_dir: str, only: list[str] | None = None) -> list[Run]:
    """Every ``<method>-s<seed>.json`` in ``results_dir`` (sorted; ``only``: just these file names) with its items
    file (:func:`harness.report.documents.load_named`: the file the document's ``items`` field names, else
    ``<stem>.items.npz``)."""
    return load_named(results_dir, only)


def _is_synthface(release: str) -> bool:
    if os.path.isfile(os.path.join(release, "synthface.json")):
        return True
    return any("synthface" in part.lower() for part in re.split(r"[\\/]+", release))


def data_label(runs: Sequence[Run]) -> str:
    """The title line naming the data: :data:`SYNTHFACE_LABEL` when every run used a SynthFace release."""
    releases = sorted({r.release for r in runs})
    other = [rel for rel in releases if not _is_synthface(rel)]
    if not other:
        return SYNTHFACE_LABEL
    if len(other) == len(releases):
        return "data: " + ", ".join(other)
    return f"mixed data: {SYNTHFACE_LABEL} and " + ", ".join(other)


# ---------------------------------------------------------------------------------------------------- series


@dataclass
class RocSeries:
    method: str
    seeds: list[int]
    min_far: float  # 1 / impostor pairs
    csv_far: np.ndarray
    csv_tar: np.ndarray
    png_far: np.ndarray
    png_tar: np.ndarray
    eval_far: np.ndarray  # the evaluator's FARs
    eval_tar: np.ndarray  # mean over seeds of the reported TAR@FAR


@dataclass
class CmcSeries:
    method: str
    seeds: list[int]
    protocol: str
    rates: np.ndarray  # rates[k - 1], k = 1..len


def _number(path: str, where: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(path, where, f"must be a number, got {value!r}")
    return float(value)


def _same(a: float | None, b: float) -> bool:
    if a is None:
        return math.isnan(b)
    return not math.isnan(b) and abs(a - b) <= 1e-12


def _by_method(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.method, r.seed)):
        out.setdefault(r.method, []).append(r)
    return out


def roc_series(runs: list[Run], benchmark: str) -> list[RocSeries]:
    """One :class:`RocSeries` per method holding ``benchmark`` (mean over its seeds); checks every run's items
    against its document's ``tar_at_far``."""
    per_method = _by_method([r for r in runs if r.row(benchmark) is not None])
    out = []
    for method, group in per_method.items():
        rocs = []
        for run in group:
            row = run.row(benchmark)
            where = f"{benchmark}.tar_at_far"
            reported = row.get("tar_at_far")
            if not isinstance(reported, dict) or not reported:
                raise DataFormatError(run.path, where, "missing or empty")
            try:
                fars = {float(k): _number(run.path, f"{where}.{k}", v) for k, v in reported.items()}
            except ValueError as exc:
                if isinstance(exc, DataFormatError):
                    raise
                raise DataFormatError(run.path, where, f"keys must be FARs, got {sorted(reported)}") from None
            key_s, key_l = f"{benchmark}/scores", f"{benchmark}/labels"
            scores, labels = run.array(key_s), run.array(key_l)
            if scores.ndim != 1 or labels.shape != scores.shape:
                raise DataFormatError(
                    run.items_path, key_l, f"shape {labels.shape} does not match {key_s} {scores.shape}"
                )
            try:
                fpr, tpr = roc_points(scores, labels)
            except ValueError as exc:
                raise DataFormatError(run.items_path, key_l if "label" in str(exc) else key_s, str(exc)) from None
            got = tar_on_grid(fpr, tpr, list(fars))
            for (far, want), have in zip(fars.items(), got.tolist()):
                if not _same(want, have):
                    raise DataFormatError(
                        run.items_path,
                        key_s,
                        f"TAR@FAR={far:g} from these scores is {have!r} but "
                        f"{run.path} reports {want!r}: items and result do not match",
                    )
            n_imp = int(np.count_nonzero(np.asarray(labels) == 0))
            rocs.append((fpr, tpr, n_imp, sorted(fars)))
        n_imp = min(n for _, _, n, _ in rocs)
        eval_far = np.array(sorted({f for *_, fs in rocs for f in fs}))
        csv_far = far_grid(n_imp, eval_far, CSV_POINTS)
        png_far = far_grid(n_imp, eval_far, PNG_POINTS)

        def mean(grid, rocs=rocs):
            return np.mean([tar_on_grid(fpr, tpr, grid) for fpr, tpr, *_ in rocs], axis=0)

        out.append(
            RocSeries(
                method,
                [r.seed for r in group],
                1.0 / n_imp,
                csv_far,
                mean(csv_far),
                png_far,
                mean(png_far),
                eval_far,
                mean(eval_far),
            )
        )
    return out


def _ranks_of(run: Run, key: str, cap: int) -> np.ndarray:
    r = run.array(key)
    if r.ndim != 1 or r.dtype.kind not in "iu":
        raise DataFormatError(
            run.items_path, key, f"must be a 1-D integer array of 0-based mate ranks, got {r.dtype} {r.shape}"
        )
    if r.size and (r.min() < -1 or r.max() > cap):
        raise DataFormatError(
            run.items_path,
            key,
            f"ranks must lie in -1..{cap} (cap = largest reported rank), found {int(r.min())}..{int(r.max())}",
        )
    return r


def _cap(run: Run, row: dict, where: str) -> tuple[int, list[int]]:
    ranks = row.get("knobs", {}).get("ranks") if isinstance(row.get("knobs"), dict) else None
    if not isinstance(ranks, list) or not ranks or not all(isinstance(k, int) and k >= 1 for k in ranks):
        raise DataFormatError(run.path, f"{where}.knobs.ranks", f"must be a list of ranks >= 1, got {ranks!r}")
    return max(ranks), ranks


def cmc_series(runs: list[Run], benchmark: str) -> list[CmcSeries]:
    """CMC per method (mean over seeds) and protocol for ``"TinyFace"`` or ``"IJB-S"`` (V2S, V2B, V2V); checks the
    rates at the reported ranks against the document."""
    out = []
    for method, group in _by_method([r for r in runs if r.row(benchmark) is not None]).items():
        protocols = IJBS_PROTOCOLS if benchmark == "IJB-S" else ("TinyFace",)
        for proto in protocols:
            curves = []
            for run in group:
                row = run.row(benchmark)
                cap, reported = _cap(run, row, benchmark)
                key = "TinyFace/first_mate" if benchmark == "TinyFace" else f"IJB-S/{proto}/mate_rank"
                block = row if benchmark == "TinyFace" else row.get(proto)
                if not isinstance(block, dict):
                    raise DataFormatError(run.path, f"{benchmark}.{proto}", "missing")
                rates = cmc(_ranks_of(run, key, cap), min(CMC_MAX_RANK, cap))
                full = cmc(run.array(key), cap)
                for k in reported:
                    name = f"{benchmark}.{proto}.rank{k}" if benchmark == "IJB-S" else f"{benchmark}.rank{k}"
                    if f"rank{k}" not in block:
                        raise DataFormatError(run.path, name, "missing")
                    want = _number(run.path, name, block[f"rank{k}"])
                    if not _same(want, float(full[k - 1])):
                        raise DataFormatError(
                            run.items_path,
                            key,
                            f"Rank-{k} from these ranks is {float(full[k - 1])!r} but "
                            f"{run.path} reports {want!r}: items and result do not match",
                        )
                curves.append(rates)
            n = min(len(c) for c in curves)
            out.append(CmcSeries(method, [r.seed for r in group], proto, np.mean([c[:n] for c in curves], axis=0)))
    return out


# ---------------------------------------------------------------------------------------------------- output


def _csv_bytes(header: Sequence[str], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([repr(float(x)) if isinstance(x, (float, np.floating)) else x for x in row])
    return buf.getvalue().encode("utf-8")


def _label(method: str, seeds: list[int]) -> str:
    return method if len(seeds) == 1 else f"{method} (mean of {len(seeds)} seeds)"


def _roc_png(series: list[RocSeries], benchmark: str, label: str, styles: dict) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    left = min(s.min_far for s in series)
    for s in series:
        st = styles[s.method]
        ax.plot(s.png_far, s.png_tar, lw=1.6, label=_label(s.method, s.seeds), **st)
        shown = s.eval_far >= left * (1 - 1e-12)
        ax.plot(s.eval_far[shown], s.eval_tar[shown], ls="none", marker="o", ms=4, color=st["color"])
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    lo = min(float(np.min(s.png_tar[s.png_far >= left])) for s in series)
    ax.set_ylim(max(0.0, math.floor(lo * 10) / 10 - 0.02), 1.005)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_title(f"{benchmark} 1:1 verification ROC\n{label}", fontsize=11)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(loc="lower right", fontsize=9, title="dots: reported TAR@FAR", title_fontsize=8)
    return png_bytes(fig, DPI)


def _cmc_axes(ax, series: list[CmcSeries], styles: dict, title: str) -> None:
    top = 1
    for s in series:
        ranks = np.arange(1, len(s.rates) + 1)
        top = max(top, len(s.rates))
        ax.plot(ranks, s.rates, marker="o", ms=3, lw=1.4, label=_label(s.method, s.seeds), **styles[s.method])
    ax.set_xlim(0.5, top + 0.5)
    ax.set_xticks(sorted({1, *range(5, top + 1, 5), top}))
    ax.set_xlabel("rank")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.4)


def _ylim(ax, series: list[CmcSeries]) -> None:
    vals = np.concatenate([s.rates[~np.isnan(s.rates)] for s in series] or [np.zeros(0)])
    lo = float(vals.min()) if vals.size else 0.0
    ax.set_ylim(max(0.0, math.floor(lo * 10) / 10 - 0.02), 1.005)


def _cmc_tinyface_png(series: list[CmcSeries], label: str, styles: dict) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    _cmc_axes(ax, series, styles, f"TinyFace closed-set identification CMC\n{label}")
    _ylim(ax, series)
    ax.set_ylabel("identification rate (mated probes)")
    ax.legend(loc="lower right", fontsize=9)
    return png_bytes(fig, DPI)


def _cmc_ijbs_png(series: list[CmcSeries], label: str, styles: dict) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.4), layout="constrained")
    axes = fig.subplots(1, len(IJBS_PROTOCOLS), sharey=True)
    for ax, proto in zip(axes, IJBS_PROTOCOLS):
        _cmc_axes(ax, [s for s in series if s.protocol == proto], styles, IJBS_TITLES[proto])
    _ylim(axes[0], series)
    axes[0].set_ylabel("identification rate (mated probes)")
    axes[-1].legend(loc="lower right", fontsize=9)
    cap = max(len(s.rates) for s in series)
    note = f" (ranks beyond {cap} not saved by the evaluator)" if cap < CMC_MAX_RANK else ""
    fig.suptitle(f"IJB-S closed-set identification CMC{note} - {label}", fontsize=11)
    return png_bytes(fig, DPI)


def _render(runs: list[Run]) -> dict[str, bytes]:
    """Every output file (relative path -> bytes), computed fully in memory: all inputs are checked before any
    figure is drawn."""
    roc = {stem: (bench, roc_series(runs, bench)) for bench, stem in VERIFICATION}
    cmcs = {stem: (bench, cmc_series(runs, bench)) for bench, stem in CMC}
    styles = series_styles({r.method for r in runs})
    label = lambda bench: data_label([r for r in runs if r.row(bench) is not None])  # noqa: E731
    files: dict[str, bytes] = {}
    for stem, (bench, series) in roc.items():
        if series:
            files[os.path.join("data", f"{stem}.csv")] = _csv_bytes(
                ("method", "far", "tar"), ((s.method, f, t) for s in series for f, t in zip(s.csv_far, s.csv_tar))
            )
            files[f"{stem}.png"] = _roc_png(series, bench, label(bench), styles)
    for stem, (bench, series) in cmcs.items():
        if series:
            files[os.path.join("data", f"{stem}.csv")] = _csv_bytes(
                ("method", "protocol", "rank", "rate"),
                (
                    (s.method, s.protocol, k, float(v))
                    for s in series
                    for k, v in enumerate(s.rates, 1)
                    if not math.isnan(v)
                ),
            )
            png = _cmc_tinyface_png if bench == "TinyFace" else _cmc_ijbs_png
            files[f"{stem}.png"] = png(series, label(bench), styles)
    return files


# ---------------------------------------------------------------------------------------------------- dvc templates

#: Vega-Lite templates for ``dvc plots`` (DVC 3.x custom templates: ``.dvc/plots/<name>.json``, anchors as in
#: https://dvc.org/doc/command-reference/plots/templates). DVC's built-in templates (``linear``, ``simple``,
#: ``scatter``) colour and group by revision / file / field only, so the long CSVs here (one ``method`` column)
#: would be drawn as one line through every method; these colour by ``method`` (dash by ``rev`` for ``dvc plots
#: diff``). ``by_method_logx`` has a log FAR axis; ``by_method`` has one column per ``protocol`` (IJB-S panels).
DVC_TEMPLATES: dict[str, dict] = {
    name: {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": "<DVC_METRIC_DATA>"},
        "title": {"text": "<DVC_METRIC_TITLE>", "anchor": "middle"},
        "width": 420 if log else 300,
        "height": 320 if log else 260,
        "mark": {"type": "line", "point": not log, "tooltip": {"content": "data"}},
        "encoding": {
            "x": {
                "field": "<DVC_METRIC_X>",
                "type": "quantitative",
                "title": "<DVC_METRIC_X_LABEL>",
                **({"scale": {"type": "log"}} if log else {}),
            },
            "y": {
                "field": "<DVC_METRIC_Y>",
                "type": "quantitative",
                "title": "<DVC_METRIC_Y_LABEL>",
                "scale": {"zero": False},
            },
            "color": {"field": "method", "type": "nominal"},
            "strokeDash": {"field": "rev", "type": "nominal"},
            **(
                {}
                if log
                else {"column": {"field": "protocol", "type": "nominal", "title": None, "sort": list(IJBS_PROTOCOLS)}}
            ),
        },
    }
    for name, log in (("by_method_logx", True), ("by_method", False))
}


def write_dvc_templates(folder: str) -> list[str]:
    """Write :data:`DVC_TEMPLATES` as ``<folder>/<name>.json`` (atomically); returns the paths."""
    files = {f"{name}.json": (json.dumps(t, indent=2) + "\n").encode("utf-8") for name, t in DVC_TEMPLATES.items()}
    return _install(folder, files)


def _install(out_dir: str, files: dict[str, bytes]) -> list[str]:
    """Every ``{name relative to out_dir: bytes}`` written as one step
    (:func:`harness.core.atomic.write_files_atomic`)."""
    return write_files_atomic({os.path.join(out_dir, rel): data for rel, data in files.items()})


def write_plots(
    results_dir: str = "results/eval", out_dir: str = "results/plots", only: list[str] | None = None
) -> list[str]:
    """Read every result in ``results_dir``, write the PNGs into ``out_dir`` and the CSVs into ``out_dir/data``;
    returns the paths written. All inputs are read and checked and all outputs rendered before anything is written;
    a plot no result has data for is not written and an old copy of it is removed. Raises
    :class:`~harness.core.errors.DataFormatError` (or ``FileNotFoundError``) naming the bad file."""
    runs = load_runs(results_dir, only)
    try:
        files = _render(runs)
    finally:
        for r in runs:
            r.close()
    written = _install(out_dir, files)
    for stem in OUTPUT_STEMS:
        for rel in (f"{stem}.png", os.path.join("data", f"{stem}.csv")):
            if rel not in files and os.path.isfile(os.path.join(out_dir, rel)):
                os.unlink(os.path.join(out_dir, rel))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.plots", description=__doc__.split("\n")[0])
    ap.add_argument(
        "results_dir",
        nargs="?",
        default="results/eval",
        help="folder of <method>-s<seed>.json results (default: %(default)s)",
    )
    ap.add_argument(
        "--out-dir", default="results/plots", help="where the PNGs (and data/*.csv) go (default: %(default)s)"
    )
    ap.add_argument("--params", help="plot only the results this params file lists (methods, cfsm_methods x seeds)")
    ap.add_argument(
        "--dvc-templates",
        metavar="DIR",
        help="only write the Vega-Lite templates for dvc plots "
        "(by_method_logx.json, by_method.json) into DIR, e.g. .dvc/plots, and exit",
    )
    args = ap.parse_args(argv)
    try:
        if args.dvc_templates:
            written = write_dvc_templates(args.dvc_templates)
        else:
            only = None
            if args.params:
                from harness.core.pipeline import configured_results

                only = [os.path.basename(p) for p in configured_results(args.params, args.results_dir)]
            written = write_plots(args.results_dir, args.out_dir, only)
    except (ValueError, OSError) as exc:
        print(f"harness.plots: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
