"""``python -m harness.analysis_table [--params profiles/analyses/params.yaml] [--metrics results/metrics]``: the
`analyses` profile's summary (target cameras, target count, q, MagFace) as ``<out>/summary.md``,
``summary.json`` and the figure ``summary.png``, from the profile's outputs alone (:mod:`harness.report.analyses`)."""

from __future__ import annotations

import argparse
import os

from harness.core.atomic import write_atomic, write_json_atomic
from harness.core.config import read_yaml
from harness.core.runtime import report_error
from harness.report.analyses import collect, figure, markdown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.analysis_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="profiles/analyses/params.yaml", help="the analyses profile's params file")
    ap.add_argument("--metrics", default="results/metrics", help="the default pipeline's metrics (reference rows)")
    args = ap.parse_args(argv)
    try:
        params = read_yaml(args.params)
        if not isinstance(params, dict) or not isinstance(params.get("out"), str):
            raise ValueError(f"{args.params}:out: expected the profile's output folder (a string)")
        doc = collect(params, args.metrics)
        os.makedirs(params["out"], exist_ok=True)
        write_json_atomic(doc, os.path.join(params["out"], "summary.json"))
        text = markdown(doc)
        png = figure(doc)
        if png is not None:
            write_atomic(os.path.join(params["out"], "summary.png"), lambda f: f.write(png), binary=True)
        write_atomic(os.path.join(params["out"], "summary.md"), lambda f: f.write(text))
    except (ValueError, OSError) as exc:
        return report_error("harness.analysis_table", exc)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
