"""Tests for harness.data.wider: CFSM's flat target-domain crop folder + list file, and WIDER FACE bbx_gt parsing."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.data.images import encode_jpeg
from harness.data.wider import (
    CropFolderDataset,
    CropList,
    WiderBox,
    parse_crop_name,
    read_crop_list,
    read_wider_bbx_gt,
)

NAMES = [
    "12_Group_Large_Group_12_Group_Large_Group_12_27_5_999.jpg",
    "0_Parade_marchingband_1_849_0_512.jpg",
    "0_Parade_marchingband_1_849_13_733.jpg",
]


def _crops(tmp_path, names=NAMES, list_lines=None, list_name="target_list.txt"):
    root = tmp_path / "wf_crops"
    root.mkdir()
    for k, n in enumerate(names):
        rgb = np.zeros((112, 112, 3), np.uint8)
        rgb[..., k % 3] = 200
        (root / n).write_bytes(encode_jpeg(rgb, 95))
    lines = names if list_lines is None else list_lines
    (root / list_name).write_text("".join(line + "\n" for line in lines))
    return root, root / list_name


def _msg(ei) -> str:
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------------- crop list


def test_crop_list_round_trip(tmp_path):
    root, lst = _crops(tmp_path)
    cl = read_crop_list(root, "target_list.txt")
    assert isinstance(cl, CropList)
    assert cl.names == NAMES and cl.root == str(root) and cl.list_path == str(lst)
    # absolute list path, list outside the folder
    other = tmp_path / "lists" / "l.txt"
    other.parent.mkdir()
    other.write_text("\n".join(reversed(NAMES)) + "\n\n\n")  # blank lines at EOF are fine
    cl2 = read_crop_list(root, str(other))
    assert cl2.names == list(reversed(NAMES)) and cl2.list_path == str(other)


def test_crop_dataset(tmp_path):
    root, _ = _crops(tmp_path)
    ds = CropFolderDataset(root, "target_list.txt")
    assert len(ds) == 3 and ds.names == NAMES
    img = ds[1]
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert img[..., 1].mean() > 150 and img[..., 0].mean() < 50  # channel 1 was painted: RGB order kept
    ds2 = CropFolderDataset(read_crop_list(root, "target_list.txt"))
    assert np.array_equal(ds2[2], ds[2])


def test_crop_dataset_undecodable_file(tmp_path):
    root, _ = _crops(tmp_path)
    (root / NAMES[0]).write_bytes(b"not a jpeg")
    ds = CropFolderDataset(root, "target_list.txt")
    with pytest.raises(DataFormatError) as ei:
        ds[0]
    assert str(root / NAMES[0]) in _msg(ei)


def test_crop_list_missing_file(tmp_path):
    root, lst = _crops(tmp_path, list_lines=NAMES[:2] + ["ghost_0_900.jpg"] + NAMES[2:])
    with pytest.raises(DataFormatError) as ei:
        read_crop_list(root, "target_list.txt")
    msg = _msg(ei)
    assert msg.startswith(f"{lst}:line 3: ") and "ghost_0_900.jpg" in msg


def test_crop_list_blank_line_inside(tmp_path):
    root, lst = _crops(tmp_path, list_lines=[NAMES[0], "", NAMES[1]])
    with pytest.raises(DataFormatError) as ei:
        read_crop_list(root, "target_list.txt")
    assert _msg(ei).startswith(f"{lst}:line 2: ") and "blank" in str(ei.value)


def test_crop_list_duplicate(tmp_path):
    root, lst = _crops(tmp_path, list_lines=NAMES + [NAMES[1]])
    with pytest.raises(DataFormatError) as ei:
        read_crop_list(root, "target_list.txt")
    assert _msg(ei).startswith(f"{lst}:line 4: ") and "repeats line 2" in str(ei.value)


def test_crop_list_whitespace_and_empty(tmp_path):
    root, lst = _crops(tmp_path, list_lines=[NAMES[0], NAMES[1] + " "])
    with pytest.raises(DataFormatError) as ei:
        read_crop_list(root, "target_list.txt")
    assert _msg(ei).startswith(f"{lst}:line 2: ")
    lst.write_text("\n\n")
    with pytest.raises(DataFormatError) as ei:
        read_crop_list(root, "target_list.txt")
    assert "empty" in _msg(ei)


def test_crop_list_missing_root_or_list(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        read_crop_list(tmp_path / "nope", "l.txt")
    assert str(tmp_path / "nope") in _msg(ei)
    root, _ = _crops(tmp_path)
    with pytest.raises(FileNotFoundError) as ei:
        read_crop_list(root, "target_list_wf_12k.txt")
    assert str(root / "target_list_wf_12k.txt") in _msg(ei)


# ----------------------------------------------------------------------------------------------- crop names


def test_parse_crop_name():
    assert parse_crop_name(NAMES[0]) == ("12_Group_Large_Group_12_Group_Large_Group_12_27", 5, 0.999)
    assert parse_crop_name("0_Parade_marchingband_1_849_13_512.jpg") == ("0_Parade_marchingband_1_849", 13, 0.512)
    assert parse_crop_name("some/dir/a_0_1000.JPG") == ("a", 0, 1.0)
    assert parse_crop_name("x_y_2_050.png") == ("x_y", 2, 0.05)


@pytest.mark.parametrize(
    "name",
    [
        "a_5_999",
        "a_5_999.txt",
        "5_999.jpg",
        "a_5.jpg",
        "a_x_999.jpg",
        "a_5_0.9.jpg",
        "a_5_1001.jpg",
        "a__999.jpg",
        "_5_999.jpg",
        "a_5_-3.jpg",
        "a_５_999.jpg",
    ],
)
def test_parse_crop_name_malformed(name):
    with pytest.raises(ValueError) as ei:
        parse_crop_name(name)
    assert name in str(ei.value)


# ----------------------------------------------------------------------------------------------- bbx_gt

GT = [
    "0--Parade/0_Parade_marchingband_1_849.jpg",
    "1",
    "449 330 122 149 0 0 0 0 0 0 ",
    "0--Parade/0_Parade_Parade_0_904.jpg",
    "0",
    "0 0 0 0 0 0 0 0 0 0 ",
    "12--Group/12_Group_Large_Group_12_Group_Large_Group_12_27.jpg",
    "2",
    "78 221 7 8 2 0 0 0 0 0 ",
    "0 0 0 0 1 0 0 1 0 0 ",
]


def _gt(tmp_path, lines, name="wider_face_val_bbx_gt.txt"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return str(p)


def test_bbx_gt_parse(tmp_path):
    out = read_wider_bbx_gt(_gt(tmp_path, GT + ["", ""]))
    assert [img for img, _ in out] == [GT[0], GT[3], GT[6]]
    assert out[0][1] == [WiderBox(449, 330, 122, 149, 0, 0, 0, 0, 0, 0)]
    assert out[1][1] == []  # 0 faces: the dummy line is not a box
    b = out[2][1]
    assert len(b) == 2 and b[0] == WiderBox(78, 221, 7, 8, 2, 0, 0, 0, 0, 0)
    assert (b[1].blur, b[1].invalid, b[1].w, b[1].pose) == (1, 1, 0, 0)


def _bad(tmp_path, lines, line, *words):
    p = _gt(tmp_path, lines)
    with pytest.raises(DataFormatError) as ei:
        read_wider_bbx_gt(p)
    msg = _msg(ei)
    assert msg.startswith(f"{p}:line {line}: "), msg
    for w in words:
        assert w in msg, (w, msg)


def test_bbx_gt_truncated_at_eof(tmp_path):
    _bad(tmp_path, GT[:9], 10, "box 2 of 2", "end")


def test_bbx_gt_fewer_boxes_than_count(tmp_path):
    lines = [GT[0], "3", GT[2]] + GT[3:]  # image 1 announces 3 faces but has one box line, then image 2 starts
    _bad(tmp_path, lines, 4, "box 2 of 3", "10 integer fields")


def test_bbx_gt_more_boxes_than_count(tmp_path):
    lines = GT[:3] + ["1 2 3 4 0 0 0 0 0 0 "] + GT[3:]
    _bad(tmp_path, lines, 4, "image path")


def test_bbx_gt_non_integer_count(tmp_path):
    lines = list(GT)
    lines[7] = "two"
    _bad(tmp_path, lines, 8, "face count", "two")
    lines[7] = "2.0"
    _bad(tmp_path, lines, 8, "face count")


def test_bbx_gt_wrong_number_of_box_fields(tmp_path):
    lines = list(GT)
    lines[8] = "78 221 7 8 2 0 0 0 0 "
    _bad(tmp_path, lines, 9, "10 integer fields", "got 9")
    lines[8] = "78 221 7 8 2 0 0 0 0 0 5"
    _bad(tmp_path, lines, 9, "got 11")


def test_bbx_gt_non_integer_box_field(tmp_path):
    lines = list(GT)
    lines[2] = "449 330 122.5 149 0 0 0 0 0 0 "
    _bad(tmp_path, lines, 3, "122.5")


def test_bbx_gt_zero_face_dummy_line(tmp_path):
    lines = list(GT)
    lines[5] = "1 0 0 0 0 0 0 0 0 0"
    _bad(tmp_path, lines, 6, "ten zeros")
    _bad(tmp_path, GT[:5], 6, "dummy")  # file ends right after the 0 count


def test_bbx_gt_blank_line_inside(tmp_path):
    lines = GT[:3] + [""] + GT[3:]
    _bad(tmp_path, lines, 4, "blank")


def test_bbx_gt_missing_count(tmp_path):
    _bad(tmp_path, GT[:3] + [GT[3]], 5, "face count")


def test_bbx_gt_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        read_wider_bbx_gt(tmp_path / "wider_face_train_bbx_gt.txt")
    assert str(tmp_path / "wider_face_train_bbx_gt.txt") in _msg(ei)


def test_crop_list_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    """A list file beside the crop folder, named relative to the working directory (as dvc stages do)."""

    crops = tmp_path / "target" / "crops"
    crops.mkdir(parents=True)
    (crops / "a_0_900.jpg").write_bytes(encode_jpeg(np.zeros((4, 4, 3), np.uint8)))
    (tmp_path / "target" / "list.txt").write_text("a_0_900.jpg\n")
    monkeypatch.chdir(tmp_path)
    got = read_crop_list("target/crops", "target/list.txt")
    assert got.names == ["a_0_900.jpg"] and got.list_path == "target/list.txt"
    # A bare name still resolves inside the crop folder, as CFSM's list names do.
    (crops / "inside.txt").write_text("a_0_900.jpg\n")
    assert read_crop_list("target/crops", "inside.txt").names == ["a_0_900.jpg"]
