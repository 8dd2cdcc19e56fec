"""SynthFace writer of the IJB-B / IJB-C 1:N identification protocol: the NIST gallery and probe CSVs.

Written next to the 1:1 meta files of a SynthFace IJB release (``IJB_release/{IJBB,IJBC}/meta``), in the layout of
insightface's ``IJB_release`` package (``docs/benchmark_formats.md`` section 1.3):

- ``<t>_1N_gallery_S1.csv`` / ``<t>_1N_gallery_S2.csv`` for IJB-B, ``<t>_1N_gallery_G1.csv`` / ``_G2.csv`` for IJB-C;
- ``<t>_1N_probe_mixed.csv``.

Comma separated, one header row, one row per image of a template (so template ids repeat). IJB-B uses the NIST v1
schema ``TEMPLATE_ID,SUBJECT_ID,FILE,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT,RIGHT_EYE_X,RIGHT_EYE_Y,
LEFT_EYE_X,LEFT_EYE_Y,NOSE_BASE_X,NOSE_BASE_Y,FRAME,CS2_BOOL``; IJB-C the v2 schema (``FILENAME``, ``NOSE_X``,
``NOSE_Y``, ``FRAME_NUM``, no ``CS2_BOOL``). The evaluation code (insightface ``recognition/_evaluation_/ijb/
ijb_1n.py`` ``read_template_subject_id_list``, ``ijb_evals.py`` ``extract_gallery_prob_data``, AdaFace
``validation_mixed/eval_helper_identification.py``) reads only ``TEMPLATE_ID`` and ``SUBJECT_ID`` (``skiprows=1``).

Content, as in the real protocol:

- every subject has exactly one gallery template (``_plan_ijb``: tid ``1 + subject``, clean stills) and it goes to
  exactly one of the two galleries: the subjects are split half/half by one random permutation (``rng``), the first
  half (rounded up) to S1/G1. So for gallery G1 the probes whose subject is in G2 are non-mated, and vice versa,
  which is what makes the open-set metric of insightface ``ijb_evals.py`` ``evaluation_1N`` (PR #1739) meaningful;
  with the galleries joined (``ijb_1n.py``, AdaFace, CFSM's Rank-1/5) every probe has exactly one mate;
- the probe CSV lists every probe template; every probe's subject has a gallery template (S1 ∪ S2).

Columns of our release: ``FILE``/``FILENAME`` = ``loose_crop/<i + 1>.jpg`` for image row ``i`` of face_tid_mid (the
real files name the original NIST image); ``SIGHTING_ID`` = the media id of the row; ``SUBJECT_ID`` = subject index
+ 1 (positive, as NIST ids are); face box and eye/nose points from the row's 5 landmarks in loose-crop pixels when
given (RIGHT_EYE = the subject's right eye = the image-left point, first in the 5-point order), else 0; ``FRAME`` /
``FRAME_NUM`` = the 1-based position of a video frame within its media (0 for stills); ``CS2_BOOL`` = 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from harness.core.atomic import write_staged

HEADER_V1 = (
    "TEMPLATE_ID,SUBJECT_ID,FILE,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT,RIGHT_EYE_X,RIGHT_EYE_Y,"
    "LEFT_EYE_X,LEFT_EYE_Y,NOSE_BASE_X,NOSE_BASE_Y,FRAME,CS2_BOOL"
)
HEADER_V2 = (
    "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT,RIGHT_EYE_X,RIGHT_EYE_Y,"
    "LEFT_EYE_X,LEFT_EYE_Y,NOSE_X,NOSE_Y,FRAME_NUM"
)
GALLERY_NAMES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}
HEADERS = {"ijbb": HEADER_V1, "ijbc": HEADER_V2}


def csv_names(prefix: str) -> dict[str, str]:
    """File names of the three 1:N CSVs, keyed by gallery name (``S1``/``S2`` or ``G1``/``G2``) and ``probe_mixed``."""
    g1, g2 = GALLERY_NAMES[prefix]
    return {
        g1: f"{prefix}_1N_gallery_{g1}.csv",
        g2: f"{prefix}_1N_gallery_{g2}.csv",
        "probe_mixed": f"{prefix}_1N_probe_mixed.csv",
    }


def _geometry(landmarks: np.ndarray | None, i: int) -> str:
    """``FACE_X..NOSE_Y`` (10 fields) of image row ``i``."""
    if landmarks is None:
        return "0,0,0,0,0,0,0,0,0,0"
    lm = np.asarray(landmarks[i], dtype=np.float64).reshape(5, 2)
    lo, hi = lm.min(0), lm.max(0)
    span = max(float((hi - lo).max()), 1.0)
    x0 = max(0.0, float(lo[0]) - 0.6 * span)
    y0 = max(0.0, float(lo[1]) - 0.9 * span)
    w = h = 2.2 * span
    pts = ",".join(f"{v:.2f}" for v in (lm[0, 0], lm[0, 1], lm[1, 0], lm[1, 1], lm[2, 0], lm[2, 1]))
    return f"{round(x0)},{round(y0)},{round(w)},{round(h)},{pts}"


def write_1n_csvs(
    meta_dir: str,
    prefix: str,
    rows: Sequence,
    template_subject: dict[int, int],
    gallery_tids: list[int],
    probe_tids: list[int],
    rng: np.random.Generator,
    only_one_gallery_fraction: float = 0.2,
    *,
    landmarks: np.ndarray | None = None,
) -> dict:
    """Write ``<prefix>_1N_gallery_{S1,S2|G1,G2}.csv`` and ``<prefix>_1N_probe_mixed.csv`` into ``meta_dir``.

    ``rows``: the image rows of face_tid_mid in file order (objects with ``.template``, ``.media``, ``.subject`` and
    optionally ``.kind`` = ``"still"``/``"frame"``); row ``i`` is ``loose_crop/<i + 1>.jpg``. ``template_subject``:
    subject index (0-based) of every template; ``gallery_tids``: one gallery template per subject;
    ``probe_tids``: every probe template. ``rng``: draws one permutation of the gallery subjects (the S1/G1 vs.
    S2/G2 split). ``landmarks``: optional (N, 5, 2) loose-crop landmarks for the geometry columns (else 0).

    ``only_one_gallery_fraction`` has no effect and is only range-checked: with one gallery template per subject
    (the real protocol and ``_plan_ijb``) every subject is in exactly one gallery, so every probe is mated in one
    gallery and non-mated in the other.

    Returns counts: ``gallery_<name>_templates``/``_rows`` for both galleries, ``probe_mixed_templates``/``_rows``.
    Raises ``ValueError`` for an inconsistent plan (subject mismatch, a template without rows, a subject with
    several or no gallery template, fewer than 2 gallery subjects).
    """
    if prefix not in GALLERY_NAMES:
        raise ValueError(f"prefix must be one of {sorted(GALLERY_NAMES)}, got {prefix!r}")
    if not 0.0 <= float(only_one_gallery_fraction) <= 1.0:
        raise ValueError(f"only_one_gallery_fraction must lie in [0, 1], got {only_one_gallery_fraction!r}")
    gallery_tids = [int(t) for t in gallery_tids]
    probe_tids = [int(t) for t in probe_tids]
    if landmarks is not None and len(landmarks) != len(rows):
        raise ValueError(f"landmarks has {len(landmarks)} rows but rows has {len(rows)}")
    if set(gallery_tids) & set(probe_tids):
        raise ValueError(f"templates both gallery and probe: {sorted(set(gallery_tids) & set(probe_tids))[:5]}")

    # rows of each template, in file order; every row's subject must be its template's subject
    rows_of: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        t = int(r.template)
        if int(template_subject[t]) != int(r.subject):
            raise ValueError(f"row {i}: subject {r.subject} but template {t} belongs to subject {template_subject[t]}")
        rows_of.setdefault(t, []).append(i)
    for t in gallery_tids + probe_tids:
        if t not in rows_of:
            raise ValueError(f"template {t} has no image rows")

    gallery_of_subject: dict[int, int] = {}
    for t in gallery_tids:
        s = int(template_subject[t])
        if s in gallery_of_subject:
            raise ValueError(
                f"subject {s} has two gallery templates ({gallery_of_subject[s]} and {t}); the 1:N protocol needs one"
            )
        gallery_of_subject[s] = t
    for t in probe_tids:
        if int(template_subject[t]) not in gallery_of_subject:
            raise ValueError(f"probe template {t}: subject {template_subject[t]} has no gallery template")
    subjects = sorted(gallery_of_subject)
    if len(subjects) < 2:
        raise ValueError(f"need at least 2 gallery subjects to fill two galleries, got {len(subjects)}")

    perm = rng.permutation(len(subjects))
    n1 = (len(subjects) + 1) // 2
    first = {subjects[k] for k in perm[:n1]}
    g1_name, g2_name = GALLERY_NAMES[prefix]
    parts = {
        g1_name: [t for t in gallery_tids if int(template_subject[t]) in first],
        g2_name: [t for t in gallery_tids if int(template_subject[t]) not in first],
        "probe_mixed": list(probe_tids),
    }

    # FRAME: 1-based position of a frame within its media (video), in file order; 0 for stills
    frame_no = np.zeros(len(rows), dtype=np.int64)
    seen: dict[tuple[int, int], int] = {}
    for i, r in enumerate(rows):
        if getattr(r, "kind", "still") == "frame":
            key = (int(r.template), int(r.media))
            seen[key] = seen.get(key, 0) + 1
            frame_no[i] = seen[key]

    header = HEADERS[prefix]
    counts: dict[str, int] = {}
    for name, fname in csv_names(prefix).items():
        tids = set(parts[name])
        lines = [header + "\n"]
        for i, r in enumerate(rows):  # face_tid_mid order: rows of a template stay together, as _plan_ijb writes them
            t = int(r.template)
            if t not in tids:
                continue
            line = (
                f"{t},{int(template_subject[t]) + 1},loose_crop/{i + 1}.jpg,{int(r.media)},"
                f"{_geometry(landmarks, i)},{frame_no[i]}"
            )
            lines.append(line + (",0\n" if prefix == "ijbb" else "\n"))
        write_staged(os.path.join(meta_dir, fname), "".join(lines))
        key = f"gallery_{name}" if name != "probe_mixed" else name
        counts[f"{key}_templates"] = len(tids)
        counts[f"{key}_rows"] = len(lines) - 1
    return counts
