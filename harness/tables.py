"""Paper-style tables, confidence intervals, paired method differences and the reproduction report.

``python -m harness.tables [RESULTS_DIR_OR_FILES ...] --out-dir results/tables --report results/REPORT.md
[--paper results/paper | --no-paper] [--n-boot 1000] [--seed 0] [--reference source_only] [--params params.yaml]
[--select validation [--select-metric ROW:KEY] [--oracle-metric ROW:KEY]]``

The parts live in :mod:`harness.report`: ``documents`` (reading the result files), ``sections`` (the columns, from
the benchmark registry), ``summary`` (the bootstrap and the cells), ``cells`` (number formats and marks),
``markdown`` / ``latex`` / ``csv_table`` (the outputs), ``published`` (the published numbers), ``generators`` (the
CFSM generator's quality under each CFSM row) and ``selection`` (``--select validation``: each method's
hyperparameter draw selected on a validation metric, the oracle for contrast; also writes ``selection.md`` and
``selection.csv``).

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
a cell whose model is a published one (:func:`harness.report.paper_numbers.published_model`: ``source_only`` =
"ArcFace", ``cfsm_guided`` = "ArcFace+CFSM" with an r50 ArcFace head trained on MS1MV2 = ``faces_emore``, and so on)
gets the published number of the same benchmark and metric beside it, with ours - published and our CI shifted by it.
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
  entirely above 0, ``▼`` (``$\\downarrow$``) when it lies entirely below 0; no mark when it includes 0 (an endpoint at
  exactly 0 counts as including it). At 95 % per cell, about one cell in twenty is marked by chance when nothing
  differs: there is no multiple-comparison correction.
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
import os
import sys
import time

from harness.core.atomic import write_files_atomic
from harness.core.runtime import maybe_traceback
from harness.eval.registry import Column, Section
from harness.report.bootstrap import TopTarAtFar
from harness.report.csv_table import CSV_COLUMNS, tables_csv
from harness.report.documents import one_line
from harness.report.latex import tables_tex
from harness.report.markdown import report_markdown, tables_markdown
from harness.report.paper_numbers import DEFAULT_DIR as PAPER_DIR
from harness.report.sections import COLUMNS, SECTIONS, TABLE_FARS
from harness.report.selection import (
    DEFAULT_ORACLE,
    DEFAULT_VALIDATION,
    Selection,
    parse_metric,
    select,
    selection_csv,
    selection_markdown,
)
from harness.report.summary import Tables, build_tables, load_runs

__all__ = [
    "Column",
    "Section",
    "SECTIONS",
    "COLUMNS",
    "CSV_COLUMNS",
    "TABLE_FARS",
    "TopTarAtFar",
    "Tables",
    "load_runs",
    "build_tables",
    "render",
    "selected_tables",
    "write_files_atomic",
    "main",
]

PROG = "harness.tables"


def render(t: Tables, tables_dir: str = "tables", selection: list[str] | None = None) -> dict[str, str]:
    """``{file name: text}`` of the four outputs; ``tables_dir``: the tables' folder relative to the report's;
    ``selection``: the model-selection section, put into the report before the tables."""
    return {
        "tables.md": tables_markdown(t),
        "tables.tex": tables_tex(t),
        "tables.csv": tables_csv(t),
        "REPORT.md": report_markdown(t, tables_dir, selection or []),
    }


def selected_tables(
    paths,
    n_boot: int,
    seed: int,
    reference: str,
    paper,
    validation: str = DEFAULT_VALIDATION,
    oracle: str = DEFAULT_ORACLE,
) -> tuple[Tables, list[Selection], tuple, tuple]:
    """``--select validation``: every result document under ``paths`` (recursively), each method's draw selected on
    the validation metric (:func:`harness.report.selection.select`), and the tables of the selected draws' runs."""
    val, orc = parse_metric(validation, "--select-metric"), parse_metric(oracle, "--oracle-metric")
    runs = load_runs(paths, recursive=True, unique=False)
    sel = select(runs, val, orc)
    chosen = [r for s in sel for r in s.selected.runs]
    return build_tables(paths, n_boot, seed, reference, paper, runs=chosen), sel, val, orc


