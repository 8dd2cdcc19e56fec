"""Write SynthFace's TinyFace stand-in in the layout that AdaFace's TinyFace evaluation reads.

TinyFace (Cheng, Zhu, Gong, "Low-Resolution Face Recognition", ACCV 2018) is a *natively* low-resolution face set:
every test image, probe and gallery alike, is a small surveillance-like face, not a down-sampled portrait. The
protocol evaluated here is the one of AdaFace (``validation_lq/validate_tinyface.py`` and ``tinyface_helper.py``,
mk-minchul/AdaFace): closed-set identification of the ``Probe`` images against ``Gallery_Match`` plus a large
``Gallery_Distractor`` set, on AdaFace's 5-point aligned copy of the test images
(``docs/benchmark_formats.md`` section 3).

Layout written under ``out`` (= AdaFace's ``tinyface_root``)::

    <out>/tinyface/Testing_Set/Probe/<identity>_<n>.jpg           native low-res JPEGs (the camera model's output)
    <out>/tinyface/Testing_Set/Gallery_Match/<identity>_<n>.jpg
    <out>/tinyface/Testing_Set/Gallery_Distractor/<n>.jpg
    <out>/tinyface/Testing_Set/probe_img_ID_pairs.mat              probe_set (N, 1) cell of names, probe_ids (N, 1)
    <out>/tinyface/Testing_Set/gallery_match_img_ID_pairs.mat      gallery_set, gallery_ids
    <out>/aligned_pad_0.1_pad_high/{Probe,Gallery_Match,Gallery_Distractor}/<same basename>.jpg

- Identity ids start at 1; ``<n>`` numbers an identity's photos 1..(probes + gallery images), shuffled between
  ``Probe`` and ``Gallery_Match``, so basenames are unique across the three folders (AdaFace joins the original
  and aligned lists by basename without extension). Distractors are ``<n>.jpg`` (no ``_``), n = 1..D, so they
  can never collide with a labelled name.
- Labelled identities come from identity domain 5, distractors (one person per image) from domain 6: both are
  disjoint from the source, target and IJB identities. Randomness comes from the streams ``(seed, 16, k)``.
- Each image passes through the hidden camera model (:mod:`harness.synthface.degrade`) at a strength drawn from
  ``probe_strength`` / ``gallery_strength``: TinyFace has no clean gallery. ``Testing_Set`` keeps the camera's
  low-resolution JPEG as is; the aligned copy is what a detector-and-align pipeline makes of it (AdaFace's copy
  is MTCNN-aligned from crops padded by 10 %): landmarks with detector noise proportional to the face size and
  the degradation, 5-point similarity alignment (:func:`harness.data.align.align_faces`) to ``cfg.aligned_size``,
  JPEG at ``cfg.jpeg_quality``.
- The ``.mat`` files are written with ``scipy.io.savemat`` so that ``scipy.io.loadmat`` returns what it returns
  for the real ones: a (N, 1) object array whose entries are 1-element string arrays (AdaFace reads
  ``p[0].item()``) and (N, 1) float64 ids (MATLAB doubles).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.io

from harness.core.atomic import write_staged
from harness.data.align import align_faces
from harness.data.images import encode_jpeg
from harness.synthface import degrade as camera
from harness.synthface.render import sample_image_specs, to_uint8

if TYPE_CHECKING:  # generate.py imports this module (its config holds a TinyFaceSpec): import it lazily here
    from harness.synthface.generate import SynthFaceConfig

DOMAIN_TINYFACE, DOMAIN_TINYFACE_DISTRACTOR = 5, 6
STREAM_TINYFACE = 16
TESTING_SET = os.path.join("tinyface", "Testing_Set")
ALIGNED_DIR = "aligned_pad_0.1_pad_high"
FOLDERS = ("Probe", "Gallery_Match", "Gallery_Distractor")
PROBE_MAT, GALLERY_MAT = "probe_img_ID_pairs.mat", "gallery_match_img_ID_pairs.mat"
DETECTOR_NOISE = 0.05  # landmark noise sigma, as a fraction of the inter-ocular distance at strength 1


@dataclass(frozen=True)
class TinyFaceSpec:
    """Size and composition of a TinyFace-style test release (real TinyFace: 3,728 probes, 4,443 gallery-match
    and 153,428 distractor images; AdaFace asserts these counts)."""

    identities: int = 300
    probes_per_identity: tuple = (1, 3)  # inclusive range
    gallery_per_identity: tuple = (1, 3)  # inclusive range
    distractors: int = 5000
    probe_strength: tuple = (0.6, 1.0)  # camera-model strength range of probe images
    gallery_strength: tuple = (0.3, 0.9)  # of gallery-match and distractor images: TinyFace is low-res everywhere


TINY_TINYFACE = TinyFaceSpec(identities=10, distractors=40)


def _write_images(cfg: SynthFaceConfig, out: str, table, spec, params, folders, names, noise_rng, det_rng) -> list[int]:
    """Render, degrade and store each row (original low-res JPEG + aligned copy); returns the stored widths."""
    from harness.synthface.common import render_chunks

    original = os.path.join(out, TESTING_SET)
    aligned_root = os.path.join(out, ALIGNED_DIR)
    widths: list[int] = []
    for sl, images, landmarks in render_chunks(table, spec, cfg.loose_size):
        idx = np.arange(sl.start, sl.stop)
        jpegs, lm_low, lows = camera.degrade(images, landmarks, params.take(idx), noise_rng)
        lm = lm_low.double().numpy()
        ipd = np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)
        lm = lm + det_rng.normal(0, 1, lm.shape) * (DETECTOR_NOISE * ipd * params.strength[idx])[:, None, None]
        aligned = to_uint8(align_faces(lows, lm, cfg.aligned_size).float() / 255.0)
        for j, k in enumerate(idx):
            write_staged(os.path.join(original, folders[k], names[k]), jpegs[j])
            write_staged(os.path.join(aligned_root, folders[k], names[k]), encode_jpeg(aligned[j], cfg.jpeg_quality))
            widths.append(int(lows[j].shape[1]))
    return widths


MAT_HEADER = b"MATLAB 5.0 MAT-file, written by SynthFace (harness/synthface/tinyface.py)"


def _save_mat(path: str, names: list[str], ids: np.ndarray, set_key: str, ids_key: str) -> None:
    """``scipy.io.savemat`` of ``{set_key: (N, 1) cell of names, ids_key: (N, 1) float64}``. savemat puts the
    creation time in the 116-byte text header; it is replaced by a fixed text so that releases stay byte-identical."""
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    buf = io.BytesIO()
    scipy.io.savemat(buf, {set_key: cell, ids_key: np.asarray(ids, dtype=np.float64).reshape(-1, 1)})
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")
    write_staged(path, bytes(data))


def write_tinyface(cfg: SynthFaceConfig, out: str, spec: TinyFaceSpec = TinyFaceSpec()) -> dict:
    """Write the TinyFace stand-in under ``out`` (see the module docstring); returns counts for the manifest."""
    from harness.synthface.common import identity_table, stream_rng

    if spec.identities < 1 or spec.distractors < 0:
        raise ValueError(f"TinyFaceSpec needs identities >= 1 and distractors >= 0, got {spec}")
    (p_lo, p_hi), (g_lo, g_hi) = spec.probes_per_identity, spec.gallery_per_identity
    if not (1 <= p_lo <= p_hi and 1 <= g_lo <= g_hi):
        raise ValueError(f"TinyFaceSpec per-identity ranges must be 1 <= lo <= hi, got {spec}")
    for sub in (TESTING_SET, ALIGNED_DIR):
        for folder in FOLDERS:
            os.makedirs(os.path.join(out, sub, folder))

    # Plan: per identity, p probes and g gallery images; photo numbers 1..p+g shuffled between the two folders.
    plan = stream_rng(cfg, STREAM_TINYFACE, 0)
    n_id = spec.identities
    n_probe = plan.integers(p_lo, p_hi + 1, n_id)
    n_gal = plan.integers(g_lo, g_hi + 1, n_id)
    who, folders, names = [], [], []
    probe_names, probe_ids, gal_names, gal_ids = [], [], [], []
    for i in range(n_id):
        photos = plan.permutation(int(n_probe[i] + n_gal[i])) + 1
        for r, photo in enumerate(photos):
            folder = "Probe" if r < n_probe[i] else "Gallery_Match"
            name = f"{i + 1}_{photo}.jpg"
            who.append(i)
            folders.append(folder)
            names.append(name)
            (probe_names if folder == "Probe" else gal_names).append(name)
            (probe_ids if folder == "Probe" else gal_ids).append(i + 1)
    who = np.asarray(who, dtype=np.int64)
    is_probe = np.array([f == "Probe" for f in folders])

    cam_rng = stream_rng(cfg, STREAM_TINYFACE, 2)
    strength = np.where(
        is_probe, cam_rng.uniform(*spec.probe_strength, len(who)), cam_rng.uniform(*spec.gallery_strength, len(who))
    )
    params = camera.sample_params(cam_rng, strength)
    widths = _write_images(
        cfg,
        out,
        identity_table(cfg, DOMAIN_TINYFACE, n_id),
        sample_image_specs(stream_rng(cfg, STREAM_TINYFACE, 1), who),
        params,
        folders,
        names,
        stream_rng(cfg, STREAM_TINYFACE, 3),
        stream_rng(cfg, STREAM_TINYFACE, 4),
    )

    n_d = spec.distractors
    if n_d:
        d_rng = stream_rng(cfg, STREAM_TINYFACE, 6)
        d_params = camera.sample_params(d_rng, d_rng.uniform(*spec.gallery_strength, n_d))
        widths += _write_images(
            cfg,
            out,
            identity_table(cfg, DOMAIN_TINYFACE_DISTRACTOR, n_d),
            sample_image_specs(stream_rng(cfg, STREAM_TINYFACE, 5), np.arange(n_d)),
            d_params,
            ["Gallery_Distractor"] * n_d,
            [f"{k + 1}.jpg" for k in range(n_d)],
            stream_rng(cfg, STREAM_TINYFACE, 7),
            stream_rng(cfg, STREAM_TINYFACE, 8),
        )

    testing = os.path.join(out, TESTING_SET)
    _save_mat(os.path.join(testing, PROBE_MAT), probe_names, np.array(probe_ids), "probe_set", "probe_ids")
    _save_mat(os.path.join(testing, GALLERY_MAT), gal_names, np.array(gal_ids), "gallery_set", "gallery_ids")
    return {
        "identities": n_id,
        "probes": int(is_probe.sum()),
        "gallery_match": int((~is_probe).sum()),
        "distractors": n_d,
        "images": len(who) + n_d,
        "aligned_size": cfg.aligned_size,
        "median_original_width_px": float(np.median(widths)),
    }
