"""Write SynthFace's LFW-style verification set, ``faces_synthface/synth_lfw.bin``, in insightface's ``.bin`` layout
(:mod:`harness.data.verification_bin`; scored by :mod:`harness.eval.verification_bin`).

- Identities come from identity domain 7: disjoint from the source, target, IJB, IJB-S and TinyFace identities (held
  out from training, as LFW's are from MS1MV2's after insightface's overlap removal). Randomness comes from the
  streams ``(seed, 18, k)``; the set depends only on the seed and the release size.
- Images are clean renders aligned to the ArcFace template at ``cfg.aligned_size`` and stored as JPEG at
  ``cfg.jpeg_quality``, like the source images (LFW's aligned faces are in the source domain's quality).
- Pairs are laid out as LFW's: ``folds`` blocks, each of ``pairs_per_fold / 2`` genuine pairs (two images of one
  identity) followed by as many impostor pairs (two identities), so insightface's contiguous 10-fold split gives
  balanced folds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.data.align import align_faces
from harness.data.images import encode_jpeg
from harness.data.verification_bin import write_bin
from harness.synthface.render import sample_image_specs, to_uint8

if TYPE_CHECKING:  # generate.py imports this module: import it lazily here
    from harness.synthface.generate import SynthFaceConfig

DOMAIN_BIN = 7
STREAM_BIN = 18
NAME = "synth_lfw"


@dataclass(frozen=True)
class BinSpec:
    identities: int
    pairs_per_fold: int  # even: half genuine, half impostor
    folds: int = 10


#: by release size; small (LFW has 6,000 pairs of 5,749 identities)
SPECS = {
    "tiny": BinSpec(identities=8, pairs_per_fold=4),
    "default": BinSpec(identities=100, pairs_per_fold=40),
    "large": BinSpec(identities=1000, pairs_per_fold=600),
}


def _pairs(spec: BinSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(identity of each image (2 x pairs,), issame (pairs,)) in LFW's fold layout."""
    half = spec.pairs_per_fold // 2
    ids, same = [], []
    for _ in range(spec.folds):
        for _ in range(half):
            i = int(rng.integers(spec.identities))
            ids += [i, i]
            same.append(True)
        for _ in range(half):
            a, b = rng.choice(spec.identities, 2, replace=False)
            ids += [int(a), int(b)]
            same.append(False)
    return np.asarray(ids, dtype=np.int64), np.asarray(same, dtype=bool)


def write_verification_bin(cfg: SynthFaceConfig, out: str) -> dict:
    """Write ``<out>/faces_synthface/synth_lfw.bin``; returns its counts for the manifest."""
    from harness.synthface.common import identity_table, render_chunks, stream_rng

    spec = SPECS.get(cfg.size, SPECS["default"])
    if spec.pairs_per_fold % 2 or spec.identities < 2:
        raise ValueError(f"synthface {NAME}: pairs_per_fold must be even and identities >= 2, got {spec}")
    ids, same = _pairs(spec, stream_rng(cfg, STREAM_BIN, 0))
    table = identity_table(cfg, DOMAIN_BIN, spec.identities)
    images: list[bytes] = []
    for _, rendered, landmarks in render_chunks(
        table, sample_image_specs(stream_rng(cfg, STREAM_BIN, 1), ids), cfg.loose_size
    ):
        images += [
            encode_jpeg(rgb, cfg.jpeg_quality) for rgb in to_uint8(align_faces(rendered, landmarks, cfg.aligned_size))
        ]
    write_bin(os.path.join(out, "faces_synthface", f"{NAME}.bin"), images, same)
    return {"name": NAME, "identities": spec.identities, "pairs": len(same), "genuine": int(same.sum())}
