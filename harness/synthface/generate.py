"""Write SynthFace, the procedural stand-in benchmark, in the real on-disk layouts of the datasets it replaces.

One release (``<out>/``) holds:

- ``faces_synthface/{train.rec, train.idx, property}``: the labelled *source* domain, clean renders aligned to
  the ArcFace template, as an insightface/MS1M RecordIO (image keys 1..N, identity records, key-0 index).
- ``target/{crops/*.jpg, target_list.txt}``: the unlabelled *target* domain, faces of other identities passed
  through the hidden camera model (``harness.synthface.degrade``) and aligned, as the flat crop folder plus list
  file that CFSM consumes (names ``<image stem>_<face index>_<score x 1000>.jpg``, as in its WIDER FACE lists).
- ``IJB_release/IJBB`` and ``IJB_release/IJBC``: insightface's IJB layout (``loose_crop/<row>.jpg`` unaligned
  crops with margin; ``meta/<t>_face_tid_mid.txt``, ``<t>_name_5pts_score.txt`` with landmarks in crop pixels and
  a faceness score, ``<t>_template_pair_label.txt``). Each subject has one gallery template of clean stills and
  several probe templates mixing clean stills and degraded video frames; frames of one video share a media id.
  Test subjects are disjoint from the source and target identities; IJB-C's subjects include IJB-B's, as in the
  real releases.
  Each also holds the NIST 1:N protocol CSVs (``<t>_1N_gallery_S1/S2`` for IJB-B, ``G1/G2`` for IJB-C, and
  ``<t>_1N_probe_mixed.csv``; ``harness.synthface.ijb1n``).
- ``IJB-S/``: the raw NIST ``cs6_*`` protocol CSVs and AdaFace-style aligned crops of heavily degraded
  surveillance videos and clean single/booking stills; frames that "fail alignment" are missing from the aligned
  folder, as MTCNN failures are (``harness.synthface.ijbs``).
- ``tinyface/Testing_Set`` (native low-resolution Probe, Gallery_Match, Gallery_Distractor, and the two ``.mat``
  id files) and ``aligned_pad_0.1_pad_high/`` (the aligned copy AdaFace evaluates) (``harness.synthface.tinyface``).
- ``stage1_pairs/{clean,degraded}/*.jpg`` + ``pairs.txt``: an analysis set for CFSM stage 1, images of *source*
  identities rendered once and stored twice, clean (as the source domain) and through the target's camera model
  (as the target domain), so that "what the true degradation keeps" can be measured on the same images. Never
  used for training.
- ``faces_synthface/synth_lfw.bin``: an LFW-style verification set of held-out identities in insightface's ``.bin``
  layout (``harness.synthface.verification_bin``).
- ``synthface.json``: the configuration and the counts (never the hidden degradation parameters).

Determinism: the same seed and size give byte-identical files (for pinned torch/Pillow on one platform). An
identity's appearance depends only on (seed, domain, index), so ``tiny``'s identities are ``default``'s first
ones. The release is written to a temporary folder and renamed into place at the end: a half-written release
never looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from harness.core.atomic import StagedFolder, file_sha256, write_lines_atomic, write_staged
from harness.data.align import align_faces
from harness.data.images import encode_jpeg
from harness.data.recordio import write_face_rec
from harness.synthface import degrade as camera
from harness.synthface.common import degrade_frames, identity_table, render_chunks, stream_rng, take_spec
from harness.synthface.ijb1n import write_1n_csvs
from harness.synthface.ijbs import TINY_IJBS, IJBSSpec, write_ijbs
from harness.synthface.render import sample_image_specs, to_uint8
from harness.synthface.tinyface import TINY_TINYFACE, TinyFaceSpec, write_tinyface
from harness.synthface.verification_bin import write_verification_bin

FORMAT_VERSION = 1
DOMAIN_SOURCE, DOMAIN_TARGET, DOMAIN_TEST = 1, 2, 3
STREAM_SOURCE, STREAM_TARGET, STREAM_IJBB, STREAM_IJBC = 11, 12, 13, 14
STREAM_PAIRS = 17  # 15 and 16 are IJB-S and TinyFace


@dataclass(frozen=True)
class IJBSpec:
    """Size and composition of an IJB-style test release."""

    subjects: int
    gallery_stills: int = 3  # clean stills in each subject's gallery template, one media each
    probe_templates: int = 3  # per subject
    # Ranges (inclusive) of clean stills and of videos in a probe template; an empty draw becomes one medium of
    # either kind, so some probes hold only stills and some only frames (the domain-gap split of the results).
    probe_stills: tuple[int, int] = (0, 2)
    probe_videos: tuple[int, int] = (0, 2)
    frames_per_video: tuple[int, int] = (3, 6)
    video_strength: tuple[float, float] = (0.3, 1.0)
    impostors_per_probe: int | None = None  # None: every gallery template of another subject


@dataclass(frozen=True)
class SynthFaceConfig:
    size: str
    seed: int = 0
    loose_size: int = 88  # side of the rendered loose crop (pixels)
    aligned_size: int = 64  # side of the aligned source and target images (real data: 112)
    source_identities: int = 1000
    source_images_per_identity: int = 10  # mean; each identity gets 60-140 % of it
    target_identities: int = 800
    target_images: int = 4000
    target_strength: tuple[float, float] = (0.4, 1.0)
    pair_images: int = 512  # stage1_pairs: clean/degraded analysis pairs of source identities
    jpeg_quality: int = 95  # of stored aligned/clean images (degraded frames keep their camera JPEG)
    ijbb: IJBSpec = field(default_factory=lambda: IJBSpec(subjects=250))
    ijbc: IJBSpec = field(default_factory=lambda: IJBSpec(subjects=400))
    ijbs: IJBSSpec = field(default_factory=IJBSSpec)
    tinyface: TinyFaceSpec = field(default_factory=TinyFaceSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SIZES: dict[str, SynthFaceConfig] = {
    # For tests: seconds on 2 cores.
    "tiny": SynthFaceConfig(
        size="tiny",
        source_identities=24,
        source_images_per_identity=5,
        target_identities=20,
        target_images=60,
        pair_images=16,
        ijbb=IJBSpec(subjects=6, gallery_stills=2, probe_templates=2),
        ijbc=IJBSpec(subjects=8, gallery_stills=2, probe_templates=2),
        ijbs=TINY_IJBS,
        tinyface=TINY_TINYFACE,
    ),
    # For `dvc repro` on 2 CPU cores: 1000 identities x ~10 images gave a learnable task with a clear domain
    # gap at 48 px input in the feasibility study.
    "default": SynthFaceConfig(size="default"),
    # A scaled-up release for GPU machines, at the real 112 px.
    "large": SynthFaceConfig(
        size="large",
        loose_size=144,
        aligned_size=112,
        source_identities=10000,
        source_images_per_identity=20,
        target_identities=5000,
        target_images=20000,
        pair_images=2000,
        ijbb=IJBSpec(subjects=1000, probe_templates=5, impostors_per_probe=400),
        ijbc=IJBSpec(subjects=1800, probe_templates=5, impostors_per_probe=400),
        ijbs=IJBSSpec(subjects=200),
        tinyface=TinyFaceSpec(identities=2000, distractors=50000),
    ),
}


def config_for(size: str, seed: int = 0, **overrides) -> SynthFaceConfig:
    """The named size with optional overrides, e.g. ``config_for("default", source_identities=5000)``."""
    if size not in SIZES:
        raise ValueError(f"unknown SynthFace size {size!r}; choose one of {sorted(SIZES)}")
    return dataclasses.replace(SIZES[size], seed=seed, **overrides)


def _faceness(rng: np.random.Generator, strength: np.ndarray) -> np.ndarray:
    """A detector-like confidence: ~0.99 on clean faces, falling with degradation, occasionally very low."""
    s = np.asarray(strength, dtype=np.float64)
    f = 0.995 - 0.75 * s**2 + rng.normal(0, 0.04, len(s)) * (0.1 + s)
    return np.clip(f, 0.05, 0.999)


# --------------------------------------------------------------------------------------------- source
def _source_samples(cfg: SynthFaceConfig, counts: np.ndarray) -> Iterator[tuple[int, bytes]]:
    table = identity_table(cfg, DOMAIN_SOURCE, cfg.source_identities)
    labels = np.repeat(np.arange(cfg.source_identities), counts)
    spec = sample_image_specs(stream_rng(cfg, STREAM_SOURCE), labels)
    for sl, images, landmarks in render_chunks(table, spec, cfg.loose_size):
        aligned = align_faces(images, landmarks, cfg.aligned_size)
        for label, rgb in zip(labels[sl], to_uint8(aligned)):
            yield int(label), encode_jpeg(rgb, cfg.jpeg_quality)


def write_source(cfg: SynthFaceConfig, out: str) -> dict:
    rng = stream_rng(cfg, STREAM_SOURCE, 0)
    mean = cfg.source_images_per_identity
    counts = np.maximum(2, np.round(mean * rng.uniform(0.6, 1.4, cfg.source_identities))).astype(np.int64)
    info = write_face_rec(
        os.path.join(out, "faces_synthface"),
        _source_samples(cfg, counts),
        num_classes=cfg.source_identities,
        image_size=(cfg.aligned_size, cfg.aligned_size),
    )
    return {"identities": cfg.source_identities, "images": int(counts.sum()), "num_images_rec": info.num_images}


# --------------------------------------------------------------------------------------------- target
def write_target(cfg: SynthFaceConfig, out: str) -> dict:
    return write_target_crops(cfg, os.path.join(out, "target"), camera.CAMERAS["default"])


def write_target_crops(cfg: SynthFaceConfig, root: str, cam: camera.Camera) -> dict:
    """The target domain's crop folder (``<root>/crops/*.jpg`` + ``<root>/target_list.txt``) through camera ``cam``:
    the same identities, faces and strengths for every camera (``harness.synthface.targets``), only the camera
    differs; with the ``default`` camera this is the release's ``target/``."""
    crops = os.path.join(root, "crops")
    os.makedirs(crops)
    rng = stream_rng(cfg, STREAM_TARGET, 0)
    table = identity_table(cfg, DOMAIN_TARGET, cfg.target_identities)
    who = rng.integers(0, cfg.target_identities, cfg.target_images)
    spec = sample_image_specs(stream_rng(cfg, STREAM_TARGET, 1), who)
    lo, hi = cfg.target_strength
    params = camera.sample_params(rng, rng.uniform(lo, hi, cfg.target_images), cam)
    scores = _faceness(rng, params.strength)
    noise_rng = stream_rng(cfg, STREAM_TARGET, 2)
    names = []
    for sl, images, landmarks in render_chunks(table, spec, cfg.loose_size):
        _, lm_low, lows = camera.degrade(images, landmarks, params.take(np.arange(sl.start, sl.stop)), noise_rng)
        aligned = to_uint8(align_faces(lows, lm_low, cfg.aligned_size).float() / 255.0)
        for j, rgb in enumerate(aligned):
            k = sl.start + j
            # A WIDER-like name: <event>_<image stem>_<face index>_<score x 1000>.jpg (one face per "photo").
            name = f"61--Street_Surveillance_synth_{k:06d}_0_{int(max(500, round(scores[k] * 1000)))}.jpg"
            write_staged(os.path.join(crops, name), encode_jpeg(rgb, cfg.jpeg_quality))
            names.append(name)
    write_staged(os.path.join(root, "target_list.txt"), "".join(n + "\n" for n in names))
    return {"identities_drawn_from": cfg.target_identities, "images": len(names)}


