"""The `analyses` profile's summary tables (issue 20): one Markdown and one JSON file from the profile's outputs.

Read from the folder ``out`` of ``profiles/analyses/params.yaml`` (the profile's stages write them):

- ``stage1/<run>/metrics.json`` of every stage-1 run (``camera-<name>``, ``count-<n>``, ``q-<q>``): the FD of
  ``G(source)`` to the run's own target, the FD of the raw sources to it, and their ratio (the stage-1 quality
  measure of :mod:`harness.cfsm.analysis`);
- ``subspaces/subspace_similarity.json`` and ``subspaces_count/subspace_similarity.json`` (``harness.subspaces``):
  each generator's ``S(A, B)`` to the default camera's generator / to the all-crops generator (CFSM, ECCV 2022,
  Sec. 4.3: ``S(A, B) = 1/q sum_i cos(u_A_i + mu_A, u_B_i + mu_B)``);
- ``target_fd/target_fd.json`` (``harness.target_fd``): the count and q generators' FD ratio and identity cosine on
  one common target sample (the count runs' own held-out sets hold 20 to 500 crops, and FD is biased upward at
  small N, so only these ratios compare across target counts);
- ``downstream/<run>/metrics.json`` (``harness.run``'s compact metrics): ``cfsm_guided`` trained with that
  generator, on IJB-S and TinyFace;
- ``magface/metrics.json``: ``source_only`` with the MagFace head.

Reference rows: the default pipeline's ``results/metrics/<method>-s<seed>.json`` of ``source_only`` and
``cfsm_guided`` (mean and sample std over the seeds found), so one-seed differences between analysis points are
read against the seed spread. A file that is absent leaves its cells ``-`` (the table says which runs are missing);
a file that is present but malformed is a one-line error naming it.
"""

from __future__ import annotations

import glob
import os
import re
import statistics
from typing import Any

from harness.core.atomic import load_json_object

#: Downstream columns: (metrics.json benchmark, key, header). IJB-S ranks are the surveillance-to-still/booking/video
#: protocols' rank-1 (the paper's Table 3 columns); TinyFace rank-1 and rank-20 (its Table 4).
DOWNSTREAM = (
    ("IJB-S", "V2S.rank1", "IJB-S V2S R1"),
    ("IJB-S", "V2B.rank1", "IJB-S V2B R1"),
    ("IJB-S", "V2V.rank1", "IJB-S V2V R1"),
    ("TinyFace", "rank1", "TinyFace R1"),
    ("TinyFace", "rank20", "TinyFace R20"),
)
#: Every benchmark column of the MagFace comparison (IJB-B/C TAR@FAR too).
MAGFACE = (
    ("IJB-B", "tar@0.0001", "IJB-B 1e-4"),
    ("IJB-C", "tar@0.0001", "IJB-C 1e-4"),
) + DOWNSTREAM


def _json(path: str, what: str) -> dict | None:
    return load_json_object(path, what) if os.path.isfile(path) else None


def _stage1(out: str, run: str) -> dict[str, Any] | None:
    doc = _json(os.path.join(out, "stage1", run, "metrics.json"), "a stage-1 metrics.json")
    if doc is None:
        return None
    fd = doc.get("fd", {})
    return {
        "fd_synth_target": fd.get("synth_target"),
        "fd_source_target": fd.get("source_target"),
        "fd_ratio": fd.get("synth_over_source"),
        # mean cosine of the FR embeddings of x and G(x, o), o ~ N(0, I) (harness.cfsm.analysis)
        "identity_cos": doc.get("identity", {}).get("cos_synth"),
        "seconds": doc.get("train", {}).get("seconds"),
    }


def _similarity(out: str, folder: str, reference: str) -> dict[str, float]:
    """``{name: S(name, reference)}`` from one ``harness.subspaces`` output (empty when absent)."""
    doc = _json(os.path.join(out, folder, "subspace_similarity.json"), "a harness.subspaces document")
    if doc is None or reference not in doc.get("names", []):
        return {}
    j = doc["names"].index(reference)
    return {name: float(row[j]) for name, row in zip(doc["names"], doc["S"])}


def _metrics(path: str, columns=DOWNSTREAM) -> dict[str, float | None] | None:
    doc = _json(path, "a harness.run metrics file")
    if doc is None:
        return None
    return {header: doc.get(bench, {}).get(key) for bench, key, header in columns}


