"""Issue 16 items 2 and 5: a target crop list cannot read outside its crop folder, and a crop folder has one size
(target crops, TinyFace's aligned folder, IJB-S's aligned frames): another size is one error naming the file, its
size and the expected one."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from faultlib import one_error_line, run_args
from PIL import Image

from harness.core.errors import DataFormatError
from harness.data.wider import CropFolderDataset, read_crop_list
from harness.run import main as run_main


@pytest.fixture
def release(tiny_release, tmp_path):
    dst = tmp_path / "rel"
    shutil.copytree(tiny_release, dst)
    return dst


def _list(release):
    path = release / "target" / "target_list.txt"
    return path, path.read_text().splitlines()


@pytest.mark.parametrize("bad", ["../outside.jpg", "sub/../../outside.jpg", "ABSOLUTE"])
def test_crop_names_outside_the_folder_are_refused(release, bad):
    (release / "target" / "outside.jpg").write_bytes((release / "target" / "crops" / _list(release)[1][0]).read_bytes())
    name = str(release / "target" / "outside.jpg") if bad == "ABSOLUTE" else bad
    path, names = _list(release)
    path.write_text("\n".join([names[0], name, *names[1:]]) + "\n")
    with pytest.raises(DataFormatError, match=r"target_list.txt:line 2: crop name .*(absolute path|'\.\.' part)"):
        read_crop_list(release / "target" / "crops", path)


def test_a_traversing_list_stops_a_run_with_one_line(release, tmp_path, empty_params, capsys):
    path, names = _list(release)
    path.write_text("\n".join(["../../faces_synthface/property", *names]) + "\n")
    rc = run_main(run_args(str(release), tmp_path / "runs", empty_params, "method=dann"))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and "target_list.txt:line 1" in line and "'..' part" in line


def test_a_target_crop_of_another_size_is_named(release):
    path, names = _list(release)
    crop = release / "target" / "crops" / names[3]
    w, h = Image.open(crop).size
    Image.fromarray(np.zeros((h + 5, w + 3, 3), np.uint8)).save(crop, format="JPEG")
    ds = CropFolderDataset(release / "target" / "crops", path)
    with pytest.raises(DataFormatError) as info:
        [ds[i] for i in range(len(ds))]
    msg = str(info.value)
    assert f"target_list.txt:line 4: crop {crop} is {w + 3}x{h + 5}, expected {w}x{h}" in msg


def test_a_tinyface_aligned_crop_of_another_size_is_named(release):
    import torch

    from harness.eval.tinyface import TinyFaceEvaluation, TinyFaceSettings

    folder = release / "aligned_pad_0.1_pad_high" / "Probe"
    name = sorted(os.listdir(folder))[1]
    w, h = Image.open(folder / name).size
    Image.fromarray(np.zeros((h // 2, w // 2, 3), np.uint8)).save(folder / name, format="JPEG")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(8))
    ev = TinyFaceEvaluation(str(release), settings=TinyFaceSettings(input_size=32))
    with pytest.raises(DataFormatError, match=rf"{name}:size: aligned crop is {w // 2}x{h // 2}, expected {w}x{h}"):
        ev.extract_features(model)
