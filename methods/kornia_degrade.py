"""``kornia_degrade``: random per-sample degradations of the source batch (AdaFace-style augmentation).

Kim, Jain & Liu, "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022; the released augmenter is
``mk-minchul/AdaFace`` ``dataset/augmenter.py`` (``Augmenter.augment``), enabled by ``scripts/run_ir50_ms1mv2.sh``
(``--low_res_augmentation_prob 0.2 --crop_augmentation_prob 0.2 --photometric_augmentation_prob 0.2``;
``config.py`` defaults them to 0). Each image independently gets, in this order:

1. **crop with zero padding**, prob ``crop_prob`` = 0.2: a box drawn as torchvision ``RandomResizedCrop.get_params``
   with ``scale=(0.2, 1.0), ratio=(0.75, 4/3)`` is kept in place, everything else set to black (no resize,
   despite the name);
2. **low resolution**, prob ``lowres_prob`` = 0.2: down to ``int(side_ratio * H)`` with ``side_ratio ~ U(0.2, 1.0)``
   (``scale_min``) and back up;
3. **photometric**, prob ``photometric_prob`` = 0.2: ``ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5,
   hue=0)`` in a random order of the three.

Here the three run batched on the training device (:mod:`methods.degradations`), every sample with its own
draws. Differences from the release: one interpolation pair (antialiased bilinear down, bilinear up) instead of
a random choice among five OpenCV interpolations for each resize; the photometric jitter runs before the
resize (see :mod:`methods.degradations` on the order; the ops commute up to clipping); the images are already at
the FR input size (64 px on SynthFace) rather than 112 px, so the crop and the side ratio are fractions of it.

**Extra degradations**, each with AdaFace's per-op probability 0.2 (AdaFace's augmenter has no blur, noise or JPEG; the
baseline is meant to cover the usual camera degradations, so they are on; ``*_prob=0`` gives AdaFace's augmenter
exactly): Gaussian blur, motion blur, additive Gaussian noise and JPEG, with the ranges of
:class:`methods.degradations.DegradationSpace` (GFPGAN's face degradation model for blur sigma, noise and JPEG quality,
ImageNet-C for motion blur; sources in that docstring). A random-search point (``hparams_seed > 0``) draws each extra
probability from ``U(0, 0.5)`` and each AdaFace probability from ``U(0, 0.5)``; the ranges are fixed.

Labels, batch size, dtype and memory format are unchanged; the trainer's random horizontal flip stays as it is
(AdaFace's flip is the same 0.5 flip). Randomness: every draw comes from torch's global generator on the CPU
(seeded by the trainer), then moves to the batch's device, so CPU and GPU runs degrade alike. Logged:
``degrade.touched`` (share of images that got at least one op).
"""

from __future__ import annotations

from typing import Any

import torch

from methods import degradations as D
from methods.base import Batch, FRModel, Method, register

#: hyperparameter -> op of methods.degradations
PROB_OPS = {
    "crop_prob": "crop",
    "lowres_prob": "resize",
    "photometric_prob": "color",
    "blur_prob": "blur",
    "motion_prob": "motion",
    "noise_prob": "noise",
    "jpeg_prob": "jpeg",
}


def _prob(default: float):
    return (default, lambda r: float(r.uniform(0.0, 0.5)))


@register
class KorniaDegrade(Method):
    name = "kornia_degrade"
    paper = "Kim et al., AdaFace augmentation, CVPR 2022"

    @staticmethod
    def hparams() -> dict[str, tuple[Any, Any]]:
        return {
            "crop_prob": _prob(0.2),  # AdaFace scripts/run_ir50_ms1mv2.sh
            "lowres_prob": _prob(0.2),  # AdaFace
            "photometric_prob": _prob(0.2),  # AdaFace
            "blur_prob": _prob(0.2),  # not in AdaFace's augmenter; its per-op probability
            "motion_prob": _prob(0.2),
            "noise_prob": _prob(0.2),
            "jpeg_prob": _prob(0.2),
            **D.space_hparams(),
        }

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.space = D.space_from_hparams(self.hp)
        self.probs = {op: float(self.hp[k]) for k, op in PROB_OPS.items()}
        for k, op in PROB_OPS.items():
            if not 0.0 <= self.probs[op] <= 1.0:
                raise ValueError(f"{self.name}: {k} must be in [0, 1], got {self.hp[k]}")

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        x = batch.x
        B = x.size(0)
        params = D.sample_params(
            B,
            None,
            self.space,
            self.probs,
            image_shape=tuple(x.shape[1:]),
            noise_field=self.probs["noise"] > 0,
            quantize_scale=True,
        )
        touched = torch.stack(
            [params[f"{op}_on"] for op in D.OPS if self.probs.get(op, 0.0) > 0] or [torch.zeros(B, dtype=torch.bool)]
        ).any(0)
        ops = tuple(op for op in D.OPS if self.probs.get(op, 0.0) > 0)
        with torch.no_grad():
            x_aug = D.apply(x, params, ops=ops) if ops else x
        return batch.replace(x=x_aug, extras={**batch.extras, "degrade.touched": touched.float().mean()})

    def loss(self, batch: Batch, fr: FRModel):
        scalars = {k: v for k, v in batch.extras.items() if k.startswith("degrade.")}
        return fr.loss(batch.x, batch.y), scalars
