"""``adv_degrade``: CFSM's adversarial guidance without a learned style space (an ablation).

The same one-step FGSM as ``cfsm_guided`` (Liu et al., ECCV 2022; released ``GuidedFaceRecognition/
adversarial_regu.py``, github.com/liufeng2915/CFSM), but the coefficients it perturbs are the
normalised parameters of hand-designed, differentiable degradations (:mod:`methods.degradations`) instead of
the style coefficients ``o`` of the stage-1 generator. It answers "how much of CFSM's gain needs the learned,
target-fitted style space, and how much comes from guided degradation alone?".

Every training step:

1. draw the mix as ``cfsm_guided`` does (``mix_indices``: a random ``rs_ratio`` = 0.75 of the real images and an
   independent random 25% to degrade; batch size unchanged); only the selected 25% are degraded (like
   ``cfsm_guided``'s ``synthesize="selected"``);
2. for each selected image draw ``z0 ~ U[0, 1]^D`` (the analogue of ``o0 ~ N(0, I)``), plus the non-coefficient
   randomness, fixed for the step: the N(0, 1) noise field and the photometric order;
3. ``steps`` times (default 1 = FGSM): degrade the images with ``z``, compute the FR margin loss through
   ``fr.raw`` (unwrapped backbone) and ``fr.head`` with the true labels, take its gradient w.r.t. ``z`` only
   (``torch.autograd.grad``), ``z <- clip(z + alpha * sign(grad), z0 - eps, z0 + eps)``
   (:func:`methods.guidance.fgsm_step`), then clip to [0, 1] (the valid range);
4. the batch is ``cat(x[real], degrade(x[selected], z_adv))`` with the labels carried along
   (:func:`methods.guidance.mix_batch`).

**The normalised space.** ``z`` has one coordinate per continuous parameter with a non-empty range
(:meth:`methods.degradations.DegradationSpace.active`; by default 9: Gaussian blur sigma, motion-blur length and
angle, down-up scale, noise sigma, JPEG quality, brightness, contrast, saturation; hue's range is empty as in
AdaFace). Each maps linearly to its range: ``value = lo + z * (hi - lo)``, with at 112 px blur sigma 0 .. 2.2 px,
motion length 0 .. 12 px (both scaled by H / 112), angle -45 .. 45 degrees, scale 1 .. 0.2, noise sigma
0 .. 20/255, JPEG quality 100 .. 60, brightness / contrast / saturation 0.5 .. 1.5 (z = 0.5 is the identity for
these three). The sources of the ranges are in :class:`methods.degradations.DegradationSpace`.
``eps = alpha = 0.314`` are CFSM's released values, used unchanged in this space; note that ``U[0, 1]`` has
standard deviation 0.29 where CFSM's ``N(0, I)`` has 1, so the step is relatively about 3x larger here (the
random search draws both from ``10 ** U(-1, 0)``, as for ``cfsm_guided``).

Every op is applied to every selected image (``op_prob`` = 1: the analogue of every synthetic image getting a
full style code); with ``op_prob`` < 1, each op is switched off per image with probability 1 - op_prob, and the
coordinates of a switched-off op get a zero gradient and stay at ``z0``. The crop op is not used (its box is not
differentiable). Coordinates can also get an exactly zero gradient where the op is flat: blur sigma near 0
(the kernel is a delta), JPEG quality at exactly 100, motion angle at length 0; ``adv.grad_zero`` counts them.

Same semantics as ``cfsm_guided`` otherwise: ``inner_bn_train`` (released True: the inner pass is a training-mode
forward and updates BatchNorm running statistics and the head's running state; False runs backbone and head in
eval mode for it, restored after); no parameter ``.grad`` is touched; under CUDA AMP the inner loss is not scaled.
Degradations run in float32 with autocast off. Randomness (the mix permutations, ``z0``, masks, noise field,
order) comes from torch's global generator on the CPU, then moves to the batch's device.

Logged (``batch.extras`` -> ``loss`` scalars): ``adv.inner_loss`` (inner FR loss at ``z0``), ``adv.grad_zero``,
``adv.z_shift`` (mean ``|z_adv - z0|``), ``adv.z_mean`` (mean ``z_adv``, i.e. how far to the strong end the step
pushed); every ``monitor_every`` steps ``adv.probe_loss_z0`` / ``adv.probe_loss_adv`` in eval mode (no running
statistics change, no random numbers drawn).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harness.core.config import parse_bool
from harness.data.images import memory_format_of
from methods import degradations as D
from methods.base import Batch, FRModel, Method, register
from methods.guidance import check_guidance, guided_search, mix_batch, mix_indices, probe_losses

ADV_OPS = ("color", "blur", "motion", "resize", "noise", "jpeg")  # every differentiable op; no crop


@register
class AdvDegrade(Method):
    name = "adv_degrade"
    paper = "CFSM-style FGSM guidance (Liu et al., ECCV 2022) on hand-designed degradations"

    @staticmethod
    def hparams() -> dict[str, tuple[Any, Any]]:
        def fixed(value):
            return (value, lambda rng: value)

        return {
            "eps": (0.314, lambda r: float(10 ** r.uniform(-1.0, 0.0))),  # CFSM released, in z units
            "alpha": (0.314, lambda r: float(10 ** r.uniform(-1.0, 0.0))),  # CFSM released
            "steps": (1, lambda r: int(r.integers(1, 4))),  # CFSM released k = 1 (FGSM)
            "rs_ratio": (0.75, lambda r: float(r.uniform(0.5, 0.9))),  # CFSM released
            "inner_bn_train": fixed(True),  # CFSM released: training-mode inner pass
            "op_prob": fixed(1.0),  # every op on every degraded image
            "monitor_every": fixed(50),  # eval-mode probe of the loss at z0 and z_adv; 0 = off
            **D.space_hparams(),
        }

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        h = self.hp
        self.steps = int(h["steps"])
        self.eps, self.alpha, self.rs_ratio = float(h["eps"]), float(h["alpha"]), float(h["rs_ratio"])
        self.inner_bn_train = parse_bool(h["inner_bn_train"], "hyperparameter inner_bn_train")
        self.op_prob = float(h["op_prob"])
        self.monitor_every = int(h["monitor_every"])
        check_guidance(self.name, self.steps, self.eps, self.alpha, self.rs_ratio, self.monitor_every)
        if not 0.0 <= self.op_prob <= 1.0:
            raise ValueError(f"{self.name}: op_prob must be in [0, 1], got {self.op_prob}")
        self.space = D.space_from_hparams(h)
        self.names = self.space.active(ADV_OPS)

    # ------------------------------------------------------------------------------------------ pieces
    def draw(self, n: int, image_shape) -> tuple[Tensor, dict[str, Tensor]]:
        """``(z0, fixed)`` for ``n`` images: z0 ~ U[0, 1]^D and the per-step fixed randomness (op masks, noise
        field, photometric order), on the CPU."""
        p = D.sample_params(n, None, self.space, {op: self.op_prob for op in ADV_OPS}, image_shape=image_shape)
        fixed = {k: p[k] for k in ("noise", "color_order", *(f"{op}_on" for op in ADV_OPS))}
        if self.op_prob >= 1.0:
            fixed = {k: v for k, v in fixed.items() if not k.endswith("_on")}
        return p["z"][:, [self.space.active().index(nm) for nm in self.names]], fixed

    def degrade(self, x: Tensor, z: Tensor, fixed: dict[str, Tensor]) -> Tensor:
        """Degrade ``x`` (in [-1, 1]) with normalised coefficients ``z``; differentiable in ``z`` and ``x``."""
        params = {**D.unit_to_params(z, self.space, x.shape[-2], self.names), **fixed}
        return D.apply(x, params, ops=ADV_OPS)

    def adversarial_coefficients(
        self, x: Tensor, y: Tensor, z0: Tensor, fixed: dict[str, Tensor], fr: FRModel
    ) -> tuple[Tensor, dict]:
        """``steps`` FGSM steps on ``z`` from ``z0`` against the FR loss through ``fr.raw``, each projected back to
        [0, 1]; returns ``(z_adv, scalars)``; ``steps == 0`` returns ``z0`` without a forward pass."""
        return guided_search(
            lambda z: self.degrade(x, z, fixed),
            z0,
            y,
            fr,
            steps=self.steps,
            alpha=self.alpha,
            eps=self.eps,
            inner_bn_train=self.inner_bn_train,
            prefix="adv",
            name=self.name,
            project=lambda z: z.clamp(0.0, 1.0),
        )

    # ------------------------------------------------------------------------------------------ the step
    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        x, y = batch.x, batch.y
        B, device = x.size(0), x.device
        real_idx, syn_idx = mix_indices(B, self.rs_ratio)
        if syn_idx.numel() == 0:
            real_idx = real_idx.to(device)
            return batch.replace(x=x[real_idx].contiguous(memory_format=memory_format_of(x)), y=y[real_idx])
        z0, fixed = self.draw(syn_idx.numel(), tuple(x.shape[1:]))
        z0 = z0.to(device)
        fixed = {k: v.to(device) for k, v in fixed.items()}
        sel = syn_idx.to(device)
        xs, ys = x[sel], y[sel]
        z, scalars = self.adversarial_coefficients(xs, ys, z0, fixed, fr)
        with torch.no_grad():
            x_deg = self.degrade(xs, z, fixed)
            if self.steps and self.monitor_every and batch.step % self.monitor_every == 0:
                scalars.update(self._probe(xs, ys, z0, z, fixed, fr))
        x_mix, y_mix = mix_batch(x, y, x_deg, real_idx, syn_idx)
        scalars["adv.z_shift"] = (z - z0).abs().mean()
        scalars["adv.z_mean"] = z.mean()
        return batch.replace(x=x_mix, y=y_mix, extras={**batch.extras, **scalars})

    def _probe(self, x, y, z0, z, fixed, fr) -> dict:
        """FR loss at ``z0`` and at ``z_adv`` with backbone and head in eval mode (monitoring changes nothing)."""
        return probe_losses(
            lambda c: self.degrade(x, c, fixed), {"adv.probe_loss_z0": z0, "adv.probe_loss_adv": z}, y, fr
        )

    def loss(self, batch: Batch, fr: FRModel):
        scalars = {k: v for k, v in batch.extras.items() if k.startswith("adv.")}
        return fr.loss(batch.x, batch.y), scalars
