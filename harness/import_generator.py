"""Strict import of the released CFSM stage-1 generator into :class:`harness.models.cfsm.CFSMGenerator`.

    python -m harness.import_generator WiderFace70K.pth --out results/stage1/released_generator.pt [--trust-pickle]

Official stage 2 (``GuidedFaceRecognition/train.py`` of github.com/liufeng2915/CFSM) starts from a published
generator, ``pretrained_CFSM/WiderFace70K.pth`` (``GuidedFaceRecognition/configs/arcface_ms1mv2_r50_ours.py``;
download link in ``GuidedFaceRecognition/README.md``), loaded with ``torch.load(path)['G_state_dict']`` into
``synthesis_network.Generator(dim=64, n_downsample=2, n_residual=3, style_dim=10, latent_dim=128)``. The file is the
dictionary that ``CFSM/train.py`` ``checkpoint()`` saves: ``G_state_dict``, ``D_state_dict``,
``optimizerG_state_dict``, ``optimizerD_state_dict`` (tensors, numbers and lists only, so
``torch.load(weights_only=True)`` reads it). A plain generator state dict is accepted too.

Key layout (``CFSM/synthesis_network.py``: ``Generator`` = ``encoder`` (``Encoder``), ``decoder`` (``Decoder``,
which owns the AdaIN-parameter ``mlp``), ``pca`` (``SubspaceLayer``); read from the official definition) and the
mapping onto ours (:class:`CFSMGenerator` = ``encoder``, ``decoder``, ``subspace``, ``mlp``):

    ==================================================  ==================================  ======================
    official key (``G_state_dict``)                      shape at the released size          ours
    ==================================================  ==================================  ======================
    ``pca.U`` / ``pca.mu``                               (10, 128) / (128,)                  ``subspace.U`` / ``.mu``
    ``decoder.mlp.model.{0,2,4}.{weight,bias}``          (256, 128), (256, 256), (3072, 256)  ``mlp.model.*``
    ``encoder.model.{1,4,7}.{weight,bias}``              7x7 3->64, 4x4 64->128, 4x4 128->256 ``encoder.model.*``
    ``encoder.model.{10,11,12}.block.{1,5}.*``           3x3 256->256 (IN residual blocks)   ``encoder.model.*``
    ``decoder.model.{0,1,2}.block.{1,5}.*``              3x3 256->256 (AdaIN residual blocks) ``decoder.model.*``
    ``decoder.model.{4,8}.{weight,bias}``                5x5 256->128, 5x5 128->64           ``decoder.model.*``
    ``decoder.model.{5,9}.{gamma,beta}``                 (128,), (64,) LayerNorm              ``decoder.model.*``
    ``decoder.model.12.{weight,bias}``                   7x7 64->3                           ``decoder.model.*``
    ``decoder.model.{0,1,2}.block.{2,6}.running_{mean,var}``  (256,) AdaIN "dummy buffers, not used" (dropped)
    ==================================================  ==================================  ======================

Every other index matches because both modules are built from the same layer sequence (the official
``nn.InstanceNorm2d`` layers have no affine parameters and no running statistics, so they add no keys). The
official AdaIN computes ``F.batch_norm`` in training mode over a ``(1, B*C, H, W)`` view with the assigned weight /
bias, which is instance norm with biased variance and ``weight * x_hat + bias``: our ``adain_scale="gamma"`` (the
released one); its two running buffers are never read by the output (it always normalises with batch statistics),
so they have no counterpart and are dropped and listed. The MLP output is sliced over the AdaIN layers in the same
order (first ``C`` values the bias, next ``C`` the weight) by both.

Strict: a key of the file that is neither mapped nor one of those buffers, a key of ours left unfilled, or a shape
that differs, is a one-line error (exit status 2) listing every such key. The output is the project's generator file
(:func:`harness.models.cfsm.save_generator`: ``format``, ``model_config`` = the released architecture, ``generator``,
``meta`` naming the source file, its sha256 and the dropped buffers), which stage 2 loads with
``hparams.generator=<out> hparams.generator_size=112`` (:meth:`methods.cfsm_guided.CFSMGuided._load`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping

import torch

from harness.core.atomic import file_sha256
from harness.models.cfsm import PAPER, CFSMConfig, CFSMGenerator, save_generator

SOURCE = "github.com/liufeng2915/CFSM CFSM/synthesis_network.py Generator (WiderFace70K.pth: G_state_dict)"
RENAMES = (("pca.", "subspace."), ("decoder.mlp.", "mlp."))  # official prefix -> ours; everything else is identical
OFFICIAL_MODULES = ("encoder.", "decoder.", "pca.")  # Generator's submodules: any other top-level name is foreign
DROPPED = re.compile(r"^decoder\.model\.\d+\.block\.\d+\.running_(mean|var)$")  # AdaIN's unused buffers
STATE_KEY = "G_state_dict"


class GeneratorImportError(ValueError):
    """One line: ``<path>: <what>``."""


def official_to_ours(key: str) -> str:
    """The project's key for an official generator key (the identity outside :data:`RENAMES`)."""
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _read(path: str, trust_pickle: bool):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: released generator not found (no such file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure becomes one line naming the file
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if glob and not trust_pickle:
            raise GeneratorImportError(
                f"{path}: pickles an object of type {glob.group(1)}, refused by "
                "torch.load(weights_only=True); if the file comes from a source you trust, "
                "pass --trust-pickle"
            ) from None
        reason = " ".join(str(exc).split())[:200]
        raise GeneratorImportError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {reason})") from None