def _reference(metrics_dir: str, method: str, columns) -> dict[str, Any] | None:
    """Mean and sample std over the seeds of ``<metrics_dir>/<method>-s<seed>.json``."""
    files = sorted(
        p
        for p in glob.glob(os.path.join(metrics_dir, f"{glob.escape(method)}-s*.json"))
        if re.fullmatch(rf"{re.escape(method)}-s\d+\.json", os.path.basename(p))
    )
    rows = [_metrics(p, columns) for p in files]
    if not rows:
        return None
    out: dict[str, Any] = {"seeds": len(rows)}
    for _, _, header in columns:
        values = [r[header] for r in rows if r[header] is not None]
        out[header] = (
            None
            if not values
            else {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}
        )
    return out


def collect(params: dict, metrics_dir: str = "results/metrics") -> dict[str, Any]:
    """The summary document of one `analyses` profile (``params``: its params file, already read)."""
    out = params["out"]
    cameras = list(params.get("cameras", []))
    counts = [int(n) for n in params.get("target_counts", [])]
    qs = [int(q) for q in params.get("style_dims", [])]
    s_cam = _similarity(out, "subspaces", "default")
    s_count = _similarity(out, "subspaces_count", "n4000")
    doc: dict[str, Any] = {"format": "cfsm-bench/analyses-summary/1", "out": out}
    doc["cameras"] = [
        {"camera": c, **(_stage1(out, f"camera-{c}") or {}), "S_to_default": s_cam.get(c)} for c in cameras
    ]

    tfd_doc = _json(os.path.join(out, "target_fd", "target_fd.json"), "a harness.target_fd document")
    common = (tfd_doc or {}).get("generators", {})
    doc["common_target"] = (tfd_doc or {}).get("target")

    def point(stage1_run: str, downstream: str, common_name: str, **label) -> dict[str, Any]:
        row = {**label, **(_stage1(out, stage1_run) or {})}
        c = common.get(common_name) or {}
        row["fd_ratio_common"] = c.get("fd_synth_over_source")
        row["downstream"] = _metrics(os.path.join(out, "downstream", downstream, "metrics.json"))
        return row

    full = 4000  # the default camera's target folder holds every target crop of the release
    doc["target_count"] = [point(f"count-{n}", f"count-{n}", f"n{n}", n=n) for n in counts]
    doc["target_count"].append(point("camera-default", "full", f"n{full}", n=full))
    for row in doc["target_count"]:
        row["S_to_all"] = s_count.get("n4000" if row["n"] == full else f"n{row['n']}")
    doc["style_dim"] = [point(f"q-{q}", f"q-{q}", f"q{q}", q=q) for q in qs]
    doc["style_dim"].append(point("camera-default", "full", f"n{full}", q=10))
    doc["style_dim"].sort(key=lambda r: r["q"])
    doc["magface"] = _metrics(os.path.join(out, "magface", "metrics.json"), MAGFACE)
    doc["reference"] = {
        m: _reference(metrics_dir, m, MAGFACE if m == "source_only" else DOWNSTREAM)
        for m in ("source_only", "cfsm_guided")
    }
    return doc


def _num(v, pct: bool = False, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v:.{digits}f}"


def _ref_cell(ref: dict | None, header: str) -> str:
    if not ref or not ref.get(header):
        return "-"
    m, s = ref[header]["mean"], ref[header]["std"]
    return f"{100 * m:.2f}" + ("" if s is None else f" ± {100 * s:.2f}")


