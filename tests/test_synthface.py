"""SynthFace: the generator writes the real layouts, the readers read them, and the content behaves as designed."""

from __future__ import annotations

import ast
import filecmp
import json
import os
import pathlib

import numpy as np
import pytest
import torch

from harness.data.align import align_faces, arcface_template
from harness.data.ijb import loose_crop_path, read_ijb
from harness.data.images import read_image
from harness.data.recordio import FaceRecDataset
from harness.data.wider import CropFolderDataset, parse_crop_name, read_crop_list
from harness.synthface import generate as gen
from harness.synthface.__main__ import main as synthface_main
from harness.synthface.render import ImageSpec, identity_params, render, sample_image_specs, stack_identities

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- source (RecordIO)
def test_source_rec_reads_back_as_an_insightface_face_rec(tiny_release, tiny_manifest):
    cfg = tiny_manifest["config"]
    ds = FaceRecDataset(os.path.join(tiny_release, "faces_synthface"))
    assert ds.num_classes == cfg["source_identities"]
    assert tuple(ds.image_size) == (cfg["aligned_size"], cfg["aligned_size"])
    assert len(ds) == tiny_manifest["counts"]["source"]["images"]
    labels = ds.labels()
    # Grouped by identity, every identity present with at least 2 images, ranges consistent with the labels.
    assert np.all(np.diff(labels) >= 0)
    assert set(labels.tolist()) == set(range(ds.num_classes))
    assert np.bincount(labels).min() >= 2
    for cls, (start, end) in ds.identity_ranges.items():
        keys = ds.image_keys
        in_range = (keys >= start) & (keys < end)
        assert set(labels[in_range].tolist()) == {cls}
    img, label = ds[len(ds) - 1]
    assert img.shape == (cfg["aligned_size"], cfg["aligned_size"], 3) and img.dtype == np.uint8
    assert label == labels[-1]


def test_source_images_are_aligned_to_the_arcface_template(tiny_release):
    """The rendered eyes sit on the template's eye points: the pupil (darkest spot) is near each of them."""
    ds = FaceRecDataset(os.path.join(tiny_release, "faces_synthface"))
    tmpl = arcface_template(ds.image_size[0])
    near = 0
    for i in range(0, len(ds), 3):
        img, _ = ds[i]
        gray = img.astype(np.float64).mean(2)
        for eye in tmpl[:2]:
            x, y = int(round(eye[0])), int(round(eye[1]))
            patch = gray[y - 1 : y + 2, x - 1 : x + 2]
            ring = gray[y - 5 : y + 6, x - 5 : x + 6]
            near += patch.min() < np.percentile(ring, 25)
    # Gaze, occluders and closed eyes move or hide some pupils; the large majority must be on the template.
    assert near >= 0.8 * 2 * len(range(0, len(ds), 3))


# ------------------------------------------------------------------------------------------- target (crops)
def test_target_crop_folder_and_list(tiny_release, tiny_manifest):
    root = os.path.join(tiny_release, "target")
    crops = read_crop_list(os.path.join(root, "crops"), os.path.join(root, "target_list.txt"))
    assert len(crops.names) == tiny_manifest["counts"]["target"]["images"]
    ds = CropFolderDataset(crops)
    size = tiny_manifest["config"]["aligned_size"]
    assert ds[0].shape == (size, size, 3)
    stem, face, score = parse_crop_name(crops.names[0])
    assert face == 0 and 0.5 <= score <= 0.999 and stem.startswith("61--Street")


