"""IResNet face-recognition backbones with insightface's exact module layout.

Sources (architecture facts, re-implemented here, not copied):

* insightface ``recognition/arcface_torch/backbones/iresnet.py`` -- the ``iresnet18/34/50/100/200`` models used
  by ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019) and by
  CFSM (Liu et al., ECCV 2022). The design is the "Improved Residual Network" of Duta et al. (2020,
  arXiv:2004.04989) as adapted by insightface: pre-activation-style blocks ``BN -> conv3x3 -> BN -> PReLU ->
  conv3x3(stride) -> BN`` with no activation after the residual sum, a stride-1 stem for 112x112 faces, and an
  output head ``BN2d -> dropout -> flatten -> Linear -> BN1d`` whose BN1d scale is frozen at 1.

With the default knobs (``widths=(64, 128, 256, 512)``, ``stem_width=64``, ``input_size=112``, ``stem_stride=1``)
an :class:`IResNet` has exactly insightface's parameter names, shapes and ``state_dict`` key order, so its
checkpoints (``backbone.pth``) load with ``strict=True``. The extra knobs only exist to make small CPU variants
(:func:`small_iresnet`) with the same block and layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "iresnet", "small_iresnet", "BACKBONES", "build_backbone", "LAYERS"]

#: Blocks per stage for insightface's named models (``iresnet.py``: iresnet18 ... iresnet200).
LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}

_BN_EPS = 1e-05


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (insightface ``conv3x3`` with groups=1, dilation=1)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (insightface ``conv1x1``), used by the downsample shortcut."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """insightface ``IBasicBlock``: ``bn1 -> conv1 -> bn2 -> prelu -> conv2(stride) -> bn3``, plus shortcut.

    The shortcut is the identity or ``downsample`` (conv1x1(stride) + BN). The sum is returned as is: IResNet
    has no activation after the addition. Attribute creation order fixes the ``state_dict`` key order.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + identity


class IResNet(nn.Module):
    """insightface ``IResNet`` (arcface_torch ``backbones/iresnet.py``) with optional CPU-size knobs.

    Args:
        layers: blocks per stage (e.g. ``[3, 4, 14, 3]`` for r50); one entry per stage.
        widths: output channels of each stage; every stage's first block has stride 2.
        stem_width: channels of the stem ``conv1`` (64 in insightface).
        input_size: side of the square input (112 in insightface); it must be divisible by
            ``stem_stride * 2 ** len(layers)`` so that the final feature map is exact and at least 1x1.
        num_features: embedding size (512 in insightface).
        dropout: probability of the in-place dropout before ``fc`` (0 by default, as insightface).
        fp16: run the convolutional trunk under autocast (float16 on CUDA, bfloat16 on CPU) and ``fc``/``features``
            in float32, as insightface's ``torch.cuda.amp.autocast(self.fp16)`` + ``x.float()``.
        zero_init_residual: zero-initialise each block's ``bn3.weight`` (insightface option, off by default).
        stem_stride: stride of the stem conv (1 in insightface); 2 halves every feature map for cheap CPU runs.
    """

    fc_scale = 7 * 7  # insightface's class attribute, for the default 112 px configuration

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        input_size: int = 112,
        num_features: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        zero_init_residual: bool = False,
        stem_stride: int = 1,
    ):
        super().__init__()
        layers = [int(n) for n in layers]
        widths = [int(w) for w in widths]
        if len(layers) != len(widths) or not layers:
            raise ValueError(f"layers {layers} and widths {widths} must be non-empty and of the same length")
        if any(n < 1 for n in layers) or any(w < 1 for w in widths) or stem_width < 1 or num_features < 1:
            raise ValueError(
                f"block counts, widths, stem_width and num_features must be >= 1 "
                f"(layers={layers}, widths={widths}, stem_width={stem_width}, num_features={num_features})"
            )
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        reduction = stem_stride * 2 ** len(layers)
        if input_size < reduction or input_size % reduction:
            raise ValueError(
                f"input_size {input_size} must be a positive multiple of {reduction} "
                f"(stem_stride {stem_stride} x 2^{len(layers)} stages) so the final feature map is exact and >= 1 px"
            )
        final = input_size // reduction
        self.fc_scale = final * final
        self.input_size = input_size
        self.num_features = num_features
        self.fp16 = fp16
        self.inplanes = stem_width
        self.dilation = 1

        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width, eps=_BN_EPS)
        self.prelu = nn.PReLU(stem_width)
        for i, (n_blocks, planes) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{i}", self._make_layer(planes, n_blocks, stride=2))
        self.bn2 = nn.BatchNorm2d(widths[-1] * IBasicBlock.expansion, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(widths[-1] * IBasicBlock.expansion * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # insightface freezes the embedding BN scale
        self.num_stages = len(layers)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn3.weight, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * IBasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * IBasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * IBasicBlock.expansion, eps=_BN_EPS),
            )
        mods = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * IBasicBlock.expansion
        mods.extend(IBasicBlock(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"expected input of spatial size {self.input_size}x{self.input_size}, got {tuple(x.shape)}"
            )
        with torch.autocast(device_type=x.device.type, enabled=self.fp16):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.prelu(x)
            for i in range(1, self.num_stages + 1):
                x = getattr(self, f"layer{i}")(x)
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        x = self.features(x)
        return x


def iresnet(name: str, **kw) -> IResNet:
    """insightface's named IResNet (``r18``, ``r34``, ``r50``, ``r100``, ``r200``); ``kw`` go to :class:`IResNet`."""
    if name not in LAYERS:
        raise ValueError(f"unknown iresnet {name!r}; valid names: {', '.join(LAYERS)}")
    return IResNet(list(LAYERS[name]), **kw)


def small_iresnet(
    widths: Sequence[int] = (32, 64, 128, 256),
    layers: Sequence[int] = (1, 1, 1, 1),
    input_size: int = 48,
    num_features: int = 128,
    stem_stride: int = 1,
    stem_width: int | None = None,
    **kw,
) -> IResNet:
    """A CPU-sized IResNet: same block and layout, narrower stages, fewer blocks, smaller input.

    ``stem_width`` defaults to ``widths[0]`` (insightface's stem width equals its first stage width).
    """
    return IResNet(
        list(layers),
        widths=tuple(widths),
        stem_width=widths[0] if stem_width is None else stem_width,
        input_size=input_size,
        num_features=num_features,
        stem_stride=stem_stride,
        **kw,
    )


#: Backbone registry: insightface's names plus ``small`` (see :func:`small_iresnet`).
BACKBONES: dict[str, Callable[..., IResNet]] = {
    **{name: functools.partial(iresnet, name) for name in LAYERS},
    "small": small_iresnet,
}


def build_backbone(name: str, **kw) -> IResNet:
    """Build a registered backbone by name; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}") from None
    return factory(**kw)
