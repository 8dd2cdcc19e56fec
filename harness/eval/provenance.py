"""Where a result's data came from: SynthFace (the procedural stand-in) or the real benchmarks, per dataset.

A SynthFace release says so itself: :func:`harness.synthface.generate.generate` writes ``synthface.json`` (format
version, configuration, counts) at the release root. Anything else is the real dataset that ``harness.check_data``
names at that place. A data root may be assembled from symbolic links (``<root>/faces_emore -> .../faces_synthface``,
``<root>/IJB_release -> ...``, as the README's paper section describes), so every dataset is followed to its real
path and the folders above it are searched for a ``synthface.json``: a root can hold SynthFace and real datasets
side by side, and each is labelled as what it is.

The provenance entry of a result document (``doc["data"]``, written by :func:`data_provenance`)::

    {"root": "<config data.release>",
     "source": {"rec": "faces_emore", "kind": "real", "train_set": "MS1MV2"},            # absent if no rec given
     "benchmarks": {"IJB-B": {"kind": "synthface", "release": "/abs/synthface/release",
                              "synthface": {"format_version": 1, "size": "tiny", "seed": 0, "sha256": "..."}},
                    "TinyFace": {"kind": "real"}, ...}}

``kind`` is ``synthface``, ``real``, ``mixed`` (a dataset made of several folders that disagree, e.g. a SynthFace
``tinyface/`` with a real aligned copy) or ``unknown`` (none of its folders exists here). Benchmarks are keyed by the
result rows' names (``IJB-B`` covers the ``IJB-B 1:N`` row too). ``train_set`` is the published name of the
training set (the names ``results/paper/*.csv`` use) when the RecordIO folder is a known insightface release,
``SynthFace`` for a SynthFace source, else ``None`` (never matched with a published number).

:func:`doc_provenance` reads a result document's entry; a document without one (written before the entry existed)
falls back to computing it now from ``config.data.release`` (``config.data.rec``), and a document with neither
(e.g. a hand-made one) is ``unknown``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.core.errors import DataFormatError

__all__ = [
    "KINDS",
    "BENCHMARK_PATHS",
    "REC_TRAIN_SETS",
    "data_provenance",
    "dataset_kind",
    "DataProvenance",
    "doc_provenance",
    "row_benchmark",
    "data_label",
]

KINDS = ("synthface", "real", "mixed", "unknown")
MANIFEST = "synthface.json"

#: result-row benchmark -> the folders of the data root that benchmark reads (harness.check_data's layout)
BENCHMARK_PATHS = {
    "IJB-B": ("IJB_release/IJBB",),
    "IJB-C": ("IJB_release/IJBC",),
    "IJB-S": ("IJB-S",),
    "TinyFace": ("tinyface", "aligned_pad_0.1_pad_high"),
}
_CONFIG_NAMES = {"IJBB": "IJB-B", "IJBC": "IJB-C", "IJBS": "IJB-S", "TinyFace": "TinyFace"}

#: insightface RecordIO folder names (insightface ``recognition/_datasets_/README.md``, the dataset zoo) -> the
#: training-set names of the published tables (CFSM and AdaFace READMEs: MS1MV2 = MS1M-ArcFace = ``faces_emore``)
REC_TRAIN_SETS = {
    "faces_emore": "MS1MV2",
    "ms1m-retinaface-t1": "MS1MV3",
    "faces_webface_112x112": "CASIA-WebFace",
    "faces_umd": "UMDFace",
    "faces_vgg_112x112": "VGGFace2",
    "glint360k": "Glint360K",
}
_MAX_UP = 4  # folders above a dataset's real path searched for synthface.json


def row_benchmark(name: str) -> str:
    """The data key of a result-row benchmark or a config benchmark name: ``IJB-B 1:N`` and ``IJBB`` -> ``IJB-B``."""
    name = _CONFIG_NAMES.get(name, name)
    return name[: -len(" 1:N")] if name.endswith(" 1:N") else name


def _synthface_release(path: str) -> str | None:
    """The SynthFace release folder holding ``path`` (the nearest folder at or above its real path with a
    ``synthface.json``), or None."""
    p = os.path.realpath(path)
    for _ in range(_MAX_UP + 1):
        if os.path.isfile(os.path.join(p, MANIFEST)):
            return p
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return None


def _manifest_summary(release: str) -> dict:
    path = os.path.join(release, MANIFEST)
    with open(path, "rb") as f:
        raw = f.read()
    out: dict = {"sha256": hashlib.sha256(raw).hexdigest()}
    try:
        m = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return out
    if isinstance(m, dict):
        cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
        out.update(
            {
                k: v
                for k, v in (
                    ("format_version", m.get("format_version")),
                    ("size", cfg.get("size")),
                    ("seed", cfg.get("seed")),
                )
                if v is not None
            }
        )
    return out


def dataset_kind(root: str, rels: Iterable[str]) -> dict:
    """``{"kind": ..., ["release": ..., "synthface": {...}]}`` of the dataset made of the folders ``rels`` under
    ``root`` (see the module docstring)."""
    found = [os.path.join(root, r) for r in rels if os.path.exists(os.path.join(root, r))]
    if not found:
        return {"kind": "unknown"}
    releases = [_synthface_release(p) for p in found]
    if all(r is None for r in releases):
        return {"kind": "real"}
    if any(r is None for r in releases) or len(set(releases)) > 1:
        return {"kind": "mixed"}
    return {"kind": "synthface", "release": releases[0], "synthface": _manifest_summary(releases[0])}


def data_provenance(release: str, rec: str | None = None, benchmarks: Iterable[str] = ()) -> dict:
    """The ``data`` entry of a result document for data read under ``release`` (``config.data.release``): the
    training RecordIO folder ``rec`` (``config.data.rec``; None when the document trained nothing) and every
    benchmark evaluated (config names ``IJBB`` ... or row names ``IJB-B`` ...)."""
    out: dict = {"root": str(release)}
    if rec:
        src = dataset_kind(release, [rec])
        src["rec"] = str(rec)
        src["train_set"] = {
            "synthface": "SynthFace",
            "real": REC_TRAIN_SETS.get(os.path.basename(os.path.normpath(rec))),
        }.get(src["kind"])
        out["source"] = src
    benches = {}
    for b in benchmarks:
        key = row_benchmark(str(b))
        if key in BENCHMARK_PATHS and key not in benches:
            benches[key] = dataset_kind(release, BENCHMARK_PATHS[key])
        elif key not in BENCHMARK_PATHS and rec:  # a registered benchmark stating its files (the .bin sets)
            from harness.eval.registry import data_files

            for row, rels in data_files(str(b), str(rec)).items():
                found = dataset_kind(release, rels)
                if found["kind"] != "unknown" and row not in benches:
                    benches[row] = found
    out["benchmarks"] = benches
    return out


@dataclass(frozen=True)
class DataProvenance:
    """A result document's data, as read by :func:`doc_provenance`: ``root`` (None if unrecorded), the training
    source's kind and published ``train_set`` name, the kind of every benchmark, and ``how`` it was determined."""

    root: str | None
    source_kind: str
    train_set: str | None
    benchmarks: Mapping[str, str]  # row-benchmark key -> kind
    releases: Mapping[str, str]  # row-benchmark key -> SynthFace release folder (synthface benchmarks only)
    how: str

    def kind(self, benchmark: str) -> str:
        return self.benchmarks.get(row_benchmark(benchmark), "unknown")


