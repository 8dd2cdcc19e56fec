"""Tests for harness.prepare_target: CFSM's stage-1 target crops from WIDER FACE boxes / RetinaFace landmarks and
from a plain folder of faces, on tiny synthetic data written in tmp_path."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.data.align import ARCFACE_TEMPLATE_112
from harness.data.images import encode_jpeg, read_image
from harness.data.wider import CropFolderDataset, parse_crop_name, read_crop_list
from harness.prepare_target import main, read_retinaface_labels

pytestmark = pytest.mark.usefixtures("one_thread")

GREY, RED, GREEN, BLUE = (90, 90, 90), (220, 40, 40), (40, 220, 40), (40, 40, 220)
IMG_A = "0--Parade/0_Parade_marchingband_1_5.jpg"
IMG_B = "12--Group/12_Group_Large_Group_12_27.jpg"  # no faces
IMG_C = "12--Group/12_Group_Large_Group_12_3.jpg"  # one face below min-size
IMG_D = "2--Demonstration/2_Demonstration_face_9.jpg"  # one face with landmark dots
BOX_D = (50, 40, 100, 120)

# bbx_gt in the real layout (a trailing space on box lines, like the released files); line numbers in comments
BBX = [
    IMG_A,  # 1
    "4",  # 2
    "20 30 40 40 0 0 0 0 0 0 ",  # 3  face 0: red, kept
    "100 40 10 20 0 0 0 0 0 0 ",  # 4  face 1: below min-size
    "130 60 48 36 0 0 0 1 0 0 ",  # 5  face 2: green, invalid flag
    "60 120 36 50 2 0 0 0 0 0 ",  # 6  face 3: blue, heavy blur
    IMG_B,  # 7
    "0",  # 8
    "0 0 0 0 0 0 0 0 0 0 ",  # 9  dummy line of the 0-face image
    IMG_C,  # 10
    "1",  # 11
    "5 5 20 40 0 0 0 0 0 0 ",  # 12 below min-size (shorter side 20)
    IMG_D,  # 13
    "1",  # 14
    " ".join(map(str, BOX_D)) + " 0 0 0 0 0 0 ",  # 15
]
DEFAULT_NAMES = [
    "0_Parade_marchingband_1_5_0_999.jpg",
    "0_Parade_marchingband_1_5_2_999.jpg",
    "0_Parade_marchingband_1_5_3_999.jpg",
    "2_Demonstration_face_9_0_999.jpg",
]


def _landmarks_d() -> np.ndarray:
    """The ArcFace template under a known similarity (scale 1.5, 15 degrees, shift): image D's 5 landmarks."""
    a = math.radians(15.0)
    A = 1.5 * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ARCFACE_TEMPLATE_112 @ A.T + np.array([40.0, 5.0])


def _dots(h, w, pts, r=3.0):
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y in pts:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = 255
    return img


def _write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_jpeg(rgb, 95))


def _dataset(tmp_path, bbx=BBX):
    root = tmp_path / "wider"
    images = root / "WIDER_train" / "images"
    a = np.full((200, 240, 3), GREY, np.uint8)
    for (x, y, w, h), c in (((20, 30, 40, 40), RED), ((130, 60, 48, 36), GREEN), ((60, 120, 36, 50), BLUE)):
        a[y : y + h, x : x + w] = c
    _write(str(images / IMG_A), a)
    _write(str(images / IMG_B), np.full((64, 64, 3), GREY, np.uint8))
    _write(str(images / IMG_C), np.full((80, 80, 3), GREY, np.uint8))
    _write(str(images / IMG_D), _dots(220, 200, _landmarks_d()))
    ann = root / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    ann.parent.mkdir(parents=True)
    ann.write_text("".join(line + "\n" for line in bbx))
    lm = " ".join(f"{x:.3f} {y:.3f} 0.0" for x, y in _landmarks_d())
    label = root / "label.txt"
    label.write_text(
        f"# {IMG_A}\n20 30 40 40 " + "-1.0 " * 15 + "0.5\n"  # face 0 of A: landmarks missing; faces 2, 3: no line
        f"# {IMG_D}\n{' '.join(map(str, BOX_D))} {lm} 0.82\n"
    )
    return str(ann), str(images), str(label)


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _siblings(path) -> list[str]:
    return sorted(os.listdir(os.path.dirname(os.path.abspath(path))))


# ----------------------------------------------------------------------------------------------- wider


