"""``randaugment``: RandAugment applied per sample.

Cubuk, Zoph, Shlens & Le, "RandAugment: Practical Automated Data Augmentation with a Reduced Search Space",
CVPR Workshops 2020 / NeurIPS 2020. Every image gets its own ``n`` ops, drawn uniformly with replacement from the
paper's 14 (identity, autoContrast, equalize, rotate, solarize, color, posterize, contrast, brightness, sharpness,
shear-x/y, translate-x/y), all at the shared magnitude bin ``m`` of ``num_bins``, signed ops with a random sign.
Defaults are torchvision's (``v2.RandAugment``: N=2, M=9 of 31 bins, nearest interpolation, fill 0). Note the
scale: the paper's M is on 0-10 (ImageNet ResNet-50: N=2, M=9), i.e. 0.9 of the maximum; torchvision's M=9 of 31
bins is 0.3 of it. ``num_bins=11, m=9`` gives the paper's scale. Op tables and the per-sample application:
:mod:`methods.policy_augment`.
"""

from __future__ import annotations

from methods.base import Batch, FRModel, Method, register
from methods.policy_augment import apply_policy, check_interpolation, randaugment_plan


@register
class RandAugment(Method):
    name = "randaugment"
    paper = "Cubuk et al., RandAugment, NeurIPS 2020"

    @staticmethod
    def hparams():
        return {
            "n": (2, lambda r: int(r.integers(1, 4))),  # ops per image
            "m": (9, lambda r: int(r.integers(5, 20))),  # magnitude bin, shared by all ops
            "num_bins": (31, lambda r: 31),  # torchvision's scale (the paper's 0-10 scale: 11)
            "interpolation": ("nearest", lambda r: "nearest"),
        }

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.n, self.m, self.num_bins = int(self.hp["n"]), int(self.hp["m"]), int(self.hp["num_bins"])
        self.interpolation = check_interpolation(str(self.hp["interpolation"]))
        randaugment_plan(0, 8, 8, self.n, self.m, self.num_bins)  # validates n and m now, not at step 0

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        b, _, h, w = batch.x.shape
        plan = randaugment_plan(b, h, w, self.n, self.m, self.num_bins)
        return batch.replace(x=apply_policy(batch.x, plan, self.interpolation))
