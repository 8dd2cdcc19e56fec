"""Margin-based classification heads for face recognition (the FR loss = cross-entropy over scaled logits).

Each head owns the class-centre matrix ``weight`` (num_classes x embedding_size) and returns the loss:
``head(embeddings, labels) -> loss``. Semantics follow insightface ``recognition/arcface_torch/losses.py``
(``CombinedMarginLoss``, ``ArcFace``, ``CosFace``) together with the ``PartialFC`` / ``FC`` wrapper that normalises
embeddings and centres and clamps the cosine to [-1, 1]:

* ``cos = normalize(x) @ normalize(W).T``, clamped to [-1, 1]; ``W`` initialised ``normal_(0, 0.01)``.
* ArcFace (Deng et al., CVPR 2019), ``s=64, m=0.5``: target logit ``cos(theta + m)``, computed as
  ``cos*cos(m) - sin*sin(m)`` with ``sin = sqrt(1 - cos^2)``. Where ``theta + m`` would pass ``pi``
  (``cos <= th = cos(pi - m)``) the classic insightface ``easy_margin=False`` rule applies:
  ``cos - mm`` with ``mm = sin(pi - m) * m``, so the target logit keeps decreasing monotonically in ``theta``.
* CosFace (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018),
  ``s=64, m=0.4``: target logit ``cos - m``.
* logits are multiplied by ``s``; the loss is the mean cross-entropy. Labels equal to ``-1`` (insightface's
  PartialFC marker for samples whose class lives on another rank) are ignored (``ignore_index=-1``).

Unlike arcface_torch's ``ArcFace``, which edits the logits in place under ``torch.no_grad`` (a straight-through
trick), the margin here is an ordinary differentiable function, so its gradient reaches the centres and the
embeddings exactly.

New heads (e.g. AdaFace, added later) subclass :class:`MarginHead` and implement
``margin(cos, labels, norms=None)``; ``forward`` passes per-sample embedding norms through for that purpose.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MarginHead", "ArcFaceHead", "CosFaceHead", "HEADS", "build_head"]


class MarginHead(nn.Module):
    """Base head: normalised cosine logits, a margin hook, scale ``s`` and cross-entropy.

    Subclasses implement :meth:`margin`, which receives the clamped cosine matrix ``(B, C)``, the labels
    ``(B,)`` (``-1`` = ignore) and the embedding norms ``(B,)``, and returns the margin-adjusted cosine matrix
    (still unscaled). Rows whose label is ``-1`` must be left unchanged. :meth:`replace_targets` does the
    gather/transform/scatter of the target entries. Heads that need the embedding norms set ``uses_norms = True``;
    the norms are then computed from the embeddings when the caller does not pass them.
    """

    uses_norms = False

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0):
        super().__init__()
        if embedding_size < 1 or num_classes < 1:
            raise ValueError(f"embedding_size and num_classes must be >= 1, got {embedding_size}, {num_classes}")
        self.embedding_size = int(embedding_size)
        self.num_classes = int(num_classes)
        self.s = float(s)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``normalize(embeddings) @ normalize(weight).T`` in float32, clamped to [-1, 1]."""
        x = F.normalize(embeddings.float(), dim=1)
        w = F.normalize(self.weight.float(), dim=1)
        return (x @ w.t()).clamp(-1.0, 1.0)

    def target_index(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, classes)`` of the target entries of the samples whose label is not ``-1``."""
        labels = labels.view(-1).long()
        bad = (labels < -1) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(f"label {labels[bad][0].item()} out of range for {self.num_classes} classes "
                             "(use -1 to ignore a sample)")
        rows = (labels >= 0).nonzero(as_tuple=True)[0]
        return rows, labels[rows]

    def replace_targets(self, cos: torch.Tensor, labels: torch.Tensor, fn) -> torch.Tensor:
        """Return ``cos`` with each valid sample's target entry ``t`` replaced by ``fn(t, rows)`` (out of place,
        differentiable). Only the B target entries are transformed, not the whole B x C matrix."""
        rows, cols = self.target_index(labels)
        return cos.index_put((rows, cols), fn(cos[rows, cols], rows))

    def margin(self, cos: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """Margin-adjusted (unscaled) cosine matrix; implemented by each head."""
        raise NotImplementedError(f"{type(self).__name__} must implement margin()")

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
               norms: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits ``s * margin(cos)``; without ``labels`` no margin is applied (plain ``s * cos``)."""
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.s
        if norms is None and self.uses_norms:
            norms = torch.linalg.vector_norm(embeddings.float(), dim=1)
        return self.margin(cos, labels.view(-1).long(), norms) * self.s

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                norms: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over the margin logits; samples labelled ``-1`` are ignored.

        If every label is ``-1`` the loss is a zero that still depends on the graph (so ``backward`` works).
        """
        labels = labels.view(-1).long()
        logits = self.logits(embeddings, labels, norms)
        if not (labels >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=-1)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, s={self.s}"


class ArcFaceHead(MarginHead):
    """Additive angular margin (ArcFace, Deng et al. CVPR 2019; insightface ``losses.ArcFace``, m2 of
    ``CombinedMarginLoss``), with the ``easy_margin=False`` fallback rule:

    ``target = cos(theta + m)`` if ``cos > th`` else ``cos - mm``, where ``th = cos(pi - m)`` and
    ``mm = sin(pi - m) * m``.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5):
        super().__init__(embedding_size, num_classes, s)
        self.m = float(m)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """Margin-adjusted cosine for target entries (elementwise, unscaled)."""
        # clamp_min keeps sqrt's gradient finite at |cos| = 1 (changes sin by at most 1e-6).
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
        cos_theta_m = cos * self.cos_m - sin * self.sin_m
        return torch.where(cos > self.th, cos_theta_m, cos - self.mm)

    def margin(self, cos, labels, norms=None):
        return self.replace_targets(cos, labels, lambda t, rows: self.target_logit(t))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}"


class CosFaceHead(MarginHead):
    """Additive cosine margin (CosFace, Wang et al. CVPR 2018; insightface ``losses.CosFace``, m3 of
    ``CombinedMarginLoss``): ``target = cos - m``."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.4):
        super().__init__(embedding_size, num_classes, s)
        self.m = float(m)

    def margin(self, cos, labels, norms=None):
        return self.replace_targets(cos, labels, lambda t, rows: t - self.m)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}"


HEADS: dict[str, type[MarginHead]] = {"arcface": ArcFaceHead, "cosface": CosFaceHead}


def build_head(name: str, embedding_size: int, num_classes: int, **kw) -> MarginHead:
    """Build a registered head. Unknown names raise ``ValueError`` listing the valid ones; unknown keyword
    arguments raise ``TypeError`` naming them and the accepted ones."""
    try:
        cls = HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; valid names: {', '.join(HEADS)}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "embedding_size", "num_classes")]
    unknown = [k for k in kw if k not in accepted]
    if unknown:
        raise TypeError(f"head {name!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"accepted: {', '.join(accepted)}")
    return cls(embedding_size, num_classes, **kw)