def _state_dict(path: str, obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):  # a pickled model object (read with --trust-pickle)
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise GeneratorImportError(f"{path}: expected a dict, got {type(obj).__name__}")
    if STATE_KEY in obj:
        obj = obj[STATE_KEY]
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, Mapping):
            raise GeneratorImportError(f"{path}:{STATE_KEY}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise GeneratorImportError(
            f"{path}: not a generator state dict (no {STATE_KEY!r}, and {len(bad)} entries "
            f"are not tensors, e.g. {bad[0]!r})"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}  # a DataParallel-wrapped save, if any


def convert(
    path: str, official: Mapping[str, torch.Tensor], config: CFSMConfig = PAPER
) -> tuple[CFSMGenerator, list[str]]:
    """``(generator, dropped keys)``: ``official`` mapped strictly onto :class:`CFSMGenerator` ``(config)``."""
    generator = CFSMGenerator(config)
    ours = generator.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped, unmatched, shapes, wrong_shape = [], [], [], set()
    for key, value in official.items():
        if DROPPED.match(key):
            dropped.append(key)
            continue
        new = official_to_ours(key)
        if not key.startswith(OFFICIAL_MODULES) or new not in ours:
            unmatched.append(key)
        elif tuple(value.shape) != tuple(ours[new].shape):
            shapes.append(f"{key} {tuple(value.shape)} (ours {new} {tuple(ours[new].shape)})")
            wrong_shape.add(new)
        else:
            mapped[new] = value
    missing = sorted(set(ours) - set(mapped) - wrong_shape)
    problems = []
    if unmatched:
        problems.append(f"{len(unmatched)} key(s) with no counterpart: {', '.join(unmatched)}")
    if missing:
        problems.append(f"{len(missing)} key(s) of ours not in the file: {', '.join(missing)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {', '.join(shapes)}")
    if problems:
        raise GeneratorImportError(
            f"{path}: not the released CFSM generator ({config.image_size} px, dim "
            f"{config.dim}): " + "; ".join(problems)
        )
    nonfinite = [k for k, v in mapped.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise GeneratorImportError(f"{path}: NaN or infinite values in {', '.join(nonfinite)}")
    generator.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()}, strict=True)
    return generator.eval(), sorted(dropped)


def import_generator(path: str, out: str, trust_pickle: bool = False) -> dict:
    """Read ``path``, convert it strictly and write the project's generator file to ``out`` (atomically); returns
    the metadata written."""
    official = _state_dict(path, _read(path, trust_pickle))
    generator, dropped = convert(path, official)
    meta = {
        "imported": {
            "file": os.path.abspath(path),
            "sha256": file_sha256(path),
            "source": SOURCE,
            "renamed": [f"{a}* -> {b}*" for a, b in RENAMES],
            "dropped": dropped,
        },
        "deviations": {},  # the released generator itself
    }
    save_generator(out, generator, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.import_generator",
        description="Import the released CFSM stage-1 generator (WiderFace70K.pth) strictly.",
    )
    ap.add_argument("path", help="the official file (CFSM/train.py checkpoint with G_state_dict, or a state dict)")
    ap.add_argument("--out", required=True, help="the project's generator file to write (hparams.generator=...)")
    ap.add_argument(
        "--trust-pickle",
        action="store_true",
        help="torch.load(weights_only=False): only for files from a source you trust",
    )
    args = ap.parse_args(argv)
    try:
        meta = import_generator(args.path, args.out, args.trust_pickle)
    except (FileNotFoundError, ValueError) as exc:
        print(f"harness.import_generator: {exc}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in CFSMGenerator(PAPER).parameters())
    dropped = meta["imported"]["dropped"]
    print(
        f"harness.import_generator: {args.path} -> {args.out}: released CFSM generator, {n:,} parameters, "
        f"{PAPER.image_size} px; renamed pca.* -> subspace.*, decoder.mlp.* -> mlp.*; dropped {len(dropped)} "
        f"unused AdaIN buffer(s): {', '.join(dropped) if dropped else 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