def write_pairs(cfg: SynthFaceConfig, out: str) -> dict:
    """``stage1_pairs/``: fresh renders of source identities, aligned clean and aligned after the target domain's
    camera model (same strength range, same alignment to the degraded landmarks as the target crops). Lines of
    ``pairs.txt``: ``<name> <source identity>``; the same name exists under ``clean/`` and ``degraded/``."""
    root = os.path.join(out, "stage1_pairs")
    for sub in ("clean", "degraded"):
        os.makedirs(os.path.join(root, sub))
    rng = stream_rng(cfg, STREAM_PAIRS, 0)
    who = rng.integers(0, cfg.source_identities, cfg.pair_images)
    table = identity_table(cfg, DOMAIN_SOURCE, cfg.source_identities)
    spec = sample_image_specs(stream_rng(cfg, STREAM_PAIRS, 1), who)
    lo, hi = cfg.target_strength
    params = camera.sample_params(rng, rng.uniform(lo, hi, cfg.pair_images))
    noise_rng = stream_rng(cfg, STREAM_PAIRS, 2)
    lines = []
    for sl, images, landmarks in render_chunks(table, spec, cfg.loose_size):
        clean = to_uint8(align_faces(images, landmarks, cfg.aligned_size))
        _, lm_low, lows = camera.degrade(images, landmarks, params.take(np.arange(sl.start, sl.stop)), noise_rng)
        degraded = to_uint8(align_faces(lows, lm_low, cfg.aligned_size).float() / 255.0)
        for j in range(sl.stop - sl.start):
            k = sl.start + j
            name = f"pair_{k:06d}.jpg"
            for sub, rgb in (("clean", clean[j]), ("degraded", degraded[j])):
                write_staged(os.path.join(root, sub, name), encode_jpeg(rgb, cfg.jpeg_quality))
            lines.append(f"{name} {int(who[k])}\n")
    write_staged(os.path.join(root, "pairs.txt"), "".join(lines))
    return {"pairs": len(lines)}