def _laplacian_energy(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float((lap**2).mean())


def test_target_domain_is_degraded_relative_to_source(tiny_release):
    """The domain gap is real: target crops have far less fine detail and lower contrast than source images."""
    src = FaceRecDataset(os.path.join(tiny_release, "faces_synthface"))
    root = os.path.join(tiny_release, "target")
    tgt = CropFolderDataset(read_crop_list(os.path.join(root, "crops"), os.path.join(root, "target_list.txt")))
    src_energy = np.median([_laplacian_energy(src[i][0]) for i in range(len(src))])
    tgt_energy = np.median([_laplacian_energy(tgt[i]) for i in range(len(tgt))])
    assert tgt_energy < 0.5 * src_energy


# ------------------------------------------------------------------------------------------- IJB-B / IJB-C
@pytest.mark.parametrize("which", ["IJBB", "IJBC"])
def test_ijb_release_structure(tiny_release, tiny_manifest, which):
    meta = read_ijb(os.path.join(tiny_release, "IJB_release", which))
    counts = tiny_manifest["counts"][which.lower()]
    spec = tiny_manifest["config"][which.lower()]
    assert meta.prefix == which.lower()
    assert len(meta.image_names) == counts["rows"]
    assert meta.image_names == [f"{i + 1}.jpg" for i in range(counts["rows"])]
    # Every row has its loose crop; the landmarks lie inside it.
    for i in range(0, len(meta.image_names), 7):
        img = read_image(loose_crop_path(meta, i))
        h, w = img.shape[:2]
        assert np.all(meta.landmarks[i, :, 0] > -1) and np.all(meta.landmarks[i, :, 0] < w)
        assert np.all(meta.landmarks[i, :, 1] > -1) and np.all(meta.landmarks[i, :, 1] < h)
    assert np.all((meta.faceness > 0) & (meta.faceness < 1))
    # Gallery templates 1..S hold clean stills only, one media each.
    gallery = np.arange(1, spec["subjects"] + 1)
    for tid in gallery:
        rows = meta.templates == tid
        assert rows.sum() == spec["gallery_stills"]
        assert len(np.unique(meta.medias[rows])) == spec["gallery_stills"]
    # Probe templates: several media, and videos (media with several frames) present.
    probes = np.setdiff1d(np.unique(meta.templates), gallery)
    assert len(probes) == counts["probe_templates"]
    media_sizes = np.bincount(np.unique(meta.medias, return_inverse=True)[1])
    assert media_sizes.max() >= spec["frames_per_video"][0]
    # Frames of one video are consecutive rows of one template, and a media id never spans two templates.
    for mid in np.unique(meta.medias):
        rows = np.flatnonzero(meta.medias == mid)
        assert len(np.unique(meta.templates[rows])) == 1
        assert np.all(np.diff(rows) == 1)
    # Pairs: each probe once against its mate (genuine) and against every other gallery template.
    assert set(meta.pairs[:, 0].tolist()) <= set(gallery.tolist())
    assert set(meta.pairs[:, 1].tolist()) == set(probes.tolist())
    assert int(meta.labels.sum()) == counts["genuine_pairs"] == len(probes)
    assert int((meta.labels == 0).sum()) == counts["impostor_pairs"] == len(probes) * (spec["subjects"] - 1)


def test_ijb_frames_are_degraded_and_align(tiny_release, tiny_manifest):
    meta = read_ijb(os.path.join(tiny_release, "IJB_release", "IJBB"))
    sizes = np.array([read_image(loose_crop_path(meta, i)).shape[0] for i in range(len(meta.image_names))])
    loose = tiny_manifest["config"]["loose_size"]
    is_still = sizes == loose
    assert is_still.any() and (~is_still).any()
    assert sizes[~is_still].max() < loose  # frames were stored at the camera's low resolution
    # Degraded frames get lower detector confidence on average.
    assert meta.faceness[~is_still].mean() < meta.faceness[is_still].mean() - 0.05
    imgs = [read_image(loose_crop_path(meta, i)) for i in range(8)]
    aligned = align_faces(imgs, torch.as_tensor(meta.landmarks[:8], dtype=torch.float64), 64)
    assert aligned.shape == (8, 3, 64, 64) and aligned.dtype == torch.uint8


def test_ijbc_subjects_include_ijbb_subjects(tiny_manifest):
    """Test identities are drawn from one pool: IJB-C's first subjects are IJB-B's (IJB-C extends IJB-B)."""
    cfg = gen.config_for("tiny")
    b = gen.identity_table(cfg, gen.DOMAIN_TEST, cfg.ijbb.subjects)
    c = gen.identity_table(cfg, gen.DOMAIN_TEST, cfg.ijbc.subjects)
    for k in b:
        assert torch.equal(b[k], c[k][: cfg.ijbb.subjects])


def test_domains_use_disjoint_identities():
    cfg = gen.config_for("tiny")
    src = gen.identity_table(cfg, gen.DOMAIN_SOURCE, 30)
    tgt = gen.identity_table(cfg, gen.DOMAIN_TARGET, 30)
    test = gen.identity_table(cfg, gen.DOMAIN_TEST, 30)
    for a, b in [(src, tgt), (src, test), (tgt, test)]:
        # No identity of one domain equals any identity of another (texture fields are continuous draws).
        fa, fb = a["tex_coarse"].flatten(1), b["tex_coarse"].flatten(1)
        assert torch.cdist(fa, fb).min() > 1e-3


# ------------------------------------------------------------------------------------------- renderer
def _frontal_spec(ids: np.ndarray, yaw: float, roll: float) -> ImageSpec:
    spec = sample_image_specs(np.random.default_rng(3), ids, occluder_prob=0.0)
    n = len(ids)
    spec.yaw, spec.roll = np.full(n, yaw), np.full(n, roll)
    spec.gaze = np.zeros((n, 2))
    spec.eye_open = np.ones(n)
    spec.light_strength = np.zeros(n)
    spec.brightness = np.ones(n)
    spec.white_balance = np.ones((n, 3))
    return spec


@pytest.mark.parametrize("yaw,roll", [(0.0, 0.0), (0.4, 0.2), (-0.5, -0.2)])
def test_rendered_eye_landmarks_are_on_the_pupils(yaw, roll):
    """The landmarks are exact: with gaze 0 the pupil is drawn at the eye centre through the same pose maps."""
    table = stack_identities([identity_params(np.random.default_rng([9, k])) for k in range(6)])
    images, landmarks = render(table, _frontal_spec(np.arange(6), yaw, roll), 200)  # pupils 1.5 px wide
    gray = images.mean(1)
    for i in range(6):
        for eye in landmarks[i, :2]:
            x, y = int(round(float(eye[0]))), int(round(float(eye[1])))
            assert float(gray[i, y, x]) < 0.12, (i, yaw, roll)


def test_identities_differ_in_fine_detail_not_in_colour_alone():
    """Two identities with the same skin tone and pose still differ in shape, texture and features."""
    p0 = identity_params(np.random.default_rng([5, 0]))
    p1 = identity_params(np.random.default_rng([5, 1]))
    p1["skin"], p1["hair"], p1["iris"], p1["lip"] = p0["skin"], p0["hair"], p0["iris"], p0["lip"]
    table = stack_identities([p0, p1])
    images, _ = render(table, _frontal_spec(np.array([0, 1]), 0.0, 0.0), 96)
    diff = (images[0] - images[1]).abs().mean(0)
    assert float((diff > 0.05).float().mean()) > 0.05


# ------------------------------------------------------------------------------------------- determinism, CLI
MICRO = dict(
    source_identities=3,
    source_images_per_identity=3,
    target_identities=3,
    target_images=4,
    ijbb=gen.IJBSpec(subjects=2, gallery_stills=1, probe_templates=1),
    ijbc=gen.IJBSpec(subjects=3, gallery_stills=1, probe_templates=1),
    ijbs=gen.IJBSSpec(subjects=4, videos_per_subject=(1, 1), frames_per_video=(2, 3), booking_images=(1, 2)),
    tinyface=gen.TinyFaceSpec(identities=3, distractors=5),
)


def _tree(root: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*") if p.is_file())


def test_generation_is_byte_identical_for_the_same_seed_and_size(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    gen.generate(gen.config_for("tiny", seed=1, **MICRO), a, log=lambda *_: None)
    gen.generate(gen.config_for("tiny", seed=1, **MICRO), b, log=lambda *_: None)
    gen.generate(gen.config_for("tiny", seed=2, **MICRO), c, log=lambda *_: None)
    files = _tree(a)
    assert files == _tree(b) and len(files) > 20
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    # A different seed changes the content (not only the manifest).
    _, changed, missing = filecmp.cmpfiles(a, c, files, shallow=False)
    changed += missing  # file names that exist for one seed only (IJB-S frame numbers) changed too
    assert "faces_synthface/train.rec" in changed and "IJB_release/IJBB/loose_crop/1.jpg" in changed
    assert any(f.startswith("IJB-S/aligned/") for f in changed) and any(
        f.startswith("tinyface/Testing_Set/Probe/") for f in changed
    )


def test_generation_is_atomic_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "release"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "write_ijb", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        gen.generate(gen.config_for("tiny", **MICRO), str(out), log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # neither the release nor its temp folder is left behind


def test_release_digest_lists_every_file_in_sha256sum_format(tmp_path):
    """``<release>.sha256`` (what the pipeline's stages depend on instead of the folder) covers every file of the
    release with its SHA-256, sorted, in coreutils' format; it changes when one byte of the release does."""
    import hashlib
    import shutil
    import subprocess

    out = str(tmp_path / "rel")
    gen.generate(gen.config_for("tiny", seed=1, **MICRO), out, log=lambda *_: None)
    digest = gen.digest_path(out + "/")
    assert digest == out + ".sha256"
    lines = pathlib.Path(digest).read_text().splitlines()
    paths = [ln[66:] for ln in lines]
    assert paths == sorted(_tree(out)) and len(paths) > 20
    for ln in lines:
        want = hashlib.sha256(pathlib.Path(out, ln[66:]).read_bytes()).hexdigest()
        assert ln == f"{want}  {ln[66:]}"
    if shutil.which("sha256sum"):
        run = subprocess.run(["sha256sum", "--quiet", "-c", digest], cwd=out, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    before = pathlib.Path(digest).read_text()
    rec = pathlib.Path(out, "faces_synthface", "property")
    rec.write_text(rec.read_text() + " ")
    gen.write_digest(out)
    after = pathlib.Path(digest).read_text()
    changed = [b for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [f"{hashlib.sha256(rec.read_bytes()).hexdigest()}  faces_synthface/property"]


def test_cli_writes_a_release_and_rejects_unknown_overrides(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--size", "tiny", "--out", str(out), "--seed", "3"]
    for key in ("source_identities", "source_images_per_identity", "target_identities", "target_images"):
        args += ["--set", f"{key}=3"]
    assert synthface_main(args) == 0
    assert (out / "faces_synthface" / "property").read_text().startswith("3,64,64")
    with pytest.raises(SystemExit):
        synthface_main(["--size", "tiny", "--out", str(out), "--set", "no_such_field=1"])
    assert "no_such_field" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- honesty
def test_hidden_degradation_module_is_used_only_by_the_generator():
    """Methods, trainers and evaluators must never see the target domain's camera model."""
    offenders = []
    for path in list((REPO / "harness").rglob("*.py")) + list((REPO / "methods").rglob("*.py")):
        if path.parent.name == "synthface":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("harness.synthface.degrade") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_manifest_holds_config_and_counts_but_no_degradation_parameters(tiny_manifest):
    assert tiny_manifest["config"]["size"] == "tiny"
    text = str(tiny_manifest)
    for hidden in ("jpeg_quality_range", "interlace", "chroma", "blur_sigma", "noise_sigma"):
        assert hidden not in text
    # The manifest's config is the generator's config, field for field (JSON turns tuples into lists).
    assert json.loads(json.dumps(gen.config_for("tiny").to_dict())) == tiny_manifest["config"]
