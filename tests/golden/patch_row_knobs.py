"""Rewrite the ``knobs`` of result documents (``harness.run`` layout) so that each row carries its evaluator's
knobs, as ``harness.run`` writes them since issue 15; numbers are never touched.

    python tests/golden/patch_row_knobs.py golden tests/golden/tables/results
    python tests/golden/patch_row_knobs.py committed results/eval

Before issue 15, ``harness.run`` overwrote each row's knobs with one run-wide dict (so IJB-S rows said flip
``sum``, score ``cosine``, faceness on). Each row is rebuilt from the document's ``config`` (its defaults where a
document has none, as the made-up golden inputs) and the row's own evaluator-stated lists (``fars``, ``ranks``,
``fpirs``), exactly as :func:`harness.run.evaluate_model` builds the evaluators, plus the run-level facts of
:func:`harness.run.result_knobs`.

``golden``: the made-up inputs of ``tests/test_tables.py``: the knobs the current evaluators state.
``committed``: results computed before issue 15's tie fixes; their numbers come from the evaluators of that time,
so the knobs that changed with the fixes say what ran then (IJB-S: lower column first, thresholds compared in
float64, booking galleries in first-appearance order; IJB-B/C 1:N open set: lower index first; TinyFace: the given
features L2-normalised again, identical rows not forced to tie).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from harness.core.atomic import write_json_atomic
from harness.core.config import RunConfig
from harness.eval.ijb_identification import identification_knobs
from harness.eval.ijb_verification import VerificationProtocol
from harness.eval.ijbs import IJBSSettings
from harness.eval.tinyface import TinyFaceSettings
from harness.run import result_knobs

#: what ran before issue 15, where it differs from the current evaluators (mode "committed")
BEFORE_ISSUE_15 = {
    "IJB-S": {
        "score_dtype": "float32 (thresholds and comparisons in float64)",
        "threshold_rule": (
            "non-mated max scores descending; k = int(n * fpir); thr = s[k-1], or s[0] + 1e-08 if k == 0; "
            "compared in float64"
        ),
        "ties": "lower gallery column first (G1 before G2; evaluated before issue 15)",
        "gallery_order": "single: file order; booking: first appearance; video: file order",
    },
    "1:N": {
        "ties": (
            "joined and open_set: lower gallery index first (evaluated before issue 15); "
            "gallery templates in template-id order"
        ),
    },
    "TinyFace": {
        "feature_norm": (
            "none in extraction; the evaluator L2-normalised the given features (evaluated before issue 15)"
        ),
        "score": (
            "float32 inner product of the given features, each row L2-normalised first; "
            "identical rows not forced to tie"
        ),
        "l2_normalize": True,
    },
}


def _config(doc: dict) -> RunConfig:
    cfg = RunConfig()
    c = doc.get("config")
    if not c:  # made-up documents: the defaults, with the flip their knobs recorded (run-wide, or an IJB row's)
        rows = [r.get("knobs", {}) for r in doc["results"] if r["benchmark"] in ("IJB-B", "IJB-C", "TinyFace")]
        flip = doc.get("knobs", {}).get("flip") or next((k["flip"] for k in rows if "flip" in k), cfg.eval.flip)
        return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, flip=flip))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data,
            release=c["data"]["release"],
            input_size=c["data"]["input_size"],
            channel_order=c["data"]["channel_order"],
        ),
        eval=dataclasses.replace(
            cfg.eval, flip=c["eval"]["flip"], faceness=c["eval"]["faceness"], image_norm=c["eval"]["image_norm"]
        ),
    )


def row_knobs(cfg: RunConfig, row: dict, mode: str) -> dict:
    b, old = row["benchmark"], row.get("knobs", {})
    protocol = VerificationProtocol(
        flip=cfg.eval.flip,
        faceness=cfg.eval.faceness,
        image_norm=cfg.eval.image_norm,
        align_size=cfg.data.input_size,
        channel_order=cfg.data.channel_order,
        **({"fars": tuple(float(x) for x in old["fars"])} if "fars" in old else {}),
    )
    if b in ("IJB-B", "IJB-C"):
        knobs = protocol.knobs()
    elif b.endswith(" 1:N"):
        knobs = identification_knobs(protocol) | (BEFORE_ISSUE_15["1:N"] if mode == "committed" else {})
    elif b == "IJB-S":
        extra = {k: tuple(old[k]) for k in ("ranks", "fpirs") if k in old}
        knobs = IJBSSettings(
            channel_order=cfg.data.channel_order,
            input_size=cfg.data.input_size,
            frame_norm=cfg.eval.image_norm,
            **extra,
        ).knobs()
        knobs |= BEFORE_ISSUE_15["IJB-S"] if mode == "committed" else {}
    elif b == "TinyFace":
        extra = {"ranks": tuple(old["ranks"])} if "ranks" in old else {}
        knobs = TinyFaceSettings(
            flip=cfg.eval.flip,
            channel_order=cfg.data.channel_order,
            input_size=cfg.data.input_size,
            ties=old.get("ties", "high_index_first"),
            **extra,
        ).knobs()
        knobs |= BEFORE_ISSUE_15["TinyFace"] if mode == "committed" else {}
    else:
        raise ValueError(f"unknown benchmark {b!r}")
    return {**result_knobs(cfg), **knobs}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("golden", "committed"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    mode, folder = argv
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        cfg = _config(doc)
        for row in doc["results"]:
            row["knobs"] = row_knobs(cfg, row, mode)
        doc["knobs"] = result_knobs(cfg)
        if mode == "golden":  # the layout tests/test_tables.py writes (indent 1, sorted keys)
            text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        else:
            write_json_atomic(doc, path)
        print(f"patched {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
