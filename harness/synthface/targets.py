"""Write a SynthFace target-domain crop folder through one named camera (issue 20: stage 1 on several targets).

    python -m harness.synthface.targets --camera surveillance --size default --seed 0 \
        --out datasets/synthface/targets/surveillance

The folder has the layout of a release's ``target/`` (CFSM's crop folder + list): ``crops/*.jpg``,
``target_list.txt``, plus ``synthface_target.json`` (the camera's name, the SynthFace configuration and the counts;
never the camera's parameters, which stay hidden in :mod:`harness.synthface.degrade`). The faces, identities and
per-image strengths are those of the release of the same ``--size`` and ``--seed``; only the camera differs
(:data:`harness.synthface.degrade.CAMERAS`), so ``--camera default`` writes exactly the release's ``target/``
(byte for byte). ``--images N`` draws ``N`` target images instead of the size's ``target_images`` (the release's
first draws are kept only where the draw order allows, so treat it as its own set). Deterministic: the same
arguments give byte-identical files.

Stage 1 reads such a folder as its target with ``data.target`` set to the folder relative to ``data.release`` (or
absolute): ``python -m harness.stage1 data.target=../targets/surveillance`` next to ``datasets/synthface/default``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import torch

from harness.core.atomic import StagedFolder, write_staged
from harness.core.runtime import tune_malloc
from harness.synthface.degrade import CAMERAS, camera_named
from harness.synthface.generate import SIZES, config_for, write_target_crops

FORMAT_VERSION = 1


def write_camera_target(camera: str, out: str, size: str = "default", seed: int = 0, images: int | None = None) -> dict:
    """Write the target crop folder of camera ``camera`` to ``out`` atomically; returns its manifest."""
    cam = camera_named(camera)
    cfg = config_for(size, seed, **({"target_images": images} if images is not None else {}))
    with StagedFolder(out) as staged:  # published whole or not at all
        counts = write_target_crops(cfg, staged.tmp, cam)
        manifest = {"format_version": FORMAT_VERSION, "camera": cam.name, "config": cfg.to_dict(), "counts": counts}
        write_staged(staged.path("synthface_target.json"), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        staged.publish()
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.synthface.targets", description=__doc__.split("\n")[0])
    ap.add_argument("--camera", required=True, choices=list(CAMERAS))
    ap.add_argument("--size", default="default", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=None, help="target images (default: the size's target_images)")
    ap.add_argument("--out", required=True, help="target folder (written atomically)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.images is not None and args.images < 1:
        ap.error(f"--images {args.images}: expected an integer >= 1")
    tune_malloc()
    # SIGTERM (a killed `dvc repro`) unwinds like Ctrl-C, so the temporary folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    manifest = write_camera_target(args.camera, args.out, args.size, args.seed, args.images)
    print(
        f"synthface[{args.size}] target camera {args.camera} written to {args.out} in "
        f"{time.perf_counter() - t0:.1f} s: {manifest['counts']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
