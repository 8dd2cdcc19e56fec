"""The same faces synthesised with random and with guided style coefficients, for FR models at several points of
training (issue 20, item 2; ``python -m harness.guidance faces``).

CFSM (Liu, Kim, Jain & Liu, ECCV 2022, arXiv 2207.10180) guides the synthesis adversarially: one FGSM step on the
style coefficients ``o`` from a random ``o0`` against the current FR model's loss (released
``GuidedFaceRecognition/adversarial_regu.py``). Here the step is taken by ``cfsm_guided``'s own code
(:meth:`methods.cfsm_guided.CFSMGuided.adversarial_coefficients`), the method built as the trainer builds it
(:func:`methods.build_method`, the checkpoint's own hyperparameters when it is a ``cfsm_guided`` run), with the
FR backbone and margin head read (weights only) from a checkpoint that holds both: a weight snapshot of the
trainer (``snapshot_every``, ``<checkpoint stem>.step<N>.pt``; the final checkpoint holds no head). Backbone and
head are in training mode, as in the trainer's step (the released inner pass is a training-mode forward).

Source faces: ``faces`` records of the release's source RecordIO at evenly spaced indices
(:func:`face_indices`), with their identity labels; ``o0 ~ N(0, I_q)`` drawn once per face from a generator seeded
with ``seed``, the same for every checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from harness.core.config import RunConfig
from harness.core.errors import DataFormatError
from harness.data.loaders import load_images, to_model_input
from harness.data.recordio import FaceRecDataset
from harness.models.build import build_model, load_backbone
from harness.models.cfsm import load_generator
from methods import FRModel, build_method
from methods.cfsm_guided import decode, encode, fr_input, resize
from methods.policy_augment import to_uint8

METHOD = "cfsm_guided"


@dataclass
class FRCheckpoint:
    """An FR model read from a checkpoint: its config, backbone and margin head, and where it stands."""

    path: str
    cfg: RunConfig
    num_classes: int
    step: int | None
    total_steps: int | None
    backbone: torch.nn.Module
    head: torch.nn.Module

    @property
    def label(self) -> str:
        name = os.path.splitext(os.path.basename(self.path))[0]
        where = f" (step {self.step}/{self.total_steps})" if self.step is not None else ""
        return f"{name}{where}"


def load_fr_checkpoint(path: str) -> FRCheckpoint:
    """A ``harness.run`` checkpoint read by the harness's one reader (:func:`harness.models.build.load_backbone`:
    weights only, the model built from the recorded config) that also holds the margin ``head`` (a
    ``snapshot_every`` snapshot). One-line errors otherwise."""
    backbone, cfg, state = load_backbone(path)
    if "head" not in state:
        raise DataFormatError(
            path,
            "head",
            "missing: the FGSM step needs the FR margin head, which only the trainer's weight snapshots hold "
            "(train with snapshot_every=N and pass <checkpoint stem>.step<N>.pt)",
        )
    num_classes = int(state["num_classes"])
    _, head = build_model(cfg, num_classes)
    try:
        head.load_state_dict(state["head"])
    except RuntimeError as exc:
        raise DataFormatError(
            path, "head", f"does not fit the recorded head ({' '.join(str(exc).split())[:300]})"
        ) from None
    step, total = state.get("step"), state.get("total_steps")
    return FRCheckpoint(
        path, cfg, num_classes, int(step) if step is not None else None, total and int(total), backbone, head
    )


def face_indices(n_images: int, faces: int) -> list[int]:
    """``faces`` evenly spaced item indices of a dataset of ``n_images`` (first and last included)."""
    if faces < 1:
        raise ValueError(f"--faces {faces}: expected >= 1")
    if n_images < faces:
        raise ValueError(f"{faces} faces asked, the source set has {n_images} images")
    return [int(i) for i in np.linspace(0, n_images - 1, faces).round()]


def guided_method(ck: FRCheckpoint, generator_path: str):
    """``cfsm_guided`` as the trainer builds it for this checkpoint (its hyperparameters when it is a
    ``cfsm_guided`` run), on ``generator_path``, with exactly one FGSM step and no monitoring."""
    g, _ = load_generator(generator_path)
    own = ck.cfg.method == METHOD
    overrides = {
        **(dict(ck.cfg.hparams) if own else {}),
        "generator": generator_path,
        "generator_size": g.config.image_size,
        "style_dim": g.config.style_dim,
        "latent_dim": g.config.latent_dim,
        "steps": 1,
        "monitor_every": 0,
    }
    return build_method(
        METHOD, ck.cfg.model.embedding_size, ck.num_classes, ck.cfg.hparams_seed if own else 0, overrides
    )


@torch.no_grad()
def face_rows(
    generator_path: str, checkpoints: list[str], release: str, faces: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[str], list[int]]:
    """``(grid, row_labels, indices)``: a (2 + len(checkpoints), faces, H, W, 3) uint8 grid at the first
    checkpoint's FR input size; rows: the source faces, ``G(x, o0)`` and, per checkpoint, ``G(x, o_adv)``. The labels of
    the synthesised rows carry the mean ``|G(x, o) - x|`` over the row (pixels in [-1, 1], as ``probe_l1``)."""
    if not checkpoints:
        raise ValueError("no --checkpoint given (one or more FR checkpoints with a margin head)")
    cks = [load_fr_checkpoint(p) for p in checkpoints]
    cfg0 = cks[0].cfg
    ds = FaceRecDataset(os.path.join(release, cfg0.data.rec))
    idx = face_indices(len(ds), faces)
    for ck in cks:
        if ck.num_classes != ds.num_classes:
            raise DataFormatError(
                ck.path, "num_classes", f"{ck.num_classes}, but the source set of {release} has {ds.num_classes}"
            )
    y = torch.tensor([ds.label(i) for i in idx], dtype=torch.int64)
    rows, labels = [], []

    def show(x: torch.Tensor, channel_order: str, size: int) -> np.ndarray:
        x = x.flip(1) if channel_order == "BGR" else x  # back to RGB
        return to_uint8(resize(x.float(), size)).permute(0, 2, 3, 1).cpu().numpy()

    def l1(images: torch.Tensor, source: torch.Tensor) -> float:  # cfsm_guided's probe_l1 on these faces
        return float((images.float() - source.float()).abs().mean())

    size = cfg0.data.input_size
    o0 = None
    for k, ck in enumerate(cks):
        method = guided_method(ck, generator_path)
        generator = method.generator
        if o0 is None:
            o0 = torch.randn(faces, generator.config.style_dim, generator=torch.Generator().manual_seed(seed))
        x = to_model_input(
            load_images(lambda j: ds[idx[j]][0], faces, ck.cfg.data.input_size), ck.cfg.data.channel_order
        )
        content = encode(generator, resize(x, method.generator_size).contiguous())
        if k == 0:
            rows.append(show(x, ck.cfg.data.channel_order, size))
            labels.append("source")
            random = fr_input(decode(generator, content, o0), x)
            rows.append(show(random, ck.cfg.data.channel_order, size))
            labels.append(f"random o0 (seed {seed}), |G-x| {l1(random, x):.3f}")
        fr = FRModel(backbone=ck.backbone, raw=ck.backbone, head=ck.head)
        ck.backbone.train(), ck.head.train(), method.train()  # as in the trainer's step
        o_adv, _ = method.adversarial_coefficients(generator, content, o0, y, fr, x)
        guided = fr_input(decode(generator, content, o_adv), x)
        rows.append(show(guided, ck.cfg.data.channel_order, size))
        labels.append(f"guided: {ck.label}, |G-x| {l1(guided, x):.3f}")
    return np.stack(rows), labels, idx
