"""SynthFace target cameras (issue 20): the named presets of the hidden camera model, the target-folder writer's
determinism, and the release's target unchanged by them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness.synthface import degrade
from harness.synthface.targets import main as targets_main
from harness.synthface.targets import write_camera_target

pytestmark = pytest.mark.usefixtures("one_thread")


def _files(root) -> dict[str, bytes]:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _released_formula(rng, s):
    """The camera draws as the release wrote them before the presets existed (the ranges of the module
    docstring, in the order of the original code), written out here independently of ``Camera``."""
    b, u = len(s), rng.uniform
    interlaced = u(0, 1, b) < 0.6 * s
    displacement = rng.choice([-2, -1, 1, 2], b)
    return dict(
        blur_sigma=s * u(0.3, 1.2, b),
        motion_len=s * u(0.0, 4.0, b),
        motion_angle=u(0, np.pi, b),
        vignette=s * u(0.15, 0.55, b),
        downscale=1.0 / (1.0 + s * u(1.0, 3.5, b)),
        chroma_shift=s * u(0.3, 1.2, b),
        chroma_angle=u(0, 2 * np.pi, b),
        noise_sigma=s * u(0.02, 0.08, b),
        contrast=1.0 - s * u(0.0, 0.35, b),
        gamma=2.0 ** (s * rng.normal(0, 0.35, b)),
        cast_gain=np.exp(rng.normal(0, 0.10, (b, 3)) * s[:, None]),
        cast_offset=rng.normal(0, 0.03, (b, 3)) * s[:, None],
        interlace=np.where(interlaced, displacement, 0),
        jpeg_quality=np.clip(np.round(60 - 50 * s * u(0.6, 1.0, b)), 10, 60).astype(np.int64),
    )


def test_default_camera_draws_exactly_what_the_release_drew():
    s = np.random.default_rng(1).uniform(0.4, 1.0, 300)
    a_rng, b_rng = np.random.default_rng(7), np.random.default_rng(7)
    got = degrade.sample_params(a_rng, s)
    want = _released_formula(b_rng, s)
    for k, v in want.items():
        assert np.array_equal(getattr(got, k), v), k
    assert a_rng.uniform() == b_rng.uniform()  # the stream is left where the release left it
    assert (got.min_side == 12).all() and not got.age.any()
    assert (
        degrade.sample_params(np.random.default_rng(7), s, degrade.CAMERAS["default"]).blur_sigma.tolist()
        == got.blur_sigma.tolist()
    )


def test_presets_differ_as_documented():
    s = np.random.default_rng(2).uniform(0.4, 1.0, 2000)
    p = {name: degrade.sample_params(np.random.default_rng(3), s, cam) for name, cam in degrade.CAMERAS.items()}
    assert set(p) == {"default", "webphoto", "surveillance", "tiny", "ageing"}
    d = p["default"]
    # webphoto: milder than the release's camera in every stage, never interlaced
    assert p["webphoto"].blur_sigma.mean() < d.blur_sigma.mean() and p["webphoto"].downscale.mean() > d.downscale.mean()
    assert p["webphoto"].jpeg_quality.min() > d.jpeg_quality.max() and not p["webphoto"].interlace.any()
    # surveillance: more blur and noise, lower resolution, interlaced more often, worse JPEG
    sv = p["surveillance"]
    assert sv.blur_sigma.mean() > d.blur_sigma.mean() and sv.noise_sigma.mean() > d.noise_sigma.mean()
    assert sv.downscale.mean() < d.downscale.mean() and sv.jpeg_quality.mean() < d.jpeg_quality.mean()
    assert (sv.interlace != 0).mean() > (d.interlace != 0).mean() + 0.2
    assert (sv.interlace[s >= 1 / 1.6] != 0).all()  # probability min(1, 1.6 s): always from s = 0.625 on
    # tiny: the lowest sensor resolution, with its own floor
    means = {n: q.downscale.mean() for n, q in p.items()}
    assert min(means, key=means.get) == "tiny" and means["tiny"] < 0.6 * means["default"]
    assert (p["tiny"].min_side == 8).all()
    # ageing: the only one with the style, otherwise the mildest camera
    assert all(not q.age.any() for n, q in p.items() if n != "ageing") and (p["ageing"].age >= 0.7 * 0.4).all()
    with pytest.raises(ValueError, match="unknown camera 'fisheye'; valid: default, webphoto"):
        degrade.camera_named("fisheye")


def test_camera_target_is_deterministic_and_cameras_differ(tmp_path):
    first = {}
    for cam in degrade.CAMERAS:
        write_camera_target(cam, str(tmp_path / cam), size="tiny", seed=0, images=12)
        first[cam] = _files(tmp_path / cam)
    again = tmp_path / "again"
    write_camera_target("surveillance", str(again), size="tiny", seed=0, images=12)
    assert _files(again) == first["surveillance"]  # same seed: identical bytes
    other = tmp_path / "seed1"
    write_camera_target("surveillance", str(other), size="tiny", seed=1, images=12)
    assert (
        _files(other)["crops/" + min(os.listdir(other / "crops"))]
        != first["surveillance"]["crops/" + min(os.listdir(tmp_path / "surveillance" / "crops"))]
    )
    names = {cam: [n for n in f if n.startswith("crops/")] for cam, f in first.items()}
    assert all(len(v) == 12 for v in names.values())
    cams = list(first)
    for i, a in enumerate(cams):  # every pair of cameras: no crop is the same image
        for b in cams[i + 1 :]:
            pa, pb = sorted(names[a]), sorted(names[b])
            assert all(first[a][x] != first[b][y] for x, y in zip(pa, pb)), (a, b)
    manifest = json.loads(first["ageing"]["synthface_target.json"])
    assert manifest["camera"] == "ageing" and manifest["counts"]["images"] == 12
    assert manifest["config"]["target_images"] == 12
    for hidden in ("interlace", "chroma", "blur_sigma", "noise_sigma", "jpeg_best", "age_freq"):
        assert hidden not in json.dumps(manifest)  # the camera's parameters stay hidden
    lines = first["tiny"]["target_list.txt"].decode().split()
    assert sorted("crops/" + n for n in lines) == sorted(names["tiny"])


def test_default_camera_folder_is_the_release_target(tiny_release, tmp_path, capsys):
    out = tmp_path / "default"
    assert targets_main(["--camera", "default", "--size", "tiny", "--seed", "0", "--out", str(out)]) == 0
    assert "target camera default" in capsys.readouterr().out
    written = _files(out)
    written.pop("synthface_target.json")
    assert written == _files(os.path.join(tiny_release, "target"))


def test_cli_rejects_an_unknown_camera(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        targets_main(["--camera", "fisheye", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid choice: 'fisheye'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_stage1_trains_on_a_camera_folder_named_relative_to_the_release(toy_rec_release, tmp_path):
    """The analyses profile's path scheme: the source from the release, the target from a camera folder given as
    ``data.target`` relative to ``data.release``."""
    from stage1_toy import TINY_MODEL

    from harness.stage1 import main as stage1_main

    release = tmp_path / "release"
    release.mkdir()
    os.symlink(os.path.join(toy_rec_release, "faces_synthface"), release / "faces_synthface")
    write_camera_target("surveillance", str(tmp_path / "cams" / "surveillance"), size="tiny", seed=0, images=30)
    identity = tmp_path / "idnet.pt"
    from harness.core.config import RunConfig, apply_overrides
    from harness.engine.train import train

    train(
        apply_overrides(
            RunConfig(),
            {
                "data.release": toy_rec_release,
                "data.input_size": 32,
                "model.widths": "8,16,16,32",
                "model.embedding_size": 32,
                "optim.batch_size": 16,
                "optim.epochs": 1,
                "device": "cpu",
                "checkpoint_every": 0,
            },
        ),
        checkpoint_path=str(identity),
        progress=False,
    )
    out = tmp_path / "stage1"
    args = [
        f"data.release={release}",
        "data.target=../cams/surveillance",
        "data.pairs=",
        f"identity={identity}",
        f"out={out}",
        f"figures={out / 'fig'}",
        "sacred=",
        "device=cpu",
        "train.batch_size=4",
        "train.iterations=6",
        "log_every=1",
        "checkpoint_every=100",
        "analysis.figure_inputs=2",
        "analysis.basis_inputs=1",
        *(f"{k}={v}" for k, v in TINY_MODEL.items()),
    ]
    assert stage1_main(["--params", str(tmp_path / "none.yaml"), *args]) == 2  # a missing params file: one line
    params = tmp_path / "empty.yaml"
    params.write_text("{}\n")
    assert stage1_main(["--params", str(params), *args]) == 0
    assert (out / "generator.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fd"]["source_target"] > 0  # measured against the camera folder's held-out crops
