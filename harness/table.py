"""Markdown tables of every benchmark column, regenerated from result files alone (DomainBed's ``collect_results`` idea).

``python -m harness.table results/eval/*.json --out results/table.md``

Each result file is the document ``harness.run`` writes (method, seed, knobs, one row per benchmark). Cells are
percentages; with several seeds of one method they read ``mean ± std`` (sample std, n-1) and the seed count is
shown. Sections: IJB-B/C (1:1 TAR@FAR and joined-gallery 1:N Rank-1/5), IJB-S (V2S/V2B/V2V x Rank-1/5 and TPIR at
FPIR 1%/10%), TinyFace (Rank-1/5/20), and the domain gap (IJB pairs split by what the probe template holds:
clean stills only vs video frames). A section appears when some result has its benchmark; missing cells read
``-``. Every row's protocol knobs are listed under the tables.
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


def _far_label(far: str) -> str:
    return f"{float(far):.0e}".replace("e-0", "e-")


# (benchmark, column label, path into the result row): the paper's columns (CFSM README tables).
VERIFICATION = [
    (b, f"{b} {_far_label(f)}", ("tar_at_far", f)) for b in ("IJB-B", "IJB-C") for f in FARS
] + [(f"{b} 1:N", f"{b} {r}", ("joined", key)) for b in ("IJB-B", "IJB-C") for r, key in (("R1", "rank1"), ("R5", "rank5"))]
IJBS = [
    ("IJB-S", f"{p} {label}", (p, key))
    for p in ("V2S", "V2B", "V2V")
    for label, key in (("R1", "rank1"), ("R5", "rank5"), ("1%", "tpir@fpir=0.01"), ("10%", "tpir@fpir=0.1"))
]
TINYFACE = [("TinyFace", "R1", ("rank1",)), ("TinyFace", "R5", ("rank5",)), ("TinyFace", "R20", ("rank20",))]
GAP = [
    (b, f"{b} {part.replace('_', ' ')}", ("by_probe_media", part, "tar_at_far", GAP_FAR))
    for b in ("IJB-B", "IJB-C")
    for part in ("stills_only", "with_video")
]


def load_results(paths: list[str]) -> list[dict]:
    docs = []
    for p in sorted(paths):
        with open(p, encoding="utf-8") as f:
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


def _lookup(row: dict, path: tuple) -> float | None:
    node = row
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _table(by_method: dict[str, list[dict]], columns: list[tuple]) -> list[str]:
    head = ["method", "seeds"] + [label for _, label, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in sorted(by_method):
        runs = by_method[method]
        cells = []
        for bench, _, path in columns:
            cells.append(_cell([_lookup(r, path) for d in runs for r in d["results"] if r["benchmark"] == bench]))
        seeds = ",".join(str(s) for s in sorted({d["seed"] for d in runs}))
        lines.append("| " + " | ".join([method, seeds] + cells) + " |")
    return lines


def make_tables(docs: list[dict]) -> str:
    by_method: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_method[d["method"]].append(d)
    present = {r["benchmark"] for d in docs for r in d["results"]}
    out = ["# Results on SynthFace (a procedural stand-in benchmark: never compare with the paper's numbers)", ""]
    sections = [
        ("IJB-B / IJB-C: 1:1 TAR@FAR (%) and 1:N Rank-1/5 with the galleries joined (CFSM's columns)", VERIFICATION),
        ("IJB-S: Rank-1, Rank-5, TPIR at FPIR 1% and 10% (surveillance video to single / booking / surveillance)", IJBS),
        ("TinyFace: closed-set Rank-k with distractors", TINYFACE),
        (f"Domain gap: IJB TAR@FAR={_far_label(GAP_FAR)} for probes of clean stills vs probes holding degraded video frames", GAP),
    ]
    for title, columns in sections:
        columns = [c for c in columns if c[0] in present]
        if columns:
            out += [f"## {title}", "", *_table(by_method, columns), ""]
    knobs = sorted({json.dumps({"benchmark": r["benchmark"], **r.get("knobs", {})}, sort_keys=True) for d in docs for r in d["results"]})
    out += ["Protocol knobs of these rows:", ""] + [f"- `{k}`" for k in knobs]
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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
