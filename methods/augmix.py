"""``augmix``: AugMix views plus the Jensen-Shannon consistency loss.

Hendrycks, Mu, Cubuk, Zoph, Gilmer & Lakshminarayanan, "AugMix: A Simple Data Processing Method to Improve
Robustness and Uncertainty", ICLR 2020; the authors' release ``google-research/augmix`` (``augmentations.py``,
``imagenet.py``). ``augment`` leaves ``x`` and ``y`` alone and adds two independent AugMix views of ``x`` to
``batch.extras`` (``augmix.view1``, ``augmix.view2``): per sample, ``width`` chains of depth ``depth`` (-1: uniform
in {1, 2, 3}) of ops from the release's 9 (autocontrast, equalize, posterize, rotate, solarize, shear_x/y,
translate_x/y; not brightness/color/contrast/sharpness, which overlap ImageNet-C), level ``U(0.1, severity)``,
mixed in float with ``w ~ Dir(alpha)`` and ``m ~ Beta(alpha, alpha)`` (:func:`methods.policy_augment.augmix_view`).

``loss`` = margin loss on the clean images + ``js_lambda`` * JS(p_clean, p_view1, p_view2), as ``imagenet.py``'s
``--jsd`` path: one backbone forward over the concatenated 3B images (BatchNorm sees all three, as released), the
cross-entropy on the clean third only, and the JS term ``mean_i KL(p_i || clamp(mean p, 1e-7, 1))`` with gradients
through all three views.

Which logits feed the JS term (``js_logits``): ``"plain"`` (default) is the head's ``s * cos`` without margin.
AugMix's JS is a consistency term on the model's predictive distribution (the release applies it to the plain
classifier logits, ``logits_all = net(images_all)``); the margin is a label-dependent training-only shift of the
target logit, not part of the prediction, and AdaFace's margin also depends on each view's feature norm (and a
margin call on the views would feed their norms into AdaFace's running statistics). ``"margin"`` uses the margin
logits of each view with its (shared) label instead, for comparison.

Cost: the backbone runs forward and backward on 3x the batch (about 3x the step's FR compute and activation
memory at the same ``optim.batch_size``), plus two AugMix views (``2 x width`` op chains). ``optim.batch_size``
still counts the clean images, as in the release.
"""

from __future__ import annotations

import torch

from harness.data.images import memory_format_of
from methods.base import Batch, FRModel, Method, register
from methods.policy_augment import augmix_view, jensen_shannon

VIEWS = ("augmix.view1", "augmix.view2")


@register
class AugMix(Method):
    name = "augmix"
    paper = "Hendrycks et al., AugMix, ICLR 2020"

    @staticmethod
    def hparams():
        return {
            "width": (3, lambda r: 3),  # chains per view
            "depth": (-1, lambda r: -1),  # ops per chain; -1 = uniform in {1, 2, 3} per chain and sample
            "severity": (3, lambda r: int(r.integers(1, 6))),  # levels U(0.1, severity) on the release's 0-10 scale
            "alpha": (1.0, lambda r: 1.0),  # Dirichlet / Beta concentration
            "js_lambda": (12.0, lambda r: float(10 ** r.uniform(0.0, 1.5))),  # JS weight (release: 12)
            "js_logits": ("plain", lambda r: "plain"),  # "plain" s*cos | "margin" (see the module docstring)
        }

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        h = self.hp
        self.width, self.depth, self.severity = int(h["width"]), int(h["depth"]), int(h["severity"])
        self.alpha, self.js_lambda, self.js_logits = float(h["alpha"]), float(h["js_lambda"]), str(h["js_logits"])
        if self.width < 1 or not 1 <= self.severity <= 10 or self.alpha <= 0 or self.depth == 0 or self.depth > 10:
            raise ValueError(f"augmix: need width >= 1, 1 <= severity <= 10, alpha > 0, depth -1 or 1..10; got {h}")
        if self.js_logits not in ("plain", "margin"):
            raise ValueError(f"augmix: js_logits must be 'plain' or 'margin', got {self.js_logits!r}")

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        views = {k: augmix_view(batch.x, self.width, self.depth, self.severity, self.alpha) for k in VIEWS}
        return batch.replace(extras={**batch.extras, **views})

    def loss(self, batch: Batch, fr: FRModel):
        if any(k not in batch.extras for k in VIEWS):
            raise KeyError("augmix.loss needs the views augment() puts in batch.extras")
        if not hasattr(fr.head, "logits"):
            raise TypeError(f"augmix needs a head with logits(embeddings[, labels]); got {type(fr.head).__name__}")
        b = batch.x.shape[0]
        x_all = torch.cat([batch.x, *(batch.extras[k] for k in VIEWS)]).contiguous(
            memory_format=memory_format_of(batch.x)
        )
        emb = fr.backbone(x_all)
        ce = fr.head(emb[:b], batch.y)
        if self.js_logits == "plain":
            logits = fr.head.logits(emb)
        else:
            logits = fr.head.logits(emb, batch.y.repeat(3))
        js = jensen_shannon(*logits.split(b))
        return ce + self.js_lambda * js, {"augmix.ce": ce.detach(), "augmix.js": js.detach()}
