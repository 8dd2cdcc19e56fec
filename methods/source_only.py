"""``source_only``: plain margin-loss training on the labelled source domain (the "ArcFace" rows of CFSM's tables).

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019; the trainer's
recipe follows CFSM's released FR configuration (``GuidedFaceRecognition/configs/arcface_ms1mv2_r50_ours.py``).
No target data, no augmentation beyond the trainer's random horizontal flip: the baseline every other
method must beat.
"""

from __future__ import annotations

from methods.base import Method, register


@register
class SourceOnly(Method):
    name = "source_only"
    paper = "Deng et al., ArcFace, CVPR 2019"
