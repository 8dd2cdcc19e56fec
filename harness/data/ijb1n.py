"""Reader of the IJB-B / IJB-C 1:N identification protocol: the NIST gallery and probe CSVs of ``IJB_release``.

Files (``<root>/meta``; ``docs/benchmark_formats.md`` section 1.3): IJB-B ``ijbb_1N_gallery_S1.csv``,
``ijbb_1N_gallery_S2.csv``, ``ijbb_1N_probe_mixed.csv``; IJB-C ``ijbc_1N_gallery_G1.csv``, ``ijbc_1N_gallery_G2.csv``,
``ijbc_1N_probe_mixed.csv``. Comma separated, **one header row**, one row per image of a template (template ids
repeat). IJB-B has the NIST v1 header ``TEMPLATE_ID,SUBJECT_ID,FILE,SIGHTING_ID,...``, IJB-C the v2 header
``TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,...``; columns are found by header name, so both read alike.

Sources: insightface ``recognition/_evaluation_/ijb/ijb_1n.py`` ``read_template_subject_id_list``
(``np.loadtxt(path, dtype=str, skiprows=1, delimiter=',')``, columns 0 and 1 as int) and ``ijb_evals.py``
``extract_gallery_prob_data`` (``pd.read_csv(sep=',', skiprows=1, header=None)``); both collapse the rows with
``np.unique(templates, return_index=True)``: sorted template ids, and the subject of each template's first row.
Like ``np.loadtxt``, every line must have the header's number of fields (no quoting: NIST paths hold no commas).

Stricter than the originals (which silently take the first row's subject, or map unknown templates to row 0):
a template listed with two different subjects, a template absent from face_tid_mid, a template in two of the
files, a non-integer id, a missing column, a blank or short line all raise :class:`~harness.core.errors.DataFormatError`
naming the file and the 1-based line (or ``field <NAME>`` for a missing column).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from harness.core.errors import DataFormatError, require_dir, require_file
from harness.data.text import read_lines

WHAT = "IJB 1:N protocol CSV"
GALLERY_NAMES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}
PROBE = "probe_mixed"
_INT_RE = re.compile(r"[0-9]{1,18}\Z")  # non-negative decimal, fits int64


def one_n_paths(root: str | os.PathLike, prefix: str) -> dict[str, str]:
    """Paths of the three CSVs keyed ``S1``/``S2`` (IJB-B) or ``G1``/``G2`` (IJB-C), and ``probe_mixed``."""
    meta = os.path.join(os.fspath(root), "meta")
    g1, g2 = GALLERY_NAMES[prefix]
    return {
        g1: os.path.join(meta, f"{prefix}_1N_gallery_{g1}.csv"),
        g2: os.path.join(meta, f"{prefix}_1N_gallery_{g2}.csv"),
        PROBE: os.path.join(meta, f"{prefix}_1N_probe_mixed.csv"),
    }


_INT_COLUMN_RE = re.compile(r"(?:[0-9]{1,18}\n)*[0-9]{1,18}")  # the whole column joined by newlines: one C-level match


def _int_column(values: list[str], lines: np.ndarray, path: str, name: str) -> np.ndarray:
    if values and not _INT_COLUMN_RE.fullmatch("\n".join(values)):
        for v, ln in zip(values, lines):
            if not _INT_RE.match(v):
                if v == "":
                    raise DataFormatError(path, f"line {ln}", f"empty {name}")
                raise DataFormatError(path, f"line {ln}", f"{name} {v!r} is not a non-negative decimal integer")
    return np.array(values, dtype=np.int64) if values else np.zeros(0, np.int64)


def read_1n_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """One NIST 1:N CSV -> ``(template_ids, subject_of_template, rows)``.

    ``template_ids``: sorted unique int64 (``np.unique`` order); ``subject_of_template``: int64, the SUBJECT_ID of
    each. ``rows``: per data row, ``TEMPLATE_ID``, ``SUBJECT_ID``, ``SIGHTING_ID`` (int64 arrays), ``FILE`` or
    ``FILENAME`` (whichever the header has; str array) and ``line`` (1-based file line; the header is line 1).
    """
    path = os.fspath(path)
    require_file(path, WHAT)
    lines = read_lines(path)
    if not lines or not lines[0].strip():
        raise DataFormatError(path, "line 1", "empty file (no header row)")
    header = [h.strip() for h in lines[0].lstrip("\ufeff").split(",")]
    col: dict[str, int] = {}
    for name in ("TEMPLATE_ID", "SUBJECT_ID", ("FILE", "FILENAME"), "SIGHTING_ID"):
        alts = name if isinstance(name, tuple) else (name,)
        found = [a for a in alts if a in header]
        if not found:
            label = " / ".join(alts)
            raise DataFormatError(
                path, f"field {alts[0]}", f"header row has no {label} column (header: {lines[0][:120]!r})"
            )
        key = found[0]
        if header.count(key) > 1:
            raise DataFormatError(
                path, f"field {key}", f"column {key} appears {header.count(key)} times in the header row"
            )
        col[key] = header.index(key)
    n_fields = len(header)
    body = lines[1:]
    if not body:
        raise DataFormatError(path, None, "no data rows after the header row")
    counts = np.fromiter(map(str.count, body, repeat(",")), dtype=np.int64, count=len(body))
    if (counts != n_fields - 1).any():
        i = int(np.flatnonzero(counts != n_fields - 1)[0])
        if not body[i].strip():
            raise DataFormatError(path, f"line {i + 2}", "blank line inside the file")
        raise DataFormatError(
            path,
            f"line {i + 2}",
            f"expected {n_fields} comma-separated fields (as the header row), got {counts[i] + 1}",
        )
    line_no = np.arange(2, len(body) + 2, dtype=np.int64)
    last = max(col.values()) + 1
    fields = [ln.split(",", last) for ln in body]  # field counts are checked above; split only what is read
    rows: dict[str, np.ndarray] = {}
    for key, j in col.items():
        values = [f[j] for f in fields]
        if key in ("FILE", "FILENAME"):
            rows[key] = np.array(values, dtype=str)
        else:
            rows[key] = _int_column(values, line_no, path, key)
    rows["line"] = line_no
    tid, sid = rows["TEMPLATE_ID"], rows["SUBJECT_ID"]
    template_ids, first = np.unique(tid, return_index=True)
    subjects = sid[first]
    # a template listed with two subjects: compare every row with its template's first row
    inverse = np.searchsorted(template_ids, tid)
    bad = sid != subjects[inverse]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        t = int(tid[i])
        j = int(first[inverse[i]])
        raise DataFormatError(
            path, f"line {i + 2}", f"template {t} has SUBJECT_ID {int(sid[i])} here but {int(sid[j])} on line {j + 2}"
        )
    return template_ids, subjects, rows


@dataclass
class IJB1NProtocol:
    """The 1:N lists of one release. ``galleries``: ``{"S1": (tids, subjects), "S2": ...}`` (IJB-C: ``G1``/``G2``),
    ``probes``: ``(tids, subjects)``; tids sorted unique int64 with the SUBJECT_ID of each. ``paths``: CSV path per
    list (gallery names and ``probe_mixed``); ``first_lines``: 1-based file line of each template's first row."""

    root: str
    prefix: str
    galleries: dict[str, tuple[np.ndarray, np.ndarray]]
    probes: tuple[np.ndarray, np.ndarray]
    paths: dict[str, str] = field(default_factory=dict)
    first_lines: dict[str, np.ndarray] = field(default_factory=dict)


