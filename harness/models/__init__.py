"""Face-recognition models: insightface-layout IResNet backbones and margin heads (ArcFace, CosFace, AdaFace,
MagFace)."""

from .heads import HEADS, AdaFaceHead, ArcFaceHead, CosFaceHead, MagFaceHead, MarginHead, build_head
from .iresnet import BACKBONES, IResNet, build_backbone, iresnet, small_iresnet

__all__ = [
    "BACKBONES",
    "HEADS",
    "IResNet",
    "MarginHead",
    "ArcFaceHead",
    "CosFaceHead",
    "AdaFaceHead",
    "MagFaceHead",
    "build_backbone",
    "build_head",
    "iresnet",
    "small_iresnet",
]
