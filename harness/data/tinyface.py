"""Reader for TinyFace's test split as AdaFace evaluates it (original folders + AdaFace's aligned copy).

Layout (``root`` is AdaFace's ``tinyface_root``)::

    <root>/tinyface/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}/*.jpg
    <root>/tinyface/Testing_Set/probe_img_ID_pairs.mat           probe_set (N, 1) cell of names, probe_ids (N, 1)
    <root>/tinyface/Testing_Set/gallery_match_img_ID_pairs.mat   gallery_set (M, 1), gallery_ids (M, 1)
    <root>/aligned_pad_0.1_pad_high/{Probe,Gallery_Match,Gallery_Distractor}/<same basename>.jpg

Rules, from AdaFace ``validation_lq/tinyface_helper.py`` (``TinyFaceTest``, ``get_all_files``) and
``validation_lq/validate_tinyface.py`` (mk-minchul/AdaFace @ c60eaa7; ``docs/benchmark_formats.md`` section 3;
dataset: Cheng, Zhu, Gong, "Low-Resolution Face Recognition", ACCV 2018):

- The probe, gallery-match and distractor lists come from a recursive directory walk (``os.walk``) of the three
  *original* ``Testing_Set`` folders, keeping the extensions ``.jpg``, ``.png``, ``.jpeg`` (case-sensitive, as
  there). ``os.walk`` order depends on the file system; this reader sorts each folder's paths, which changes
  nothing but the order of exact score ties (see :mod:`harness.eval.tinyface`).
- Labels: ``int(basename.split('_')[0])`` for Probe and Gallery_Match; ``-100`` for every distractor.
- Each of the three folders must hold images: AdaFace would score an empty Gallery_Distractor (a much easier
  gallery: Rank-1 several times higher) without a word; here it is an error, as an empty Probe or Gallery_Match.
- Features are those of the *aligned* images, joined to the original lists by basename without extension (the key
  is searched over the whole aligned folder, whatever its sub-folder). AdaFace assumes those keys unique and never
  checks; here a duplicate key (among the originals, or among the aligned copies) raises naming both files.
- AdaFace loads the two ``.mat`` files but ignores their ids. Here they are read when present and cross-checked
  against the walk: the same set of file names, and each id equal to the file name's identity. That equality is
  what SynthFace writes and what the real file names suggest, but it is not verified on the real files
  (``check_mat=False`` skips the check).

Errors are one line: :class:`~harness.core.errors.DataFormatError` naming the file and the field, or
``FileNotFoundError`` naming the missing path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError, require_dir

WHAT = "TinyFace"
TESTING_SET = os.path.join("tinyface", "Testing_Set")
DEFAULT_ALIGNED = "aligned_pad_0.1_pad_high"
FOLDERS = ("Probe", "Gallery_Match", "Gallery_Distractor")
EXTENSIONS = (".jpg", ".png", ".jpeg")  # AdaFace get_all_files' extension_list
DISTRACTOR_LABEL = -100
PROBE_MAT = ("probe_img_ID_pairs.mat", "probe_set", "probe_ids", "Probe")
GALLERY_MAT = ("gallery_match_img_ID_pairs.mat", "gallery_set", "gallery_ids", "Gallery_Match")


@dataclass
class TinyFaceProtocol:
    """The TinyFace identification lists. Gallery = Gallery_Match rows, then Gallery_Distractor rows (AdaFace's
    ``indices_gallery`` order); ``*_paths`` are the aligned images whose features are used, ``*_originals`` the
    original files they were joined from."""

    root: str
    aligned_root: str
    probe_paths: list[str]
    probe_originals: list[str]
    probe_labels: np.ndarray  # (P,) int64
    gallery_paths: list[str]
    gallery_originals: list[str]
    gallery_labels: np.ndarray  # (G,) int64, DISTRACTOR_LABEL for distractors
    num_match: int
    num_distractors: int
    mat_checked: tuple[str, ...] = ()  # the .mat files that were read and agreed with the walk

    @property
    def num_probes(self) -> int:
        return len(self.probe_paths)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery_paths)

    @property
    def num_identities(self) -> int:
        """Distinct labelled identities over Probe and Gallery_Match."""
        return int(np.unique(np.concatenate([self.probe_labels, self.gallery_labels[: self.num_match]])).shape[0])

    def counts(self) -> dict:
        return {
            "probes": self.num_probes,
            "gallery_match": self.num_match,
            "distractors": self.num_distractors,
            "identities": self.num_identities,
        }


def _key(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _walk(folder: str) -> list[str]:
    """AdaFace ``get_all_files``: every file below ``folder`` with an image extension; sorted here."""
    out = []
    for dirpath, _, filenames in os.walk(folder):
        out += [os.path.join(dirpath, f) for f in filenames if os.path.splitext(f)[1] in EXTENSIONS]
    return sorted(out)


def parse_label(path: str) -> int:
    """``int(basename.split('_')[0])`` as AdaFace; a name that does not parse raises naming the file."""
    base = os.path.basename(path)
    head = base.split("_")[0]
    try:
        label = int(head)
    except ValueError:
        raise DataFormatError(
            path, "file name", f"cannot parse an identity from {base!r} (expected <identity>_<photo>.jpg)"
        ) from None
    if label == DISTRACTOR_LABEL:
        raise DataFormatError(path, "file name", f"identity {DISTRACTOR_LABEL} is reserved for distractors")
    return label


def _unique_keys(paths: list[str], what: str) -> dict[str, str]:
    index: dict[str, str] = {}
    for p in paths:
        k = _key(p)
        if k in index:
            raise DataFormatError(p, "file name", f"duplicate basename {k!r} among the {what} (also {index[k]})")
        index[k] = p
    return index


def _mat_strings(cell: np.ndarray, path: str, field: str) -> list[str]:
    flat = np.asarray(cell).reshape(-1)
    names = []
    for i, item in enumerate(flat):
        v = item
        while isinstance(v, np.ndarray) and v.dtype == object and v.size == 1:
            v = v.reshape(-1)[0]
        if isinstance(v, np.ndarray) and v.dtype.kind == "U" and v.size == 1:
            v = v.reshape(-1)[0]
        if not isinstance(v, str):
            raise DataFormatError(
                path, f"field {field}", f"row {i + 1}: expected a file name string, got {type(v).__name__}"
            )
        names.append(str(v))
    return names


def check_mat(path: str, set_key: str, ids_key: str, walked: list[str]) -> None:
    """Cross-check one ``*_img_ID_pairs.mat`` against the walked original files of its folder."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types on corrupt input
        raise DataFormatError(
            path, None, f"unreadable .mat file ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None
    for k in (set_key, ids_key):
        if k not in mat:
            raise DataFormatError(path, f"field {k}", "missing")
    names = _mat_strings(mat[set_key], path, set_key)
    ids = np.asarray(mat[ids_key])
    if ids.size != len(names):
        raise DataFormatError(path, f"field {ids_key}", f"{ids.size} ids but {set_key} has {len(names)} names")
    ids = ids.reshape(-1)
    if ids.dtype.kind not in "iuf" or not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)):
        raise DataFormatError(path, f"field {ids_key}", f"ids must be integers, got dtype {ids.dtype}")
    by_name = {os.path.basename(p): p for p in walked}
    seen: set[str] = set()
    for i, (name, ident) in enumerate(zip(names, ids)):
        if name in seen:
            raise DataFormatError(path, f"field {set_key}", f"row {i + 1}: {name!r} listed twice")
        seen.add(name)
        if name not in by_name:
            raise DataFormatError(path, f"field {set_key}", f"row {i + 1}: {name!r} is not in the folder")
        if int(ident) != parse_label(by_name[name]):
            raise DataFormatError(
                path,
                f"field {ids_key}",
                f"row {i + 1}: id {int(ident)} but file name {name!r} says {parse_label(by_name[name])}",
            )
    missing = sorted(set(by_name) - seen)
    if missing:
        raise DataFormatError(
            path, f"field {set_key}", f"{len(missing)} file(s) of the folder not listed, first {missing[0]!r}"
        )


