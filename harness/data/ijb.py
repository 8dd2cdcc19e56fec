"""Reader for the insightface "IJB_release" package of IJB-B and IJB-C (1:1 verification metadata and loose crops).

Layout (``root`` is e.g. ``IJB_release/IJBB``; ``t`` is ``ijbb`` or ``ijbc``)::

    <root>/loose_crop/<k>.jpg
    <root>/meta/<t>_face_tid_mid.txt          image_name template_id media_id            (3 fields)
    <root>/meta/<t>_name_5pts_score.txt       name x1 y1 ... x5 y5 faceness              (12 fields)
    <root>/meta/<t>_template_pair_label.txt   tid1 tid2 label                            (3 integers)

All three are single-space separated, no header, one record per line. Sources:

- insightface ``recognition/_evaluation_/ijb/ijb_11.py`` (``read_template_media_list``, ``read_template_pair_list``,
  ``get_image_feature``): rows of face_tid_mid and name_5pts_score are joined by row index only; landmarks are
  ``float(x)`` -> float32 reshaped to (5, 2) as x,y pairs; the faceness column is kept as strings and converted with
  ``np.array(strings).astype(np.float32)``, which this reader reproduces bit for bit.
- insightface issues #1349 / #1364: the pair file must be parsed as integers (the old ``np.loadtxt(dtype=str)``
  reader broke IJB-C); the fix was ``pd.read_csv(sep=' ', header=None)``. Here a NumPy SWAR parser of the
  memory-mapped file is the fast path (IJB-C: 15.6 M lines in about 0.6 s) and a line-by-line scan, which names the
  first bad line, is the fallback.
- ``ijb_11.py`` ``verification``: ``template2id`` is a zero-initialised array, so a pair naming a template absent from
  face_tid_mid silently scores template row 0. :func:`check_pairs_known` raises instead.

Two parsers give the same numbers: a fast one for files in the exact release layout (LF line ends, single spaces,
no empty field, only digits in integer columns, finite decimals elsewhere; for the two per-image files the layout is
checked on the bytes with NumPy, the name column is cut out of the bytes, the number columns go to pandas' C parser,
whose integers are exact and whose decimals (``fast_float``) are correctly rounded, as ``float()`` and NumPy's text
reader; the all-integer pair file is parsed by :func:`_swar_pairs`), and the line-by-line reader it falls back to
for anything else (CRLF, trailing blank lines, bad fields), which is the reference and names the first bad line.
``tests/test_eval_speed_paths.py`` checks they agree.

Every problem raises :class:`harness.errors.DataFormatError` naming the file and the 1-based line; nothing is skipped.
Blank lines at the end of a file are tolerated, blank lines inside are errors.
"""

from __future__ import annotations

import csv
import io
import mmap
import os
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from harness.core.errors import DataFormatError, require_dir, require_file
from harness.core.runtime import in_background
from harness.data.text import read_lines, split_lines

WHAT = "IJB-B/IJB-C release"
PREFIXES = ("ijbb", "ijbc")
_INT_RE = re.compile(r"\+?[0-9]+\Z")
_INT64_MAX = np.iinfo(np.int64).max
_LUT_MAX = 1 << 25  # check_pairs_known: template ids below 32 M are looked up in a table, larger ones with np.isin


@dataclass
class IJBMeta:
    root: str
    prefix: str  # "ijbb" / "ijbc"
    image_names: list[str]  # row order of face_tid_mid / name_5pts_score
    templates: np.ndarray  # (N,) int64, template id of each image row
    medias: np.ndarray  # (N,) int64, media id of each image row
    landmarks: np.ndarray  # (N, 5, 2) float32, x,y in loose-crop pixel coordinates
    faceness: np.ndarray  # (N,) float32
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (P, 2) int64: tid1, tid2
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int8))  # (P,) int8: 1 genuine, 0 impostor

    def __len__(self) -> int:
        return len(self.image_names)


