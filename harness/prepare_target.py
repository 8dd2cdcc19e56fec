"""Command line: build CFSM's stage-1 target domain (a flat folder of 112x112 face crops + a list file).

    python -m harness.prepare_target wider --annotations wider_face_split/wider_face_train_bbx_gt.txt
        --images WIDER_train/images --out DIR [--list target_list.txt] [--min-size 32] [--size 112] [--margin 0.1]
        [--skip-invalid] [--max-blur N] [--max-occlusion N] [--landmarks label.txt] [--missing-landmarks skip|box]
        [--limit N | --sample N [--seed S]] [--quality 95] [--force]
    python -m harness.prepare_target folder --images DIR --out DIR [--size 112] [--list target_list.txt]
        [--quality 95] [--force]

What CFSM consumes (``liuf1990/CFSM``, ``CFSM/datasets.py`` and ``CFSM/data_list/target_list_wf_12k.txt``; see
``docs/benchmark_formats.md`` section 4.1): a flat folder of
~112x112 ArcFace-aligned face crops cut from WIDER FACE by a detector (RetinaFace-style 5-point alignment), and a list
file with one crop file name per line, named ``<original image stem>_<face index>_<score*1000>.jpg``, e.g.
``12_Group_Large_Group_12_Group_Large_Group_12_27_5_999.jpg`` for ``12--Group/12_Group_..._12_27.jpg``. The output
here is read back by :func:`harness.data.wider.read_crop_list` / :class:`harness.data.wider.CropFolderDataset`.

``wider`` (the WIDER FACE ground truth instead of CFSM's unreleased detections):

- Faces come from ``wider_face_{train,val}_bbx_gt.txt`` (parsed by :func:`harness.data.wider.read_wider_bbx_gt`;
  format: WIDER FACE ``wider_face_split/readme``). A face is kept when the *shorter* side of its box,
  ``min(w, h)``, is at least ``--min-size`` pixels (the shorter side, so that a thin sliver of a box never passes on
  its long side; zero or negative sizes never pass), and it passes the optional attribute filters:
  ``--skip-invalid`` (WIDER's ``invalid`` flag is 1), ``--max-blur N`` (blur: 0 clear, 1 normal, 2 heavy),
  ``--max-occlusion N`` (occlusion: 0 none, 1 partial, 2 heavy). A box with no pixel inside the image is skipped.
- Without ``--landmarks``, the crop is a *box crop*: the square of side ``(1 + margin) * max(w, h)`` centred on the
  box centre (the box covering ``[x1, x1 + w) x [y1, y1 + h)`` in pixel-edge coordinates), resampled to
  ``--size``; pixels outside the image are black (0), like the aligned crops' border. Why: CFSM's crops are
  ArcFace-aligned, and the stage-1 discriminator sees the target against aligned source faces, so the box crop should
  frame a face like the ArcFace template does. Fitting the ArcFace template (Umeyama similarity, as
  :mod:`harness.data.align`) to the RetinaFace landmarks of 21 faces (boxes of 21 to 339 px, all five points given)
  picked from the first 16 KB of RetinaFace's WIDER train ``label.txt`` (the copy stored in
  ``mr-carlitos/retinaface-pytorch`` ``data/widerface/train/label.txt``) maps the 112x112 template crop onto a
  square of median side 1.08 x ``max(w, h)`` (quartiles 0.98 and 1.14), whose centre lies a median 0.03
  ``max(w, h)`` left of and 0.05 above the box centre (quartiles -0.17..+0.02 vertically). Hence the default
  ``--margin 0.1`` and no shift: a small sample, and the shift is within its spread.
- With ``--landmarks label.txt`` (RetinaFace's WIDER annotation, ``retinaface_gt_v1.1``; format below), faces with
  all five landmarks are aligned with :func:`harness.data.align.umeyama_similarity` +
  :func:`harness.data.align.warp_affine` to :func:`harness.data.align.arcface_template` (``--size``), i.e. insightface
  ``norm_crop`` as CFSM's pipeline. Faces whose landmarks are missing (``-1``, no matching line, or degenerate points)
  are skipped (``--missing-landmarks skip``, the default: the target then holds only aligned crops, like CFSM's) or
  box-cropped (``box``). Landmark lines are matched to the ground-truth faces of the same image by their box ``x y w h``
  (rounded to integers; repeated boxes are matched in order).
- Names: ``<stem>_<face index>_999.jpg`` where ``stem`` is the image's file name without folder and extension (the
  reading of CFSM's example name, whose event folder ``12--Group/`` is dropped; WIDER's file names start with their
  event, so they are unique; whitespace becomes ``_``), ``face index`` the 0-based position of the box in the
  annotation's face list of that image (stable whatever the filters), and ``999`` the score field: ground-truth boxes
  have no detector score, and 999 (score 0.999) is the top of the range CFSM's names show (500..999). Two images with
  the same stem are an error.
- ``--limit N`` keeps the first N selected faces in annotation order (the annotation is sorted by event, so a small N
  covers few events); ``--sample N --seed S`` keeps a seeded uniform random subset of N (CFSM's 12K and 70K lists are
  subsets of unknown selection), written in annotation order.
- Every image named by the annotation must exist (checked before anything is written). The summary prints the
  images annotated and read, the faces seen, kept (aligned / box crops) and skipped for each reason
  (``below_min_size``, ``invalid``, ``blur``, ``occlusion``, ``no_landmarks``, ``degenerate_landmarks``,
  ``not_selected`` by ``--limit``/``--sample``, ``outside_image``: found after selection, so ``--limit N`` may write
  fewer than N).

``folder`` (a folder of unlabelled, already cropped faces): every ``.jpg/.jpeg/.png/.bmp`` (any case) under
``--images``, recursively, in sorted order of the relative path (``/``-separated). Each image is centre-cropped to
its central ``min(h, w)`` square (integer offset ``floor((w - side) / 2)``, like torchvision ``CenterCrop`` up to
rounding, so that a non-square crop is not distorted) and resampled to ``--size`` (edge pixels replicated, as
``cv2.resize(INTER_LINEAR)``, since the whole image is resized and nothing lies outside it). Names: the relative path
without extension, ``/`` and whitespace replaced by ``_``, then ``_<k>_999.jpg`` with ``k = 0``, or the smallest ``k``
that makes the name unique (``a/b.png`` and ``a_b.jpg``).

Resampling (both commands): bilinear with a black constant border (``folder``: replicated edges) and no antialiasing,
i.e. ``cv2.warpAffine(INTER_LINEAR)`` as in insightface's ``norm_crop`` (via :func:`harness.data.align.warp_affine`), so
that box crops and aligned crops share the resampling of CFSM's aligned crops. Crops are baseline JPEG, quality 95
(:func:`harness.data.images.encode_jpeg`; 95 is ``cv2.imwrite``'s default).

Output: ``--out`` is the crop folder; ``--list`` (default ``target_list.txt``) is a bare file name, written inside
``--out`` (CFSM style: ``read_crop_list(out, "target_list.txt")``), or a path (with a folder part, relative to the
working directory), e.g. ``--out REL/target/crops --list REL/target/target_list.txt`` for :mod:`harness.stage1`'s
``<release>/<target>/crops`` + ``<release>/<target>/<target_list>``. The list holds the crop names in writing order.
Atomic: everything is written into a temporary sibling folder ``.<out name>.tmp-*`` that is renamed to ``--out`` at
the end (a list outside ``--out`` is then replaced atomically, after the folder); on any error the temporary folder
is removed, so a half-written target never looks complete. An existing non-empty ``--out`` (or an existing list file
outside it) is refused unless ``--force``, which replaces it; ``--out`` may never hold the inputs.

RetinaFace ``label.txt`` (``retinaface_gt_v1.1``; format from ``biubug6/Pytorch_Retinaface`` ``data/wider_face.py``
and README, and ``deepinsight/insightface`` ``detection/retinaface/rcnn/dataset/retinaface.py``): a line
``# <relative image path>`` (the paths of the bbx_gt file) starts each image, followed by one line per face:
``x y w h l0x l0y v0 l1x l1y v1 l2x l2y v2 l3x l3y v3 l4x l4y v4 s`` (20 numbers; landmarks: left eye, right eye,
nose, left and right mouth corner; a missing landmark is ``-1 -1 -1``; ``v`` is 0.0 or 1.0 (insightface reads 0 as
visible); the last value, ~0.2 to 0.9, is read as ``blur`` by insightface and unused here). Lines of 4 numbers (box
only, as RetinaFace's val/test files) mean "no landmarks". Format errors name the file and line.

Errors (missing annotation, landmark or image file, undecodable image, format errors, refused ``--out``) exit with
status 2 and a one-line message naming the file (and the annotation line for images named by it).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.core.atomic import StagedFolder, write_bytes_atomic, write_staged
from harness.core.errors import DataFormatError, require_dir, require_file
from harness.data.align import arcface_template, umeyama_similarity, warp_affine
from harness.data.images import encode_jpeg, read_image
from harness.data.text import read_lines
from harness.data.wider import BBX_WHAT, WiderBox, read_wider_bbx_gt

__all__ = [
    "GT_SCORE_FIELD",
    "FOLDER_EXTS",
    "LandmarkFace",
    "read_retinaface_labels",
    "box_crop_matrix",
    "square_crop_matrix",
    "warp_crop",
    "prepare_wider",
    "prepare_folder",
    "main",
]

GT_SCORE_FIELD = 999  # the <score*1000> field of a ground-truth box (no detector score)
FOLDER_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARKS_WHAT = "RetinaFace WIDER landmark file (label.txt)"
DEFAULT_MARGIN = 0.1
_NUM_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")


class UsageError(ValueError):
    """A bad command line (unknown option, bad value)."""


# ------------------------------------------------------------------------------------------ RetinaFace label.txt


@dataclass
class LandmarkFace:
    box: tuple[float, float, float, float]  # x y w h
    landmarks: np.ndarray | None  # (5, 2) float64 pixel coordinates, None when missing
    line: int  # 1-based line in label.txt


def read_retinaface_labels(path: str | os.PathLike) -> dict[str, list[LandmarkFace]]:
    """Parse RetinaFace's WIDER ``label.txt`` -> {relative image path: faces in file order} (format: module docstring).

    A face has landmarks only when all five points are given (a point ``-1 -1`` is missing). Errors
    (:class:`DataFormatError` naming the file and line): a face line before the first ``# path`` line, an empty
    path, an image listed twice, a line that is not 4, 19 or 20 numbers, a non-finite number.
    """
    path = require_file(os.fspath(path), LANDMARKS_WHAT)
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(path, None, "landmark file is empty")
    out: dict[str, list[LandmarkFace]] = {}
    header_line: dict[str, int] = {}
    current: list[LandmarkFace] | None = None
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"line {i}"
        if not line:
            raise DataFormatError(path, where, "blank line inside the file")
        if line.startswith("#"):
            rel = line[1:].strip()
            if not rel:
                raise DataFormatError(path, where, "'#' line without an image path")
            if rel in out:
                raise DataFormatError(path, where, f"image {rel!r} already listed at line {header_line[rel]}")
            out[rel], header_line[rel] = [], i
            current = out[rel]
            continue
        if current is None:
            raise DataFormatError(path, where, "face line before the first '# <image path>' line")
        fields = line.split()
        if len(fields) not in (4, 19, 20):
            raise DataFormatError(
                path,
                where,
                f"expected 20 numbers 'x y w h' + 5 x 'lx ly v' + score (or 4: 'x y w h'), got {len(fields)}",
            )
        vals = []
        for s in fields:
            if not _NUM_RE.match(s):
                raise DataFormatError(path, where, f"field {s!r} is not a finite number")
            vals.append(float(s))
        lm = None
        if len(vals) >= 19:
            pts = np.array(vals[4:19], dtype=np.float64).reshape(5, 3)[:, :2]
            if not np.any((pts[:, 0] == -1.0) & (pts[:, 1] == -1.0)):
                lm = pts
        current.append(LandmarkFace((vals[0], vals[1], vals[2], vals[3]), lm, i))
    return out


def _box_key(box) -> tuple[int, int, int, int]:
    return tuple(int(round(float(v))) for v in box)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ geometry


def square_crop_matrix(left: float, top: float, side: float, size: int) -> np.ndarray:
    """Forward 3x3 matrix (source pixel-centre coordinates -> destination) that resamples the square
    ``[left, left + side) x [top, top + side)`` (pixel-edge coordinates) onto ``size x size`` pixels.

    Destination pixel centre ``u`` samples the source edge coordinate ``left + (u + 0.5) * side / size``, i.e. the
    source pixel-centre coordinate ``x = left + (u + 0.5) * a - 0.5`` with ``a = side / size`` (the convention of
    :func:`harness.data.align.warp_affine`); so an integer square with ``side == size`` is copied exactly.
    """
    if not side > 0:
        raise ValueError(f"square_crop_matrix: side must be positive, got {side}")
    a = side / size
    return np.array(
        [[1.0 / a, 0.0, (0.5 - left) / a - 0.5], [0.0, 1.0 / a, (0.5 - top) / a - 0.5], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def box_crop_matrix(box: WiderBox | tuple, margin: float, size: int) -> np.ndarray:
    """The box crop (module docstring): the square of side ``(1 + margin) * max(w, h)`` centred on the box."""
    x, y, w, h = (box.x, box.y, box.w, box.h) if isinstance(box, WiderBox) else box[:4]
    side = (1.0 + margin) * max(w, h)
    return square_crop_matrix(x + w / 2.0 - side / 2.0, y + h / 2.0 - side / 2.0, side, size)


def warp_crop(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine(image, M[:2], (size, size))`` (bilinear, black border) of an RGB uint8 (H, W, 3) image, via
    :func:`harness.data.align.warp_affine` on only the part of the image the crop can sample (the output square mapped
    back through ``M``, one pixel wider; zero padding outside that part equals the black border because the part
    is cut at the image's own edges or beyond any sampled pixel). Matches a whole-image ``warp_affine`` up to one
    grey level (the float32 sampling grid is computed relative to the smaller part)."""
    h, w = image.shape[:2]
    inv = np.linalg.inv(M)
    corners = np.array([[-1.0, -1.0, 1.0], [size, -1.0, 1.0], [-1.0, size, 1.0], [size, size, 1.0]]) @ inv.T
    x0 = max(0, math.floor(corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(corners[:, 1].min()) - 1)
    x1 = min(w, math.ceil(corners[:, 0].max()) + 2)
    y1 = min(h, math.ceil(corners[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    part = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1)[None]
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    out = warp_affine(part, torch.from_numpy(M @ shift), (size, size))
    return out[0].permute(1, 2, 0).contiguous().numpy()


def _flat_stem(text: str) -> str:
    return re.sub(r"\s", "_", text)


# ------------------------------------------------------------------------------------------ atomic output


def _resolve_list(out: str, list_arg: str) -> str:
    """A bare file name lives inside ``out``; anything with a folder part is a path as given."""
    if os.path.dirname(list_arg) == "" and list_arg not in ("", ".", ".."):
        return os.path.join(out, list_arg)
    return list_arg


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_outputs(out: str, list_path: str, force: bool, inputs: list[str]) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{out}: --out exists and is not a folder")
    for p in inputs:
        if _inside(p, out):
            raise ValueError(f"{out}: --out holds the input {p}; choose another output folder")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(f"{out}: output folder exists and is not empty (pass --force to replace it)")
    if not _inside(list_path, out):
        if os.path.isdir(list_path):
            raise FileExistsError(f"{list_path}: --list is a folder")
        if os.path.exists(list_path) and not force:
            raise FileExistsError(f"{list_path}: list file exists (pass --force to replace it)")


class _Staging:
    """Write into a staging folder next to ``out`` (:class:`harness.core.atomic.StagedFolder`); :meth:`publish`
    renames it to ``out`` (replacing an old one) and then writes a list file that lies outside ``out`` (atomically);
    :meth:`discard` removes the temporary folder."""

    def __init__(self, out: str, list_path: str):
        self.out = os.path.abspath(out)
        self.folder = StagedFolder(self.out)
        self.tmp = self.folder.tmp
        self.list_path = list_path
        self.list_inside = _inside(list_path, out)

    def path(self, name: str) -> str:
        return self.folder.path(name)

    def publish(self, names: list[str]) -> None:
        text = "".join(f"{n}\n" for n in names)
        if self.list_inside:
            rel = os.path.relpath(os.path.realpath(self.list_path), os.path.realpath(self.out))
            dest = os.path.join(self.tmp, rel)
            if os.path.exists(dest):
                raise FileExistsError(f"{self.list_path}: the list file would overwrite a crop")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            write_staged(dest, text)
        self.folder.publish()
        if not self.list_inside:
            write_bytes_atomic(text.encode("utf-8"), self.list_path)

    def discard(self) -> None:
        self.folder.discard()


# ------------------------------------------------------------------------------------------ wider


SKIP_REASONS = (
    "below_min_size",
    "invalid",
    "blur",
    "occlusion",
    "no_landmarks",
    "degenerate_landmarks",
    "not_selected",
    "outside_image",
)


@dataclass
class _Face:
    index: int  # 0-based position in the image's annotation
    line: int  # the box line of the annotation
    box: WiderBox
    M: np.ndarray | None = None  # alignment matrix (landmarks), None for a box crop
    name: str = ""


@dataclass
class _Image:
    rel: str
    line: int  # the image path line of the annotation
    faces: list[_Face] = field(default_factory=list)


@dataclass
class WiderOptions:
    min_size: int = 32
    size: int = 112
    margin: float = DEFAULT_MARGIN
    skip_invalid: bool = False
    max_blur: int | None = None
    max_occlusion: int | None = None
    landmarks: str | None = None
    missing_landmarks: str = "skip"  # or "box"
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    quality: int = 95
    force: bool = False


def _check_options(o: WiderOptions) -> None:
    if o.size < 1:
        raise UsageError(f"--size must be at least 1, got {o.size}")
    if o.min_size < 1:
        raise UsageError(f"--min-size must be at least 1, got {o.min_size}")
    if not (math.isfinite(o.margin) and o.margin > -1.0):
        raise UsageError(f"--margin must be a number above -1, got {o.margin}")
    if o.missing_landmarks not in ("skip", "box"):
        raise UsageError(f"--missing-landmarks must be skip or box, got {o.missing_landmarks!r}")
    if o.limit is not None and o.sample is not None:
        raise UsageError("--limit and --sample exclude each other")
    for flag, v in (("--limit", o.limit), ("--sample", o.sample)):
        if v is not None and v < 1:
            raise UsageError(f"{flag} must be at least 1, got {v}")
    if not 1 <= o.quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {o.quality}")


def _plan_wider(annotations: str, images: str, o: WiderOptions, skipped: Counter, info: Counter) -> list[_Image]:
    entries = read_wider_bbx_gt(annotations)
    labels = read_retinaface_labels(o.landmarks) if o.landmarks else None
    template = torch.as_tensor(arcface_template(o.size), dtype=torch.float64)
    plan: list[_Image] = []
    stems: dict[str, tuple[str, int]] = {}
    line = 1
    for rel, boxes in entries:
        path_line = line
        line += 2 + max(len(boxes), 1)
        where = f"line {path_line}"
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise DataFormatError(annotations, where, f"image path {rel!r} must be relative to --images, without '..'")
        img_path = os.path.join(images, rel)
        if not os.path.isfile(img_path):
            raise FileNotFoundError(f"{img_path}: image file not found (named at {annotations}:{where})")
        stem = _flat_stem(os.path.splitext(os.path.basename(rel))[0])
        if stem in stems:
            prev_rel, prev_line = stems[stem]
            raise DataFormatError(
                annotations,
                where,
                f"image {rel!r} gives the same crop stem {stem!r} as {prev_rel!r} (line {prev_line})",
            )
        stems[stem] = (rel, path_line)
        info["faces_seen"] += len(boxes)
        pending: dict[tuple[int, int, int, int], list] = {}
        if labels is not None:
            for lf in labels.get(rel, []):
                pending.setdefault(_box_key(lf.box), []).append(lf)
        entry = _Image(rel, path_line)
        lm_faces: list[tuple[_Face, np.ndarray]] = []
        for k, b in enumerate(boxes):
            face = _Face(k, path_line + 2 + k, b)
            lf = None
            if labels is not None:
                queue = pending.get((b.x, b.y, b.w, b.h))
                lf = queue.pop(0) if queue else None
            if min(b.w, b.h) < o.min_size:
                skipped["below_min_size"] += 1
            elif o.skip_invalid and b.invalid:
                skipped["invalid"] += 1
            elif o.max_blur is not None and b.blur > o.max_blur:
                skipped["blur"] += 1
            elif o.max_occlusion is not None and b.occlusion > o.max_occlusion:
                skipped["occlusion"] += 1
            elif labels is not None and (lf is None or lf.landmarks is None):
                if o.missing_landmarks == "skip":
                    skipped["no_landmarks"] += 1
                else:
                    info["box_fallback_no_landmarks"] += 1
                    entry.faces.append(face)
            else:
                entry.faces.append(face)
                if lf is not None:
                    lm_faces.append((face, lf.landmarks))
        for face, lm in lm_faces:
            try:
                face.M = umeyama_similarity(torch.as_tensor(lm), template).numpy()
            except ValueError:
                if o.missing_landmarks == "skip":
                    skipped["degenerate_landmarks"] += 1
                    entry.faces.remove(face)
                else:
                    info["box_fallback_degenerate_landmarks"] += 1
        for face in entry.faces:
            face.name = f"{stem}_{face.index}_{GT_SCORE_FIELD}.jpg"
        plan.append(entry)
    info["images_annotated"] = len(entries)
    if labels is not None:
        listed = {rel for rel, _ in entries}
        info["landmark_images_not_annotated"] = sum(1 for rel in labels if rel not in listed)
    return plan


def _select(plan: list[_Image], o: WiderOptions, skipped: Counter) -> None:
    faces = [(i, f) for i, img in enumerate(plan) for f in img.faces]
    if o.limit is not None:
        keep = set(range(min(o.limit, len(faces))))
    elif o.sample is not None:
        n = min(o.sample, len(faces))
        keep = set(np.random.default_rng(o.seed).choice(len(faces), size=n, replace=False).tolist())
    else:
        return
    skipped["not_selected"] += len(faces) - len(keep)
    chosen = {id(f) for j, (_, f) in enumerate(faces) if j in keep}
    for img in plan:
        img.faces = [f for f in img.faces if id(f) in chosen]


def prepare_wider(
    annotations: str,
    images: str,
    out: str,
    list_file: str = "target_list.txt",
    options: WiderOptions | None = None,
    log=print,
) -> dict:
    """Build the crop folder + list from WIDER FACE ground truth (module docstring). Returns the summary dict:
    ``images_annotated``, ``images_read``, ``faces_seen``, ``kept``, ``aligned``, ``box_crops``, ``skipped``
    ({reason: count}), ``out``, ``list``, ``names``."""
    o = options or WiderOptions()
    _check_options(o)
    require_file(annotations, BBX_WHAT)
    require_dir(images, "WIDER FACE image folder")
    if o.landmarks:
        require_file(o.landmarks, LANDMARKS_WHAT)
    list_path = _resolve_list(out, list_file)
    _check_outputs(out, list_path, o.force, [annotations, images] + ([o.landmarks] if o.landmarks else []))
    skipped: Counter = Counter()
    info: Counter = Counter()
    plan = _plan_wider(annotations, images, o, skipped, info)
    _select(plan, o, skipped)

    stage = _Staging(out, list_path)
    names: list[str] = []
    aligned = images_read = 0
    try:
        for img in plan:
            if not img.faces:
                continue
            img_path = os.path.join(images, img.rel)
            try:
                rgb = read_image(img_path)
            except DataFormatError as exc:
                raise DataFormatError(
                    exc.path, exc.where, f"{exc.reason} (named at {annotations}:line {img.line})"
                ) from None
            images_read += 1
            h, w = rgb.shape[:2]
            for face in img.faces:
                b = face.box
                if face.M is None and (b.x >= w or b.y >= h or b.x + b.w <= 0 or b.y + b.h <= 0):
                    skipped["outside_image"] += 1
                    continue
                M = face.M if face.M is not None else box_crop_matrix(b, o.margin, o.size)
                crop = warp_crop(rgb, M, o.size)
                write_staged(stage.path(face.name), encode_jpeg(crop, o.quality))
                names.append(face.name)
                aligned += face.M is not None
        if not names:
            raise ValueError(f"{annotations}: no face passed the filters; nothing to write (skipped: {_fmt(skipped)})")
        stage.publish(names)
    except BaseException:
        stage.discard()
        raise
    summary = {
        "images_annotated": info["images_annotated"],
        "images_read": images_read,
        "faces_seen": info["faces_seen"],
        "kept": len(names),
        "aligned": aligned,
        "box_crops": len(names) - aligned,
        "box_fallback_no_landmarks": info["box_fallback_no_landmarks"],
        "box_fallback_degenerate_landmarks": info["box_fallback_degenerate_landmarks"],
        "skipped": {r: skipped[r] for r in SKIP_REASONS},
        "out": os.path.abspath(out),
        "list": os.path.abspath(list_path),
        "names": names,
    }
    if o.landmarks:
        summary["landmark_images_not_annotated"] = info["landmark_images_not_annotated"]
    log(
        f"wider: images annotated {summary['images_annotated']}, read {images_read}; "
        f"faces seen {summary['faces_seen']}, "
        f"kept {len(names)} (aligned {aligned}, box crops {len(names) - aligned}); skipped: {_fmt(skipped)}"
    )
    log(f"wrote {len(names)} crops of {o.size}x{o.size} to {summary['out']} and the list {summary['list']}")
    return summary


def _fmt(counter: Counter) -> str:
    return ", ".join(f"{r.replace('_', ' ')} {counter[r]}" for r in SKIP_REASONS)


# ------------------------------------------------------------------------------------------ folder


def _folder_images(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if os.path.splitext(fn)[1].lower() in FOLDER_EXTS:
                found.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
    return sorted(found)


def prepare_folder(
    images: str,
    out: str,
    list_file: str = "target_list.txt",
    size: int = 112,
    quality: int = 95,
    force: bool = False,
    log=print,
) -> dict:
    """Build the crop folder + list from a folder of already-cropped faces (module docstring). Returns a summary
    dict: ``images_found``, ``kept``, ``out``, ``list``, ``names``."""
    if size < 1:
        raise UsageError(f"--size must be at least 1, got {size}")
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality must be in 1..100, got {quality}")
    require_dir(images, "face image folder")
    list_path = _resolve_list(out, list_file)
    if _inside(out, images):
        raise ValueError(f"{out}: --out lies inside --images {images}; a rerun would read its own crops")
    _check_outputs(out, list_path, force, [images])
    rels = _folder_images(images)
    if not rels:
        raise FileNotFoundError(f"{images}: no face images ({'/'.join(FOLDER_EXTS)}) found")
    stage = _Staging(out, list_path)
    names: list[str] = []
    taken: set[str] = set()
    try:
        for rel in rels:
            rgb = read_image(os.path.join(images, rel))
            h, w = rgb.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            # one replicated pixel around the square: the edge samples clamp like cv2.resize, no black border
            square = np.pad(rgb[top : top + side, left : left + side], ((1, 1), (1, 1), (0, 0)), mode="edge")
            M = square_crop_matrix(1, 1, side, size)
            stem = _flat_stem(os.path.splitext(rel)[0].replace("/", "_"))
            k = 0
            while f"{stem}_{k}_{GT_SCORE_FIELD}.jpg" in taken:
                k += 1
            name = f"{stem}_{k}_{GT_SCORE_FIELD}.jpg"
            taken.add(name)
            write_staged(stage.path(name), encode_jpeg(warp_crop(square, M, size), quality))
            names.append(name)
        stage.publish(names)
    except BaseException:
        stage.discard()
        raise
    summary = {
        "images_found": len(rels),
        "kept": len(names),
        "out": os.path.abspath(out),
        "list": os.path.abspath(list_path),
        "names": names,
    }
    log(f"folder: images found {len(rels)}, crops written {len(names)}")
    log(f"wrote {len(names)} crops of {size}x{size} to {summary['out']} and the list {summary['list']}")
    return summary


# ------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2 from main(), instead of usage + SystemExit
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="python -m harness.prepare_target",
        description="Build CFSM's stage-1 target domain: a flat folder of face crops + a list file.",
    )
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    out = _Parser(add_help=False)  # what both subcommands write
    out.add_argument("--out", required=True, help="the crop folder to create")
    out.add_argument(
        "--list",
        default="target_list.txt",
        help="list file: a bare name goes inside --out, a path is used as given (default: target_list.txt)",
    )
    out.add_argument("--size", type=int, default=112, help="crop size in pixels (default: 112)")
    out.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95, cv2.imwrite's)")
    out.add_argument("--force", action="store_true", help="replace an existing non-empty --out (and list file)")
    w = sub.add_parser(
        "wider", parents=[out], help="crops from WIDER FACE ground-truth boxes (optionally RetinaFace landmarks)"
    )
    w.add_argument("--annotations", required=True, help="wider_face_split/wider_face_{train,val}_bbx_gt.txt")
    w.add_argument(
        "--images", required=True, help="WIDER_{train,val}/images (the annotation's paths are relative to it)"
    )
    w.add_argument("--min-size", type=int, default=32, help="keep boxes whose shorter side is >= this (default: 32)")
    w.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"box crops: square side = (1 + margin) * max(w, h) (default: {DEFAULT_MARGIN})",
    )
    w.add_argument("--skip-invalid", action="store_true", help="skip faces with WIDER's invalid flag")
    w.add_argument(
        "--max-blur", type=int, default=None, help="skip faces with blur above N (0 clear, 1 normal, 2 heavy)"
    )
    w.add_argument(
        "--max-occlusion", type=int, default=None, help="skip faces with occlusion above N (0 none, 1 partial, 2 heavy)"
    )
    w.add_argument("--landmarks", default=None, help="RetinaFace label.txt: align faces with their 5 landmarks")
    w.add_argument(
        "--missing-landmarks",
        choices=("skip", "box"),
        default="skip",
        help="with --landmarks, faces without landmarks: skip (default) or box-crop",
    )
    w.add_argument("--limit", type=int, default=None, help="keep the first N selected faces (annotation order)")
    w.add_argument("--sample", type=int, default=None, help="keep a seeded random subset of N selected faces")
    w.add_argument("--seed", type=int, default=0, help="seed of --sample (default: 0)")
    f = sub.add_parser("folder", parents=[out], help="crops from a folder of already-cropped face images")
    f.add_argument("--images", required=True, help="folder of face images (.jpg/.jpeg/.png/.bmp, recursive)")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "wider":
            opts = WiderOptions(
                min_size=args.min_size,
                size=args.size,
                margin=args.margin,
                skip_invalid=args.skip_invalid,
                max_blur=args.max_blur,
                max_occlusion=args.max_occlusion,
                landmarks=args.landmarks,
                missing_landmarks=args.missing_landmarks,
                limit=args.limit,
                sample=args.sample,
                seed=args.seed,
                quality=args.quality,
                force=args.force,
            )
            prepare_wider(args.annotations, args.images, args.out, args.list, opts)
        else:
            prepare_folder(args.images, args.out, args.list, args.size, args.quality, args.force)
    except (DataFormatError, OSError, ValueError) as exc:  # UsageError is a ValueError
        msg = " ".join(str(exc).splitlines())
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
