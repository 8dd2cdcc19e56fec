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