def test_wider_box_crops_names_list_and_round_trip(tmp_path, capsys):
    ann, images, _ = _dataset(tmp_path)
    out = tmp_path / "crops"
    rc, text, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", out)
    assert rc == 0, err
    assert "images annotated 4, read 2" in text and "faces seen 6" in text and "kept 4" in text
    assert "below min size 2" in text
    assert sorted(os.listdir(out)) == sorted(DEFAULT_NAMES + ["target_list.txt"])
    assert _siblings(out) == ["crops", "wider"]  # no temporary folder left behind
    cl = read_crop_list(out, "target_list.txt")
    assert cl.names == DEFAULT_NAMES  # annotation order
    ds = CropFolderDataset(str(out), "target_list.txt")
    assert len(ds) == 4 and all(ds[i].shape == (112, 112, 3) for i in range(4))
    assert [parse_crop_name(n) for n in DEFAULT_NAMES[:2]] == [
        ("0_Parade_marchingband_1_5", 0, 0.999),
        ("0_Parade_marchingband_1_5", 2, 0.999),
    ]
    # default margin 0.1: the red box fills the crop but a ~5 px ring of background
    red = ds[0].astype(int)
    assert np.abs(red[10:102, 10:102] - RED).max() < 16
    for ring in (red[:3], red[-3:], red[:, :3], red[:, -3:]):  # mean colour: JPEG chroma rings at the red edge
        assert np.abs(ring.mean(axis=(0, 1)) - GREY).max() < 10


def test_box_crop_pixels_follow_the_margin(tmp_path, capsys):
    ann, images, _ = _dataset(tmp_path)
    out = tmp_path / "crops"
    rc, _, err = _run(
        capsys,
        "wider",
        "--annotations",
        ann,
        "--images",
        images,
        "--out",
        out,
        "--margin",
        "0.5",
        "--size",
        "96",
        "--limit",
        "1",
    )
    assert rc == 0, err
    (name,) = read_crop_list(out, "target_list.txt").names
    crop = read_image(out / name).astype(int)
    assert crop.shape == (96, 96, 3)
    # box 40 px in a 60 px square: red spans [16, 80) of 96, grey around it
    assert np.abs(crop[20:76, 20:76] - RED).max() < 16
    for ring in (crop[:12], crop[84:], crop[:, :12], crop[:, 84:]):
        assert np.abs(ring - GREY).max() < 16


def test_wider_filters_limit_and_sample(tmp_path, capsys):
    ann, images, _ = _dataset(tmp_path)
    common = ("wider", "--annotations", ann, "--images", images)
    rc, text, err = _run(capsys, *common, "--out", tmp_path / "f", "--skip-invalid", "--max-blur", "1")
    assert rc == 0, err
    assert read_crop_list(tmp_path / "f", "target_list.txt").names == [DEFAULT_NAMES[0], DEFAULT_NAMES[3]]
    assert "invalid 1" in text and "blur 1" in text
    # the shorter side counts: the green 48 x 36 and blue 36 x 50 boxes go
    rc, text, err = _run(capsys, *common, "--out", tmp_path / "m", "--min-size", "40")
    assert rc == 0, err
    assert read_crop_list(tmp_path / "m", "target_list.txt").names == [DEFAULT_NAMES[0], DEFAULT_NAMES[3]]
    assert "below min size 4" in text
    rc, _, err = _run(capsys, *common, "--out", tmp_path / "l", "--limit", "2")
    assert rc == 0, err
    assert read_crop_list(tmp_path / "l", "target_list.txt").names == DEFAULT_NAMES[:2]
    picks = []
    for k in range(2):
        rc, text, err = _run(capsys, *common, "--out", tmp_path / f"s{k}", "--sample", "2", "--seed", "3")
        assert rc == 0, err
        assert "not selected 2" in text
        picks.append(read_crop_list(tmp_path / f"s{k}", "target_list.txt").names)
    assert picks[0] == picks[1] and len(picks[0]) == 2
    assert picks[0] == [n for n in DEFAULT_NAMES if n in picks[0]]  # annotation order


def test_landmarks_align_to_the_template(tmp_path, capsys):
    ann, images, label = _dataset(tmp_path)
    out = tmp_path / "aligned"
    rc, text, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", out, "--landmarks", label)
    assert rc == 0, err
    assert "aligned 1, box crops 0" in text and "no landmarks 3" in text
    (name,) = read_crop_list(out, "target_list.txt").names
    assert name == DEFAULT_NAMES[3]
    crop = read_image(out / name).astype(float).mean(axis=2)
    yy, xx = np.mgrid[0:112, 0:112]
    for tx, ty in ARCFACE_TEMPLATE_112:
        win = ((xx - tx) ** 2 + (yy - ty) ** 2 <= 49) * np.clip(crop - 60, 0, None)
        assert win.sum() > 0
        cx, cy = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
        assert math.hypot(cx - tx, cy - ty) < 1.0, (tx, ty, cx, cy)
    # the fallback: faces without landmarks become box crops
    rc, text, err = _run(
        capsys,
        "wider",
        "--annotations",
        ann,
        "--images",
        images,
        "--out",
        tmp_path / "fb",
        "--landmarks",
        label,
        "--missing-landmarks",
        "box",
    )
    assert rc == 0, err
    assert "kept 4 (aligned 1, box crops 3)" in text
    assert read_crop_list(tmp_path / "fb", "target_list.txt").names == DEFAULT_NAMES