def markdown(doc: dict[str, Any]) -> str:
    """The three tables (cameras; target count; q) and the MagFace row, in %, SynthFace numbers only."""
    heads = [h for _, _, h in DOWNSTREAM]
    lines = [
        "# Analyses on SynthFace (profiles/analyses)",
        "",
        "SynthFace numbers, never the paper's. FD ratio = FD(G(source), target) / FD(source, target) of each",
        "stage-1 run (lower: closer to its target); identity cos = mean cosine of the stage-1 identity network's",
        'embeddings of x and G(x, o), o ~ N(0, I) (higher: identity kept). "own held-out": on a fifth of the run\'s',
        'own target folder (20 crops for 100; FD is biased upward at small N); "common sample": every run on the',
        "same independent target draw and the same held-out source images (harness.target_fd). Downstream:",
        "`cfsm_guided` trained with that generator, one seed, in %; the reference rows are the default pipeline's",
        "seeds (mean ± sample std).",
        "",
        "## Target domains (one stage-1 run per SynthFace camera)",
        "",
        "| camera | FD(G(src), target) | FD(src, target) | FD ratio | identity cos | S(camera, default) |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["cameras"]:
        lines.append(
            f"| {r['camera']} | {_num(r.get('fd_synth_target'))} | {_num(r.get('fd_source_target'))} | "
            f"{_num(r.get('fd_ratio'))} | {_num(r.get('identity_cos'))} | {_num(r.get('S_to_default'))} |"
        )

    def downstream_table(title: str, key: str, rows: list[dict], extra: str | None) -> None:
        cols = [key, "FD ratio (own held-out)", "FD ratio (common sample)", "identity cos"]
        cols += ([extra] if extra else []) + heads
        lines.extend(["", f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
        for r in rows:
            d = r.get("downstream") or {}
            cells = [str(r[key]), _num(r.get("fd_ratio")), _num(r.get("fd_ratio_common")), _num(r.get("identity_cos"))]
            if extra:
                cells.append(_num(r.get("S_to_all")))
            cells += [_num(d.get(h), pct=True) for h in heads]
            lines.append("| " + " | ".join(cells) + " |")
        for m in ("source_only", "cfsm_guided"):
            ref = doc["reference"].get(m)
            if ref:
                cells = [f"{m} (default pipeline, {ref['seeds']} seeds)", "-", "-", "-"] + (["-"] if extra else [])
                lines.append("| " + " | ".join(cells + [_ref_cell(ref, h) for h in heads]) + " |")

    downstream_table("How much unlabelled target data", "n", doc["target_count"], "S(n, all)")
    downstream_table("Subspace dimension q", "q", doc["style_dim"], None)
    mag_heads = [h for _, _, h in MAGFACE]
    lines.extend(["", "## MagFace head (source_only)", "", "| head | " + " | ".join(mag_heads) + " |"])
    lines.append("|" + "---|" * (len(mag_heads) + 1))
    if doc["magface"]:
        lines.append("| magface (seed 0) | " + " | ".join(_num(doc["magface"][h], pct=True) for h in mag_heads) + " |")
    ref = doc["reference"].get("source_only")
    if ref:
        row = [f"arcface (default pipeline, {ref['seeds']} seeds)"] + [_ref_cell(ref, h) for h in mag_heads]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def figure(doc: dict[str, Any]) -> bytes | None:
    """``summary.png``: stage-1 quality (FD ratio, identity cos, S to the all-crops generator) and the downstream
    numbers against the target count (log scale) and against q, each downstream column with the default pipeline's
    ``cfsm_guided`` seeds as a band (mean ± sample std) and ``source_only``'s mean as a dotted line. None when no
    point has a number."""
    rows = {"n": doc.get("target_count", []), "q": doc.get("style_dim", [])}
    if not any(r.get("fd_ratio") is not None or r.get("downstream") for rs in rows.values() for r in rs):  # nothing yet
        return None
    import matplotlib.figure

    from harness.core.figures import png_bytes, series_styles

    heads = [h for _, _, h in DOWNSTREAM]
    styles = series_styles(heads)
    quality = (
        ("fd_ratio_common", "FD ratio, common sample"),
        ("fd_ratio", "FD ratio, own held-out"),
        ("identity_cos", "identity cos"),
        ("S_to_all", "S(n, all crops)"),
    )
    qstyles = series_styles(k for k, _ in quality)
    fig = matplotlib.figure.Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    labels = {"n": "unlabelled target crops (stage 1)", "q": "subspace dimension q"}
    for col, key in enumerate(("n", "q")):
        pts = sorted(rows[key], key=lambda r: r[key])
        xs = [r[key] for r in pts]
        ax = axes[0][col]
        for k, name in quality:
            ys = [r.get(k) for r in pts]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name, **qstyles[k])
        ax.axhline(0.6, color="grey", linewidth=0.8, linestyle="--", label="FD ratio target 0.6")
        ax.set_title(f"stage 1 vs {key}")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        ref = doc.get("reference", {})
        for h in heads:
            ys = [(r.get("downstream") or {}).get(h) for r in pts]
            ax.plot(xs, [float("nan") if y is None else 100 * y for y in ys], marker="o", label=h, **styles[h])
            g = (ref.get("cfsm_guided") or {}).get(h)
            if g and g.get("std") is not None:
                lo, hi = 100 * (g["mean"] - g["std"]), 100 * (g["mean"] + g["std"])
                ax.axhspan(lo, hi, color=styles[h]["color"], alpha=0.12, linewidth=0)
            s = (ref.get("source_only") or {}).get(h)
            if s:
                ax.axhline(100 * s["mean"], color=styles[h]["color"], linestyle=":", linewidth=1)
        ax.set_title(f"cfsm_guided seed 0 vs {key} (band: default seeds, dotted: source_only)")
        ax.title.set_fontsize(9)
        ax.set_ylabel("%")
        ax.legend(fontsize=7, ncol=2)
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xlabel(labels[key])
            if key == "n":
                ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.minorticks_off()
    fig.suptitle("Analyses on SynthFace (not the paper's data): target count and q")
    fig.tight_layout()
    return png_bytes(fig)