# --------------------------------------------------------------------------------------------- IJB
@dataclass
class _Row:
    subject: int
    template: int
    media: int
    kind: str  # "still" or "frame"
    spec_index: int  # row in the release's spec table
    video: int = -1  # row in the release's camera table, for frames


def _plan_ijb(ijb: IJBSpec, rng: np.random.Generator):
    """Decide templates, media and rows; returns (rows, gallery_tids, probe_tids, subject of each template)."""
    rows: list[_Row] = []
    n_spec = 0
    n_video = 0
    next_media = 10000 + int(rng.integers(0, 1000))
    template_subject: dict[int, int] = {}
    gallery, probes = [], []
    video_of_spec: list[int] = []
    spec_subject: list[int] = []

    def still(subject: int, tid: int) -> None:
        nonlocal n_spec, next_media
        rows.append(_Row(subject, tid, next_media, "still", n_spec))
        spec_subject.append(subject)
        video_of_spec.append(-1)
        n_spec += 1
        next_media += int(rng.integers(1, 7))

    def video(subject: int, tid: int) -> None:
        nonlocal n_spec, n_video, next_media
        for _ in range(int(rng.integers(ijb.frames_per_video[0], ijb.frames_per_video[1] + 1))):
            rows.append(_Row(subject, tid, next_media, "frame", n_spec, n_video))
            spec_subject.append(subject)
            video_of_spec.append(n_video)
            n_spec += 1
        n_video += 1
        next_media += int(rng.integers(1, 7))

    for s in range(ijb.subjects):  # gallery (enrolment) templates: tid = 1 + subject
        tid = 1 + s
        gallery.append(tid)
        template_subject[tid] = s
        for _ in range(ijb.gallery_stills):
            still(s, tid)
    tid = ijb.subjects + 1
    for s in range(ijb.subjects):
        for _ in range(ijb.probe_templates):
            tid += int(rng.integers(1, 4))
            probes.append(tid)
            template_subject[tid] = s
            n_still = int(rng.integers(ijb.probe_stills[0], ijb.probe_stills[1] + 1))
            n_vid = int(rng.integers(ijb.probe_videos[0], ijb.probe_videos[1] + 1))
            if n_still + n_vid == 0:
                n_still, n_vid = (1, 0) if rng.uniform() < 0.5 else (0, 1)
            kinds = ["still"] * n_still + ["video"] * n_vid
            for k in rng.permutation(len(kinds)):
                (still if kinds[k] == "still" else video)(s, tid)
    return rows, np.array(spec_subject), np.array(video_of_spec), n_video, gallery, probes, template_subject


