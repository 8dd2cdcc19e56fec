"""A sample grid of a SynthFace release, read back through the project's own readers.

``python -m harness.synthface.figure --release datasets/synthface/default --out results/figures/synthface_samples.png``

Rows: source identities (from the RecordIO, several images each), target-domain crops (from the crop list), and
IJB-B probe templates (loose crops aligned with their 5 landmarks: clean stills and degraded video frames).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from harness.core.atomic import write_atomic
from harness.data.align import align_faces
from harness.data.ijb import loose_crop_path, read_ijb
from harness.data.images import read_image
from harness.data.recordio import FaceRecDataset
from harness.data.wider import CropFolderDataset, read_crop_list


def sample_grid(
    release: str, identities: int = 4, per_row: int = 8, target_rows: int = 2, ijb_rows: int = 2, zoom: int = 2
) -> Image.Image:
    src = FaceRecDataset(os.path.join(release, "faces_synthface"))
    size = src.image_size[0]
    rows: list[tuple[str, list[np.ndarray]]] = []
    labels = src.labels()
    for cls in np.linspace(0, src.num_classes - 1, identities).astype(int):
        idx = np.flatnonzero(labels == cls)[:per_row]
        rows.append((f"source id {cls}", [src[int(i)][0] for i in idx]))
    tgt_root = os.path.join(release, "target")
    tgt = CropFolderDataset(read_crop_list(os.path.join(tgt_root, "crops"), os.path.join(tgt_root, "target_list.txt")))
    for r in range(target_rows):
        rows.append(
            ("target (unlabelled)", [tgt[r * per_row + j] for j in range(min(per_row, len(tgt) - r * per_row))])
        )
    meta = read_ijb(os.path.join(release, "IJB_release", "IJBB"))
    # Probe templates (the pair file's second column) that mix several media, to show stills beside frames.
    probe_tids = [int(t) for t in dict.fromkeys(meta.pairs[:, 1].tolist())]
    mixed = [t for t in probe_tids if len(np.unique(meta.medias[meta.templates == t])) > 1]
    for tid in (mixed or probe_tids)[:ijb_rows]:
        idx = np.flatnonzero(meta.templates == tid)[:per_row]
        crops = [read_image(loose_crop_path(meta, int(i))) for i in idx]
        aligned = align_faces(crops, torch.as_tensor(meta.landmarks[idx], dtype=torch.float64), size)
        rows.append((f"IJB-B probe template {tid}", list(aligned.permute(0, 2, 3, 1).numpy())))

    label_h = 12
    cell = size * zoom
    canvas = Image.new("RGB", (per_row * cell, len(rows) * (cell + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (title, images) in enumerate(rows):
        y = r * (cell + label_h)
        draw.text((2, y), title, fill=(0, 0, 0))
        for c, img in enumerate(images):
            tile = Image.fromarray(np.ascontiguousarray(img)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (c * cell, y + label_h))
    return canvas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.synthface.figure", description=__doc__.split("\n")[0])
    ap.add_argument("--release", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    image = sample_grid(args.release)
    write_atomic(args.out, lambda f: image.save(f, format="PNG", optimize=True), binary=True)
    print(f"wrote {args.out} ({image.size[0]}x{image.size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
