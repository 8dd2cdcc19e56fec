"""Stage-1 generators compared on one common target sample: ``python -m harness.target_fd``.

Each stage-1 run measures FD to *its own* held-out target crops (:func:`harness.cfsm.analysis.analyse`: a fifth of
its target folder, at most 500). Runs trained on target folders of different sizes (the analyses profile's 100,
500, 1,000 and 4,000 crops) therefore measure on 20 to 500 crops, and the Frechet distance between embedding
distributions is biased upward at small N (Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where
to find them", CVPR 2020): their FD figures and ratios mix the sample size into the quality. Here every generator is
measured on the same samples instead:

- the held-out source images the stage-1 runs share (the split of :func:`harness.cfsm.train.split_source` with the
  runs' own seed and ``analysis.holdout_source``, read from each generator's recorded config, which must agree), so
  no generator trained on them;
- one target folder given by the user, e.g. an independent draw of the target camera
  (``python -m harness.synthface.targets --seed 1 ...``) that none of the runs trained on;
- the runs' identity network ``f`` (their recorded ``identity`` checkpoint).

Per generator: ``FD(G(x, o), T)`` with ``o ~ N(0, I)`` drawn as the stage-1 analysis draws it, ``FD(x, T)`` (the
same for all), their ratio, and the identity cosine ``cos(f(x), f(G(x, o)))``. Written to
``<out>/target_fd.json``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from harness.core.atomic import write_json_atomic
from harness.core.errors import require_dir
from harness.core.runtime import report_error

#: the recorded stage-1 settings every compared generator must share (they fix the held-out source images and f)
SHARED = (
    ("seed",),
    ("identity",),
    ("data", "release"),
    ("data", "rec"),
    ("analysis", "holdout_source"),
    ("model", "image_size"),
)


def _get(cfg: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def shared_settings(configs: dict[str, dict], paths: dict[str, str]) -> dict[str, Any]:
    """The :data:`SHARED` settings of the generators' recorded stage-1 configs; a generator without a recorded
    config, or two that differ, is a one-line ValueError naming the generator files and the key."""
    names = list(configs)
    out: dict[str, Any] = {}
    for path in SHARED:
        key = ".".join(path)
        values = {n: _get(configs[n], path) for n in names}
        for n, v in values.items():
            if v is None:
                raise ValueError(f"{paths[n]}:meta.config.{key}: missing (not a generator written by harness.stage1)")
        first = names[0]
        for n in names[1:]:
            if values[n] != values[first]:
                raise ValueError(
                    f"{paths[n]}:meta.config.{key}: {values[n]!r}, but {paths[first]} has {values[first]!r} "
                    "(the generators must share the held-out source images and the identity network)"
                )
        out[key] = values[first]
    return out


def load_target_folder(folder: str, target_list: str, size: int) -> tuple[torch.Tensor, str]:
    """Every crop of a target folder (``crops/`` + list, the layout of ``harness.synthface.targets`` and
    ``harness.prepare_target``) as uint8 (n, 3, size, size), and the list's path."""
    from harness.data.loaders import load_images
    from harness.data.wider import CropFolderDataset, read_crop_list

    root = require_dir(folder, "target folder")
    crops = read_crop_list(os.path.join(root, "crops"), os.path.join(root, target_list))
    return load_images(CropFolderDataset(crops).__getitem__, len(crops.names), size), crops.list_path


def compare(generators: dict[str, str], target: str, target_list: str = "target_list.txt") -> dict[str, Any]:
    """The ``target_fd.json`` document of ``{name: generator path}`` against the target folder ``target``."""
    from harness.cfsm.analysis import common_target_fd
    from harness.cfsm.train import IdentityNet, split_source
    from harness.data.loaders import SourceData
    from harness.models.cfsm import load_generator

    loaded, configs = {}, {}
    for name, path in generators.items():
        G, meta = load_generator(path)
        loaded[name], configs[name] = G, meta.get("config") or {}
    shared = shared_settings(configs, generators)
    size = int(shared["model.image_size"])
    any_cfg = next(iter(configs.values()))
    images, list_path = load_target_folder(target, target_list, size)
    if len(images) < 2:
        raise ValueError(f"{list_path}: {len(images)} crop(s); FD needs at least 2")
    release = require_dir(shared["data.release"], "stage-1 data release (the generators' data.release)")
    seed = int(shared["seed"])
    source = SourceData(
        os.path.join(release, shared["data.rec"]),
        size,
        1,
        seed,
        flip=False,
        cache=bool(_get(any_cfg, ("data", "cache"))),
    )
    _, held_idx = split_source(len(source), int(shared["analysis.holdout_source"]), seed)
    held_source = source.get(held_idx)
    if len(held_source) < 2:
        raise ValueError(f"{release}: {len(held_source)} held-out source image(s); FD needs at least 2")
    f = IdentityNet(shared["identity"], torch.device("cpu"))
    batch = int(_get(any_cfg, ("analysis", "batch_size")) or 256)
    fds = common_target_fd(loaded, f, held_source, images, batch_size=batch, seed=seed)
    return {
        "format": "cfsm-bench/target-fd/1",
        "target": {"folder": target, "list": list_path, "crops": len(images)},
        "source_held_out": len(held_source),
        "shared": shared,
        "generators": {name: {"path": generators[name], **fds[name]} for name in generators},
        "notes": "FD in the identity network's L2-normalised embedding space; every generator on the same held-out "
        "source images and the same target crops, so the figures compare across generators (a stage-1 run's own "
        "FD uses its own held-out crops, biased upward when they are few).",
    }


def main(argv: list[str] | None = None) -> int:
    from harness.cfsm.subspace import parse_generators

    ap = argparse.ArgumentParser(
        prog="python -m harness.target_fd",
        description="stage-1 generators' FD to one common target sample (held-out source images they share)",
    )
    ap.add_argument("--generator", action="append", default=[], metavar="NAME=PATH", required=True)
    ap.add_argument("--target", required=True, help="a target folder (crops/ + list) none of the runs trained on")
    ap.add_argument("--target-list", default="target_list.txt", help="the list file in --target")
    ap.add_argument("--out", required=True, help="folder for target_fd.json")
    args = ap.parse_args(argv)
    try:
        doc = compare(parse_generators(args.generator), args.target, args.target_list)
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(doc, os.path.join(args.out, "target_fd.json"))
    except (ValueError, OSError) as exc:
        return report_error("harness.target_fd", exc)
    width = max(len(n) for n in doc["generators"])
    print(f"{'generator'.ljust(width)}  FD(G(x), T)  FD(x, T)  ratio  identity cos   ({doc['target']['crops']} crops)")
    for name, r in doc["generators"].items():
        print(
            f"{name.ljust(width)}  {r['fd_synth_target']:11.5f}  {r['fd_source_target']:8.5f}  "
            f"{r['fd_synth_over_source']:5.3f}  {r['identity_cos']:12.5f}"
        )
    return 0
