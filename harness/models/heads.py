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
* MagFace (Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality Assessment",
  CVPR 2021), ``s=64, l_a=10, u_a=110, l_m=0.45, u_m=0.8, lambda_g=35``: an ArcFace margin that grows linearly with
  the feature magnitude, plus the magnitude regulariser ``lambda_g * g(a)``; see :class:`MagFaceHead`.
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

__all__ = ["MarginHead", "ArcFaceHead", "CosFaceHead", "AdaFaceHead", "MagFaceHead", "HEADS", "build_head"]


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
            raise ValueError(
                f"label {labels[bad][0].item()} out of range for {self.num_classes} classes (use -1 to ignore a sample)"
            )
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

    def logits(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None = None, norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scaled logits ``s * margin(cos)``; without ``labels`` no margin is applied (plain ``s * cos``)."""
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.s
        if norms is None and self.uses_norms:
            norms = torch.linalg.vector_norm(embeddings.float(), dim=1)
        return self.margin(cos, labels.view(-1).long(), norms) * self.s

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean cross-entropy over the margin logits; samples labelled ``-1`` are ignored.

        If every label is ``-1`` the loss is a zero that still depends on the graph (so ``backward`` works).
        """
        labels = labels.view(-1).long()
        logits = self.logits(embeddings, labels, norms)
        if not (labels >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=-1)

    def scalars(self) -> dict[str, float]:
        """Named statistics of the last training-mode forward, for the trainer's metrics (none by default)."""
        return {}

    def constants(self) -> dict[str, float | bool]:
        """The head's hyperparameters as applied (recorded in the train info): ``s`` and each head's own."""
        names = [
            p
            for p in inspect.signature(type(self).__init__).parameters
            if p not in ("self", "embedding_size", "num_classes")
        ]
        return {n: getattr(self, n) for n in names}

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

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
    ):
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
            raise ValueError(
                "AdaFaceHead needs the embedding norms (pass norms= or call logits/forward with "
                "un-normalised embeddings)"
            )
        if norms.numel() != cos.size(0):
            raise ValueError(f"norms has {norms.numel()} entries for {cos.size(0)} samples")
        z = self.margin_scaler(norms)
        return self.replace_targets(cos, labels, lambda t, rows: self.target_logit(t, z[rows]))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


