"""Tests for harness.data.recordio: MXNet/insightface RecordIO read/write without mxnet.

The raw .rec bytes are parsed here independently of the module (``_parts``), and some files are built by hand,
so a bug shared by the reader and the writer cannot hide behind a round trip.
"""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.data.images import decode_image, encode_jpeg
from harness.data.recordio import (
    FaceRecDataset,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    pack_header,
    unpack_header,
    write_face_rec,
)

M = bytes.fromhex("0A23D7CE")  # 0xCED7230A little-endian


def _hdr(cflag: int, length: int) -> bytes:
    return M + struct.pack("<I", (cflag << 29) | length)


def _parts(raw: bytes, offset: int) -> list[tuple[int, bytes]]:
    """Independent parse of one record at ``offset``: [(cflag, data), ...] up to the whole/last part."""
    out = []
    while True:
        assert offset % 4 == 0, "every part starts 4-aligned"
        assert raw[offset : offset + 4] == M
        (lrec,) = struct.unpack_from("<I", raw, offset + 4)
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        data = raw[offset + 8 : offset + 8 + length]
        pad = raw[offset + 8 + length : offset + 8 + ((length + 3) // 4) * 4]
        assert pad == b"\0" * len(pad)
        out.append((cflag, data))
        offset += 8 + ((length + 3) // 4) * 4
        if cflag in (0, 3):
            return out


def _idx(path) -> list[tuple[int, int]]:
    with open(path) as f:
        return [(int(k), int(v)) for k, v in (line.rstrip("\n").split("\t") for line in f)]


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg
    return msg


def _check(exc: DataFormatError, path, where: str, word: str) -> None:
    """One line ``<path>:<where>: <reason>`` whose reason (not the path, which holds the test name) says ``word``."""
    msg = _one_line(exc)
    assert msg == f"{path}:{where}: {exc.reason}"
    assert word in exc.reason, exc.reason


# ----------------------------------------------------------------------------------------------------------------
# framing


PAYLOADS = {
    # key: (payload, expected cflags, expected part data)
    10: (b"", [0], [b""]),
    11: (b"abcde", [0], [b"abcde"]),
    12: (b"abcd" + M + b"efgh1", [1, 3], [b"abcd", b"efgh1"]),  # aligned magic in the middle
    13: (M + b"xyz", [1, 3], [b"", b"xyz"]),  # at offset 0
    14: (b"12345678" + M, [1, 3], [b"12345678", b""]),  # at the very end
    15: (b"abcd" + M + M + b"xy", [1, 2, 3], [b"abcd", b"", b"xy"]),  # twice in a row
    16: (b"ab" + M + b"cd", [0], [b"ab" + M + b"cd"]),  # not aligned: no split
    17: (b"a" + M + b"bcd" + M, [1, 3], [b"a" + M + b"bcd", b""]),  # unaligned kept, aligned one splits
    18: (M, [1, 3], [b"", b""]),
}


def test_round_trip_and_raw_layout(tmp_path):
    rng = np.random.default_rng(0)
    payloads = {k: v[0] for k, v in PAYLOADS.items()}
    payloads[3] = rng.integers(0, 256, 1001, dtype=np.uint8).tobytes()
    order = [15, 3, 10, 18, 11, 12, 13, 14, 16, 17]  # idx order is write order, not sorted
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    with RecordIOWriter(rec, idx) as w:
        for k in order:
            w.write(k, payloads[k])
    raw = rec.read_bytes()
    assert len(raw) % 4 == 0
    index = _idx(idx)
    assert [k for k, _ in index] == order
    offsets = dict(index)
    for k, (payload, cflags, datas) in PAYLOADS.items():
        parts = _parts(raw, offsets[k])
        assert [c for c, _ in parts] == cflags, k
        assert [d for _, d in parts] == datas, k
        assert M.join(datas) == payload
    # records are contiguous, in write order
    ends = [o for _, o in index][1:] + [len(raw)]
    for (_k, o), end in zip(index, ends):
        assert sum(8 + (len(d) + 3) // 4 * 4 for _, d in _parts(raw, o)) == end - o

    with RecordIOReader(rec, idx) as r:
        assert r.keys == order
        assert len(r) == len(order)
        for k in order:
            assert r.read(k) == payloads[k], k
            assert r.read(np.int64(k)) == payloads[k]
        for k in (12, 15, 17, 3):
            for n in range(0, len(payloads[k]) + 3):
                assert r.read(k, limit=n) == payloads[k][:n], (k, n)


def test_exact_bytes_of_a_small_record(tmp_path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as w:
        w.write(7, b"abcde")
        w.write(2, b"abcd" + M + b"e")
    assert rec.read_bytes() == (
        bytes.fromhex("0A23D7CE")
        + bytes.fromhex("05000000")
        + b"abcde\0\0\0"
        + _hdr(1, 4)
        + b"abcd"
        + _hdr(3, 1)
        + b"e\0\0\0"
    )
    assert idx.read_text() == "7\t0\n2\t16\n"


def test_reader_on_hand_built_split_record(tmp_path):
    rec, idx = tmp_path / "h.rec", tmp_path / "h.idx"
    rec.write_bytes(
        _hdr(0, 2) + b"hi\0\0" + _hdr(1, 4) + b"AAAA" + _hdr(2, 0) + _hdr(2, 4) + b"BBBB" + _hdr(3, 3) + b"CCC\0"
    )
    idx.write_text("1\t0\n2\t12\n")
    with RecordIOReader(rec, idx) as r:
        assert r.read(1) == b"hi"
        assert r.read(2) == b"AAAA" + M + M + b"BBBB" + M + b"CCC"


def test_duplicate_key_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate key 1"):
        with RecordIOWriter(tmp_path / "d.rec", tmp_path / "d.idx") as w:
            w.write(1, b"a")
            w.write(1, b"b")
    assert os.listdir(tmp_path) == []


def test_reader_reopens_after_fork(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    rec, idx = tmp_path / "f.rec", tmp_path / "f.idx"
    with RecordIOWriter(rec, idx) as w:
        w.write(0, b"zero")
        w.write(1, b"one" + M)
    r = RecordIOReader(rec, idx)
    assert r.read(0) == b"zero"
    parent_fd = r._fd
    pid = os.fork()
    if pid == 0:  # child: must open its own descriptor
        ok = r.read(1) == b"one" + M and r._pid == os.getpid() and r._fd is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert r._fd == parent_fd and r.read(1) == b"one" + M
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._fd is None and r2.read(0) == b"zero"
    r.close()
    r2.close()


# ----------------------------------------------------------------------------------------------------------------
# IRHeader


def test_pack_unpack_scalar_label():
    s = pack_header(17, 5, 9, b"JPEGDATA")
    assert len(s) == 24 + 8
    assert struct.unpack("<IfQQ", s[:24]) == (0, 17.0, 5, 9)
    h, rest = unpack_header(s, "f.rec", 5)
    assert h == IRHeader(0, 17.0, 5, 9)
    assert isinstance(h.label, float)
    assert rest == b"JPEGDATA"
    assert pack_header(2.5, 0, 0, b"")[4:8] == struct.pack("<f", 2.5)


def test_pack_unpack_label_array():
    s = pack_header([3, 1.5, -2.25], 1, 2, b"img")
    assert struct.unpack("<IfQQ", s[:24]) == (3, 0.0, 1, 2)
    assert s[24:36] == np.array([3, 1.5, -2.25], "<f4").tobytes()
    h, rest = unpack_header(s, "f.rec", 1)
    assert h.flag == 3 and (h.id, h.id2) == (1, 2)
    assert h.label.dtype == np.float32
    np.testing.assert_array_equal(h.label, [3, 1.5, -2.25])
    assert rest == b"img"
    h2, rest2 = unpack_header(pack_header(np.array([4.0], np.float64), 0, 0, b""), "f.rec", 0)
    assert h2.flag == 1 and h2.label.tolist() == [4.0] and rest2 == b""


def test_unpack_errors_name_path_and_record():
    with pytest.raises(DataFormatError) as e:
        unpack_header(b"\0" * 23, "/d/train.rec", 42)
    assert _one_line(e.value).startswith("/d/train.rec:record 42: ")
    bad = struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8  # 5 labels announced, 2 present
    with pytest.raises(DataFormatError) as e:
        unpack_header(bad, "/d/train.rec", 43)
    _check(e.value, "/d/train.rec", "record 43", "run past")


# ----------------------------------------------------------------------------------------------------------------
# insightface face recs


def _samples(counts, hw, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for cls, n in enumerate(counts):
        for _ in range(n):
            out.append((cls, encode_jpeg(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), quality=90)))
    return out


def test_write_face_rec_and_read_back(tmp_path):
    root = tmp_path / "ms1m"
    samples = _samples([2, 4, 3], (16, 12))
    info = write_face_rec(root, iter(samples), num_classes=3, image_size=(16, 12))
    assert sorted(os.listdir(root)) == ["property", "train.idx", "train.rec"]
    assert (root / "property").read_text() == "3,16,12\n"
    assert (info.num_images, info.num_classes, info.image_size, info.index_label) == (9, 3, (16, 12), (10, 13))

    # raw layout: key 0 first at offset 0, then images 1..9, then identities 10..12
    index = _idx(root / "train.idx")
    assert [k for k, _ in index] == list(range(13)) and index[0] == (0, 0)
    with RecordIOReader(root / "train.rec", root / "train.idx") as r:
        h0, rest0 = unpack_header(r.read(0), "x", 0)
        assert h0.flag == 2 and h0.label.tolist() == [10.0, 13.0] and (h0.id, h0.id2) == (0, 1) and rest0 == b""
        h5, img5 = unpack_header(r.read(5), "x", 5)
        assert (h5.flag, h5.label, h5.id) == (0, 1.0, 5) and img5 == samples[4][1]
        h11, rest11 = unpack_header(r.read(11), "x", 11)
        assert h11.flag == 2 and h11.label.tolist() == [3.0, 7.0] and rest11 == b""

    ds = FaceRecDataset(root)
    assert len(ds) == 9 and ds.num_classes == 3 and ds.image_size == (16, 12)
    assert ds.image_keys.tolist() == list(range(1, 10))
    assert ds.identity_ranges == {0: (1, 3), 1: (3, 7), 2: (7, 10)}
    assert ds.labels().tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert [ds.label(i) for i in range(9)] == [c for c, _ in samples]
    for i in (0, 5, 8, -1):
        img, lab = ds[i]
        assert img.shape == (16, 12, 3) and img.dtype == np.uint8
        assert isinstance(lab, int) and lab == samples[i][0]
        np.testing.assert_array_equal(img, decode_image(samples[i][1], "x"))
    with pytest.raises(IndexError):
        ds[9]
    ds2 = pickle.loads(pickle.dumps(ds))  # DataLoader workers (spawn) pickle the dataset
    assert ds2[3][1] == 1
    ds.close()
    ds2.close()


def test_face_rec_without_index_record(tmp_path):
    root = tmp_path / "noindex"
    root.mkdir()
    (root / "property").write_text("2,8,8")
    rng = np.random.default_rng(1)
    jpegs = [encode_jpeg(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(4)]
    labels = [1, 0, 1, 0]
    with RecordIOWriter(root / "train.rec", root / "train.idx") as w:
        w.write(0, pack_header(1, 0, 0, jpegs[0]))  # key 0 is an image (flag 0): no index record
        w.write(3, pack_header([0, 7.5], 3, 0, jpegs[1]))  # label array: class is label[0]
        w.write(1, pack_header(1.0, 1, 0, jpegs[2]))
        w.write(2, pack_header(np.float32(0), 2, 0, jpegs[3]))
    ds = FaceRecDataset(root)
    assert ds.image_keys.tolist() == [0, 3, 1, 2]
    assert ds.identity_ranges is None
    assert ds.labels().tolist() == labels
    for i in range(4):
        img, lab = ds[i]
        assert lab == labels[i] and img.shape == (8, 8, 3)
        np.testing.assert_array_equal(img, decode_image(jpegs[i], "x"))


def test_write_face_rec_rejects_ungrouped_samples_and_leaves_nothing(tmp_path):
    root = tmp_path / "bad"
    s = _samples([1, 1, 1], (8, 8))
    for bad, n in (([s[0], s[2], s[1]], 3), ([s[1], s[0]], 2), (s[:2], 3), ([(0, b"junk")], 1)):
        with pytest.raises(ValueError):
            write_face_rec(root, bad, num_classes=n, image_size=(8, 8))
        assert os.listdir(root) == []
    with pytest.raises(ValueError, match="expected 9x8"):
        write_face_rec(root, s, num_classes=3, image_size=(9, 8))
    assert os.listdir(root) == []


# ----------------------------------------------------------------------------------------------------------------
# bad input


def _two_records(tmp_path):
    rec, idx = tmp_path / "t.rec", tmp_path / "t.idx"
    with RecordIOWriter(rec, idx) as w:
        w.write(1, b"first record")
        w.write(2, b"second record, longer")
    return rec, idx


def test_truncated_rec(tmp_path):
    rec, idx = _two_records(tmp_path)
    raw = rec.read_bytes()
    rec.write_bytes(raw[:-6])
    with RecordIOReader(rec, idx) as r:
        assert r.read(1) == b"first record"
        with pytest.raises(DataFormatError) as e:
            r.read(2)
    _check(e.value, rec, "record 2", "truncated")
    for cut in (raw[:24], raw[:-2]):  # record 2's header itself cut; only its zero padding missing
        rec.write_bytes(cut)
        with RecordIOReader(rec, idx) as r, pytest.raises(DataFormatError) as e:
            r.read(2)
        _check(e.value, rec, "record 2", "truncated")


def test_wrong_magic(tmp_path):
    rec, idx = _two_records(tmp_path)
    raw = bytearray(rec.read_bytes())
    off2 = dict(_idx(idx))[2]
    raw[off2 + 2] ^= 0xFF
    rec.write_bytes(bytes(raw))
    with RecordIOReader(rec, idx) as r:
        assert r.read(1) == b"first record"
        with pytest.raises(DataFormatError) as e:
            r.read(2)
    _check(e.value, rec, "record 2", "bad magic")


def test_bad_continuation_sequence(tmp_path):
    rec, idx = tmp_path / "c.rec", tmp_path / "c.idx"
    rec.write_bytes(_hdr(2, 4) + b"AAAA" + _hdr(1, 4) + b"BBBB" + _hdr(0, 0))
    idx.write_text("5\t0\n6\t12\n")
    with RecordIOReader(rec, idx) as r:
        with pytest.raises(DataFormatError) as e:
            r.read(5)  # starts with a middle part
        _check(e.value, rec, "record 5", "continuation")
        with pytest.raises(DataFormatError) as e:
            r.read(6)  # first part followed by a whole record
        _check(e.value, rec, "record 6", "continuation")


def test_unknown_key(tmp_path):
    rec, idx = _two_records(tmp_path)
    with RecordIOReader(rec, idx) as r, pytest.raises(DataFormatError) as e:
        r.read(99)
    _check(e.value, rec, "record 99", "not in the index")


@pytest.mark.parametrize("bad_line", ["3 40", "3\t4x", "3", "3\t4\t5", "", "x\t4", "3\t-4"])
def test_malformed_idx_line(tmp_path, bad_line):
    rec, idx = _two_records(tmp_path)
    idx.write_text(idx.read_text() + bad_line + "\n4\t0\n")
    with pytest.raises(DataFormatError) as e:
        RecordIOReader(rec, idx)
    _check(e.value, idx, "line 3", "offset" if bad_line.endswith("-4") else "expected")


def test_duplicate_idx_key(tmp_path):
    rec, idx = _two_records(tmp_path)
    idx.write_text(idx.read_text() + "1\t0\n")
    with pytest.raises(DataFormatError) as e:
        RecordIOReader(rec, idx)
    _check(e.value, idx, "line 3", "duplicate key 1")


@pytest.mark.parametrize("text", ["3,16\n", "three,16,12\n", "", "3,16,12,1\n", "0,16,12\n"])
def test_malformed_property(tmp_path, text):
    root = tmp_path / "r"
    write_face_rec(root, _samples([1, 1, 1], (16, 12)), 3, (16, 12))
    (root / "property").write_text(text)
    with pytest.raises(DataFormatError) as e:
        FaceRecDataset(root)
    _check(e.value, root / "property", "line 1", "num_classes,height,width")


def test_property_disagreeing_with_identity_records(tmp_path):
    root = tmp_path / "r"
    write_face_rec(root, _samples([1, 1, 1], (16, 12)), 3, (16, 12))
    (root / "property").write_text("4,16,12\n")
    with pytest.raises(DataFormatError) as e:
        FaceRecDataset(root)
    _check(e.value, root / "property", "line 1", "3 identity records")


def test_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        FaceRecDataset(tmp_path / "nope")
    msg = _one_line(e.value)
    assert str(tmp_path / "nope") in msg and "MS1M-style RecordIO" in msg
    root = tmp_path / "r"
    write_face_rec(root, _samples([1], (8, 8)), 1, (8, 8))
    os.remove(root / "train.idx")
    with pytest.raises(FileNotFoundError) as e:
        FaceRecDataset(root)
    msg = _one_line(e.value)
    assert str(root / "train.idx") in msg and "MS1M-style RecordIO" in msg


def test_undecodable_image_payload(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "property").write_text("1,8,8\n")
    good = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    with RecordIOWriter(root / "train.rec", root / "train.idx") as w:
        w.write(0, pack_header(0, 0, 0, good))
        w.write(1, pack_header(0, 1, 0, b"definitely not a jpeg" + M))
    ds = FaceRecDataset(root)
    assert ds[0][0].shape == (8, 8, 3)
    with pytest.raises(DataFormatError) as e:
        ds[1]
    _check(e.value, root / "train.rec", "record 1", "undecodable image")


def test_label_out_of_range_and_wrong_image_size(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "property").write_text("2,8,8\n")
    with RecordIOWriter(root / "train.rec", root / "train.idx") as w:
        w.write(0, pack_header(5, 0, 0, encode_jpeg(np.zeros((8, 8, 3), np.uint8))))
        w.write(1, pack_header(1.5, 1, 0, encode_jpeg(np.zeros((8, 8, 3), np.uint8))))
        w.write(2, pack_header(1, 2, 0, encode_jpeg(np.zeros((9, 8, 3), np.uint8))))
    ds = FaceRecDataset(root)
    for i, word in (
        (0, "class label 5 outside [0, 2)"),
        (1, "class label 1.5 is not an integer"),
        (2, "image is 9x8, property says 8x8"),
    ):
        with pytest.raises(DataFormatError) as e:
            ds[i]
        _check(e.value, root / "train.rec", f"record {i}", word)


# ----------------------------------------------------------------------------------------------------------------
# atomicity


def test_writer_exception_leaves_nothing(tmp_path):
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    with pytest.raises(RuntimeError, match="boom"):
        with RecordIOWriter(rec, idx) as w:
            w.write(0, b"x" * 100)
            assert not rec.exists() and not idx.exists()  # only temporaries while writing
            assert len(os.listdir(tmp_path)) == 2
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_failed_rewrite_keeps_previous_files(tmp_path):
    rec, idx = _two_records(tmp_path)
    before = rec.read_bytes(), idx.read_text()
    with pytest.raises(KeyboardInterrupt):
        with RecordIOWriter(rec, idx) as w:
            w.write(9, b"new")
            raise KeyboardInterrupt
    assert (rec.read_bytes(), idx.read_text()) == before
    assert sorted(os.listdir(tmp_path)) == ["t.idx", "t.rec"]


def test_failed_commit_removes_temporaries(tmp_path):
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    rec.mkdir()  # os.replace onto a directory fails at close
    with pytest.raises(OSError):
        with RecordIOWriter(rec, idx) as w:
            w.write(0, b"data")
    assert sorted(os.listdir(tmp_path)) == ["train.rec"] and rec.is_dir() and not idx.exists()
