"""The model a run config describes: its device and its backbone + margin head, built from the registries of
:mod:`harness.models`. Training, evaluation, stage 1 and the benchmarks build the same model here."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch

from harness.models import HEADS, build_backbone, build_head

if TYPE_CHECKING:
    from harness.core.config import RunConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def check_device(name: str) -> str:
    """The device a run would use (``auto`` -> ``cuda`` or ``cpu``); ``cuda`` on a machine without CUDA is a one-line
    ValueError, so that entry points can stop before anything starts (Sacred, torchrun workers, data)."""
    try:
        return str(resolve_device(name))
    except RuntimeError as exc:
        raise ValueError(f"{exc} (set device: auto in the params, or device=cpu)") from None


def build_model(cfg: RunConfig, num_classes: int, amp: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Backbone and head of ``cfg``. ``amp``: the backbone runs its convolutional trunk under autocast (insightface's
    ``iresnet(fp16=True)`` inside ``train_v2.py``'s AMP); without it, the trunk stays float32 even inside the
    trainer's autocast, as ``IResNet(fp16=False)`` keeps it outside."""
    m = cfg.model
    kw = dict(
        input_size=cfg.data.input_size,
        num_features=m.embedding_size,
        dropout=m.dropout,
        stem_stride=m.stem_stride,
        fp16=bool(amp),
    )
    if m.backbone == "small":
        kw.update(widths=tuple(m.widths), layers=tuple(m.layers))
    backbone = build_backbone(m.backbone, **kw)
    return backbone, build_head(m.head, m.embedding_size, num_classes, **head_kwargs(cfg))


def head_kwargs(cfg: RunConfig) -> dict:
    """What the config passes to its head: ``s``, and ``model.m`` to the heads with one fixed margin (MagFace's
    margin is a function of the feature magnitude between its own bounds, so ``model.m`` does not apply to it)."""
    m = cfg.model
    kw: dict = {"s": m.s}
    if "m" in inspect.signature(HEADS[m.head].__init__).parameters:
        kw["m"] = m.m
    return kw


def autocast_dtype(device) -> str:
    """The dtype the backbone's ``fp16`` trunk autocasts to on ``device`` (a ``torch.device`` or its name):
    ``"float16"`` on CUDA (insightface's ``iresnet(fp16=True)``), ``"bfloat16"`` on the CPU."""
    return "float16" if str(device).startswith("cuda") else "bfloat16"


def load_checkpoint(path: str) -> dict:
    """A ``harness.run`` checkpoint (``weights_only=True``: a file that pickles code is refused unrun). Only the
    weights keys are required (``backbone``, ``num_classes``); checkpoints of the old format, which also hold the
    train state, are read the same way."""
    from harness.core.atomic import load_torch

    state = load_torch(path, "checkpoint")
    if not isinstance(state, dict) or "backbone" not in state or "num_classes" not in state:
        raise ValueError(f"{path}: not a harness.run checkpoint (needs 'backbone' and 'num_classes')")
    return state


def load_backbone(path: str) -> tuple[torch.nn.Module, RunConfig, dict]:
    """``(backbone with the checkpoint's weights, the run config it was trained with, the checkpoint)`` of a
    ``harness.run`` checkpoint, built from the config it records (``config``: backbone, widths, embedding size,
    input size, channel order, head), so that a model is evaluated as it was trained. A missing file, a foreign
    file, a checkpoint without ``config`` or weights that do not fit the recorded model are one-line errors naming
    ``path``."""
    from harness.core.config import from_dict
    from harness.core.errors import require_file

    require_file(path, "checkpoint")
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}:config: the checkpoint records no run config (written by an old harness.run?)")
    try:
        cfg = from_dict(state["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}:config: {str(exc.args[0] if exc.args else exc)}") from None
    backbone, _ = build_model(cfg, int(state["num_classes"]))
    try:
        backbone.load_state_dict(state["backbone"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path}:backbone: the weights do not fit the recorded model ({first})") from None
    return backbone, cfg, state
