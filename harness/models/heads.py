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
* AdaFace (Kim, Jain & Liu, "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022),
  ``s=64, m=0.4, h=0.333, t_alpha=0.01``: a margin that adapts to the embedding norm (image quality); see
  :class:`AdaFaceHead`.
* logits are multiplied by ``s``; the loss is the mean cross-entropy. Labels equal to ``-1`` (insightface's
  PartialFC marker for samples whose class lives on another rank) are ignored (``ignore_index=-1``).

Unlike arcface_torch's ``ArcFace``, which edits the logits in place under ``torch.no_grad`` (a straight-through
trick), the margin here is an ordinary differentiable function, so its gradient reaches the centres and the
embeddings exactly.

New heads subclass :class:`MarginHead` and implement ``margin(cos, labels, norms=None)``; ``forward`` passes
per-sample embedding norms through for that purpose. A head that needs them sets ``uses_norms = True``; the
trainer passes the backbone's un-normalised embeddings (``FRModel.loss``: ``head(backbone(x), y)``), so
:meth:`MarginHead.logits` computes the norms from them. (CFSM's released ``partial_fc.py`` calls
``margin_softmax(logits, labels)`` without the norms, so its AdaFace path cannot run as released.)
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MarginHead", "ArcFaceHead", "CosFaceHead", "AdaFaceHead", "HEADS", "build_head"]


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


class AdaFaceHead(MarginHead):
    """Quality-adaptive margin (AdaFace: Kim, Jain & Liu, "AdaFace: Quality Adaptive Margin for Face
    Recognition", CVPR 2022; the official ``mk-minchul/AdaFace`` ``head.py``, whose values CFSM's
    ``GuidedFaceRecognition/losses.py`` reuses: ``m=0.4, h=0.333, s=64, t_alpha=0.01``).

    With the per-sample embedding norms ``||f||`` (detached, ``safe = clip(||f||, 0.001, 100)``):

    * running statistics (buffers ``batch_mean`` = 20 and ``batch_std`` = 100 at start), updated under
      ``no_grad`` in training mode only: ``mean <- t_alpha * mean(safe) + (1 - t_alpha) * mean``, the same for
      ``std`` with the batch's unbiased standard deviation;
    * ``z = clip(h * (safe - batch_mean) / (batch_std + eps), -1, 1)`` with ``eps = 1e-3``, computed with the
      statistics *after* this batch's update (as released);
    * target entry: ``theta = acos(clip(cos, -1 + eps, 1 - eps))``,
      ``target = cos(clip(theta - m * z, eps, pi - eps)) - (m + m * z)``; i.e. the angular margin
      ``g_angular = -m z`` and the additive margin ``g_add = m + m z``. ``z = -1`` (low norm, hard/low quality)
      gives ArcFace's ``cos(theta + m)``, ``z = 0`` CosFace's ``cos - m``, ``z = 1`` ``cos(theta - m) - 2m``.

    Deviations, all documented choices rather than tuning: the released head clamps *every* cosine to
    ``[-1 + eps, 1 - eps]``; here only the target entries are (the others keep the base class's [-1, 1], a
    difference of at most 1e-3 in a non-target logit before scaling), so rows labelled ``-1`` stay unchanged as
    the :class:`MarginHead` contract requires. The released head updates the statistics on every call, also in
    eval mode; here only in training mode. A batch with fewer than two samples has no standard deviation and
    leaves the statistics unchanged (the released code would write NaN). The statistics use every sample's norm,
    including rows labelled ``-1`` (their features are real samples; only their class is elsewhere). The class
    centres keep this module's ``normal_(0, 0.01)`` init (the official head draws ``uniform(-1, 1)`` columns
    renormalised to unit length; only their directions matter, since the cosine normalises them).
    """

    uses_norms = True

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.4,
                 h: float = 0.333, t_alpha: float = 0.01):
        super().__init__(embedding_size, num_classes, s)
        if not 0.0 <= t_alpha <= 1.0:
            raise ValueError(f"t_alpha must be in [0, 1], got {t_alpha}")
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        self.eps = 1e-3
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    @torch.no_grad()
    def update_statistics(self, safe_norms: torch.Tensor) -> None:
        """EMA update of ``batch_mean`` / ``batch_std`` from a batch of (clipped, detached) norms."""
        if safe_norms.numel() < 2:
            return
        a = self.t_alpha
        self.batch_mean.mul_(1.0 - a).add_(a * safe_norms.mean())
        self.batch_std.mul_(1.0 - a).add_(a * safe_norms.std())

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        """``z`` per sample (B,), in [-1, 1]; updates the running statistics first when training."""
        safe = norms.detach().float().view(-1).clamp(0.001, 100.0)
        if self.training:
            self.update_statistics(safe)
        z = (safe - self.batch_mean) / (self.batch_std + self.eps) * self.h
        return z.clamp(-1.0, 1.0)

    def target_logit(self, cos: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Margin-adjusted cosine for target entries (elementwise, unscaled) given each sample's ``z``."""
        theta = torch.acos(cos.clamp(-1.0 + self.eps, 1.0 - self.eps))
        theta_m = (theta - self.m * z).clamp(self.eps, math.pi - self.eps)
        return torch.cos(theta_m) - (self.m + self.m * z)

    def margin(self, cos, labels, norms=None):
        if norms is None:
            raise ValueError("AdaFaceHead needs the embedding norms (pass norms= or call logits/forward with "
                             "un-normalised embeddings)")
        if norms.numel() != cos.size(0):
            raise ValueError(f"norms has {norms.numel()} entries for {cos.size(0)} samples")
        z = self.margin_scaler(norms)
        return self.replace_targets(cos, labels, lambda t, rows: self.target_logit(t, z[rows]))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


HEADS: dict[str, type[MarginHead]] = {"arcface": ArcFaceHead, "cosface": CosFaceHead, "adaface": AdaFaceHead}


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
