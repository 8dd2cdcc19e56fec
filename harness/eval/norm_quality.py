"""Feature norm vs image quality on the IJB-B / IJB-C images (``python -m harness.norm_quality``).

The claim it tests: the magnitude of a face recognition model's un-normalised feature tracks the quality of the
face, by construction for MagFace (Meng, Zhao, Huang, Zhou, "MagFace: A Universal Representation for Face
Recognition and Quality Assessment", CVPR 2021: with its magnitude-aware margin and regulariser the feature magnitude
grows with how recognisable the face is), while ArcFace's loss, computed on normalised features, does not constrain
the magnitude (the head ``model.head=magface`` trains such a model here, :class:`harness.models.MagFaceHead`).
The quality signal is the one a real IJB user has: the detector faceness score of each image row, the last field of
``<t>_name_5pts_score.txt`` in insightface's IJB meta layout (``recognition/_evaluation_/ijb``: ``name x1 y1 ... x5
y5 faceness``; read by :func:`harness.data.ijb.read_name_5pts_score`). On SynthFace it falls with the hidden
degradation strength: frames of degraded videos score low, clean stills high.

::

    python -m harness.norm_quality --model NAME=CHECKPOINT [--model NAME2=CHECKPOINT2 ...] --release R
        [--benchmark IJB-C] [--bins 10] [--batch-size 64] [--device auto] [--crop-cache DIR] --out DIR

For each model (a ``harness.run`` checkpoint, loaded weights-only by :func:`harness.models.build.load_backbone`
and built from the run config it records: backbone, input size, channel order, head), every image row of the
benchmark's ``face_tid_mid`` list is embedded through the IJB evaluator's own extraction
(:meth:`harness.eval.ijb_verification.IJBVerification.extract_features`: loose crop, 5-point alignment at the
model's input size, channel order, ``(x/255-0.5)/0.5``, :func:`harness.eval.features.embed_batches`), with no flip
(one image, one norm), inside the crop cache of that benchmark (:func:`harness.eval.benchmarks.ijb_crop_cache`,
the key ``harness.run`` uses: ``--crop-cache .cache/crops`` reads the crops the pipeline's evaluation wrote). The
feature norm of a row is the L2 norm of its raw embedding (float64).

Rows are binned by faceness quantiles: the edges are the sample quantiles of the faceness scores at
``0, 1/bins, ..., 1`` (``np.quantile(method="lower")``: each edge is a score that occurs, so no bin is empty),
repeated edges merged (tied scores are never split, so a release with many equal scores gets fewer bins; the JSON
states the bins used); bin ``b`` holds the scores in ``[edge_b, edge_b+1)``, the last one also its upper edge.

Outputs in ``--out`` (each file written atomically):

- ``norm_quality.json``: the benchmark, release, rows, flip ``"none"``, the bin edges, the data provenance
  (SynthFace or real), and per model its checkpoint (path, sha256), the head, backbone and method its checkpoint
  records, the Spearman rank correlation of norm vs faceness (:func:`scipy.stats.spearmanr`, rho and two-sided p),
  the median norm over all rows, and per bin: faceness median, norm median, q25, q75 (and the same divided by the
  model's median norm), count.
- ``norm_quality.npz``: the per-row arrays, ``faceness`` and ``norm/<NAME>`` per model, in ``face_tid_mid`` order.
- ``norm_quality.png``: per model, the median norm over the model's overall median norm (so models of different
  norm scales compare) in each faceness bin with its q25-q75 band, at the bin's median faceness.

Errors (a ``--model`` without ``=``, a missing or foreign checkpoint, a release without the benchmark's folder, bad
meta files) are one line ``harness.norm_quality: <path>:<where>: <what>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import numpy as np

from harness.core.atomic import file_sha256, write_files_atomic, write_npz_atomic
from harness.core.errors import require_dir
from harness.core.runtime import report_error

FORMAT = "cfsm-norm-quality/1"
#: ``--benchmark`` (result-row name) -> the folder of insightface's IJB_release layout (registry config name)
BENCHMARKS = {"IJB-B": "IJBB", "IJB-C": "IJBC"}
FLIP = "none"
QUALITY = "detector faceness score (last field of <t>_name_5pts_score.txt, insightface IJB meta layout)"
NORM = "L2 norm of the raw (un-normalised) embedding of the aligned image, no flip"
BINNING = "faceness quantile edges (np.quantile method='lower'), repeated edges merged; bin = [edge_b, edge_b+1)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def parse_models(items: list[str]) -> dict[str, str]:
    """``["NAME=CHECKPOINT", ...]`` -> ``{NAME: CHECKPOINT}``, in order. A missing ``=``, an empty or unusable name
    (letters, digits, ``._+-``; it keys the npz arrays) or a repeated one is a one-line ``ValueError`` naming the
    argument."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"{item}:--model: expected NAME=CHECKPOINT")
        if not _NAME.match(name):
            raise ValueError(f"{path}:--model: the name {name!r} must be letters, digits and ._+- (NAME=CHECKPOINT)")
        if name in out:
            raise ValueError(f"{path}:--model: the name {name!r} is given twice")
        out[name] = path
    return out