def test_retinaface_label_format(tmp_path):
    _, _, label = _dataset(tmp_path)
    faces = read_retinaface_labels(label)
    assert list(faces) == [IMG_A, IMG_D]
    assert faces[IMG_A][0].landmarks is None and faces[IMG_A][0].box == (20, 30, 40, 40)
    assert np.allclose(faces[IMG_D][0].landmarks, _landmarks_d(), atol=1e-3) and faces[IMG_D][0].line == 4
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# {IMG_A}\n20 30 40 40 1 2 0.0\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:line 2: expected 20 numbers"):
        read_retinaface_labels(bad)
    bad.write_text("20 30 40 40\n")
    with pytest.raises(DataFormatError, match=r"line 1: face line before"):
        read_retinaface_labels(bad)


def test_missing_or_broken_image_names_file_and_line(tmp_path, capsys):
    ann, images, _ = _dataset(tmp_path, BBX + ["3--Riot/3_Riot_Riot_3_1.jpg", "1", "1 1 40 40 0 0 0 0 0 0 "])
    out = tmp_path / "crops"
    rc, _, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", out)
    assert rc == 2
    assert err.count("\n") == 1 and "3_Riot_Riot_3_1.jpg: image file not found" in err and f"{ann}:line 16" in err
    assert not out.exists() and _siblings(out) == ["wider"]
    # an undecodable image: the decoder's message plus the annotation line
    _write(os.path.join(images, "3--Riot/3_Riot_Riot_3_1.jpg"), np.zeros((50, 50, 3), np.uint8))
    with open(os.path.join(images, IMG_D), "wb") as f:
        f.write(b"not a jpeg")
    rc, _, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", out)
    assert rc == 2 and err.count("\n") == 1
    assert IMG_D in err and "undecodable image" in err and f"{ann}:line 13" in err
    assert not out.exists() and _siblings(out) == ["wider"]
    # a malformed annotation: the reader's file:line message
    with open(ann, "a") as f:
        f.write("7 7 7\n")
    rc, _, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", out)
    assert rc == 2 and f"{ann}:line 19" in err


def test_out_refused_without_force_and_list_outside(tmp_path, capsys):
    ann, images, _ = _dataset(tmp_path)
    out = tmp_path / "target" / "crops"
    out.mkdir(parents=True)
    (out / "old.jpg").write_bytes(b"x")
    argv = ("wider", "--annotations", ann, "--images", images, "--out", out, "--list", tmp_path / "target" / "wf.txt")
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and "not empty" in err and "--force" in err
    assert os.listdir(out) == ["old.jpg"] and sorted(os.listdir(tmp_path / "target")) == ["crops"]
    rc, _, err = _run(capsys, *argv, "--force")
    assert rc == 0, err
    assert sorted(os.listdir(out)) == sorted(DEFAULT_NAMES)  # old content gone, the list lives outside
    assert read_crop_list(out, tmp_path / "target" / "wf.txt").names == DEFAULT_NAMES
    assert sorted(os.listdir(tmp_path / "target")) == ["crops", "wf.txt"]
    rc, _, err = _run(capsys, *argv[:-2], "--out", tmp_path / "other", "--list", tmp_path / "target" / "wf.txt")
    assert rc == 2 and "wf.txt: list file exists" in err
    rc, _, err = _run(capsys, "wider", "--annotations", ann, "--images", images, "--out", tmp_path / "wider", "--force")
    assert rc == 2 and "holds the input" in err and os.path.isfile(ann)


# ----------------------------------------------------------------------------------------------- folder


def test_folder_mode(tmp_path, capsys):
    src = tmp_path / "faces"
    tall = np.zeros((100, 60, 3), np.uint8)
    tall[:20], tall[20:80], tall[80:] = BLUE, RED, GREEN  # centre square = rows 20..80 = red only
    (src / "b").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(tall).save(src / "b" / "face1.png")
    (src / "a").mkdir()
    Image.fromarray(np.full((40, 40, 3), GREEN, np.uint8)).save(src / "a" / "face2.bmp")
    _write(str(src / "a_face2.jpg"), np.full((112, 112, 3), GREY, np.uint8))
    _write(str(src / "c" / "FACE3.JPEG"), np.full((30, 50, 3), BLUE, np.uint8))
    (src / "notes.txt").write_text("not a face")
    out = tmp_path / "crops"
    rc, text, err = _run(capsys, "folder", "--images", src, "--out", out, "--size", "64")
    assert rc == 0, err
    assert "images found 4" in text
    names = ["a_face2_0_999.jpg", "a_face2_1_999.jpg", "b_face1_0_999.jpg", "c_FACE3_0_999.jpg"]
    ds = CropFolderDataset(str(out), "target_list.txt")
    assert ds.names == names  # sorted relative paths: a/face2.bmp < a_face2.jpg < b/face1.png < c/FACE3.JPEG
    assert all(ds[i].shape == (64, 64, 3) for i in range(4))
    for i, colour in enumerate((GREEN, GREY, RED, BLUE)):
        assert np.abs(ds[i].astype(int) - colour).max() < 16, names[i]
    rc, _, err = _run(capsys, "folder", "--images", src, "--out", src / "crops")
    assert rc == 2 and "inside --images" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "folder", "--images", tmp_path / "empty", "--out", tmp_path / "o2")
    assert rc == 2 and "no face images" in err
