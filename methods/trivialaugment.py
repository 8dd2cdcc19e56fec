"""``trivialaugment``: TrivialAugment (wide) applied per sample.

Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation", ICCV 2021. Every image gets
one op drawn uniformly from the 14 (RandAugment's set) at a magnitude bin drawn uniformly from ``num_bins`` (31), in
the paper's "wide" space (its augmentation-space table: shear 0.99, translate 32 px, rotate 135 deg, enhance factors
1 +- 0.99, posterize 2-8 bits, solarize 0-256), as ``torchvision.transforms.v2.TrivialAugmentWide``. Tuning-free by
design: nothing is drawn in a random search. Translate is in absolute pixels as in the paper, so at a 64 px input it
reaches half the image. Tables and application: :mod:`methods.policy_augment`.
"""

from __future__ import annotations

from methods.base import Batch, FRModel, Method, register
from methods.policy_augment import apply_policy, check_interpolation, trivialaugment_plan


@register
class TrivialAugment(Method):
    name = "trivialaugment"
    paper = "Müller & Hutter, TrivialAugment, ICCV 2021"

    @staticmethod
    def hparams():
        return {
            "num_bins": (31, lambda r: 31),
            "interpolation": ("nearest", lambda r: "nearest"),
        }

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.num_bins = int(self.hp["num_bins"])
        if self.num_bins < 2:
            raise ValueError(f"trivialaugment: num_bins must be >= 2, got {self.num_bins}")
        self.interpolation = check_interpolation(str(self.hp["interpolation"]))

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        b, _, h, w = batch.x.shape
        return batch.replace(x=apply_policy(batch.x, trivialaugment_plan(b, h, w, self.num_bins), self.interpolation))
