"""Markdown tables of TAR@FAR, regenerated from result files alone (DomainBed's ``collect_results`` idea).

``python -m harness.table results/eval/*.json --out results/table.md``

Each result file is the document ``harness.run`` writes (method, seed, knobs, one row per benchmark). Cells are
percentages; with several seeds of one method they read ``mean ± std`` (sample std, n-1) and the seed count is
shown. A second table splits IJB pairs by what the probe template holds (clean stills only vs video frames):
the domain gap a method should close. Missing cells read ``-``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict

FARS = ("0.0001", "0.001", "0.01")
GAP_FAR = "0.001"


def load_results(paths: list[str]) -> list[dict]:
    docs = []
    for p in sorted(paths):
        with open(p) as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:line {exc.lineno}: not a result file ({exc.msg})") from None
        for key in ("method", "seed", "results"):
            if key not in doc:
                raise ValueError(f"{p}:field {key}: missing; not a harness.run result file")
        doc["_path"] = p
        docs.append(doc)
    return docs


def _cell(values: list[float]) -> str:
    vals = [100 * v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _far_label(far: str) -> str:
    return f"{float(far):.0e}".replace("e-0", "e-")


def make_tables(docs: list[dict]) -> str:
    by_method: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_method[d["method"]].append(d)
    benchmarks = sorted({r["benchmark"] for d in docs for r in d["results"]})
    head = ["method", "seeds"] + [f"{b} TAR@FAR={_far_label(f)}" for b in benchmarks for f in FARS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gap_head = ["method"] + [f"{b} {part} TAR@FAR={_far_label(GAP_FAR)}" for b in benchmarks for part in ("stills only", "with video")]
    gap = ["| " + " | ".join(gap_head) + " |", "|" + "---|" * len(gap_head)]
    for method in sorted(by_method):
        runs = by_method[method]
        cells, gap_cells = [], []
        for b in benchmarks:
            rows = [r for d in runs for r in d["results"] if r["benchmark"] == b]
            cells += [_cell([r["tar_at_far"].get(f) for r in rows]) for f in FARS]
            for part in ("stills_only", "with_video"):
                gap_cells.append(_cell([r.get("by_probe_media", {}).get(part, {}).get("tar_at_far", {}).get(GAP_FAR) for r in rows]))
        seeds = ",".join(str(s) for s in sorted({d["seed"] for d in runs}))
        lines.append("| " + " | ".join([method, seeds] + cells) + " |")
        gap.append("| " + " | ".join([method] + gap_cells) + " |")
    knobs = sorted({json.dumps(r.get("knobs", {}), sort_keys=True) for d in docs for r in d["results"]})
    out = ["## IJB-B / IJB-C 1:1 verification (SynthFace, not the paper's data)", "", *lines, "",
           "## Domain gap: probes of clean stills vs probes holding degraded video frames", "", *gap, "",
           "Protocol knobs of these rows:", ""]
    out += [f"- `{k}`" for k in knobs]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.table", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="result JSON files or folders holding them")
    ap.add_argument("--out", help="write the Markdown here (atomically) as well as to stdout")
    args = ap.parse_args(argv)
    paths = []
    for p in args.results:
        paths += sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p]
    try:
        text = make_tables(load_results(paths))
    except (ValueError, FileNotFoundError) as exc:
        print(f"harness.table: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
