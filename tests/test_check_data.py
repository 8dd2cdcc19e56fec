"""harness.check_data checks what evaluation reads before training starts (issue 14 item 12): IJB-S aligned crops
named by the protocol, TinyFace's lists and aligned copy, IJB-B/C loose crops named by the meta files; and a
`--device cuda` without CUDA."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from harness import check_data

LINKED = ("faces_synthface", "target", "IJB_release", "IJB-S", "tinyface", "aligned_pad_0.1_pad_high")


def _root(tmp_path, release, replace: str = ""):
    """A data root of symbolic links into ``release``; ``replace`` is copied instead, to be damaged."""
    root = tmp_path / "root"
    root.mkdir()
    for name in LINKED:
        if name == replace:
            shutil.copytree(os.path.join(release, name), root / name)
        else:
            os.symlink(os.path.join(release, name), root / name)
    return root


def _problems(root):
    # every entry but the validation release (val11), which `harness.synthface --validation` adds on request
    keys = [k for k in check_data.BY_KEY if k != "val11"]
    return check_data.check(str(root), keys, rec="faces_synthface")


def test_ijbs_without_aligned_crops_fails_naming_the_folder(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="IJB-S")
    shutil.rmtree(root / "IJB-S" / "aligned")
    (line,) = _problems(root)
    assert line.startswith("IJB-S (needed by evaluation): ") and f"{root}/IJB-S/aligned not found" in line


def test_ijbs_with_misnamed_frames_fails_naming_a_frame_the_protocol_wants(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="IJB-S")
    aligned = root / "IJB-S" / "aligned"
    renamed = 0
    for subject in aligned.iterdir():
        for frame in subject.iterdir():
            frame.rename(frame.with_name("x" + frame.name))  # present, but not under the names the protocol gives
            renamed += 1
    assert renamed > 10
    (line,) = _problems(root)
    assert line.startswith("IJB-S (needed by evaluation): ")
    assert f"{aligned}/" in line and "0 of " in line and "sampled aligned crops the protocol names are present" in line


def test_ijbs_with_a_few_dropped_frames_passes(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="IJB-S")
    frames = sorted(p for p in (root / "IJB-S" / "aligned").rglob("*.jpg"))
    for p in frames[:3]:  # frames the aligner dropped are normal (the evaluator counts them as failures)
        p.unlink()
    assert _problems(root) == []


def test_ijb_loose_crop_missing_is_named(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="IJB_release")
    meta = root / "IJB_release" / "IJBB" / "meta" / "ijbb_name_5pts_score.txt"
    first = meta.read_text().split(None, 1)[0]
    (root / "IJB_release" / "IJBB" / "loose_crop" / first).unlink()
    (line,) = _problems(root)
    assert line.startswith("IJB-B (needed by evaluation): ")
    assert f"{root}/IJB_release/IJBB/loose_crop/{first} not found (1 of " in line and str(meta) in line


def test_tinyface_image_without_aligned_copy_is_named(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="aligned_pad_0.1_pad_high")
    victim = sorted((root / "aligned_pad_0.1_pad_high").rglob("*.*"))[0]
    victim.unlink()
    (line,) = _problems(root)
    assert line.startswith("TinyFace (needed by evaluation): ") and "no aligned image with basename" in line


def test_tinyface_without_distractor_folder_is_named(tiny_release, tmp_path):
    root = _root(tmp_path, tiny_release, replace="tinyface")
    shutil.rmtree(root / "tinyface" / "Testing_Set" / "Gallery_Distractor")
    (line,) = _problems(root)
    assert f"{root}/tinyface/Testing_Set/Gallery_Distractor not found" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(tiny_release, tmp_path, capsys):
    record = tmp_path / "check.txt"
    assert (
        check_data.main(
            ["--root", tiny_release, "--rec", "faces_synthface", "--device", "cuda", "--record", str(record)]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "harness.check_data: config device='cuda' but CUDA is not available on this machine "
        "(set device: auto in the params, or device=cpu)"
    ]
    assert not record.exists()
    assert (
        check_data.main(
            ["--root", tiny_release, "--rec", "faces_synthface", "--device", "auto", "--record", str(record)]
        )
        == 0
    )
    assert record.read_text().endswith("found; device auto -> cpu\n")