def _check_entry(entry, path: str) -> None:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("root"), str)
        or not isinstance(entry.get("benchmarks"), dict)
    ):
        raise DataFormatError(path, "field data", "must be an object with root (text) and benchmarks (object)")
    parts = list(entry["benchmarks"].items()) + ([("source", entry["source"])] if "source" in entry else [])
    for name, d in parts:
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise DataFormatError(
                path,
                f"field data.{'source' if name == 'source' else 'benchmarks.' + name}",
                f"kind must be one of {', '.join(KINDS)}, got {d.get('kind') if isinstance(d, dict) else d!r}",
            )


def doc_provenance(doc: dict, path: str) -> DataProvenance:
    """The data provenance of the result document ``doc`` (read from ``path``; see the module docstring)."""
    benches = sorted(
        {
            row_benchmark(r["benchmark"])
            for r in doc.get("results", [])
            if isinstance(r, dict) and isinstance(r.get("benchmark"), str)
        }
    )
    entry = doc.get("data")
    if entry is not None:
        _check_entry(entry, path)
        how = "recorded in the result"
    else:
        cfg = doc.get("config")
        data = cfg.get("data") if isinstance(cfg, dict) else None
        release = data.get("release") if isinstance(data, dict) else None
        if not isinstance(release, str) or not release:
            return DataProvenance(
                None, "unknown", None, {b: "unknown" for b in benches}, {}, "the result records no data release"
            )
        rec = data.get("rec") if isinstance(data.get("rec"), str) else None
        entry = data_provenance(release, rec, benches)
        how = f"looked up now at {release}" + ("" if os.path.isdir(release) else " (not found here)")
    src = entry.get("source", {})
    kinds = {b: entry["benchmarks"].get(b, {}).get("kind", "unknown") for b in benches}
    releases = {
        b: entry["benchmarks"][b]["release"]
        for b in benches
        if kinds[b] == "synthface" and isinstance(entry["benchmarks"][b].get("release"), str)
    }
    train_set = src.get("train_set") if isinstance(src.get("train_set"), str) else None
    return DataProvenance(entry["root"], src.get("kind", "unknown"), train_set, kinds, releases, how)