def ijb_root(release: str, benchmark: str) -> str:
    """``<release>/IJB_release/<IJBB|IJBC>``, where the benchmark registry reads it (one-line error if absent)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"--benchmark {benchmark!r}: expected one of {', '.join(BENCHMARKS)}")
    root = os.path.join(release, "IJB_release", BENCHMARKS[benchmark])
    return require_dir(root, f"{benchmark} folder of the release (insightface IJB_release layout)")


def faceness_bins(faceness: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, bin of each row)`` of the quantile binning described in the module docstring."""
    f = np.asarray(faceness, dtype=np.float64)
    edges = np.unique(np.quantile(f, np.linspace(0.0, 1.0, int(bins) + 1), method="lower"))
    edges[-1] = f.max()  # the top edge is the largest score whatever the rounding of the last quantile
    index = np.searchsorted(edges[1:-1], f, side="right") if edges.shape[0] > 2 else np.zeros(f.shape[0], np.int64)
    return edges, index


def spearman(norms: np.ndarray, faceness: np.ndarray) -> dict[str, float | None]:
    """Spearman's rank correlation of norm vs faceness (:func:`scipy.stats.spearmanr`); None where undefined (a
    constant input)."""
    from scipy.stats import spearmanr

    rho, p = spearmanr(norms, faceness)
    return {"rho": None if np.isnan(rho) else float(rho), "p_value": None if np.isnan(p) else float(p)}


def bin_table(norms: np.ndarray, faceness: np.ndarray, edges: np.ndarray, index: np.ndarray) -> list[dict]:
    """Per bin (ascending faceness): its edges, faceness median, norm median / q25 / q75 (and each over the
    median norm of all rows), count."""
    overall = float(np.median(norms))
    table = []
    for b in range(max(edges.shape[0] - 1, 1)):
        sel = index == b
        n, f = norms[sel], faceness[sel]
        q25, med, q75 = (float(v) for v in np.quantile(n, [0.25, 0.5, 0.75]))
        table.append(
            {
                "faceness_lo": float(edges[b]),
                "faceness_hi": float(edges[min(b + 1, edges.shape[0] - 1)]),
                "faceness_median": float(np.median(f)),
                "norm_median": med,
                "norm_q25": q25,
                "norm_q75": q75,
                "relative_median": med / overall,
                "relative_q25": q25 / overall,
                "relative_q75": q75 / overall,
                "count": int(sel.sum()),
            }
        )
    return table


