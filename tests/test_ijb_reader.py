"""Tests for harness.data.ijb: the insightface IJB_release layout (IJB-B / IJB-C meta files and loose crops).

Releases are hand-written into tmp_path; expected values are spelled out literally, not recomputed by the reader.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.data.ijb import (
    IJBMeta,
    check_pairs_known,
    loose_crop_path,
    read_face_tid_mid,
    read_ijb,
    read_name_5pts_score,
    read_template_pairs,
)
from harness.data.images import encode_jpeg, read_image

FTM = [
    "1.jpg 1 69544",
    "2.jpg 1 69544",
    "3.jpg 1 70001",
    "4.jpg 11065 5",
    "5.jpg 11065 6",
]
PTS = [
    "1.jpg 46.060 62.026 87.785 60.323 68.851 77.656 52.162 99.875 86.450 98.648 0.999",
    "2.jpg 40.5 61.25 80.125 60 66 75.5 50 95 82 96 0.1",
    "3.jpg 1 2 3 4 5 6 7 8 9 10 0.987654321",
    "4.jpg 10.1 20.2 30.3 40.4 50.5 60.6 70.7 80.8 90.9 100.1 0.30000001",
    "5.jpg 0 0 0 0 0 0 0 0 0 0 1",
]
PAIRS = ["1 11065 0", "11065 1 0", "1 1 1", "11065 11065 1"]


def _write(path, lines, end="\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(end.join(lines) + (end if lines else ""))
    return str(path)


def _release(tmp_path, name="IJBB", prefix="ijbb", ftm=FTM, pts=PTS, pairs=PAIRS, images=True):
    root = tmp_path / "IJB_release" / name
    meta = root / "meta"
    os.makedirs(root / "loose_crop")
    if ftm is not None:
        _write(meta / f"{prefix}_face_tid_mid.txt", ftm)
    if pts is not None:
        _write(meta / f"{prefix}_name_5pts_score.txt", pts)
    if pairs is not None:
        _write(meta / f"{prefix}_template_pair_label.txt", pairs)
    if images:
        for k in range(1, len(FTM) + 1):
            rgb = np.full((24, 20, 3), (40 * k, 100, 255 - 40 * k), dtype=np.uint8)
            (root / "loose_crop" / f"{k}.jpg").write_bytes(encode_jpeg(rgb, 95))
    return root


def _err(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------------- good input


def test_read_ijb_values_and_dtypes(tmp_path):
    root = _release(tmp_path)
    m = read_ijb(root)
    assert isinstance(m, IJBMeta)
    assert m.prefix == "ijbb" and m.root == str(root)
    assert m.image_names == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"]
    assert m.templates.dtype == np.int64 and m.templates.tolist() == [1, 1, 1, 11065, 11065]
    assert m.medias.dtype == np.int64 and m.medias.tolist() == [69544, 69544, 70001, 5, 6]
    assert m.landmarks.dtype == np.float32 and m.landmarks.shape == (5, 5, 2)
    assert m.faceness.dtype == np.float32 and m.faceness.shape == (5,)
    assert m.pairs.dtype == np.int64 and m.pairs.shape == (4, 2)
    assert m.pairs.tolist() == [[1, 11065], [11065, 1], [1, 1], [11065, 11065]]
    assert m.labels.tolist() == [0, 0, 1, 1] and np.issubdtype(m.labels.dtype, np.integer)


def test_landmarks_are_xy_pairs_in_order(tmp_path):
    m = read_ijb(_release(tmp_path))
    # row 3 is "1 2 3 ... 10": point k is (2k+1, 2k+2)
    np.testing.assert_array_equal(m.landmarks[2], np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], np.float32))
    # row 1: first point is (x1, y1) = (46.060, 62.026), last is (x5, y5) = (86.450, 98.648)
    assert m.landmarks[0, 0, 0] == np.float32(float("46.060")) and m.landmarks[0, 0, 1] == np.float32(float("62.026"))
    assert m.landmarks[0, 4, 0] == np.float32(float("86.450")) and m.landmarks[0, 4, 1] == np.float32(float("98.648"))
    # the landmark of the nose tip (point 3) of row 4
    assert m.landmarks[3, 2].tolist() == [np.float32(float("50.5")), np.float32(float("60.6"))]


def test_faceness_is_string_to_float32_bit_exact(tmp_path):
    m = read_ijb(_release(tmp_path))
    strings = [line.rsplit(" ", 1)[1] for line in PTS]
    want = np.array([np.float32(s) for s in strings])
    insightface = np.array(strings).astype(np.float32)  # what ijb_11.py does
    assert m.faceness.view(np.uint32).tolist() == want.view(np.uint32).tolist()
    assert m.faceness.view(np.uint32).tolist() == insightface.view(np.uint32).tolist()


def test_faceness_bit_exact_on_many_strings(tmp_path):
    rng = np.random.default_rng(0)
    scores = [f"{v:.3f}" for v in np.arange(1001) / 1000] + [repr(float(v)) for v in rng.uniform(0, 1, 2000)]
    lines = [f"{i}.jpg 1 2 3 4 5 6 7 8 9 10 {s}" for i, s in enumerate(scores)]
    names, lmk, faceness = read_name_5pts_score(_write(tmp_path / "s.txt", lines))
    want = np.array(scores).astype(np.float32)
    assert faceness.view(np.uint32).tolist() == want.view(np.uint32).tolist()
    assert names[:2] == ["0.jpg", "1.jpg"] and lmk.shape == (len(scores), 5, 2)


def test_loose_crop_path_and_images(tmp_path):
    root = _release(tmp_path)
    m = read_ijb(root)
    assert loose_crop_path(m, 0) == os.path.join(str(root), "loose_crop", "1.jpg")
    img = read_image(loose_crop_path(m, 4))
    assert img.shape == (24, 20, 3) and img.dtype == np.uint8


def test_prefix_inferred_from_folder_and_from_files(tmp_path):
    assert read_ijb(_release(tmp_path / "a", name="IJBC", prefix="ijbc")).prefix == "ijbc"
    # folder name says nothing: the meta file names decide
    assert read_ijb(_release(tmp_path / "b", name="somewhere", prefix="ijbc")).prefix == "ijbc"
    assert read_ijb(_release(tmp_path / "c", name="x", prefix="ijbb"), prefix="ijbb").prefix == "ijbb"


def test_without_pairs_needs_no_pair_file(tmp_path):
    m = read_ijb(_release(tmp_path, pairs=None), with_pairs=False)
    assert m.pairs.shape == (0, 2) and m.labels.shape == (0,)
    assert len(m.image_names) == 5


def test_trailing_blank_lines_and_crlf_accepted(tmp_path):
    p = _write(tmp_path / "f.txt", FTM + ["", ""])
    names, tids, mids = read_face_tid_mid(p)
    assert len(names) == 5 and tids.tolist() == [1, 1, 1, 11065, 11065]
    p = _write(tmp_path / "pairs.txt", PAIRS, end="\r\n")
    pairs, labels = read_template_pairs(p)
    assert pairs.tolist() == [[1, 11065], [11065, 1], [1, 1], [11065, 11065]] and labels.tolist() == [0, 0, 1, 1]
    p = _write(tmp_path / "pairs2.txt", PAIRS + ["", ""])
    assert read_template_pairs(p)[1].tolist() == [0, 0, 1, 1]


def test_200k_pair_file_round_trips(tmp_path):
    rng = np.random.default_rng(7)
    n = 200_000
    want = np.stack([rng.integers(1, 200_000, n), rng.integers(1, 200_000, n), rng.integers(0, 2, n)], axis=1)
    want[0] = (187955, 1, 1)
    want[-1] = (9_000_000_000, 3, 0)  # beyond int32
    p = tmp_path / "ijbc_template_pair_label.txt"
    p.write_text("\n".join(f"{a} {b} {c}" for a, b, c in want.tolist()) + "\n")
    pairs, labels = read_template_pairs(p)
    assert pairs.dtype == np.int64 and pairs.shape == (n, 2)
    np.testing.assert_array_equal(pairs, want[:, :2])
    np.testing.assert_array_equal(labels.astype(np.int64), want[:, 2])


def test_slow_path_gives_same_values(tmp_path):
    # a CRLF file bypasses the pandas fast path; the line scan must give identical arrays
    lines = [f"{i} {i * 7 + 1} {i % 2}" for i in range(1, 300)]
    a = read_template_pairs(_write(tmp_path / "lf.txt", lines))
    b = read_template_pairs(_write(tmp_path / "crlf.txt", lines, end="\r\n"))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].dtype == b[1].dtype


# --------------------------------------------------------------------------------------------------- bad input


def _raises(fn, path, line, *words):
    with pytest.raises(DataFormatError) as ei:
        fn()
    msg = _err(ei)
    assert msg.startswith(f"{path}:line {line}: "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.mark.parametrize(
    "reader, base, bad_row, bad_line",
    [
        (read_face_tid_mid, FTM, 3, "3.jpg 1"),
        (read_face_tid_mid, FTM, 2, "2.jpg 1 69544 7"),
        (read_name_5pts_score, PTS, 4, "4.jpg 1 2 3 4 5 6 7 8 9 10"),
        (read_name_5pts_score, PTS, 1, PTS[0] + " 0.5"),
        (read_template_pairs, PAIRS, 4, "11065 11065"),
        (read_template_pairs, PAIRS, 2, "11065 1 0 0"),
        (read_template_pairs, PAIRS, 1, "1 11065 0 9"),
    ],
)
def test_wrong_field_count(tmp_path, reader, base, bad_row, bad_line):
    lines = list(base)
    lines[bad_row - 1] = bad_line
    p = _write(tmp_path / "m.txt", lines)
    _raises(lambda: reader(p), p, bad_row, "fields")


def test_wrong_field_count_in_every_row(tmp_path):
    # every line has 2 fields: pandas would read a consistent 2-column table, the reader must still refuse line 1
    p = _write(tmp_path / "p.txt", ["1 2", "3 4"])
    _raises(lambda: read_template_pairs(p), p, 1, "expected 3")


def test_double_space_is_an_error(tmp_path):
    lines = list(FTM)
    lines[1] = "2.jpg  69544"
    p = _write(tmp_path / "f.txt", lines)
    _raises(lambda: read_face_tid_mid(p), p, 2, "empty field")


@pytest.mark.parametrize("field", ["1.5", "x", "3.0", "1e3", "-4", "1_0", ""])
def test_non_integer_pair_field(tmp_path, field):
    lines = list(PAIRS)
    lines[2] = f"1 {field} 1"
    p = _write(tmp_path / "p.txt", lines)
    _raises(lambda: read_template_pairs(p), p, 3)


@pytest.mark.parametrize("label", ["2", "-1", "1.0", "yes"])
def test_bad_label(tmp_path, label):
    lines = list(PAIRS)
    lines[3] = f"1 1 {label}"
    p = _write(tmp_path / "p.txt", lines)
    _raises(lambda: read_template_pairs(p), p, 4, "label")


def test_label_2_in_a_large_file(tmp_path):
    lines = [f"{i} {i + 1} {i % 2}" for i in range(5000)]
    lines[4321] = "5 6 2"
    p = _write(tmp_path / "p.txt", lines)
    _raises(lambda: read_template_pairs(p), p, 4322, "label 2")


def test_blank_line_inside(tmp_path):
    for reader, base in ((read_face_tid_mid, FTM), (read_name_5pts_score, PTS), (read_template_pairs, PAIRS)):
        lines = list(base)
        lines.insert(2, "")
        p = _write(tmp_path / f"{reader.__name__}.txt", lines)
        _raises(lambda reader=reader, p=p: reader(p), p, 3, "blank line")


def test_non_integer_template_and_media(tmp_path):
    lines = list(FTM)
    lines[3] = "4.jpg 11065a 5"
    p = _write(tmp_path / "f.txt", lines)
    _raises(lambda: read_face_tid_mid(p), p, 4, "template id", "11065a")
    lines = list(FTM)
    lines[4] = "5.jpg 11065 6.0"
    p = _write(tmp_path / "g.txt", lines)
    _raises(lambda: read_face_tid_mid(p), p, 5, "media id")


@pytest.mark.parametrize("value, what", [("abc", "landmark y3"), ("nan", "landmark y3"), ("1,5", "landmark y3")])
def test_non_numeric_landmark(tmp_path, value, what):
    lines = list(PTS)
    f = lines[3].split(" ")
    f[6] = value  # y3
    lines[3] = " ".join(f)
    p = _write(tmp_path / "s.txt", lines)
    _raises(lambda: read_name_5pts_score(p), p, 4, what, value)


def test_non_numeric_faceness(tmp_path):
    lines = list(PTS)
    lines[4] = lines[4].rsplit(" ", 1)[0] + " high"
    p = _write(tmp_path / "s.txt", lines)
    _raises(lambda: read_name_5pts_score(p), p, 5, "faceness", "high")


def test_duplicate_image_name(tmp_path):
    lines = list(FTM)
    lines[3] = "2.jpg 11065 5"
    p = _write(tmp_path / "f.txt", lines)
    _raises(lambda: read_face_tid_mid(p), p, 4, "repeats line 2")


def test_mismatched_row_order(tmp_path):
    pts = list(PTS)
    pts[2], pts[3] = pts[3], pts[2]
    root = _release(tmp_path, pts=pts)
    p5 = root / "meta" / "ijbb_name_5pts_score.txt"
    msg = _raises(lambda: read_ijb(root), p5, 3, "face_tid_mid names 3.jpg but name_5pts_score names 4.jpg")
    assert str(root / "meta" / "ijbb_face_tid_mid.txt") in msg


@pytest.mark.parametrize("n5", [4, 6])
def test_different_row_counts(tmp_path, n5):
    pts = PTS[:4] if n5 == 4 else PTS + ["6.jpg 1 2 3 4 5 6 7 8 9 10 0.5"]
    root = _release(tmp_path, pts=pts)
    p5 = root / "meta" / "ijbb_name_5pts_score.txt"
    _raises(lambda: read_ijb(root), p5, min(5, n5) + 1, f"has {n5} rows", "has 5")


def test_unknown_template_in_pairs(tmp_path):
    pairs = list(PAIRS)
    pairs[2] = "1 424242 1"
    root = _release(tmp_path, pairs=pairs)
    pp = root / "meta" / "ijbb_template_pair_label.txt"
    _raises(lambda: read_ijb(root), pp, 3, "424242", "tid2")


def test_check_pairs_known_direct(tmp_path):
    check_pairs_known(np.array([[1, 2], [2, 1]]), np.array([1, 1, 2]), "p.txt")
    with pytest.raises(DataFormatError) as ei:
        check_pairs_known(np.array([[1, 2], [2, 1], [7, 1], [1, 8]]), np.array([1, 1, 2]), "p.txt")
    assert _err(ei) == "p.txt:line 3: tid1 7 is not a template of face_tid_mid (unknown template id 7)"


def test_missing_root(tmp_path):
    missing = tmp_path / "nope" / "IJBC"
    with pytest.raises(FileNotFoundError) as ei:
        read_ijb(missing)
    msg = _err(ei)
    assert str(missing) in msg and "IJB-B/IJB-C release" in msg


@pytest.mark.parametrize("which", ["face_tid_mid", "name_5pts_score", "template_pair_label"])
def test_missing_meta_file(tmp_path, which):
    kw = {"ftm": FTM, "pts": PTS, "pairs": PAIRS}
    kw[{"face_tid_mid": "ftm", "name_5pts_score": "pts", "template_pair_label": "pairs"}[which]] = None
    root = _release(tmp_path, **kw)
    with pytest.raises(FileNotFoundError) as ei:
        read_ijb(root)
    msg = _err(ei)
    assert str(root / "meta" / f"ijbb_{which}.txt") in msg and "IJB-B/IJB-C release" in msg


def test_empty_files(tmp_path):
    for reader in (read_face_tid_mid, read_name_5pts_score, read_template_pairs):
        p = _write(tmp_path / f"{reader.__name__}.txt", ["", ""])
        with pytest.raises(DataFormatError) as ei:
            reader(p)
        assert _err(ei).startswith(p) and "empty" in str(ei.value)
