"""Reader for the NIST IJB-S "cs6" protocol files, rebuilding the templates AdaFace's IJB-S evaluation scores.

AdaFace (``validation_lq/validate_IJB_S.py``) loads a pickled protocol (``IJB_S_proto.pkl``) and an image list
(``image_list_mtcnn_fail_skipped_v1.csv``) that were never published (AdaFace issues #137, #139). Both come from
``PFE/ijbs.py`` ``IJBSTest.init_proto`` / ``initialize_indices`` (Yichun Shi's PFE code), whose rules this module
re-implements from the raw CSVs (``docs/benchmark_formats.md`` section 2.3):

- **Video templates**: one per distinct (SUBJECT_ID, FILENAME) among the ``videos/*`` rows of ``cs6_metadata.csv``
  (a video holding several subjects gives several templates); a template holds every frame of that subject in that
  video. PFE builds the list with ``list(set(...))`` (arbitrary order); here templates are in order of first
  appearance in the metadata, frames in file order (duplicates dropped).
- **Single-image gallery** (``galleries/cs6_surveillance_to_single_g{1,2}.csv``): each row is its own template.
- **Booking gallery** (``galleries/cs6_surveillance_to_booking_g{1,2}.csv``): per subject, one template of all its
  listed images (in file order), templates in PFE's order ``list(set(subjects))``: the iteration order of a CPython
  set of the integer SUBJECT_IDs inserted in file order. Integers hash to themselves (no hash seed), so this order
  is deterministic and is reproduced by building the same set here; it decides which column wins an exact score
  tie.
- **Video gallery** (``galleries/cs6_surveillance_to_surveillance_g{1,2}.csv``): the (subject, video) templates of
  the listed pairs (PFE: ``video_meta_list.index(pair)``, which raises for an unknown pair; here a one-line error).
  PFE orders them by ``list(set(pairs))`` of *string* tuples, whose order follows Python's per-process hash seed
  (``PYTHONHASHSEED``): not reproducible from run to run. Here they are in file order (first appearance), the
  order the NIST file gives and the only one that does not depend on the process; it matters only for exact ties.
- **Probes**: V2S / V2B: the video templates whose video is in ``cs6_surveillance_to_single-booking_probe.csv``;
  V2V: those whose video is in ``cs6_surveillance_to_surveillance_probe.csv`` (metadata order).

Image keys (PFE ``initialize_indices``): a frame is ``<subject>/videos_<video id>_<frame>.jpg`` and a still
``<subject>/img_<id>.jpg``, relative to the aligned-crop root; the subject of a still is the gallery row's subject.

Columns are found by header name (case-insensitive): metadata needs SUBJECT_ID, FILENAME and, for video rows, FRAME
(also accepted: FRAME_NUM, FRAME_NUMBER); galleries need SUBJECT_ID and FILENAME (PFE reads them by position, col1
and col2; TEMPLATE_ID, col0, is unused). Probe lists: a header line, then one filename per line. Every problem raises
a one-line :class:`harness.core.errors.DataFormatError` naming the file and the line or ``field <NAME>``; nothing is
skipped. Stricter than PFE: a gallery image or probe video absent from the metadata is an error (PFE silently gives
an empty template or no probe).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from harness.core.errors import DataFormatError, require_dir, require_file
from harness.data.text import read_lines

WHAT = "IJB-S"
METADATA = "cs6_metadata.csv"
PROBE_LISTS = {
    "single-booking": "cs6_surveillance_to_single-booking_probe.csv",
    "surveillance": "cs6_surveillance_to_surveillance_probe.csv",
}
GALLERIES = {
    "single": "galleries/cs6_surveillance_to_single_g{}.csv",
    "booking": "galleries/cs6_surveillance_to_booking_g{}.csv",
    "video": "galleries/cs6_surveillance_to_surveillance_g{}.csv",
}
#: protocol -> (probe list key, gallery kind); the names AdaFace and CFSM report.
PROTOCOLS = {
    "V2S": ("single-booking", "single"),  # surveillance-to-single
    "V2B": ("single-booking", "booking"),  # surveillance-to-booking
    "V2V": ("surveillance", "video"),  # surveillance-to-surveillance
}
_FRAME_ALIASES = ("FRAME", "FRAME_NUM", "FRAME_NUMBER")


@dataclass(frozen=True)
class IJBSTemplate:
    """One template: ``kind`` is "video", "single" or "booking"; ``images`` are paths relative to the aligned root."""

    subject: int
    kind: str
    source: str  # the video FILENAME, or the still FILENAME(s) joined with ";"
    images: tuple[str, ...]
    file: str  # the CSV that defines it
    line: int  # 1-based line of its first row there


@dataclass
class IJBSProtocol:
    """Templates and, per protocol, the probe and gallery template indices (into ``templates``)."""

    root: str  # the IJB-S folder
    protocol_dir: str  # folder holding cs6_metadata.csv
    templates: list[IJBSTemplate]
    probes: dict[str, list[int]]  # "single-booking" / "surveillance" -> video template indices
    galleries: dict[str, list[list[int]]]  # "single" / "booking" / "video" -> [G1 indices, G2 indices]
    files: dict[str, str] = field(default_factory=dict)  # "metadata", "probe:<key>", "<kind>_g1", ... -> path
    metadata_rows: int = 0
    metadata_video_rows: int = 0
    metadata_still_rows: int = 0

    def protocol(self, name: str) -> tuple[list[int], list[int], list[int], str, str]:
        """``(probe indices, G1 indices, G2 indices, G1 csv, G2 csv)`` of "V2S", "V2B" or "V2V"."""
        if name not in PROTOCOLS:
            raise ValueError(f"unknown IJB-S protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
        probe_key, kind = PROTOCOLS[name]
        g1, g2 = self.galleries[kind]
        return self.probes[probe_key], g1, g2, self.files[f"{kind}_g1"], self.files[f"{kind}_g2"]

    def used_templates(self) -> list[int]:
        """Indices of the templates some protocol uses (probes and galleries), ascending."""
        used = set()
        for v in self.probes.values():
            used.update(v)
        for gs in self.galleries.values():
            for g in gs:
                used.update(g)
        return sorted(used)

    def images(self) -> list[str]:
        """Distinct image paths of the used templates, in template order (the feature order of an image list)."""
        return list(dict.fromkeys(p for t in self.used_templates() for p in self.templates[t].images))


# ---------------------------------------------------------------------------------------------------- CSV helpers


def _rows(path: str) -> list[tuple[int, list[str]]]:
    """Records of a comma-separated file as (1-based line, stripped fields); blank lines inside are errors."""
    require_file(path, f"{WHAT} protocol file")
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(path, None, "file is empty (no header row)")
    out = []
    for i, fields in enumerate(csv.reader(lines)):  # one element of ``lines`` per record (no multi-line fields)
        if not any(f.strip() for f in fields):
            raise DataFormatError(path, f"line {i + 1}", "blank line inside the file")
        out.append((i + 1, [f.strip() for f in fields]))
    if out[0][1]:
        out[0][1][0] = out[0][1][0].lstrip("\ufeff")
    return out


def _column(path: str, header: list[str], names: tuple[str, ...], required: bool = True) -> int | None:
    upper = [h.upper() for h in header]
    for n in names:
        if n in upper:
            return upper.index(n)
    if required:
        raise DataFormatError(
            path, f"field {names[0]}", f"header (line 1) has no {names[0]} column: {','.join(header)}"
        )
    return None


def _field(path: str, lineno: int, fields: list[str], col: int, name: str) -> str:
    if col >= len(fields):
        raise DataFormatError(path, f"line {lineno}", f"has {len(fields)} fields, no {name} (column {col + 1})")
    v = fields[col]
    if not v:
        raise DataFormatError(path, f"line {lineno}", f"empty {name}")
    return v


def _int(path: str, lineno: int, s: str, name: str) -> int:
    try:
        if not s.lstrip("+-").isdigit():
            raise ValueError
        return int(s)
    except ValueError:
        raise DataFormatError(path, f"line {lineno}", f"{name} {s!r} is not an integer") from None


def _split_name(path: str, lineno: int, filename: str) -> tuple[str, str]:
    """``videos/5004.mp4`` -> ("videos", "5004"); ``img/101146.jpg`` -> ("img", "101146")."""
    parts = filename.split("/")
    if len(parts) != 2 or parts[0] not in ("videos", "img") or not os.path.splitext(parts[1])[0]:
        raise DataFormatError(
            path, f"line {lineno}", f"FILENAME {filename!r} is neither videos/<id>.<ext> nor img/<id>.<ext>"
        )
    return parts[0], os.path.splitext(parts[1])[0]


def frame_path(subject: int, video_filename: str, frame: int) -> str:
    """Aligned-crop path of a frame: ``<subject>/videos_<video id>_<frame>.jpg``."""
    vid = os.path.splitext(video_filename.split("/")[-1])[0]
    return f"{subject}/videos_{vid}_{frame}.jpg"


def still_path(subject: int, image_filename: str) -> str:
    """Aligned-crop path of a still: ``<subject>/img_<id>.jpg``."""
    return f"{subject}/img_{os.path.splitext(image_filename.split('/')[-1])[0]}.jpg"


# ---------------------------------------------------------------------------------------------------- reader


def _protocol_dir(root: str) -> str:
    sub = os.path.join(root, "protocols")
    if os.path.isdir(sub):
        return sub
    if os.path.isfile(os.path.join(root, METADATA)):  # root is the protocol folder itself
        return root
    require_file(os.path.join(sub, METADATA), f"{WHAT} protocol file")
    return sub  # pragma: no cover


def read_ijbs(root: str | os.PathLike) -> IJBSProtocol:
    """Read an IJB-S folder (``<root>/protocols/cs6_*.csv``, or ``root`` holding them) into an :class:`IJBSProtocol`."""
    root = require_dir(os.fspath(root), f"{WHAT} root folder")
    pdir = _protocol_dir(root)
    files = {"metadata": os.path.join(pdir, METADATA)}
    for key, name in PROBE_LISTS.items():
        files[f"probe:{key}"] = os.path.join(pdir, name)
    for kind, pattern in GALLERIES.items():
        for g in (1, 2):
            files[f"{kind}_g{g}"] = os.path.join(pdir, pattern.format(g))
    for p in files.values():
        require_file(p, f"{WHAT} protocol file")

    # --- metadata: video templates, and the set of (subject, still) pairs
    mpath = files["metadata"]
    rows = _rows(mpath)
    header = rows[0][1]
    c_sub = _column(mpath, header, ("SUBJECT_ID",))
    c_file = _column(mpath, header, ("FILENAME",))
    c_frame = _column(mpath, header, _FRAME_ALIASES, required=False)
    video_frames: dict[tuple[int, str], dict[str, None]] = {}
    video_line: dict[tuple[int, str], int] = {}
    videos_seen: set[str] = set()
    stills: set[tuple[int, str]] = set()
    n_video = n_still = 0
    for lineno, f in rows[1:]:
        subject = _int(mpath, lineno, _field(mpath, lineno, f, c_sub, "SUBJECT_ID"), "SUBJECT_ID")
        filename = _field(mpath, lineno, f, c_file, "FILENAME")
        kind, _ = _split_name(mpath, lineno, filename)
        if kind == "videos":
            if c_frame is None:
                raise DataFormatError(
                    mpath,
                    "field FRAME",
                    f"header (line 1) has no FRAME column, needed by video rows (first: line {lineno})",
                )
            frame = _int(mpath, lineno, _field(mpath, lineno, f, c_frame, "FRAME"), "FRAME")
            key = (subject, filename)
            if key not in video_frames:
                video_frames[key] = {}
                video_line[key] = lineno
            video_frames[key][frame_path(subject, filename, frame)] = None
            videos_seen.add(filename)
            n_video += 1
        else:
            stills.add((subject, filename))
            n_still += 1

    templates: list[IJBSTemplate] = []
    video_index: dict[tuple[int, str], int] = {}
    for key, frames in video_frames.items():
        video_index[key] = len(templates)
        templates.append(IJBSTemplate(key[0], "video", key[1], tuple(frames), mpath, video_line[key]))

    # --- probe lists
    probes: dict[str, list[int]] = {}
    for key in PROBE_LISTS:
        path = files[f"probe:{key}"]
        listed: set[str] = set()
        for lineno, f in _rows(path)[1:]:
            name = _field(path, lineno, f, 0, "FILENAME")
            kind, _ = _split_name(path, lineno, name)
            if kind != "videos":
                raise DataFormatError(
                    path, f"line {lineno}", f"probe {name!r} is not a surveillance video (videos/<id>.mp4)"
                )
            if name not in videos_seen:
                raise DataFormatError(path, f"line {lineno}", f"probe video {name!r} has no rows in {METADATA}")
            listed.add(name)
        if not listed:
            raise DataFormatError(path, "line 1", "no probe videos after the header")
        probes[key] = [i for i, t in enumerate(templates) if t.source in listed]

    # --- galleries
    galleries: dict[str, list[list[int]]] = {}
    for kind in GALLERIES:
        pair = []
        for g in (1, 2):
            path = files[f"{kind}_g{g}"]
            grows = _rows(path)
            gh = grows[0][1]
            cs = _column(path, gh, ("SUBJECT_ID",))
            cf = _column(path, gh, ("FILENAME",))
            idx: list[int] = []
            booking: dict[int, tuple[int, list[str]]] = {}
            booking_lines: list[int] = []
            seen_pairs: set[tuple[int, str]] = set()
            for lineno, f in grows[1:]:
                subject = _int(path, lineno, _field(path, lineno, f, cs, "SUBJECT_ID"), "SUBJECT_ID")
                name = _field(path, lineno, f, cf, "FILENAME")
                mkind, _ = _split_name(path, lineno, name)
                if kind == "video":
                    if mkind != "videos":
                        raise DataFormatError(
                            path, f"line {lineno}", f"surveillance gallery entry {name!r} is not a video"
                        )
                    if (subject, name) not in video_index:
                        raise DataFormatError(
                            path, f"line {lineno}", f"subject {subject} in {name!r} has no rows in {METADATA}"
                        )
                    if (subject, name) not in seen_pairs:  # PFE: list(set(pairs))
                        seen_pairs.add((subject, name))
                        idx.append(video_index[(subject, name)])
                    continue
                if mkind != "img":
                    raise DataFormatError(
                        path, f"line {lineno}", f"{kind} gallery entry {name!r} is not a still image (img/<id>.jpg)"
                    )
                if (subject, name) not in stills:
                    raise DataFormatError(
                        path, f"line {lineno}", f"image {name!r} of subject {subject} is not in {METADATA}"
                    )
                if kind == "single":
                    idx.append(len(templates))
                    templates.append(IJBSTemplate(subject, "single", name, (still_path(subject, name),), path, lineno))
                else:
                    booking.setdefault(subject, (lineno, []))[1].append(name)
                    booking_lines.append(subject)
            # PFE's order, list(set(<SUBJECT_ID of every line>)): the set is built from the same sequence (a set
            # built from a dict would be pre-sized by CPython and could iterate in another order)
            for subject in list(set(booking_lines)):
                lineno, names = booking[subject]
                idx.append(len(templates))
                paths = tuple(dict.fromkeys(still_path(subject, n) for n in names))
                templates.append(IJBSTemplate(subject, "booking", ";".join(names), paths, path, lineno))
            pair.append(idx)
        galleries[kind] = pair

    return IJBSProtocol(root, pdir, templates, probes, galleries, files, len(rows) - 1, n_video, n_still)


def image_list(protocol: IJBSProtocol, aligned_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Split the protocol's images (:meth:`IJBSProtocol.images`) into those present under ``aligned_root`` and the
    missing ones (frames the face aligner dropped: AdaFace's ``image_list_mtcnn_fail_skipped``)."""
    aligned_root = require_dir(os.fspath(aligned_root), f"{WHAT} aligned crop folder")
    present, missing = [], []
    listing: dict[str, set[str]] = {}
    for p in protocol.images():
        d, name = p.split("/", 1)
        if d not in listing:
            full = os.path.join(aligned_root, d)
            listing[d] = set(os.listdir(full)) if os.path.isdir(full) else set()
        (present if name in listing[d] else missing).append(p)
    return present, missing