# ---------------------------------------------------------------------------------------------------- labels


def _kind_text(kind: str, where: list[str]) -> str:
    at = f" at {', '.join(where)}" if where else ""
    return {
        "synthface": f"SynthFace (a procedural stand-in benchmark; not the paper's data){at}",
        "real": f"the real benchmark data{at}",
        "mixed": f"a data root mixing SynthFace and real folders within one dataset{at}",
        "unknown": "unknown data",
    }[kind]


def data_label(entries: Iterable[tuple[str, DataProvenance]], benchmarks: Iterable[str]) -> tuple[str, str]:
    """``(kind, text)`` naming the data of ``benchmarks`` (row names) in the results ``entries`` (``(name,
    provenance)``, only those holding one of the benchmarks): ``kind`` is the one kind of all of them, or ``mixed``
    when they differ, and then the text says which result is on which data."""
    keys = {row_benchmark(b) for b in benchmarks}
    by_kind: dict[str, list[tuple[str, DataProvenance]]] = {}
    for name, prov in entries:
        kinds = {prov.kind(b) for b in keys if b in prov.benchmarks}
        for kind in kinds:
            by_kind.setdefault(kind, []).append((name, prov))
    if not by_kind:
        return "unknown", "no result"
    parts = []
    for kind in sorted(by_kind, key=KINDS.index):
        group = by_kind[kind]
        if kind == "synthface":
            where = sorted({rel for _, p in group for b, rel in p.releases.items() if b in keys})
        elif kind == "real":
            where = sorted({p.root for _, p in group if p.root})
        else:
            where = []
        text = _kind_text(kind, where)
        if kind == "unknown":
            text += " (" + "; ".join(sorted({p.how for _, p in group})) + ")"
        parts.append((kind, text, [n for n, _ in group]))
    if len(parts) == 1:
        return parts[0][0], parts[0][1]
    return "mixed", "; ".join(f"{text}: {', '.join(names)}" for _, text, names in parts)
