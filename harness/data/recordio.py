"""MXNet / insightface RecordIO (``.rec`` + ``.idx``): a reader and a writer, without mxnet.

Written from the format description in these sources (no code copied):

* dmlc-core ``include/dmlc/recordio.h`` (and ``src/recordio.cc``): the on-disk record framing, the magic number,
  the ``lrec`` word (continue flag + length) and the splitting of payloads that contain the magic.
* mxnet ``python/mxnet/recordio.py``: ``MXIndexedRecordIO`` (the ``key\\toffset`` index file) and
  ``IRHeader`` / ``pack`` / ``unpack`` (the 24-byte image-record header and its optional float32 label array).
* insightface ``recognition/arcface_torch/dataset.py`` (``MXFaceDataset``): how face-recognition training sets
  (MS1M-ArcFace, Glint360K, WebFace, ...) are read: key 0 is an index record, image keys are ``range(1, a)``.
* insightface ``python-package/insightface/data/rec_builder.py`` and the older ``face2rec2.py``: how such sets are
  written (image records with a scalar class label, identity records, the ``property`` file).

On-disk layout
--------------
``.idx`` is text, one ``<key>\\t<offset>\\n`` line per record, ``offset`` being the byte position of the record in
the ``.rec`` file. A record in ``.rec`` is one or more *parts*, each::

    uint32 LE  magic = 0xCED7230A           (bytes 0A 23 D7 CE)
    uint32 LE  lrec  = cflag << 29 | length (cflag: 0 whole, 1 first, 2 middle, 3 last part)
    length bytes of data, then zero padding up to a multiple of 4

A payload that contains the magic at a 4-byte-aligned offset (relative to the payload start) is cut there and
those 4 bytes are dropped; the reader joins the parts and re-inserts the magic between them. So a reader that
scans for the magic can always resynchronise. Parts may be empty (magic at offset 0, at the end, or twice in a row).

The payload of an image record is ``IRHeader`` (``struct '<IfQQ'``: flag uint32, label float32, id uint64, id2
uint64) followed, if ``flag > 0``, by ``flag`` float32 labels (the header's label field is then 0 and ignored),
followed by the encoded image (JPEG).

insightface face recs: key 0 is an index record with ``flag = 2`` and label ``[a, b]``; keys ``1 .. a-1`` are image
records (scalar label = class id, or a label array whose ``[0]`` is the class id); keys ``a .. b-1`` are identity
records, one per class in class order, each ``flag = 2`` with label ``[start, end)`` = that class's image keys and
an empty image. A rec whose key-0 record has ``flag = 0`` has no index: every key in the ``.idx`` is an image.
A ``property`` text file next to ``train.rec`` holds ``num_classes,height,width``.

Errors in the files raise :class:`harness.core.errors.DataFormatError` with a one-line message naming the file and the
record key (``record 12``), the ``.idx`` line (``line 7``) or the ``property`` line.
"""

from __future__ import annotations

import functools
import io
import numbers
import operator
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError, require_dir, require_file
from harness.data.images import decode_image