def write_ijb(cfg: SynthFaceConfig, out: str, which: str) -> dict:
    ijb, prefix, stream = (cfg.ijbb, "ijbb", STREAM_IJBB) if which == "IJBB" else (cfg.ijbc, "ijbc", STREAM_IJBC)
    return write_ijb_release(cfg, os.path.join(out, "IJB_release", which), prefix, ijb, stream, DOMAIN_TEST)


def write_ijb_release(cfg: SynthFaceConfig, root: str, prefix: str, ijb: IJBSpec, stream: int, domain: int) -> dict:
    """One release in insightface's IJB layout at ``root`` (``loose_crop/``, ``meta/<prefix>_*.txt`` and the 1:N
    CSVs) of ``ijb.subjects`` identities ``0..subjects-1`` of ``domain``, drawn from the random ``stream``."""
    crop_dir, meta_dir = os.path.join(root, "loose_crop"), os.path.join(root, "meta")
    os.makedirs(crop_dir)
    os.makedirs(meta_dir)
    rng = stream_rng(cfg, stream, 0)
    rows, spec_subject, video_of_spec, n_videos, gallery, probes, template_subject = _plan_ijb(ijb, rng)

    table = identity_table(cfg, domain, ijb.subjects)
    spec = sample_image_specs(stream_rng(cfg, stream, 1), spec_subject)
    # Frames of one video: one camera, a slowly moving head. Start every frame from its video's first frame.
    first = {}
    for i, v in enumerate(video_of_spec):
        if v >= 0:
            first.setdefault(v, i)
    base = np.array([first[v] if v >= 0 else i for i, v in enumerate(video_of_spec)])
    spec = take_spec(spec, base)
    jitter = stream_rng(cfg, stream, 2)
    is_frame = video_of_spec >= 0
    n = len(base)
    spec.yaw = np.clip(spec.yaw + is_frame * jitter.normal(0, 0.08, n), -0.7, 0.7)
    spec.roll = spec.roll + is_frame * jitter.normal(0, 0.04, n)
    spec.shift = spec.shift + is_frame[:, None] * jitter.normal(0, 0.015, (n, 2))
    spec.gaze = spec.gaze + is_frame[:, None] * jitter.normal(0, 0.1, (n, 2))
    lo, hi = ijb.video_strength
    cam_rng = stream_rng(cfg, stream, 3)
    cameras = camera.sample_params(cam_rng, cam_rng.uniform(lo, hi, max(n_videos, 1)))
    frame_params = cameras.take(np.maximum(video_of_spec, 0))
    face_rng = stream_rng(cfg, stream, 4)
    faceness = np.where(is_frame, _faceness(face_rng, frame_params.strength), _faceness(face_rng, np.zeros(n)))
    noise_rng = stream_rng(cfg, stream, 5)
    det_rng = stream_rng(cfg, stream, 6)

    # Render every distinct spec row once; each meta row gets its own loose crop file, as in the release.
    landmarks_out = np.zeros((n, 5, 2))
    for sl, images, landmarks in render_chunks(table, spec, cfg.loose_size):
        idx = np.arange(sl.start, sl.stop)
        frames = idx[is_frame[idx]]
        stills = idx[~is_frame[idx]]
        if len(frames):
            local = frames - sl.start
            jpegs, lm, _ = degrade_frames(
                images[local], landmarks[local], frame_params.take(frames), noise_rng, det_rng
            )
            for j, k in enumerate(frames):
                write_staged(os.path.join(crop_dir, f"{k + 1}.jpg"), jpegs[j])
                landmarks_out[k] = lm[j]
        if len(stills):
            local = stills - sl.start
            u8 = to_uint8(images[local])
            for j, k in enumerate(stills):
                write_staged(os.path.join(crop_dir, f"{k + 1}.jpg"), encode_jpeg(u8[j], cfg.jpeg_quality))
            landmarks_out[stills] = landmarks[local].double().numpy()

    write_staged(
        os.path.join(meta_dir, f"{prefix}_face_tid_mid.txt"),
        "".join(f"{i + 1}.jpg {r.template} {r.media}\n" for i, r in enumerate(rows)),
    )
    write_staged(
        os.path.join(meta_dir, f"{prefix}_name_5pts_score.txt"),
        "".join(
            f"{i + 1}.jpg {' '.join(f'{v:.3f}' for v in landmarks_out[i].reshape(-1))} {faceness[i]:.3f}\n"
            for i in range(n)
        ),
    )

    # Pairs (gallery tid, probe tid, label): every probe against its mate and against impostor galleries.
    pair_rng = stream_rng(cfg, stream, 7)
    gallery_arr = np.array(gallery)
    lines = []
    n_gen = n_imp = 0
    for p in probes:
        s = template_subject[p]
        others = gallery_arr[gallery_arr != gallery[s]]
        if ijb.impostors_per_probe is not None and ijb.impostors_per_probe < len(others):
            others = np.sort(pair_rng.choice(others, ijb.impostors_per_probe, replace=False))
        lines.append(f"{gallery[s]} {p} 1\n")
        lines.extend(f"{g} {p} 0\n" for g in others)
        n_gen += 1
        n_imp += len(others)
    write_staged(os.path.join(meta_dir, f"{prefix}_template_pair_label.txt"), "".join(lines))
    # The NIST 1:N protocol CSVs (two galleries splitting the subjects, and the mixed probe set).
    one_n = write_1n_csvs(
        meta_dir, prefix, rows, template_subject, gallery, probes, stream_rng(cfg, stream, 8), landmarks=landmarks_out
    )
    return {
        **one_n,
        "subjects": ijb.subjects,
        "rows": n,
        "stills": int((~is_frame).sum()),
        "frames": int(is_frame.sum()),
        "videos": n_videos,
        "gallery_templates": len(gallery),
        "probe_templates": len(probes),
        "genuine_pairs": n_gen,
        "impostor_pairs": n_imp,
    }