def model_norms(
    model, cfg, root: str, release: str, benchmark: str, batch_size: int, device: str, crop_folder: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(norms float64, faceness float32, crop cache record)`` of every image row of ``root``: the IJB evaluator's
    extraction with ``flip="none"`` at the model's input size and channel order, in the benchmark's crop cache."""
    from harness.eval.benchmarks import ijb_crop_cache
    from harness.eval.ijb_verification import IJBVerification, VerificationProtocol

    protocol = VerificationProtocol(flip=FLIP, align_size=cfg.data.input_size, channel_order=cfg.data.channel_order)
    ev = IJBVerification(root, protocol=protocol)
    with ijb_crop_cache(crop_folder, release, BENCHMARKS[benchmark], protocol.align_size) as cache:
        feats = ev.extract_features(model.to(device), batch_size=batch_size, device=device)
    record = {"folder": crop_folder, "passes": list(cache.status)} if cache is not None else "off"
    norms = np.linalg.norm(feats.astype(np.float64), axis=1)
    if not np.isfinite(norms).all():
        i = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"{root}:row {i + 1}: the model's feature of this image is not finite")
    return norms, ev.meta.faceness, record


def report(
    models: dict[str, str],
    release: str,
    benchmark: str = "IJB-C",
    bins: int = 10,
    batch_size: int = 64,
    device: str = "auto",
    crop_folder: str = "",
) -> tuple[dict, dict[str, np.ndarray]]:
    """``(JSON document, per-row arrays)`` for ``models`` (``{name: checkpoint}``) on ``benchmark`` of ``release``.
    Every input is checked (each checkpoint loaded) before the first image is embedded."""
    from harness.eval.provenance import data_provenance
    from harness.models.build import check_device, load_backbone

    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"--bins {bins!r}: expected an integer >= 1")
    root = ijb_root(release, benchmark)
    device = check_device(device)
    loaded = {name: load_backbone(path) for name, path in models.items()}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "benchmark": benchmark,
        "release": os.path.abspath(release),
        "ijb_root": os.path.abspath(root),
        "data": data_provenance(release, None, [benchmark])["benchmarks"][benchmark],
        "flip": FLIP,
        "quality": QUALITY,
        "norm": NORM,
        "binning": BINNING,
        "bins_requested": bins,
        "models": {},
    }
    arrays: dict[str, np.ndarray] = {}
    faceness = None
    for name, (backbone, cfg, state) in loaded.items():
        norms, face, record = model_norms(backbone, cfg, root, release, benchmark, batch_size, device, crop_folder)
        if faceness is None:
            faceness = face.astype(np.float64)
            edges, index = faceness_bins(faceness, bins)
            doc.update(rows=int(norms.shape[0]), bins=int(max(edges.shape[0] - 1, 1)), bin_edges=edges.tolist())
            arrays["faceness"] = face
        arrays[f"norm/{name}"] = norms
        recorded = state["config"]
        doc["models"][name] = {
            "checkpoint": os.path.abspath(models[name]),
            "sha256": file_sha256(models[name]),
            "head": recorded.get("model", {}).get("head"),
            "backbone": recorded.get("model", {}).get("backbone"),
            "method": recorded.get("method"),
            "input_size": cfg.data.input_size,
            "channel_order": cfg.data.channel_order,
            "spearman": spearman(norms, faceness),
            "median_norm": float(np.median(norms)),
            "bins": bin_table(norms, faceness, edges, index),
            "crop_cache": record,
        }
    return doc, arrays


def figure_png(doc: dict) -> bytes:
    """The figure described in the module docstring, as PNG bytes (:func:`harness.core.figures.png_bytes`)."""
    from matplotlib.figure import Figure

    from harness.core.figures import png_bytes, series_styles

    styles = series_styles(doc["models"])
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for name, m in doc["models"].items():
        x = [b["faceness_median"] for b in m["bins"]]
        st = styles[name]
        ax.fill_between(
            x,
            [b["relative_q25"] for b in m["bins"]],
            [b["relative_q75"] for b in m["bins"]],
            color=st["color"],
            alpha=0.18,
        )
        rho = m["spearman"]["rho"]
        label = f"{name} ({m['head']} head), Spearman {'-' if rho is None else f'{rho:+.3f}'}"
        ax.plot(x, [b["relative_median"] for b in m["bins"]], marker="o", ms=4, lw=1.6, label=label, **st)
    ax.axhline(1.0, color="grey", lw=0.8, alpha=0.6)
    data = "SynthFace (stand-in benchmark)" if doc["data"].get("kind") == "synthface" else f"data: {doc['release']}"
    ax.set_title(
        f"{doc['benchmark']}: feature norm vs detector faceness ({doc['rows']} images, no flip)\n{data}", fontsize=10
    )
    ax.set_xlabel(f"faceness score (median of each of {doc['bins']} faceness-quantile bins)")
    ax.set_ylabel("feature norm / the model's median norm\n(line: median, band: q25-q75)")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize=8)
    return png_bytes(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.norm_quality",
        description="Feature norm vs detector faceness on the IJB-B/C images, per model (MagFace's quality claim)",
    )
    ap.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT", help="a harness.run model")
    ap.add_argument("--release", required=True, help="the release holding IJB_release/IJBB or IJB_release/IJBC")
    ap.add_argument("--benchmark", choices=tuple(BENCHMARKS), default="IJB-C", help="default IJB-C")
    ap.add_argument("--bins", type=int, default=10, help="faceness quantile bins (default 10)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:N]")
    ap.add_argument("--crop-cache", default="", metavar="DIR", help="harness.run's crop cache folder (default: none)")
    ap.add_argument("--out", required=True, help="folder for norm_quality.json, .npz and .png")
    args = ap.parse_args(argv)
    try:
        models = parse_models(args.model)
        doc, arrays = report(
            models, args.release, args.benchmark, args.bins, args.batch_size, args.device, args.crop_cache
        )
        png = figure_png(doc)
        import json

        os.makedirs(args.out, exist_ok=True)
        write_npz_atomic(arrays, os.path.join(args.out, "norm_quality.npz"))
        text = json.dumps(doc, indent=2, allow_nan=False, sort_keys=True) + "\n"
        write_files_atomic(
            {os.path.join(args.out, "norm_quality.json"): text, os.path.join(args.out, "norm_quality.png"): png}
        )
    except (ValueError, OSError) as exc:
        return report_error("harness.norm_quality", exc)
    for name, m in doc["models"].items():
        rho = m["spearman"]["rho"]
        print(f"{name}: Spearman(norm, faceness) = {'-' if rho is None else f'{rho:+.4f}'} over {doc['rows']} images")
    print(f"wrote {os.path.join(args.out, 'norm_quality.json')} (.npz, .png)")
    return 0