def _infer_prefix(root: str) -> str:
    base = os.path.basename(os.path.normpath(root)).lower()
    if base in GALLERY_NAMES:
        return base
    found = [p for p in GALLERY_NAMES if os.path.isfile(one_n_paths(root, p)[PROBE])]
    if len(found) == 1:
        return found[0]
    raise ValueError(f"{root}: cannot tell IJB-B from IJB-C for the IJB 1:N protocol; pass prefix='ijbb' or 'ijbc'")


def read_ijb_1n(root: str | os.PathLike, prefix: str | None = None, meta=None) -> IJB1NProtocol:
    """Read the two gallery CSVs and the probe CSV of ``root`` (``IJB_release/IJBB`` or ``IJB_release/IJBC``).

    ``prefix`` is taken from ``meta`` (an :class:`harness.data.ijb.IJBMeta`), else the folder name, else the CSV
    names. With ``meta``, every TEMPLATE_ID must be a template of face_tid_mid (else DataFormatError naming the CSV
    and line). A template listed in two of the three files is an error too (the real lists are disjoint).
    A missing CSV raises ``FileNotFoundError`` naming its path and "IJB 1:N protocol".
    """
    root = require_dir(os.fspath(root), "IJB-B/IJB-C release")
    if prefix is None:
        prefix = meta.prefix if meta is not None else _infer_prefix(root)
    prefix = prefix.lower()
    if prefix not in GALLERY_NAMES:
        raise ValueError(f"{root}: unknown IJB prefix {prefix!r} (expected one of {sorted(GALLERY_NAMES)})")
    paths = one_n_paths(root, prefix)
    for p in paths.values():
        require_file(p, WHAT)
    known = np.unique(np.asarray(meta.templates)) if meta is not None else None
    lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    first_lines: dict[str, np.ndarray] = {}
    owner: dict[int, tuple[str, int]] = {}
    for name, p in paths.items():
        tids, subjects, rows = read_1n_csv(p)
        if known is not None:
            ok = np.isin(rows["TEMPLATE_ID"], known)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                t = int(rows["TEMPLATE_ID"][i])
                raise DataFormatError(
                    p, f"line {int(rows['line'][i])}", f"TEMPLATE_ID {t} is not a template of face_tid_mid"
                )
        _, first = np.unique(rows["TEMPLATE_ID"], return_index=True)
        lines = rows["line"][first]
        for t, ln in zip(tids.tolist(), lines.tolist()):
            if t in owner:
                other, other_ln = owner[t]
                raise DataFormatError(
                    p,
                    f"line {ln}",
                    f"template {t} is also listed in {os.path.basename(paths[other])} (line {other_ln})",
                )
        owner.update((t, (name, ln)) for t, ln in zip(tids.tolist(), lines.tolist()))
        lists[name] = (tids, subjects)
        first_lines[name] = lines
    g1, g2 = GALLERY_NAMES[prefix]
    return IJB1NProtocol(root, prefix, {g1: lists[g1], g2: lists[g2]}, lists[PROBE], paths, first_lines)