def meta_paths(root: str | os.PathLike, prefix: str) -> dict[str, str]:
    """The three meta file paths of a release, keyed ``face_tid_mid``, ``name_5pts_score``, ``template_pair_label``."""
    meta = os.path.join(os.fspath(root), "meta")
    return {
        k: os.path.join(meta, f"{prefix}_{k}.txt") for k in ("face_tid_mid", "name_5pts_score", "template_pair_label")
    }


def _infer_prefix(root: str) -> str:
    base = os.path.basename(os.path.normpath(root)).lower()
    if base in ("ijbb", "ijbc"):
        return base
    meta = os.path.join(root, "meta")
    found = sorted(p for p in PREFIXES if os.path.isfile(os.path.join(meta, f"{p}_face_tid_mid.txt")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"{meta}: {WHAT} meta files not found (no ijbb_face_tid_mid.txt or ijbc_face_tid_mid.txt; pass prefix=)"
        )
    raise ValueError(
        f"{meta}: both ijbb and ijbc meta files present and the folder name does not say which; pass prefix="
    )


def read_ijb(root: str | os.PathLike, prefix: str | None = None, with_pairs: bool = True) -> IJBMeta:
    """Read one IJB-B or IJB-C release folder (``IJB_release/IJBB`` or ``IJB_release/IJBC``).

    ``prefix`` (``"ijbb"``/``"ijbc"``) is inferred from the folder name, else from the meta file names. The two
    per-image files are checked row by row against each other and, with ``with_pairs``, every template id of the
    pair file must occur in face_tid_mid.
    """
    paths = _release_paths(os.fspath(root), prefix, with_pairs)
    meta, pair_job = _read_ijb(paths, with_pairs)
    if pair_job is not None:
        pairs, labels = pair_job.result()
        check_pairs_known(pairs, meta.templates, paths["template_pair_label"])
        meta.pairs, meta.labels = pairs, labels
    return meta


def read_ijb_deferred(root: str | os.PathLike, prefix: str | None = None) -> tuple[IJBMeta, Future]:
    """:func:`read_ijb` returning as soon as the per-image files are read: ``(meta without pairs, job)``, ``job`` a
    :class:`concurrent.futures.Future` of ``read_template_pairs`` running in a background thread since the start
    (its ``result()`` raises the pair file's errors; :func:`check_pairs_known` is the caller's). For callers that
    pool the template features right away, so that the 15.7 M lines of IJB-C are parsed meanwhile."""
    paths = _release_paths(os.fspath(root), prefix, True)
    return _read_ijb(paths, True)


def _release_paths(root: str, prefix: str | None, with_pairs: bool) -> dict[str, str]:
    """The checked meta paths of a release folder (``prefix`` inferred as in :func:`read_ijb`)."""
    root = require_dir(root, WHAT)
    require_dir(os.path.join(root, "meta"), f"{WHAT} meta folder")
    require_dir(os.path.join(root, "loose_crop"), f"{WHAT} loose_crop folder")
    if prefix is None:
        prefix = _infer_prefix(root)
    prefix = prefix.lower()
    if prefix not in PREFIXES:
        raise ValueError(f"{root}: unknown {WHAT} prefix {prefix!r} (expected one of {PREFIXES})")
    paths = meta_paths(root, prefix)
    for key, p in paths.items():
        if key != "template_pair_label" or with_pairs:
            require_file(p, f"{WHAT} meta file")
    return {"root": root, "prefix": prefix, **paths}


def _read_ijb(paths: dict[str, str], with_pairs: bool) -> tuple[IJBMeta, Future | None]:
    # the pair file (IJB-C: 15.7 M lines) is parsed in a second thread (NumPy releases the GIL) while the two
    # per-image files are read here; errors keep their order (per-image files first)
    pair_job = in_background(read_template_pairs, paths["template_pair_label"]) if with_pairs else None
    names, tids, mids = read_face_tid_mid(paths["face_tid_mid"])
    names5, landmarks, faceness = read_name_5pts_score(paths["name_5pts_score"])
    _check_same_rows(names, paths["face_tid_mid"], names5, paths["name_5pts_score"])
    return IJBMeta(paths["root"], paths["prefix"], names, tids, mids, landmarks, faceness), pair_job


def loose_crop_path(meta: IJBMeta, i: int) -> str:
    """Path of the loose crop of image row ``i``: ``<root>/loose_crop/<image_name>``."""
    return os.path.join(meta.root, "loose_crop", meta.image_names[i])


# ----------------------------------------------------------------------------------------------------------- helpers


def _read_lines(path: str) -> list[str]:
    """Lines of a text file without terminators (LF or CRLF); trailing blank lines dropped, inner ones kept."""
    require_file(path, f"{WHAT} meta file")
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(path, None, "file is empty (no records)")
    return lines


def _check_field_counts(lines: list[str], path: str, n_fields: int, layout: str) -> None:
    """Every line must hold exactly ``n_fields`` single-space separated, non-empty fields."""
    n_sep = n_fields - 1
    if set(map(str.count, lines, repeat(" "))) != {n_sep}:
        for i, line in enumerate(lines):
            if line.count(" ") != n_sep or not line:
                _raise_bad_line(path, i + 1, line, line.split(" "), n_fields, layout)
    # an empty first field (a line starting with a space); other empty fields fail the number parsing below
    if not all(line[0] != " " for line in lines):
        i = next(i for i, line in enumerate(lines) if line[0] == " ")
        _raise_bad_line(path, i + 1, lines[i], lines[i].split(" "), n_fields, layout)


def _raise_bad_line(path: str, lineno: int, line: str, fields: list[str], n_fields: int, layout: str):
    if not line.strip():
        raise DataFormatError(path, f"line {lineno}", "blank line inside the file")
    if len(fields) == n_fields and "" in fields:
        raise DataFormatError(
            path, f"line {lineno}", f"empty field (fields must be separated by single spaces: '{layout}')"
        )
    raise DataFormatError(
        path, f"line {lineno}", f"expected {n_fields} space-separated fields '{layout}', got {len(fields)}"
    )


def _empty_field(path: str, lineno: int, what: str) -> DataFormatError:
    return DataFormatError(
        path, f"line {lineno}", f"empty field for {what} (fields must be separated by single spaces)"
    )


def _check_int_field(s: str, path: str, lineno: int, what: str) -> int:
    if not s:
        raise _empty_field(path, lineno, what)
    if not _INT_RE.match(s):
        raise DataFormatError(path, f"line {lineno}", f"{what} {s!r} is not a non-negative decimal integer")
    v = int(s)
    if v > _INT64_MAX:
        raise DataFormatError(path, f"line {lineno}", f"{what} {s} does not fit in int64")
    return v


_LOADTXT = dict(delimiter=" ", comments=None, quotechar=None, ndmin=2, encoding=None)


def _int_columns(lines: list[str], path: str, whats: list[str]) -> np.ndarray:
    """Fields 2.. of each line (space-separated non-negative decimal integers) -> int64 (N, k)."""
    cols = range(1, len(whats) + 1)
    try:
        arr = np.loadtxt(lines, dtype=np.int64, usecols=cols, **_LOADTXT)
        if (arr >= 0).all():
            return arr
    except (ValueError, OverflowError):
        pass
    for i, line in enumerate(lines):
        for s, what in zip(line.split(" ")[1:], whats):
            _check_int_field(s, path, i + 1, what)
    raise DataFormatError(path, None, "could not parse the integer columns")  # pragma: no cover


_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _float_columns(lines: list[str], path: str, whats: list[str]) -> np.ndarray:
    """Fields 2.. of each line (space-separated decimal numbers) -> float64 (N, k), exactly as Python's ``float()``."""
    cols = range(1, len(whats) + 1)
    try:
        arr = np.loadtxt(lines, dtype=np.float64, usecols=cols, **_LOADTXT)
    except ValueError:
        arr = None
    if arr is not None:
        finite = np.isfinite(arr)
        if finite.all():
            return arr
        i = int(np.flatnonzero(~finite.all(axis=1))[0])
        j = int(np.flatnonzero(~finite[i])[0])
        raise DataFormatError(
            path, f"line {i + 1}", f"{whats[j]} {lines[i].split(' ')[j + 1]!r} is not a finite number"
        )
    for i, line in enumerate(lines):
        for s, what in zip(line.split(" ")[1:], whats):
            if not s:
                raise _empty_field(path, i + 1, what)
            if not _FLOAT_RE.match(s):
                raise DataFormatError(path, f"line {i + 1}", f"{what} {s!r} is not a number")
    for i, line in enumerate(lines):  # pragma: no cover - a form the regex accepts but numpy does not
        try:
            np.loadtxt([line], dtype=np.float64, usecols=cols, **_LOADTXT)
        except ValueError as exc:
            raise DataFormatError(path, f"line {i + 1}", f"unparsable number ({exc})") from None
    raise DataFormatError(path, None, "could not parse the numeric columns")  # pragma: no cover


def _names(lines: list[str]) -> list[str]:
    return [line[: line.index(" ")] for line in lines]


def _check_unique_names(names: list[str], path: str) -> None:
    if len(set(names)) == len(names):
        return
    first: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in first:
            raise DataFormatError(path, f"line {i + 1}", f"image name {n!r} repeats line {first[n] + 1}")
        first[n] = i


# ----------------------------------------------------------------------------------------------------------- readers


def _read_bytes(path: str) -> bytes:
    require_file(path, f"{WHAT} meta file")
    with open(path, "rb") as f:
        return f.read()


def _fast_records(data: bytes, n_fields: int, numeric: bytes | None, dtype) -> tuple[list[str], np.ndarray] | None:
    """Fast path of the name-then-numbers files: ``(names, numbers (N, n_fields - 1) dtype)``, or None whenever the
    bytes are not in the exact release layout (then the line-by-line reader decides, and names the bad line).

    Layout checked here: non-empty, LF only (no CR), one LF at most at the end, exactly ``n_fields - 1`` single
    spaces per line with no empty field, only ``numeric`` bytes outside the name column (integer columns: digits,
    since pandas would also take ``+5``, ``5.0`` or ``1e3``; decimal columns: ``numeric=None``, pandas refuses what
    NumPy's reader refuses, and ``inf`` / ``1e999`` are caught as non-finite). Numbers are parsed by pandas' C
    reader (integers exact; decimals correctly rounded by ``fast_float``, i.e. the same float64 as ``float()`` and
    ``np.loadtxt``); any value it refuses, overflows or reads as non-finite means None.
    """
    import pandas as pd

    body = data[:-1] if data.endswith(b"\n") else data
    if not body or body.endswith(b"\n") or b"\r" in body:
        return None
    d = np.frombuffer(body, dtype=np.uint8)
    nl = np.flatnonzero(d == 10)
    n = nl.shape[0] + 1
    k = n_fields - 1
    sp = np.flatnonzero(d == 32)
    if sp.shape[0] != n * k:
        return None
    sp = sp.reshape(n, k)
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = nl + 1
    ends = np.append(nl, d.shape[0])
    # k spaces per line, inside it, first and last field non-empty, no two spaces adjacent (no empty inner field)
    if not ((sp[:, 0] > starts).all() and (sp[:, -1] < ends - 1).all() and (k == 1 or (np.diff(sp, axis=1) > 1).all())):
        return None
    # name column mask: line i is [starts[i], starts[i + 1]) with its LF; its name [starts[i], sp[i, 0])
    seg = np.empty(2 * n, dtype=np.int64)
    seg[0::2] = sp[:, 0] - starts
    seg[1::2] = np.append(starts[1:], d.shape[0]) - sp[:, 0]
    in_name = np.repeat(np.tile(np.array([True, False]), n), seg)
    del seg
    if numeric is not None:
        allowed = np.zeros(256, dtype=bool)
        allowed[list(numeric + b" \n")] = True
        if not (allowed[d] | in_name).all():
            return None
    in_name[nl] = True  # keep the LFs: "name\nname\n..."
    names = d[in_name].tobytes().decode("utf-8", errors="surrogateescape").split("\n")
    del in_name
    try:
        arr = pd.read_csv(
            io.BytesIO(body),
            sep=" ",
            header=None,
            usecols=range(1, n_fields),
            dtype=dtype,
            engine="c",
            quoting=csv.QUOTE_NONE,
            na_filter=False,
            skip_blank_lines=False,
        ).to_numpy()
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if arr.shape != (n, k) or arr.dtype != dtype or len(names) != n:
        return None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return None
    return names, arr


def read_face_tid_mid(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``<t>_face_tid_mid.txt`` -> (image names, template ids int64, media ids int64), in file row order."""
    path = os.fspath(path)
    fast = _fast_records(_read_bytes(path), 3, b"0123456789", np.dtype(np.int64))
    if fast is not None:
        names, ids = fast
        _check_unique_names(names, path)
        return names, np.ascontiguousarray(ids[:, 0]), np.ascontiguousarray(ids[:, 1])
    return _read_face_tid_mid_lines(path)


def _read_face_tid_mid_lines(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The line-by-line reader of :func:`read_face_tid_mid` (reference and fallback)."""
    lines = _read_lines(path)
    _check_field_counts(lines, path, 3, "image_name template_id media_id")
    names = _names(lines)
    _check_unique_names(names, path)
    ids = _int_columns(lines, path, ["template id", "media id"])
    return names, np.ascontiguousarray(ids[:, 0]), np.ascontiguousarray(ids[:, 1])


_5PTS_WHATS = [f"landmark {'xy'[j % 2]}{j // 2 + 1}" for j in range(10)] + ["faceness"]


def read_name_5pts_score(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``<t>_name_5pts_score.txt`` -> (names, landmarks (N, 5, 2) float32, faceness (N,) float32).

    Numbers are parsed to the correctly rounded float64 (numpy's text reader gives exactly Python's ``float()``), then
    cast to float32. That equals insightface for both columns: landmarks are ``np.array([float(x) ...], float32)``
    there, and faceness is ``np.array(strings).astype(np.float32)``, which numpy also computes string -> float64 ->
    float32 (checked bit for bit in the tests).
    """
    path = os.fspath(path)
    fast = _fast_records(_read_bytes(path), 12, None, np.dtype(np.float64))
    if fast is not None:
        names, vals = fast
        vals = np.ascontiguousarray(vals)
        return names, vals[:, :10].astype(np.float32).reshape(len(names), 5, 2), vals[:, 10].astype(np.float32)
    return _read_name_5pts_score_lines(path)


def _read_name_5pts_score_lines(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The line-by-line reader of :func:`read_name_5pts_score` (reference and fallback)."""
    lines = _read_lines(path)
    _check_field_counts(lines, path, 12, "name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 faceness")
    names = _names(lines)  # uniqueness follows from the row-by-row match with face_tid_mid in read_ijb
    vals = _float_columns(lines, path, _5PTS_WHATS)
    landmarks = vals[:, :10].astype(np.float32).reshape(len(lines), 5, 2)
    faceness = vals[:, 10].astype(np.float32)
    return names, landmarks, faceness


def _check_same_rows(names: list[str], path: str, names5: list[str], path5: str) -> None:
    if names != names5:
        for i, (a, b) in enumerate(zip(names, names5)):
            if a != b:
                raise DataFormatError(
                    path5,
                    f"line {i + 1}",
                    f"face_tid_mid names {a} but name_5pts_score names {b} (face_tid_mid: {path})",
                )
        n, n5 = len(names), len(names5)
        raise DataFormatError(
            path5,
            f"line {min(n, n5) + 1}",
            f"name_5pts_score has {n5} rows but face_tid_mid has {n} ({path}); "
            "the files must have the same rows in the same order",
        )


def read_template_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``<t>_template_pair_label.txt`` -> (pairs (P, 2) int64, labels (P,) int8), parsed as integers.

    Fast path, for the release layout (every line ``tid1 tid2 label``, single spaces, LF line ends, ids of 1-16
    digits, label ``0`` or ``1``; the last LF optional): :func:`_swar_pairs` on the memory-mapped file (no copy into
    a ``bytes`` object, whose fresh pages cost more than the parse at IJB-C scale), vectorised in NumPy by chunks.
    Anything else (CRLF, blank lines at the end, longer ids) goes to a line-by-line scan, the reference, which gives
    the same arrays or raises on the first bad line (field count, non-integer, label not 0/1, blank line inside).
    """
    path = os.fspath(path)
    require_file(path, f"{WHAT} meta file")
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                done = _swar_pairs(mm)
            if done is not None:
                return done
        data = f.read()
    return _scan_template_pairs(data, path)


#: :func:`_swar_pairs` parses this many bytes at a time (about 280 k IJB lines; the temporaries stay small)
_SWAR_CHUNK = 1 << 22
_U64 = np.uint64
#: the high ``L`` bytes of a little-endian uint64 (the last ``L`` bytes of the 8 ending at a field's end), L = 0..8
_KEEP_HIGH = np.array([0] + [((1 << 64) - 1) ^ ((1 << (8 * (8 - n))) - 1) for n in range(1, 9)], dtype=np.uint64)


def _swar8(w: np.ndarray) -> np.ndarray:
    """Value of the 8 ASCII digits in each uint64 (first digit in the lowest byte; bytes that are 0 count as
    leading zeros): the "SIMD within a register" reduction of simdjson's ``parse_eight_digits_unrolled`` (Lemire,
    "Number parsing at a gigabyte per second", 2021): pairs, quadruples, then the two halves, multiplied together
    (uint64 arithmetic wraps, as in C)."""
    w = ((w & _U64(0x0F0F0F0F0F0F0F0F)) * _U64(2561)) >> _U64(8)
    w = ((w & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    return ((w & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)


def _swar_field(words: np.ndarray, end: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Values (uint64) of the digit fields of 1-16 bytes ending at pad offsets ``end`` (``words[j]`` = the 8 bytes
    from pad offset ``j``, 16 zero bytes before the data): the last 8 digits, plus the ones before times 1e8."""
    value = _swar8(words[end - 8] & _KEEP_HIGH[np.minimum(length, 8)])
    if length.max() > 8:
        value += _swar8(words[end - 16] & _KEEP_HIGH[np.clip(length - 8, 0, 8)]) * _U64(100_000_000)
    return value


def _swar_pairs(buf) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pairs int64, labels int8)`` of a pair file in the exact release layout (ids of at most 16 digits), or
    None (then the line scan decides). Per chunk of whole lines: the separators (bytes below ``0``) must come as
    space, space, LF on every line and every other byte be a digit; field lengths 1-16, label one byte, 0 or 1; each
    id is read as the uint64 words ending at its end (an unaligned view of the chunk copied behind 16 zero bytes)
    with the bytes before the field zeroed, and reduced by :func:`_swar8`."""
    d = np.frombuffer(buf, dtype=np.uint8)
    n_bytes = d.shape[0]
    n = int(np.count_nonzero(d == 10)) + int(d[-1] != 10)
    pairs = np.empty((n, 2), dtype=np.int64)
    labels = np.empty(n, dtype=np.int8)
    pad = np.zeros(_SWAR_CHUNK + 32, dtype=np.uint8)
    words = np.ndarray(shape=(pad.shape[0] - 7,), dtype="<u8", buffer=pad, strides=(1,))  # words[j] = pad[j:j+8]
    start = row = 0
    while start < n_bytes:
        end = n_bytes if start + _SWAR_CHUNK >= n_bytes else buf.rfind(b"\n", start, start + _SWAR_CHUNK) + 1
        if end <= start:  # no LF in a whole chunk
            return None
        c = d[start:end]
        m = c.shape[0]
        if (c > 57).any():
            return None
        pad[16 : 16 + m] = c
        pad[16 + m : 24 + m] = 10  # the last line's LF if the file has none
        sep = np.flatnonzero(c < 48)
        if c[-1] != 10:
            sep = np.append(sep, m)
        if sep.shape[0] % 3 or row + sep.shape[0] // 3 > n:
            return None
        t = sep.reshape(-1, 3) + 16  # pad offsets of each line's space, space, LF
        t0, t1, t2 = t[:, 0], t[:, 1], t[:, 2]
        len0 = t0 - 16
        len0[1:] -= t2[:-1] - 15
        len1 = t1 - t0 - 1
        if not (
            (pad[t0] == 32).all()
            and (pad[t1] == 32).all()
            and (pad[t2] == 10).all()
            and (t2 - t1 == 2).all()
            and len0.min() >= 1
            and len0.max() <= 16
            and len1.min() >= 1
            and len1.max() <= 16
        ):
            return None
        lab = pad[t1 + 1] - np.uint8(48)
        if lab.max() > 1:
            return None
        k = t.shape[0]
        pairs[row : row + k, 0] = _swar_field(words, t0, len0)
        pairs[row : row + k, 1] = _swar_field(words, t1, len1)
        labels[row : row + k] = lab
        row += k
        start = end
    return (pairs, labels) if row == n else None


def _scan_template_pairs(data: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
    lines = split_lines(data.decode("utf-8", errors="surrogateescape"))
    if not lines:
        raise DataFormatError(path, None, "file is empty (no template pairs)")
    out = np.empty((len(lines), 3), dtype=np.int64)
    for i, line in enumerate(lines):
        f = line.split(" ")
        if len(f) != 3:
            _raise_bad_line(path, i + 1, line, f, 3, "tid1 tid2 label")
        a = _check_int_field(f[0], path, i + 1, "tid1")
        b = _check_int_field(f[1], path, i + 1, "tid2")
        if f[2] not in ("0", "1"):
            if not f[2]:
                raise _empty_field(path, i + 1, "label")
            if _INT_RE.match(f[2]):
                raise DataFormatError(path, f"line {i + 1}", f"label {f[2]} is not 0 (impostor) or 1 (genuine)")
            raise DataFormatError(path, f"line {i + 1}", f"label {f[2]!r} is not an integer (expected 0 or 1)")
        out[i] = (a, b, int(f[2]))
    return np.ascontiguousarray(out[:, :2]), out[:, 2].astype(np.int8)


def check_pairs_known(pairs: np.ndarray, templates: np.ndarray, pair_path: str | os.PathLike) -> None:
    """Every template id in ``pairs`` must occur in ``templates`` (face_tid_mid's per-row template ids).

    insightface's ``template2id`` would silently map an unknown id to template row 0; here the first unknown id raises
    ``DataFormatError`` naming the pair file, its 1-based line and the id.
    """
    pairs = np.asarray(pairs)
    if pairs.size == 0:
        return
    tu = np.unique(np.asarray(templates))
    lo, hi = int(pairs.min()), int(pairs.max())
    if tu.size and lo >= 0 and tu[0] >= 0 and max(hi, int(tu[-1])) < _LUT_MAX:  # lookup table: ids up to 32 M
        lut = np.zeros(max(hi, int(tu[-1])) + 1, dtype=bool)
        lut[tu] = True
        known = lut[pairs]
    else:
        known = np.isin(pairs, tu)
    if known.all():
        return
    row = int(np.flatnonzero(~known.all(axis=1))[0])
    col = 0 if not known[row, 0] else 1
    tid = int(pairs[row, col])
    raise DataFormatError(
        pair_path,
        f"line {row + 1}",
        f"tid{col + 1} {tid} is not a template of face_tid_mid (unknown template id {tid})",
    )
