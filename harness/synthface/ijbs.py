"""Write SynthFace's IJB-S-style surveillance benchmark in the layout that AdaFace's ``validation_lq`` reads.

Layout (``<out>/IJB-S/``)::

    protocols/cs6_metadata.csv                                   one row per face annotation (header row)
    protocols/cs6_surveillance_to_single-booking_probe.csv       header, one probe video per line
    protocols/cs6_surveillance_to_surveillance_probe.csv         header, one probe video per line
    protocols/galleries/cs6_surveillance_to_{single,booking,surveillance}_g{1,2}.csv
                                                   TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT
    aligned/<SUBJECT_ID>/videos_<VIDEO_ID>_<FRAME>.jpg           aligned surveillance frames
    aligned/<SUBJECT_ID>/img_<ID>.jpg                            aligned stills (single / booking photos)

Sources for the format (see ``docs/benchmark_formats.md`` section 2): the NIST IJB-S "cs6" protocol file
names; AdaFace ``validation_lq/validate_IJB_S.py`` (aligned crop names ``<subject>/videos_<vid>_<frame>.jpg`` and
``<subject>/img_<id>.jpg``; frames where MTCNN fails are not in its image list); ``PFE/ijbs.py`` ``init_proto``
(col0 SUBJECT_ID, col1 FILENAME of the metadata; col1 SUBJECT_ID, col2 FILENAME of the galleries; probe lists are
header + one filename per line). The metadata columns after FILENAME are not read by any evaluator; they are written
as ``FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT`` (columns 2..5, which AdaFace's cropping snippet reads as the box) and
``FRAME`` (empty for stills). The boxes are plausible (the face box in a 1920x1080 frame, or in the still), not used.
The gallery CSVs follow the NIST column order too: FILENAME is never the last column (the still's box, or the
subject's box in the first frame of the gallery video, follows it), because ``init_proto`` splits each line on
commas without stripping the newline: a last FILENAME would keep its ``\n`` and the V2V gallery lookup
(``video_meta_list.index``) would fail.

Composition (all drawn from ``stream_rng(cfg, 15, k)``; identities from domain 4, disjoint from every other domain):

- Subjects are split into gallery G1, gallery G2 and an *unenrolled* set. G1 and G2 are disjoint in subjects, as
  they must be: PFE's ``DIR_FAR`` asserts that a probe has at most one mate in ``hstack(G1, G2)``. So for the open
  set every probe of a G2 subject is non-mated for G1 and vice versa; unenrolled subjects (bystanders seen only in
  surveillance video) are non-mated in both and excluded from the closed set.
- Stills: each enrolled subject has ``booking_images`` clean booking photos (booking gallery: one template per
  subject); the first one is also its single-image gallery entry (single gallery: one row, one template).
- Surveillance: every subject appears in ``videos_per_subject`` probe videos; a fraction of the probe videos hold
  two subjects (templates are (subject, video) pairs). Each enrolled subject also has one gallery surveillance video
  (its V2V gallery template), never in a probe list. All probe videos are in both probe lists.
- Frames of one video share one camera (``degrade.sample_params`` once per video, ``.take`` per frame) and a slowly
  moving head (a random walk of pose, shift and gaze around one base pose per (subject, video)). Frames whose camera
  strength plus N(0, 0.04) exceeds ``detector_fail_strength`` "fail alignment": they are in the metadata but their
  aligned crop is not written (the MTCNN-failure drop of the real pipeline). Other frames are aligned from the
  degraded low-resolution image with detector-noisy landmarks, as the IJB-B/C frames are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.core.atomic import write_staged
from harness.data.align import align_faces
from harness.data.images import encode_jpeg
from harness.synthface import degrade as camera
from harness.synthface.render import sample_image_specs, to_uint8

if TYPE_CHECKING:  # generate.py imports this module (IJBSSpec, write_ijbs): its helpers are imported lazily
    from harness.synthface.generate import SynthFaceConfig

DOMAIN_IJBS = 4
STREAM_IJBS = 15
METADATA_HEADER = "SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT,FRAME"
GALLERY_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT"
PROBE_HEADER = "FILENAME"
GALLERY_FILES = {
    "single": "cs6_surveillance_to_single_g{}.csv",
    "booking": "cs6_surveillance_to_booking_g{}.csv",
    "surveillance": "cs6_surveillance_to_surveillance_g{}.csv",
}
PROBE_FILES = {
    "single-booking": "cs6_surveillance_to_single-booking_probe.csv",
    "surveillance": "cs6_surveillance_to_surveillance_probe.csv",
}


@dataclass(frozen=True)
class IJBSSpec:
    """Size and composition of an IJB-S-style release (ranges are inclusive)."""

    subjects: int = 100
    videos_per_subject: tuple[int, int] = (2, 3)  # probe surveillance videos each subject appears in
    frames_per_video: tuple[int, int] = (4, 10)  # annotated frames of one subject in one video
    booking_images: tuple[int, int] = (2, 4)  # clean booking photos per enrolled subject
    probe_strength: tuple[float, float] = (0.5, 1.0)  # camera strength of surveillance videos (IJB-B/C: 0.3-1.0)
    # Subjects in no gallery (seen only in surveillance video): non-mated probes in both galleries. The rest are
    # split between G1 and G2, which never share a subject (PFE's at-most-one-mate rule).
    unenrolled_fraction: float = 0.2
    two_subject_fraction: float = 0.25  # share of probe videos holding two subjects
    detector_fail_strength: float = 0.92  # strength (+ N(0, 0.04)) above which a frame fails alignment


TINY_IJBS = IJBSSpec(subjects=8, videos_per_subject=(1, 2), frames_per_video=(3, 5), booking_images=(2, 3))


def _count(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


@dataclass
class _Face:
    subject: int  # identity index (SUBJECT_ID = 1 + subject)
    kind: str  # "still" or "frame"
    image: int = -1  # still: image id
    video: int = -1  # frame: index into the video table
    pair: int = -1  # frame: index of its (subject, video) pair
    frame: int = -1  # frame number
    step: int = 0  # position of the frame in its pair's sequence


def _split_subjects(spec: IJBSSpec, rng: np.random.Generator) -> tuple[list[int], list[int], list[int]]:
    n = spec.subjects
    perm = rng.permutation(n)
    n_un = int(round(spec.unenrolled_fraction * n))
    if spec.unenrolled_fraction > 0 and n >= 3:
        n_un = max(1, n_un)
    n_un = min(n_un, max(0, n - 2))
    rest = perm[n_un:]
    return sorted(rest[0::2].tolist()), sorted(rest[1::2].tolist()), sorted(perm[:n_un].tolist())


def _plan(spec: IJBSSpec, rng: np.random.Generator):
    """Decide subjects, stills, videos and frames. Returns a dict of plan tables (no rendering)."""
    g1, g2, unenrolled = _split_subjects(spec, rng)
    enrolled = sorted(g1 + g2)
    faces: list[_Face] = []

    # Stills: booking photos; the first one of each subject is its single-image gallery entry.
    next_image = 100000 + int(rng.integers(0, 5000))
    booking: dict[int, list[int]] = {}
    for s in enrolled:
        ids = []
        for _ in range(_count(rng, spec.booking_images)):
            next_image += int(rng.integers(1, 60))
            ids.append(next_image)
            faces.append(_Face(s, "still", image=next_image))
        booking[s] = ids

    # Probe videos: appearances shuffled, some consecutive ones of different subjects merged into one video.
    appearances = [s for s in range(spec.subjects) for _ in range(_count(rng, spec.videos_per_subject))]
    appearances = [appearances[i] for i in rng.permutation(len(appearances))]
    probe_videos: list[list[int]] = []
    i = 0
    while i < len(appearances):
        if (
            i + 1 < len(appearances)
            and appearances[i + 1] != appearances[i]
            and rng.uniform() < spec.two_subject_fraction
        ):
            probe_videos.append([appearances[i], appearances[i + 1]])
            i += 2
        else:
            probe_videos.append([appearances[i]])
            i += 1
    gallery_videos = [[s] for s in enrolled]
    videos = probe_videos + gallery_videos  # index -> subjects in it
    n_probe_videos = len(probe_videos)
    order = rng.permutation(len(videos))  # video ids are not grouped by role
    video_id = np.empty(len(videos), np.int64)
    next_video = 4000 + int(rng.integers(0, 500))
    for v in order:
        next_video += int(rng.integers(1, 8))
        video_id[v] = next_video

    pairs: list[tuple[int, int]] = []  # (subject, video index)
    for v, subs in enumerate(videos):
        start = int(rng.integers(0, 30000))
        step = int(rng.integers(5, 40))
        for s in subs:
            pairs.append((s, v))
            offset = int(rng.integers(0, 4)) if len(subs) > 1 else 0
            for t in range(_count(rng, spec.frames_per_video)):
                faces.append(_Face(s, "frame", video=v, pair=len(pairs) - 1, frame=start + step * (offset + t), step=t))
    return {
        "g1": g1,
        "g2": g2,
        "unenrolled": unenrolled,
        "booking": booking,
        "faces": faces,
        "videos": videos,
        "video_id": video_id,
        "n_probe_videos": n_probe_videos,
        "pairs": pairs,
    }


def _box(lm: np.ndarray) -> tuple[float, float, float, float]:
    """A face box (x, y, w, h) around 5 landmarks: square, about 2.3 inter-ocular distances wide."""
    c = lm.mean(0)
    ipd = max(1e-3, float(np.linalg.norm(lm[1] - lm[0])))
    side = 2.3 * ipd
    return float(c[0] - side / 2), float(c[1] - 0.45 * side), side, side


def write_ijbs(cfg: SynthFaceConfig, out: str, spec: IJBSSpec) -> dict:
    """Write ``<out>/IJB-S`` (protocol CSVs and aligned crops). Returns counts for the manifest."""
    from harness.synthface.common import degrade_frames, identity_table, render_chunks, stream_rng, take_spec

    root = os.path.join(out, "IJB-S")
    proto_dir = os.path.join(root, "protocols")
    aligned_dir = os.path.join(root, "aligned")
    os.makedirs(os.path.join(proto_dir, "galleries"))
    os.makedirs(aligned_dir)
    plan = _plan(spec, stream_rng(cfg, STREAM_IJBS, 0))
    faces: list[_Face] = plan["faces"]
    n = len(faces)
    subject = np.array([f.subject for f in faces], np.int64)
    is_frame = np.array([f.kind == "frame" for f in faces])
    video_of = np.array([f.video for f in faces], np.int64)
    pair_of = np.array([f.pair for f in faces], np.int64)
    steps = np.array([f.step for f in faces], np.int64)

    table = identity_table(cfg, DOMAIN_IJBS, spec.subjects)
    img_spec = sample_image_specs(stream_rng(cfg, STREAM_IJBS, 1), subject)
    # Frames of one (subject, video) pair start from the pair's first frame and drift by a random walk.
    first: dict[int, int] = {}
    for i, p in enumerate(pair_of):
        if p >= 0:
            first.setdefault(int(p), i)
    base = np.array([first[int(p)] if p >= 0 else i for i, p in enumerate(pair_of)])
    img_spec = take_spec(img_spec, base)
    walk_rng = stream_rng(cfg, STREAM_IJBS, 2)
    inc_yaw = walk_rng.normal(0, 0.05, n)
    inc_roll = walk_rng.normal(0, 0.025, n)
    inc_shift = walk_rng.normal(0, 0.01, (n, 2))
    inc_gaze = walk_rng.normal(0, 0.07, (n, 2))
    d_yaw, d_roll = np.zeros(n), np.zeros(n)
    d_shift, d_gaze = np.zeros((n, 2)), np.zeros((n, 2))
    for i in range(n):  # cumulative within a pair (faces of a pair are consecutive, step 0 first)
        if is_frame[i] and steps[i] > 0:
            d_yaw[i] = d_yaw[i - 1] + inc_yaw[i]
            d_roll[i] = d_roll[i - 1] + inc_roll[i]
            d_shift[i] = d_shift[i - 1] + inc_shift[i]
            d_gaze[i] = d_gaze[i - 1] + inc_gaze[i]
    img_spec.yaw = np.clip(img_spec.yaw + d_yaw, -0.7, 0.7)
    img_spec.roll = img_spec.roll + d_roll
    img_spec.shift = np.clip(img_spec.shift + d_shift, -0.1, 0.1)
    img_spec.gaze = np.clip(img_spec.gaze + d_gaze, -0.7, 0.7)

    n_videos = len(plan["videos"])
    cam_rng = stream_rng(cfg, STREAM_IJBS, 3)
    lo, hi = spec.probe_strength
    cameras = camera.sample_params(cam_rng, cam_rng.uniform(lo, hi, max(n_videos, 1)))
    frame_params = cameras.take(np.maximum(video_of, 0))
    det_rng = stream_rng(cfg, STREAM_IJBS, 4)
    fails = is_frame & (frame_params.strength + det_rng.normal(0, 0.04, n) > spec.detector_fail_strength)
    noise_rng = stream_rng(cfg, STREAM_IJBS, 5)
    lm_rng = stream_rng(cfg, STREAM_IJBS, 6)
    box_rng = stream_rng(cfg, STREAM_IJBS, 7)
    # Where each pair's face sits in its 1920x1080 video frame (plausible metadata boxes only).
    pair_origin = box_rng.uniform([100, 100], [1700, 900], (max(len(plan["pairs"]), 1), 2))

    video_id = plan["video_id"]
    boxes = np.zeros((n, 4))
    rel_paths: list[str] = []
    for f in faces:
        sid = f.subject + 1
        if f.kind == "frame":
            rel_paths.append(f"{sid}/videos_{video_id[f.video]}_{f.frame}.jpg")
        else:
            rel_paths.append(f"{sid}/img_{f.image}.jpg")
    for s in sorted(set(subject.tolist())):
        os.makedirs(os.path.join(aligned_dir, str(s + 1)))

    size = cfg.aligned_size
    for sl, images, landmarks in render_chunks(table, img_spec, cfg.loose_size):
        idx = np.arange(sl.start, sl.stop)
        frames = idx[is_frame[idx]]
        stills = idx[~is_frame[idx]]
        if len(frames):
            local = frames - sl.start
            _, lm, lows = degrade_frames(images[local], landmarks[local], frame_params.take(frames), noise_rng, lm_rng)
            aligned = to_uint8(align_faces(lows, lm, size).float() / 255.0)
            for j, k in enumerate(frames):
                x, y, w, h = _box(lm[j])
                boxes[k] = (x + pair_origin[pair_of[k], 0], y + pair_origin[pair_of[k], 1], w, h)
                if not fails[k]:
                    write_staged(os.path.join(aligned_dir, rel_paths[k]), encode_jpeg(aligned[j], cfg.jpeg_quality))
        if len(stills):
            local = stills - sl.start
            lm = landmarks[local].double().numpy()
            aligned = to_uint8(align_faces(images[local], lm, size))
            for j, k in enumerate(stills):
                boxes[k] = _box(lm[j])
                write_staged(os.path.join(aligned_dir, rel_paths[k]), encode_jpeg(aligned[j], cfg.jpeg_quality))

    # cs6_metadata.csv: stills by subject, then video rows by video id, frame, subject.
    def filename(f: _Face) -> str:
        return f"videos/{video_id[f.video]}.mp4" if f.kind == "frame" else f"img/{f.image}.jpg"

    still_rows = [k for k in range(n) if not is_frame[k]]
    frame_rows = sorted(
        (k for k in range(n) if is_frame[k]), key=lambda k: (video_id[video_of[k]], faces[k].frame, subject[k])
    )
    rows = [METADATA_HEADER + "\n"]
    for k in still_rows + frame_rows:
        f = faces[k]
        x, y, w, h = boxes[k]
        frame = str(f.frame) if f.kind == "frame" else ""
        rows.append(f"{f.subject + 1},{filename(f)},{x:.0f},{y:.0f},{w:.0f},{h:.0f},{frame}\n")
    write_staged(os.path.join(proto_dir, "cs6_metadata.csv"), "".join(rows))

    # Probe lists: every probe video, by video id.
    probe_names = sorted(f"videos/{video_id[v]}.mp4" for v in range(plan["n_probe_videos"]))
    for name in PROBE_FILES.values():
        write_staged(os.path.join(proto_dir, name), PROBE_HEADER + "\n" + "".join(p + "\n" for p in probe_names))

    # Galleries.
    gallery_video = {plan["videos"][v][0]: v for v in range(plan["n_probe_videos"], n_videos)}
    still_box = {faces[k].image: boxes[k] for k in still_rows}
    video_box: dict = {}
    for k in frame_rows:  # the subject's box in the first (lowest) frame of each of its videos
        video_box.setdefault((int(video_of[k]), int(subject[k])), boxes[k])

    def box(b) -> str:
        return ",".join(f"{v:.0f}" for v in b)

    tid = 0
    for g, members in (("1", plan["g1"]), ("2", plan["g2"])):
        single, book, surv = [], [], []
        for s in members:
            tid += 1
            single.append(f"{tid},{s + 1},img/{plan['booking'][s][0]}.jpg,{box(still_box[plan['booking'][s][0]])}")
        for s in members:
            tid += 1
            book.extend(f"{tid},{s + 1},img/{i}.jpg,{box(still_box[i])}" for i in plan["booking"][s])
        for s in members:
            tid += 1
            surv.append(
                f"{tid},{s + 1},videos/{video_id[gallery_video[s]]}.mp4,{box(video_box[(gallery_video[s], s)])}"
            )
        for kind, lines in (("single", single), ("booking", book), ("surveillance", surv)):
            write_staged(
                os.path.join(proto_dir, "galleries", GALLERY_FILES[kind].format(g)),
                GALLERY_HEADER + "\n" + "".join(line + "\n" for line in lines),
            )

    n_frames = int(is_frame.sum())
    n_failed = int(fails.sum())
    return {
        "subjects": spec.subjects,
        "gallery_g1_subjects": len(plan["g1"]),
        "gallery_g2_subjects": len(plan["g2"]),
        "unenrolled_subjects": len(plan["unenrolled"]),
        "probe_videos": plan["n_probe_videos"],
        "two_subject_videos": sum(len(v) > 1 for v in plan["videos"]),
        "gallery_videos": n_videos - plan["n_probe_videos"],
        "video_templates": len(plan["pairs"]),
        "metadata_rows": n,
        "stills": n - n_frames,
        "frames": n_frames,
        "frames_aligned": n_frames - n_failed,
        "frames_failed_alignment": n_failed,
    }