class MagFaceHead(MarginHead):
    """Magnitude-aware angular margin and magnitude regulariser (MagFace: Meng, Zhao, Huang & Zhou,
    "MagFace: A Universal Representation for Face Recognition and Quality Assessment", CVPR 2021; the official
    ``IrvingMeng/MagFace``: ``models/magface.py`` ``MagLinear`` / ``MagLoss`` / ``SoftmaxBuilder._margin`` and
    ``run/trainer.py``, whose ``loss = loss_id + lambda_g * loss_g``).

    With each sample's feature magnitude ``a = clip(||f||, l_a, u_a)`` (not detached: the margin and the
    regulariser are how MagFace shapes the magnitude):

    * margin ``m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m``, linear from ``l_m`` at ``l_a`` to ``u_m`` at
      ``u_a``;
    * target entry ``cos(theta + m(a))`` as ``cos * cos(m) - sin * sin(m)``; with ``easy_margin`` (``MagLinear``'s
      default, which the released builder keeps) only where ``cos > 0``, else the plain ``cos``; without it,
      ArcFace's ``cos - sin(pi - m) * m`` where ``cos <= cos(pi - m)``;
    * ``g(a) = 1 / a + a / u_a^2``; the loss is ``cross_entropy(s * logits) + lambda_g * mean(g(a))``.

    Bounds: ``l_a=10, u_a=110, l_m=0.45, u_m=0.8, lambda_g=35`` are the paper's MS1M setting as the release runs it
    (``run/run.sh``: ``la=10 ua=110 lm=0.45 um=0.8 lg=35``; ``trainer.py``'s own ``--lambda_g`` default is 20);
    ``s=64`` (``--arc-scale 64``). ``trainer.py`` checks ``lambda_g >= s * k * u_a^2 * l_a^2 / (u_a^2 - l_a^2)``
    with ``k = (u_m - l_m) / (u_a - l_a)`` (the paper's condition for a unique optimal magnitude; 22.6 for these
    bounds): :meth:`min_lambda_g`. The config's ``model.m`` does not apply (the margin is ``m(a)``); like AdaFace's
    ``h``, the bounds are this head's own defaults.

    Choices: ``g`` is averaged over the samples with a label (rows labelled ``-1`` add nothing, so ignoring a row
    equals removing it, as for the other heads). The class centres keep this module's ``normal_(0, 0.01)`` init
    (the release draws ``uniform(-1, 1)`` renormalised; only their directions matter). In training mode the
    magnitude statistics of the batch (unclipped ``||f||`` mean / min / max, the mean margin and ``mean g``) are kept
    for the trainer's metrics (:meth:`scalars`, ``train.head.*``), as ``trainer.py``'s ``debug_info`` prints them.
    """

    uses_norms = True

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        easy_margin: bool = True,
    ):
        super().__init__(embedding_size, num_classes, s)
        if not 0.0 < l_a < u_a:
            raise ValueError(f"MagFace needs 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        if lambda_g < 0:
            raise ValueError(f"lambda_g must be >= 0, got {lambda_g}")
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.lambda_g, self.easy_margin = float(lambda_g), bool(easy_margin)
        self._stats: dict[str, float] = {}

    def min_lambda_g(self) -> float:
        """``s * k * u_a^2 * l_a^2 / (u_a^2 - l_a^2)``, ``k = (u_m - l_m) / (u_a - l_a)`` (release ``trainer.py``)."""
        k = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        return self.s * k * self.u_a**2 * self.l_a**2 / (self.u_a**2 - self.l_a**2)

    def magnitude(self, norms: torch.Tensor) -> torch.Tensor:
        """``a = clip(||f||, l_a, u_a)`` per sample (B,)."""
        return norms.float().view(-1).clamp(self.l_a, self.u_a)

    def margin_of(self, a: torch.Tensor) -> torch.Tensor:
        """``m(a)``, linear from ``l_m`` at ``l_a`` to ``u_m`` at ``u_a``."""
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regulariser(self, a: torch.Tensor) -> torch.Tensor:
        """``g(a) = 1 / a + a / u_a^2`` per sample."""
        return 1.0 / a + a / self.u_a**2

    def target_logit(self, cos: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Margin-adjusted cosine for target entries (elementwise, unscaled) given each sample's margin ``m``."""
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))  # clamp_min: a finite gradient at |cos| = 1
        cos_theta_m = cos * torch.cos(m) - sin * torch.sin(m)
        if self.easy_margin:
            return torch.where(cos > 0, cos_theta_m, cos)
        return torch.where(cos > torch.cos(math.pi - m), cos_theta_m, cos - torch.sin(math.pi - m) * m)

    def margin(self, cos, labels, norms=None):
        if norms is None:
            raise ValueError(
                "MagFaceHead needs the embedding norms (pass norms= or call logits/forward with "
                "un-normalised embeddings)"
            )
        if norms.numel() != cos.size(0):
            raise ValueError(f"norms has {norms.numel()} entries for {cos.size(0)} samples")
        m = self.margin_of(self.magnitude(norms))
        return self.replace_targets(cos, labels, lambda t, rows: self.target_logit(t, m[rows]))

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``cross_entropy + lambda_g * mean g(a)`` over the samples with a label (``-1`` rows are ignored)."""
        labels = labels.view(-1).long()
        if norms is None:
            norms = torch.linalg.vector_norm(embeddings.float(), dim=1)
        loss = super().forward(embeddings, labels, norms)
        valid = labels >= 0
        a = self.magnitude(norms)
        if self.training:
            with torch.no_grad():
                raw = norms.detach().float().view(-1)
                self._stats = {
                    "feature_norm_mean": raw.mean().item(),
                    "feature_norm_min": raw.min().item(),
                    "feature_norm_max": raw.max().item(),
                    "magface_margin_mean": self.margin_of(a.detach()).mean().item(),
                    "magface_g_mean": self.regulariser(a.detach()).mean().item(),
                }
        if not valid.any():
            return loss
        return loss + self.lambda_g * self.regulariser(a[valid]).mean()

    def scalars(self) -> dict[str, float]:
        return dict(self._stats)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}, "
            f"lambda_g={self.lambda_g}, easy_margin={self.easy_margin}"
        )


HEADS: dict[str, type[MarginHead]] = {
    "arcface": ArcFaceHead,
    "cosface": CosFaceHead,
    "adaface": AdaFaceHead,
    "magface": MagFaceHead,
}


def build_head(name: str, embedding_size: int, num_classes: int, **kw) -> MarginHead:
    """Build a registered head. Unknown names raise ``ValueError`` listing the valid ones; unknown keyword
    arguments raise ``TypeError`` naming them and the accepted ones."""
    try:
        cls = HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; valid names: {', '.join(HEADS)}") from None
    accepted = [
        p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "embedding_size", "num_classes")
    ]
    unknown = [k for k in kw if k not in accepted]
    if unknown:
        raise TypeError(
            f"head {name!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(embedding_size, num_classes, **kw)