def write_all(texts: dict[str, str]) -> None:
    """Every ``{path: text}`` written as one step (:func:`harness.core.atomic.write_files_atomic`): a failure leaves no
    file, new or temporary."""
    write_files_atomic(texts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    ap.add_argument(
        "results", nargs="*", default=["results/eval"], help="result JSON files or folders (default results/eval)"
    )
    ap.add_argument("--out-dir", default="results/tables", help="where tables.md, tables.tex, tables.csv go")
    ap.add_argument("--report", default="results/REPORT.md", help="the report's path")
    ap.add_argument(
        "--paper", nargs="+", default=[PAPER_DIR], help="published-number CSV files or folders (default results/paper)"
    )
    ap.add_argument("--no-paper", action="store_true", help="leave out the published numbers")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subject draws (default 0)")
    ap.add_argument("--reference", default="source_only", help="the method every other one is compared with")
    ap.add_argument(
        "--params",
        help="read only the results this params file lists (methods, cfsm_methods x seeds) "
        "from the results folder given first, ignoring anything else in it; further "
        "result files or folders after it (e.g. results/imported/*.json of "
        "`harness.import_weights --evaluate --result`) join the table in full",
    )
    ap.add_argument(
        "--select",
        choices=["validation"],
        help="model selection: read every <method>-s<seed>.json "
        "under the folders (a sweep's job folders), select each method's hyperparameter draw on the "
        "validation metric and report the selected draws' test numbers, with an oracle (test-selected) "
        "draw for contrast; also writes selection.md and selection.csv",
    )
    ap.add_argument(
        "--select-metric",
        default=DEFAULT_VALIDATION,
        metavar="ROW:KEY",
        help=f"the validation metric of --select (default {DEFAULT_VALIDATION!r})",
    )
    ap.add_argument(
        "--oracle-metric",
        default=DEFAULT_ORACLE,
        metavar="ROW:KEY",
        help=f"the test metric of the oracle shown for contrast (default {DEFAULT_ORACLE!r})",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        results = args.results
        if args.select:
            if args.params:
                raise ValueError("--select reads every result under the folders given; it does not take --params")
            t, sel, val, orc = selected_tables(
                results,
                args.n_boot,
                args.seed,
                args.reference,
                None if args.no_paper else args.paper,
                args.select_metric,
                args.oracle_metric,
            )
            rel = os.path.relpath(os.path.abspath(args.out_dir), os.path.dirname(os.path.abspath(args.report)))
            block = selection_markdown(sel, val, orc)
            texts = render(t, rel.replace(os.sep, "/"), block)
            texts["selection.md"] = "\n".join(["# Model selection", "", *selection_markdown(sel, val, orc, "")[2:]])
            texts["selection.csv"] = selection_csv(sel, val, orc)
        elif args.params:
            from harness.core.pipeline import configured_results

            if not os.path.isdir(results[0]):
                raise ValueError(
                    f"--params: {results[0]}: the first input must be the results folder the params file describes"
                )
            results = configured_results(args.params, results[0]) + list(results[1:])
        if not args.select:
            t = build_tables(results, args.n_boot, args.seed, args.reference, None if args.no_paper else args.paper)
            rel = os.path.relpath(os.path.abspath(args.out_dir), os.path.dirname(os.path.abspath(args.report)))
            texts = render(t, rel.replace(os.sep, "/"))
    except (ValueError, OSError, KeyError) as exc:
        maybe_traceback(exc)  # CFSM_TRACEBACK=1
        print(f"{PROG}: {one_line(exc)}", file=sys.stderr)
        return 2
    outs = {os.path.join(args.out_dir, k): v for k, v in texts.items() if k != "REPORT.md"}
    outs[args.report] = texts["REPORT.md"]
    try:
        write_all(outs)
    except OSError as exc:
        maybe_traceback(exc)
        print(f"{PROG}: {one_line(exc)}", file=sys.stderr)
        return 2
    print(
        f"{PROG}: {len(t.runs)} results, {len(t.methods)} methods, {t.n_boot} resamples; wrote {', '.join(outs)} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
