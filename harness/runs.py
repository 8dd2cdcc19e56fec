"""``python -m harness.runs [STORE] [--metric BENCHMARK:KEY ...] [--json]``: list the runs of a Sacred run store.

``STORE`` is what ``out=`` of ``harness.run`` names (default ``results/runs``): a FileStorage folder, or a database
URL: ``sqlite:///runs.db``, ``postgresql://HOST/DB`` (Sacred's SqlObserver), ``mongodb://HOST/DB`` (Sacred's
MongoObserver; needs ``pymongo``). One row per run: id, method, seed, hparams_seed (``hp``), status, start,
duration, host and key metrics in percent (IJB-B / IJB-C TAR@FAR=1e-3, IJB-S V2S rank-1, TinyFace rank-1; ``--metric
IJB-B:tar@0.0001`` picks others, by their ``harness.run`` compact keys). ``--json`` prints the rows as JSON.
The tables (``harness.tables``) keep reading result files; this command is for watching a team's runs.
Errors (a missing folder, an unreachable database) are one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

PROG = "harness.runs"


def main(argv: list[str] | None = None) -> int:
    from harness.core.runtime import redact_url, report_error
    from harness.report.runstore import KEY_METRICS, format_runs, list_runs

    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    ap.add_argument(
        "store", nargs="?", default="results/runs", help="a run folder or a database URL (default results/runs)"
    )
    ap.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="BENCHMARK:KEY",
        help="a metric column (repeatable; replaces the default ones), e.g. IJB-B:tar@0.0001",
    )
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        metrics = KEY_METRICS
        if args.metric:
            metrics = []
            for spec in args.metric:
                bench, sep, key = spec.rpartition(":")
                if not sep or not bench or not key:
                    raise ValueError(f"--metric {spec!r}: expected BENCHMARK:KEY, e.g. IJB-B:tar@0.0001")
                metrics.append((bench, key, f"{bench} {key}"))
        rows = list_runs(args.store)
    except Exception as exc:  # noqa: BLE001 - one line, exit 2 (CFSM_TRACEBACK=1 shows the traceback)
        return report_error(PROG, exc)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    elif not rows:
        print(f"{redact_url(args.store)}: no runs")
    else:
        print(format_runs(rows, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