def read_tinyface(
    root: str | os.PathLike, aligned: str = DEFAULT_ALIGNED, check_mat_files: bool = True
) -> TinyFaceProtocol:
    """Read the TinyFace test lists under ``root`` (AdaFace's ``tinyface_root``); ``aligned`` is the aligned copy's
    folder name under ``root`` (or a path)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: {WHAT} root not found (no such directory)")
    testing = require_dir(os.path.join(root, TESTING_SET), f"{WHAT} Testing_Set folder")
    aligned_root = require_dir(os.path.join(root, aligned), f"{WHAT} aligned copy ({aligned})")
    walked = {f: _walk(require_dir(os.path.join(testing, f), f"{WHAT} {f} folder")) for f in FOLDERS}
    for f in FOLDERS:  # an empty Gallery_Distractor would be scored against a 100x smaller gallery: refused too
        if not walked[f]:
            raise DataFormatError(os.path.join(testing, f), None, "no images (.jpg/.png/.jpeg)")
    _unique_keys(
        walked["Probe"] + walked["Gallery_Match"] + walked["Gallery_Distractor"], "original Testing_Set images"
    )
    aligned_index = _unique_keys(_walk(aligned_root), f"aligned images under {aligned_root}")

    def join(paths: list[str]) -> list[str]:
        out = []
        for p in paths:
            a = aligned_index.get(_key(p))
            if a is None:
                raise DataFormatError(
                    p, "aligned copy", f"no aligned image with basename {_key(p)!r} under {aligned_root}"
                )
            out.append(a)
        return out

    probe_labels = np.array([parse_label(p) for p in walked["Probe"]], dtype=np.int64)
    match_labels = np.array([parse_label(p) for p in walked["Gallery_Match"]], dtype=np.int64)
    checked = []
    if check_mat_files:
        for name, set_key, ids_key, folder in (PROBE_MAT, GALLERY_MAT):
            path = os.path.join(testing, name)
            if os.path.isfile(path):
                check_mat(path, set_key, ids_key, walked[folder])
                checked.append(path)
    n_d = len(walked["Gallery_Distractor"])
    return TinyFaceProtocol(
        root=root,
        aligned_root=aligned_root,
        probe_paths=join(walked["Probe"]),
        probe_originals=walked["Probe"],
        probe_labels=probe_labels,
        gallery_paths=join(walked["Gallery_Match"]) + join(walked["Gallery_Distractor"]),
        gallery_originals=walked["Gallery_Match"] + walked["Gallery_Distractor"],
        gallery_labels=np.concatenate([match_labels, np.full(n_d, DISTRACTOR_LABEL, dtype=np.int64)]),
        num_match=len(walked["Gallery_Match"]),
        num_distractors=n_d,
        mat_checked=tuple(checked),
    )