__all__ = [
    "MAGIC",
    "IRHeader",
    "pack_header",
    "unpack_header",
    "RecordIOWriter",
    "RecordIOReader",
    "RecInfo",
    "write_face_rec",
    "FaceRecDataset",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"\x0a\x23\xd7\xce"
_LEN_MASK = (1 << 29) - 1
_PART_HEAD = struct.Struct("<II")  # magic, lrec
_IR = struct.Struct("<IfQQ")  # flag, label, id, id2
IR_SIZE = _IR.size  # 24
# float32 represents every integer up to 2**24 exactly; labels and keys stored as float32 must stay below it.
_FLOAT32_EXACT = 1 << 24
_WHAT = "MS1M-style RecordIO"


# --------------------------------------------------------------------------------------------------------------
# IRHeader


@dataclass(frozen=True)
class IRHeader:
    """The image-record header. ``label`` is a float when ``flag == 0``, else a float32 array of ``flag`` labels."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_header(header_label, id: int, id2: int, payload: bytes) -> bytes:
    """Return ``IRHeader + [float32 labels] + payload`` as mxnet's ``recordio.pack`` lays it out.

    A scalar ``header_label`` is stored in the header (``flag = 0``); an array-like one is stored as ``flag = len``
    float32 values after the header, the header's label field being 0.
    """
    if isinstance(header_label, numbers.Number) and not isinstance(header_label, np.ndarray):
        return _IR.pack(0, float(header_label), int(id), int(id2)) + bytes(payload)
    labels = np.asarray(header_label, dtype="<f4").ravel()
    if labels.size == 0:
        raise ValueError("pack_header: an empty label array cannot be stored (flag 0 means a scalar label)")
    return _IR.pack(int(labels.size), 0.0, int(id), int(id2)) + labels.tobytes() + bytes(payload)


def unpack_header(payload: bytes, path, key) -> tuple[IRHeader, bytes]:
    """Split a record payload into its :class:`IRHeader` and the rest (the image bytes).

    ``path``/``key`` only serve the error message: a payload shorter than the header, or whose ``flag`` float32
    labels run past its end, raises ``DataFormatError(path, "record <key>", ...)``.
    """
    n = len(payload)
    if n < IR_SIZE:
        raise DataFormatError(path, f"record {key}", f"payload is {n} bytes, shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = _IR.unpack_from(payload, 0)
    if flag == 0:
        return IRHeader(0, float(label), id_, id2), payload[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if end > n:
        raise DataFormatError(
            path,
            f"record {key}",
            f"IRHeader flag {flag} announces {flag} float32 labels, which run past the {n}-byte payload",
        )
    labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE).astype(np.float32)
    return IRHeader(flag, labels, id_, id2), payload[end:]


# --------------------------------------------------------------------------------------------------------------
# record framing


def _encode_record(payload: bytes) -> bytes:
    """Frame one payload as dmlc's RecordIOWriter::WriteRecord does (split at 4-aligned magic, drop it, pad)."""
    n = len(payload)
    if n > _LEN_MASK:
        raise ValueError(f"RecordIO payload of {n} bytes is too large (limit {_LEN_MASK} bytes, 29-bit length)")
    cuts: list[tuple[int, int]] = []  # [start, end) of every part but the last
    start = 0
    i = payload.find(_MAGIC_BYTES)
    while i != -1:
        if i % 4 == 0:
            cuts.append((start, i))
            start = i + 4
            i = payload.find(_MAGIC_BYTES, start)
        else:
            i = payload.find(_MAGIC_BYTES, i + 1)
    out = io.BytesIO()
    view = memoryview(payload)

    def part(cflag: int, a: int, b: int) -> None:
        length = b - a
        out.write(_PART_HEAD.pack(MAGIC, (cflag << 29) | length))
        out.write(view[a:b])
        pad = -length % 4
        if pad:
            out.write(b"\0" * pad)

    for j, (a, b) in enumerate(cuts):
        part(1 if j == 0 else 2, a, b)
    part(3 if cuts else 0, start, n)
    return out.getvalue()


class RecordIOWriter:
    """Write a ``.rec``/``.idx`` pair, atomically.

    Records go to ``<rec_path>.tmp-<pid>`` and ``<idx_path>.tmp-<pid>`` in the same directories; a successful
    :meth:`close` (or leaving the ``with`` block normally) fsyncs both and ``os.replace``-s them onto the final
    names, ``.rec`` first, ``.idx`` second. Leaving the ``with`` block by an exception (or calling :meth:`abort`)
    removes the temporary files, so a half-written pair never sits under the final names.

    :meth:`write` takes an already packed payload (see :func:`pack_header`); keys are unique ints, written to the
    ``.idx`` in call order.
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path)
        if os.path.abspath(self.rec_path) == os.path.abspath(self.idx_path):
            raise ValueError(f"RecordIOWriter: .rec and .idx paths are the same: {self.rec_path}")
        tag = f".tmp-{os.getpid()}"
        self._rec_tmp = self.rec_path + tag
        self._idx_tmp = self.idx_path + tag
        self._rec = open(self._rec_tmp, "wb")
        try:
            self._idx = open(self._idx_tmp, "w", encoding="ascii", newline="\n")
        except BaseException:
            self._rec.close()
            _remove_quietly(self._rec_tmp)
            raise
        self._pos = 0
        self._offsets: dict[int, int] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._offsets)

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; return the number of bytes it took in the ``.rec``."""
        if self._closed:
            raise ValueError(f"RecordIOWriter for {self.rec_path} is closed")
        key = operator.index(key)
        if key in self._offsets:
            raise ValueError(f"RecordIOWriter: duplicate key {key} for {self.rec_path}")
        data = _encode_record(bytes(payload))
        self._rec.write(data)
        self._idx.write(f"{key}\t{self._pos}\n")
        self._offsets[key] = self._pos
        self._pos += len(data)
        return len(data)

    def _overwrite(self, key: int, payload: bytes, size: int) -> None:
        """Rewrite record ``key`` in place; its framed size must equal ``size`` (what :meth:`write` returned)."""
        if self._closed:
            raise ValueError(f"RecordIOWriter for {self.rec_path} is closed")
        data = _encode_record(bytes(payload))
        if len(data) != size:
            raise ValueError(f"RecordIOWriter: record {key} cannot be rewritten in place ({len(data)} != {size} bytes)")
        self._rec.seek(self._offsets[key])
        self._rec.write(data)
        self._rec.seek(self._pos)

    def close(self) -> None:
        """Finish: flush, fsync and move both files onto their final names. Idempotent."""
        if self._closed:
            return
        try:
            for f in (self._rec, self._idx):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            os.replace(self._rec_tmp, self.rec_path)
            os.replace(self._idx_tmp, self.idx_path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop everything written: close and delete the temporary files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for f in (self._rec, self._idx):
            try:
                f.close()
            except OSError:
                pass
        _remove_quietly(self._rec_tmp)
        _remove_quietly(self._idx_tmp)

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _read_idx(idx_path: str) -> tuple[list[int], dict[int, int]]:
    """Parse a ``key\\toffset`` index file; a malformed line raises DataFormatError naming its 1-based number."""
    with open(idx_path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(idx_path, f"line {line}", "non-ASCII byte in RecordIO index") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    keys: list[int] = []
    offsets: dict[int, int] = {}
    for n, line in enumerate(lines, 1):
        fields = line.split("\t")
        try:
            if len(fields) != 2:
                raise ValueError
            key = int(fields[0])
            off = int(fields[1])
        except ValueError:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise DataFormatError(idx_path, f"line {n}", f"expected '<key>\\t<offset>', got {shown!r}") from None
        if off < 0:
            raise DataFormatError(idx_path, f"line {n}", f"negative offset {off}")
        if key in offsets:
            raise DataFormatError(idx_path, f"line {n}", f"duplicate key {key}")
        offsets[key] = off
        keys.append(key)
    return keys, offsets


class RecordIOReader:
    """Random access to the records of a ``.rec`` file by key, through its ``.idx``.

    The ``.idx`` is parsed on construction (``keys`` keeps its order); the ``.rec`` is opened lazily, read with
    ``os.pread`` through one descriptor, and re-opened in a forked child (the owning pid is remembered), so the
    reader can live in a dataset handed to DataLoader workers. Pickling drops the descriptor.
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = require_file(rec_path, "RecordIO data file (.rec)")
        self.idx_path = require_file(idx_path, "RecordIO index file (.idx)")
        self.keys, self._offsets = _read_idx(self.idx_path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._size = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return key in self._offsets

    def offset(self, key) -> int:
        """Byte offset of record ``key`` in the ``.rec`` (from the ``.idx``)."""
        off = self._offsets.get(key)
        if off is None:
            raise DataFormatError(self.rec_path, f"record {key}", f"key not in the index {self.idx_path}")
        return off

    def _fileno(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            if self._fd is not None:  # inherited across fork: drop the parent's descriptor, open our own
                try:
                    os.close(self._fd)
                except OSError:
                    pass
            fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._fd, self._pid, self._size = fd, pid, os.fstat(fd).st_size
        return self._fd

    def _pread(self, fd: int, n: int, pos: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(fd, n, pos)
        os.lseek(fd, pos, os.SEEK_SET)  # pragma: no cover - platforms without pread
        return os.read(fd, n)  # pragma: no cover

    def read(self, key, limit: int | None = None) -> bytes:
        """Return the payload of record ``key`` (parts joined, magic re-inserted between them).

        With ``limit``, return only its first ``min(limit, len)`` bytes, reading no further than needed.
        Raises DataFormatError (``<rec>:record <key>: ...``) for an unknown key, a wrong magic, a length past the
        end of the file, or a broken first/middle/last part sequence.
        """
        key = operator.index(key)
        pos = self.offset(key)
        fd = self._fileno()
        where = f"record {key}"
        out: bytearray | None = None
        part = 0
        while True:
            head = self._pread(fd, 8, pos)
            if len(head) < 8:
                raise DataFormatError(
                    self.rec_path,
                    where,
                    f"truncated: part header at offset {pos} runs past the end of the file ({self._size} bytes)",
                )
            magic, lrec = _PART_HEAD.unpack(head)
            if magic != MAGIC:
                raise DataFormatError(
                    self.rec_path, where, f"bad magic 0x{magic:08X} at offset {pos} (expected 0x{MAGIC:08X})"
                )
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if (part == 0 and cflag not in (0, 1)) or (part > 0 and cflag not in (2, 3)):
                expected = "0 (whole) or 1 (first)" if part == 0 else "2 (middle) or 3 (last)"
                raise DataFormatError(
                    self.rec_path,
                    where,
                    f"bad continuation flag {cflag} in part {part} at offset {pos} (expected {expected})",
                )
            padded = (length + 3) & ~3
            if pos + 8 + padded > self._size:
                raise DataFormatError(
                    self.rec_path,
                    where,
                    f"truncated: part at offset {pos} has length {length} (+padding), "
                    f"past the end of the file ({self._size} bytes)",
                )
            have = 0 if out is None else len(out)
            want = length if limit is None else max(0, min(length, limit - have))
            data = self._pread(fd, want, pos + 8) if want else b""
            if len(data) != want:
                raise DataFormatError(
                    self.rec_path, where, f"truncated: short read of {want} bytes at offset {pos + 8}"
                )
            if cflag == 0:
                return data
            if out is None:
                out = bytearray(data)
            else:
                out += _MAGIC_BYTES
                out += data
            if cflag == 3 or (limit is not None and len(out) >= limit):
                return bytes(out if limit is None else out[:limit])
            pos += 8 + padded
            part += 1

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = state["_pid"] = None
        return state


# --------------------------------------------------------------------------------------------------------------
# insightface face recs


@dataclass(frozen=True)
class RecInfo:
    """What :func:`write_face_rec` wrote."""

    root: str
    rec_path: str
    idx_path: str
    property_path: str
    num_images: int
    num_classes: int
    image_size: tuple[int, int]  # (height, width)
    index_label: tuple[int, int]  # key-0 label [a, b]: image keys 1..a-1, identity keys a..b-1


def _image_size_of(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the image header only, or None if it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:
        return None
    return h, w


def write_face_rec(
    out_dir, samples: Iterable[tuple[int, bytes]], num_classes: int, image_size: tuple[int, int]
) -> RecInfo:
    """Write ``train.rec``, ``train.idx`` and ``property`` in ``out_dir`` in insightface's layout.

    ``samples`` yields ``(class_id, jpeg_bytes)`` grouped by class: class ids contiguous and ascending from 0 to
    ``num_classes - 1``, no class empty (else ValueError, and nothing is left behind). Every image must be
    ``image_size = (height, width)`` (checked from its header). Image records get keys ``1..N`` with a scalar label
    (``flag 0``, ``id = key``); identity records keys ``N+1 .. N+num_classes`` with label ``[start, end)``; key 0
    (written first, patched at the end) is the index record ``[N+1, N+1+num_classes]`` (``id 0, id2 1``).
    The ``.rec``/``.idx`` pair is written atomically, ``property`` through a temporary file and a rename after it.
    """
    num_classes = operator.index(num_classes)
    height, width = (operator.index(v) for v in image_size)
    if num_classes < 1 or height < 1 or width < 1:
        raise ValueError(
            f"write_face_rec: need num_classes >= 1 and a positive image size, got {num_classes}, {image_size}"
        )
    root = os.fspath(out_dir)
    os.makedirs(root, exist_ok=True)
    rec_path = os.path.join(root, "train.rec")
    idx_path = os.path.join(root, "train.idx")
    prop_path = os.path.join(root, "property")
    prop_tmp = f"{prop_path}.tmp-{os.getpid()}"
    try:
        with RecordIOWriter(rec_path, idx_path) as writer:
            # Key 0 first, as in real recs; its values are only known at the end. Its framed size cannot change:
            # the two labels are non-negative floats, never the (negative-float) magic pattern.
            placeholder = pack_header(np.zeros(2, np.float32), 0, 1, b"")
            size0 = writer.write(0, placeholder)
            key = 1
            starts: list[int] = []
            current = -1
            for n, (cls, data) in enumerate(samples):
                cls = operator.index(cls)
                if cls != current:
                    if cls != current + 1 or cls >= num_classes:
                        raise ValueError(
                            f"write_face_rec: sample {n} has class {cls} after class {current}; samples must be "
                            f"grouped by class, ascending 0..{num_classes - 1}, no class empty"
                        )
                    starts.append(key)
                    current = cls
                hw = _image_size_of(data)
                if hw != (height, width):
                    got = "not a readable image" if hw is None else f"{hw[0]}x{hw[1]}"
                    raise ValueError(f"write_face_rec: sample {n} (class {cls}) is {got}, expected {height}x{width}")
                writer.write(key, pack_header(float(cls), key, 0, data))
                key += 1
            if current != num_classes - 1:
                raise ValueError(f"write_face_rec: samples cover classes 0..{current}, expected 0..{num_classes - 1}")
            a = key
            b = a + num_classes
            if b >= _FLOAT32_EXACT:
                raise ValueError(f"write_face_rec: {b} keys do not fit exactly in float32 labels")
            bounds = starts + [a]
            for c in range(num_classes):
                writer.write(a + c, pack_header(np.array([bounds[c], bounds[c + 1]], np.float32), a + c, 0, b""))
            writer._overwrite(0, pack_header(np.array([a, b], np.float32), 0, 1, b""), size0)
            with open(prop_tmp, "w", encoding="ascii", newline="\n") as f:
                f.write(f"{num_classes},{height},{width}\n")
                f.flush()
                os.fsync(f.fileno())
        os.replace(prop_tmp, prop_path)
    except BaseException:
        _remove_quietly(prop_tmp)
        raise
    return RecInfo(root, rec_path, idx_path, prop_path, a - 1, num_classes, (height, width), (a, b))


def _read_property(path: str) -> tuple[int, int, int]:
    with open(path, "rb") as f:
        raw = f.read()
    first = raw.split(b"\n", 1)[0].strip()
    try:
        fields = first.decode("ascii").split(",")
        if len(fields) != 3:
            raise ValueError
        num_classes, height, width = (int(v) for v in fields)
        if min(num_classes, height, width) < 1:
            raise ValueError
    except ValueError:
        shown = first[:60].decode("ascii", "backslashreplace")
        raise DataFormatError(
            path, "line 1", f"expected 'num_classes,height,width' (positive ints), got {shown!r}"
        ) from None
    return num_classes, height, width


def _as_int_label(value: float, path: str, key: int, what: str) -> int:
    v = float(value)
    if not (np.isfinite(v) and v == int(v)):
        raise DataFormatError(path, f"record {key}", f"{what} {v!r} is not an integer")
    return int(v)


class FaceRecDataset:
    """An insightface training set (``train.rec``, ``train.idx``, ``property``) with ``MXFaceDataset`` semantics.

    Item ``i`` is image key ``image_keys[i]``: ``range(1, a)`` when key 0 is an index record (``flag > 0``, label
    ``[a, b]``), else every ``.idx`` key in file order. ``dataset[i]`` is ``(RGB uint8 HxWx3, class id)``; the class
    is the scalar label or ``label[0]``, checked to be an integer in ``[0, num_classes)``.
    """

    def __init__(self, root):
        self.root = require_dir(root, f"{_WHAT} dataset root")
        self.rec_path = require_file(os.path.join(self.root, "train.rec"), f"{_WHAT} train.rec")
        self.idx_path = require_file(os.path.join(self.root, "train.idx"), f"{_WHAT} train.idx")
        self.property_path = require_file(os.path.join(self.root, "property"), f"{_WHAT} property file")
        self.num_classes, h, w = _read_property(self.property_path)
        self.image_size = (h, w)
        self.reader = RecordIOReader(self.rec_path, self.idx_path)
        self.index_label: tuple[int, int] | None = None
        head0 = None
        if 0 in self.reader:
            head0, _ = unpack_header(self.reader.read(0, limit=IR_SIZE + 8), self.rec_path, 0)
        if head0 is not None and head0.flag > 0:
            if head0.flag != 2:
                raise DataFormatError(self.rec_path, "record 0", f"index record has {head0.flag} labels, expected 2")
            a = _as_int_label(head0.label[0], self.rec_path, 0, "index label a")
            b = _as_int_label(head0.label[1], self.rec_path, 0, "index label b")
            if not 1 <= a <= b:
                raise DataFormatError(self.rec_path, "record 0", f"index label [{a}, {b}] is not 1 <= a <= b")
            missing = next((k for k in range(1, b) if k not in self.reader), None)
            if missing is not None:
                raise DataFormatError(
                    self.rec_path,
                    f"record {missing}",
                    f"key not in the index {self.idx_path}, but record 0 "
                    f"announces image keys 1..{a - 1} and identity keys {a}..{b - 1}",
                )
            if b - a != self.num_classes:
                raise DataFormatError(
                    self.property_path,
                    "line 1",
                    f"num_classes {self.num_classes}, but {self.rec_path} has "
                    f"{b - a} identity records (record 0 label [{a}, {b}])",
                )
            self.index_label = (a, b)
            self.image_keys = np.arange(1, a, dtype=np.int64)
        else:
            self.image_keys = np.asarray(self.reader.keys, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_keys)

    def _key(self, i) -> int:
        n = len(self.image_keys)
        i = operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"FaceRecDataset index {i} out of range ({n} images in {self.rec_path})")
        return int(self.image_keys[i])

    def _class_of(self, header: IRHeader, key: int) -> int:
        value = header.label if header.flag == 0 else header.label[0]
        cls = _as_int_label(value, self.rec_path, key, "class label")
        if not 0 <= cls < self.num_classes:
            raise DataFormatError(
                self.rec_path,
                f"record {key}",
                f"class label {cls} outside [0, {self.num_classes}) (num_classes from {self.property_path})",
            )
        return cls

    def label(self, i) -> int:
        """Class id of the ``i``-th image, read from its header only."""
        key = self._key(i)
        head = self.reader.read(key, limit=IR_SIZE + 4)
        if len(head) >= IR_SIZE:
            flag = _IR.unpack_from(head, 0)[0]
            if flag > 1:  # labels run past what was read: read the whole header
                head = self.reader.read(key, limit=IR_SIZE + 4 * flag)
        header, _ = unpack_header(head, self.rec_path, key)
        return self._class_of(header, key)

    def labels(self) -> np.ndarray:
        """All class ids, in item order (int64)."""
        return np.fromiter((self.label(i) for i in range(len(self))), dtype=np.int64, count=len(self))

    def __getitem__(self, i) -> tuple[np.ndarray, int]:
        key = self._key(i)
        header, img = unpack_header(self.reader.read(key), self.rec_path, key)
        cls = self._class_of(header, key)
        rgb = decode_image(img, self.rec_path, where=f"record {key}")
        if rgb.shape[:2] != self.image_size:
            raise DataFormatError(
                self.rec_path,
                f"record {key}",
                f"image is {rgb.shape[0]}x{rgb.shape[1]}, property says {self.image_size[0]}x{self.image_size[1]}",
            )
        return rgb, cls

    @functools.cached_property
    def identity_ranges(self) -> dict[int, tuple[int, int]] | None:
        """class -> ``[start, end)`` image-key range, from the identity records; None for a rec without index."""
        if self.index_label is None:
            return None
        a, b = self.index_label
        ranges: dict[int, tuple[int, int]] = {}
        for key in range(a, b):
            header, _ = unpack_header(self.reader.read(key), self.rec_path, key)
            if header.flag < 2:
                raise DataFormatError(
                    self.rec_path, f"record {key}", f"identity record has flag {header.flag}, expected 2"
                )
            start = _as_int_label(header.label[0], self.rec_path, key, "identity start")
            end = _as_int_label(header.label[1], self.rec_path, key, "identity end")
            if not 1 <= start <= end <= a:
                raise DataFormatError(
                    self.rec_path, f"record {key}", f"identity range [{start}, {end}) outside image keys [1, {a})"
                )
            ranges[key - a] = (start, end)
        return ranges

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> FaceRecDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
