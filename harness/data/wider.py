"""WIDER FACE as CFSM's unlabeled target domain: the flat crop folder + list file, and the raw box annotation.

Sources:

- CFSM (liuf1990/CFSM) ``CFSM/data_list/target_list_wf_12k.txt``: the synthesis model reads a flat folder of aligned
  ~112x112 face crops and a list file with one crop file name per line (12,000 lines), e.g.
  ``12_Group_Large_Group_12_Group_Large_Group_12_27_5_999.jpg`` =
  ``<original image stem>_<face index>_<score*1000>.jpg``.
  That reading of the name is inferred (the last field lies in 500..999, a detector score above 0.5); see
  ``docs/benchmark_formats.md`` section 4.1. The published Stage-2 model used a 70K list that is not shipped.
- WIDER FACE ``wider_face_split/readme`` (``wider_face_{train,val}_bbx_gt.txt``): per image, a line with the relative
  image path, a line with the number of faces n, then n lines ``x1 y1 w h blur expression illumination invalid
  occlusion pose`` (ten integers; the real files end each box line with a space). An image with no faces has ``0``
  followed by one dummy line of ten zeros.

Every problem raises :class:`harness.core.errors.DataFormatError` naming the file and the 1-based line. Blank lines at
the end of a file are tolerated; blank lines inside are errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError, require_dir, require_file
from harness.data.images import read_image
from harness.data.text import read_lines

CROP_WHAT = "WIDER FACE target-domain crop folder"
CROP_LIST_WHAT = "WIDER FACE target-domain crop list"
BBX_WHAT = "WIDER FACE bbx_gt annotation"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


# ------------------------------------------------------------------------------------------ (a) CFSM crop folder


@dataclass
class CropList:
    root: str  # the flat crop folder
    names: list[str]  # crop file names, in list order
    list_path: str  # the list file actually read

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.names[i])


def read_crop_list(root: str | os.PathLike, list_file: str | os.PathLike) -> CropList:
    """Read a CFSM-style list file (one crop file name per line) and check every named crop exists under ``root``.

    ``list_file`` is used as given when it exists (absolute, or relative to the working directory), else it is
    taken relative to ``root`` (CFSM passes bare list names such as ``target_list_wf_12k.txt``). Errors
    (``DataFormatError`` naming the list file and line): blank line inside, leading/trailing whitespace, absolute
    path, a ``..`` part (reading outside ``root``), duplicate name, missing crop file; an empty list is an error too.
    """
    root = require_dir(os.fspath(root), CROP_WHAT)
    list_file = os.fspath(list_file)
    list_path = list_file if os.path.isabs(list_file) or os.path.isfile(list_file) else os.path.join(root, list_file)
    require_file(list_path, CROP_LIST_WHAT)
    lines = read_lines(list_path)
    if not lines:
        raise DataFormatError(list_path, None, "crop list is empty (no file names)")
    seen: dict[str, int] = {}
    for i, name in enumerate(lines, 1):
        where = f"line {i}"
        if not name.strip():
            raise DataFormatError(list_path, where, "blank line inside the crop list")
        if name != name.strip():
            raise DataFormatError(list_path, where, f"crop name {name!r} has leading or trailing whitespace")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            raise DataFormatError(
                list_path, where, f"crop name {name!r} is an absolute path (names are relative to {root})"
            )
        if ".." in name.replace("\\", "/").split("/"):
            raise DataFormatError(
                list_path,
                where,
                f"crop name {name!r} has a '..' part: it would be read from outside the crop folder {root}",
            )
        if name in seen:
            raise DataFormatError(list_path, where, f"crop name {name!r} repeats line {seen[name]}")
        seen[name] = i
        if not os.path.isfile(os.path.join(root, name)):
            raise DataFormatError(list_path, where, f"crop file {os.path.join(root, name)} does not exist")
    return CropList(root, lines, list_path)


class CropFolderDataset:
    """The crops of a :class:`CropList` as RGB uint8 (H, W, 3) arrays, decoded with :func:`read_image`.

    ``CropFolderDataset(crop_list)`` or ``CropFolderDataset(root, list_file)``.

    Every crop of a list has one size, the first crop's (CFSM's crops are 112x112 aligned faces; the trainer then
    resizes the whole set to the model's input size): a crop of another size is a
    :class:`~harness.core.errors.DataFormatError` naming the list line, the file, its size and the expected one.
    """

    def __init__(self, root_or_list: CropList | str | os.PathLike, list_file: str | os.PathLike | None = None):
        if isinstance(root_or_list, CropList):
            if list_file is not None:
                raise TypeError("pass either a CropList or (root, list_file), not both")
            self.crop_list = root_or_list
        else:
            if list_file is None:
                raise TypeError("CropFolderDataset(root, list_file): list_file is required with a root folder")
            self.crop_list = read_crop_list(root_or_list, list_file)
        self.root = self.crop_list.root
        self.names = self.crop_list.names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> np.ndarray:
        image = read_image(os.path.join(self.root, self.names[i]))
        if getattr(self, "_size", None) is None:
            first = image if i == 0 else read_image(os.path.join(self.root, self.names[0]))
            self._size = first.shape[:2]
        if image.shape[:2] != self._size:
            h, w = self._size
            raise DataFormatError(
                self.crop_list.list_path,
                f"line {i + 1}",
                f"crop {os.path.join(self.root, self.names[i])} is {image.shape[1]}x{image.shape[0]}, "
                f"expected {w}x{h} like every crop of the list (line 1: {self.names[0]})",
            )
        return image


_CROP_NAME_RE = re.compile(r"(?P<stem>.+)_(?P<idx>[0-9]+)_(?P<score>[0-9]+)\Z")


def parse_crop_name(name: str) -> tuple[str, int, float]:
    """``'<stem>_<idx>_<score*1000>.jpg'`` -> (stem, face index, score / 1000).

    E.g. ``12_Group_Large_Group_12_Group_Large_Group_12_27_5_999.jpg`` -> ``('12_Group_..._12_27', 5, 0.999)``. A
    leading folder is ignored. Malformed names (no image extension, fewer than three ``_`` parts, non-digit index or
    score, score above 1000) raise ``ValueError``.
    """
    base = os.path.basename(os.fspath(name))
    stem_all, ext = os.path.splitext(base)
    if ext.lower() not in IMAGE_EXTS:
        raise ValueError(f"crop name {name!r}: expected '<stem>_<face index>_<score*1000>.jpg' (extension {ext!r})")
    m = _CROP_NAME_RE.match(stem_all)
    if not m or not m["idx"].isascii() or not m["score"].isascii():
        raise ValueError(f"crop name {name!r}: expected '<stem>_<face index>_<score*1000>.jpg'")
    score = int(m["score"])
    if score > 1000:
        raise ValueError(f"crop name {name!r}: score field {m['score']} is above 1000 (score*1000 expected)")
    return m["stem"], int(m["idx"]), score / 1000.0


# ------------------------------------------------------------------------------------------ (b) raw bbx_gt file


@dataclass
class WiderBox:
    x: int
    y: int
    w: int
    h: int
    blur: int
    expression: int
    illumination: int
    invalid: int
    occlusion: int
    pose: int


_BOX_FIELDS = "x1 y1 w h blur expression illumination invalid occlusion pose"
_INT_RE = re.compile(r"-?[0-9]+\Z")


def _box_ints(line: str, path: str, lineno: int, context: str) -> list[int]:
    fields = line.split()
    if not fields:
        raise DataFormatError(path, f"line {lineno}", f"blank line inside the file ({context})")
    if len(fields) != 10:
        raise DataFormatError(
            path,
            f"line {lineno}",
            f"expected 10 integer fields '{_BOX_FIELDS}', got {len(fields)} ({context}): {line.strip()!r}",
        )
    for s in fields:
        if not _INT_RE.match(s):
            raise DataFormatError(path, f"line {lineno}", f"box field {s!r} is not an integer ({context})")
    return [int(s) for s in fields]


def read_wider_bbx_gt(path: str | os.PathLike) -> list[tuple[str, list[WiderBox]]]:
    """Parse ``wider_face_{train,val}_bbx_gt.txt`` -> [(relative image path, boxes)] in file order.

    A 0-face image yields an empty box list (its dummy line of ten zeros is consumed and checked). Errors name the
    line: an image path line that is not an image path (e.g. a surplus box line), a non-integer or negative face count,
    a box line without exactly ten integers, a file that ends before the announced boxes, a blank line inside.
    """
    path = require_file(os.fspath(path), BBX_WHAT)
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(path, None, "annotation file is empty")
    out: list[tuple[str, list[WiderBox]]] = []
    n_lines = len(lines)
    i = 0  # 0-based index of the next line
    while i < n_lines:
        img = lines[i].strip()
        if not img:
            raise DataFormatError(path, f"line {i + 1}", "blank line inside the file (expected an image path)")
        if not img.lower().endswith(IMAGE_EXTS):
            raise DataFormatError(
                path,
                f"line {i + 1}",
                f"expected an image path (ending {'/'.join(IMAGE_EXTS)}), got {img!r}; "
                "more box lines than the face count above?",
            )
        path_line = i + 1
        i += 1
        if i >= n_lines:
            raise DataFormatError(path, f"line {i + 1}", f"file ends before the face count of {img} (line {path_line})")
        count = lines[i].strip()
        if not count.isascii() or not count.isdigit():
            raise DataFormatError(path, f"line {i + 1}", f"face count {count!r} of {img} is not a non-negative integer")
        n = int(count)
        count_line = i + 1
        i += 1
        boxes: list[WiderBox] = []
        if n == 0:
            context = f"dummy line after the 0-face count of {img} at line {count_line}"
            if i >= n_lines:
                raise DataFormatError(path, f"line {i + 1}", f"file ends before the {context}")
            vals = _box_ints(lines[i], path, i + 1, context)
            if any(vals):
                raise DataFormatError(
                    path, f"line {i + 1}", f"expected ten zeros ({context}), got {lines[i].strip()!r}"
                )
            i += 1
        else:
            for k in range(n):
                context = f"box {k + 1} of {n} of {img}, count at line {count_line}"
                if i >= n_lines:
                    raise DataFormatError(path, f"line {i + 1}", f"file ends early: missing {context}")
                boxes.append(WiderBox(*_box_ints(lines[i], path, i + 1, context)))
                i += 1
        out.append((img, boxes))
    return out