# --------------------------------------------------------------------------------------------- release
def generate(cfg: SynthFaceConfig, out: str, log=print) -> dict:
    """Write a complete release to ``out`` atomically (temp folder, then rename). Returns the manifest."""
    with StagedFolder(out) as staged:  # a killed run's staging folder is removed by the next one
        tmp = staged.tmp
        counts = {}
        for part, fn in [
            ("source", lambda: write_source(cfg, tmp)),
            ("target", lambda: write_target(cfg, tmp)),
            ("stage1_pairs", lambda: write_pairs(cfg, tmp)),
            ("ijbb", lambda: write_ijb(cfg, tmp, "IJBB")),
            ("ijbc", lambda: write_ijb(cfg, tmp, "IJBC")),
            ("ijbs", lambda: write_ijbs(cfg, tmp, cfg.ijbs)),
            ("tinyface", lambda: write_tinyface(cfg, tmp, cfg.tinyface)),
            ("verification_bin", lambda: write_verification_bin(cfg, tmp)),
        ]:
            t0 = time.perf_counter()
            counts[part] = fn()
            log(f"synthface[{cfg.size}] {part}: {counts[part]} ({time.perf_counter() - t0:.1f} s)")
        manifest = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "counts": counts}
        write_staged(os.path.join(tmp, "synthface.json"), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        staged.publish()
    write_digest(out)
    return manifest


def digest_path(release: str) -> str:
    """The release's digest file, ``<release>.sha256`` beside the release folder."""
    return os.path.normpath(release) + ".sha256"


def write_digest(release: str) -> str:
    """Write ``<release>.sha256`` (atomically) and return its path: one ``<sha256>  <path>`` line per file of the
    release, paths relative to it with ``/``, sorted: coreutils' ``sha256sum`` format, so
    ``cd <release> && sha256sum -c ../<name>.sha256`` checks a release against it.

    The default pipeline's stages depend on this small file instead of the release folder (about 33,000 files):
    DVC hashes a folder dependency by walking it, several times per stage it runs (its change check, the run-cache
    lookup, the lock entry), about 0.7 s a time on two cores: 6-7 s a stage. The folder stays the ``synthface``
    stage's output, so a changed or missing release reruns that stage, which writes the digest again; the digest
    changes exactly when a byte of the release does."""
    root = os.path.normpath(release)
    lines = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            lines.append(f"{file_sha256(path)}  {os.path.relpath(path, root).replace(os.sep, '/')}")
    lines.sort(key=lambda ln: ln[66:])
    out = digest_path(root)
    write_lines_atomic(lines, out)
    return out
