"""Face-recognition models: insightface-layout IResNet backbones and margin heads (ArcFace, CosFace)."""

from .heads import HEADS, ArcFaceHead, CosFaceHead, MarginHead, build_head
from .iresnet import BACKBONES, IResNet, build_backbone, iresnet, small_iresnet

__all__ = [
    "BACKBONES", "HEADS", "IResNet", "MarginHead", "ArcFaceHead", "CosFaceHead",
    "build_backbone", "build_head", "iresnet", "small_iresnet",
]
