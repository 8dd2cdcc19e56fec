"""``autoaugment``: the fixed AutoAugment ImageNet policy applied per sample (not the policy search).

Cubuk, Zoph, Mané, Vasudevan & Le, "AutoAugment: Learning Augmentation Policies from Data", CVPR 2019 (ImageNet
policy in the appendix): 25 sub-policies of two ``(op, probability, magnitude 0-9)`` each. Every image draws its own
sub-policy, each op fires with its own probability, signed ops get a random sign
(``torchvision.transforms.v2.AutoAugment``'s semantics and tables, nearest interpolation, fill 0). Known
torchvision-vs-TF-release difference kept: the enhance ops use factor ``1 + signed magnitude``, so "Color, magnitude
0" is the identity. The policy was searched on ImageNet; it is used here unchanged as the transfer baseline. Tables
and application: :mod:`methods.policy_augment`.
"""

from __future__ import annotations

from methods.base import Batch, FRModel, Method, register
from methods.policy_augment import apply_policy, autoaugment_plan, check_interpolation


@register
class AutoAugment(Method):
    name = "autoaugment"
    paper = "Cubuk et al., AutoAugment, CVPR 2019"

    @staticmethod
    def hparams():
        return {"interpolation": ("nearest", lambda r: "nearest")}

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.interpolation = check_interpolation(str(self.hp["interpolation"]))

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        b, _, h, w = batch.x.shape
        return batch.replace(x=apply_policy(batch.x, autoaugment_plan(b, h, w), self.interpolation))
