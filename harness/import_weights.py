"""Strict import of public face-recognition checkpoints (insightface arcface_torch, AdaFace) for evaluation.

    python -m harness.import_weights PATH --layout insightface|adaface --arch r18|r34|r50|r100 [--trust-pickle]

loads ``PATH`` strictly and prints a one-line summary (parameter count, layout, channel order); any problem is a
one-line error on stderr (exit status 2) naming the file and, for key problems, the first offending key.

Supported layouts (architecture facts re-implemented from the sources named; no code copied)
--------------------------------------------------------------------------------------------

``insightface``: a plain ``state_dict`` as saved by insightface ``recognition/arcface_torch`` (``backbone.pth`` of the
model zoo; ``train.py`` saves ``backbone.module.state_dict()``). Architecture: insightface
``recognition/arcface_torch/backbones/iresnet.py`` (``IBasicBlock``: ``bn1, conv1, bn2, prelu, conv2(stride), bn3``
plus ``downsample = Sequential(conv1x1(stride), BN)`` on the first block of every stage; stem ``conv1, bn1, prelu``;
head ``bn2, dropout, flatten, fc (512*7*7 -> 512), features (BatchNorm1d, weight fixed to 1)``). Our
:class:`harness.models.iresnet.IResNet` is built with exactly these attribute names, so the mapping is the identity:

    ==========================================================  ==============================================
    insightface key (published)                                  ours (``IResNet``)
    ==========================================================  ==============================================
    ``conv1.weight`` (64, 3, 3, 3)                               ``conv1.weight``
    ``bn1.{weight,bias,running_mean,running_var,nbt}`` (64)      ``bn1.*``
    ``prelu.weight`` (64)                                        ``prelu.weight``
    ``layer{s}.{j}.bn1.*`` (C_in)                                ``layer{s}.{j}.bn1.*``
    ``layer{s}.{j}.conv1.weight`` (C, C_in, 3, 3)                ``layer{s}.{j}.conv1.weight``
    ``layer{s}.{j}.bn2.*`` / ``prelu.weight`` (C)                ``layer{s}.{j}.bn2.*`` / ``prelu.weight``
    ``layer{s}.{j}.conv2.weight`` (C, C, 3, 3), stride 2 if j=0  ``layer{s}.{j}.conv2.weight``
    ``layer{s}.{j}.bn3.*`` (C)                                   ``layer{s}.{j}.bn3.*``
    ``layer{s}.0.downsample.0.weight`` (C, C_in, 1, 1)           ``layer{s}.0.downsample.0.weight``
    ``layer{s}.0.downsample.1.*`` (C)                            ``layer{s}.0.downsample.1.*``
    ``bn2.*`` (512)                                              ``bn2.*``
    ``fc.weight`` (512, 25088), ``fc.bias`` (512)                ``fc.weight``, ``fc.bias``
    ``features.{weight,bias,running_mean,running_var,nbt}``      ``features.*``
    ==========================================================  ==============================================

(``nbt`` = ``num_batches_tracked``; ``s`` = 1..4, C = 64/128/256/512, blocks per stage r18 [2,2,2,2], r34
[3,4,6,3], r50 [3,4,14,3], r100 [3,13,30,3].) Input convention, insightface ``arcface_torch/inference.py``:
``cv2.imread`` then ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)``, ``img.div_(255).sub_(0.5).div_(0.5)`` -> **RGB**,
``(x/255-0.5)/0.5``, 112x112 aligned crop; ``arcface_torch/eval_ijbc.py`` (and ``_evaluation_/ijb/ijb_onnx.py``)
likewise warp the cv2 (BGR) image, convert BGR->RGB before the model (``# 3*112*112, RGB``) and scale with
``div_(255).sub_(0.5).div_(0.5)``; flip test = features of the image and its mirror added (F2), faceness (D1) on,
norm kept (N1). The model returns the un-normalised 512-d embedding.

``adaface``: a PyTorch Lightning ``.ckpt`` from mk-minchul/AdaFace: ``{"state_dict": {"model.<key>": ...,
"head.kernel": (512, classes), "head.t", "head.batch_mean", "head.batch_std"}, "epoch": ..., ...}`` (``head.py``:
``kernel`` parameter and the three EMA buffers). AdaFace's own loader (``inference.py`` ``load_pretrained_model``)
keeps the ``model.`` keys with the prefix stripped and drops the rest; here every ``model.`` key must be used and
the only other keys allowed are the training head's ``head.*`` (listed in :attr:`ImportedModel.ignored_keys`).
Architecture: AdaFace ``net.py`` ``Backbone(input_size=(112, 112), num_layers, mode="ir")`` (the upstream file is
not in our source index; it was read in several verbatim forks, which agree): ``input_layer = Sequential(Conv2d(3,
64, 3, 1, 1, bias=False), BatchNorm2d(64), PReLU(64))``; ``body = Sequential`` of ``BasicBlockIR(in, depth,
stride)`` units, ``get_block`` giving each stage ``[unit(in, depth, 2)] + [unit(depth, depth, 1)] * (n - 1)`` with
(in, depth) = (64, 64), (64, 128), (128, 256), (256, 512) and n = ir_18 [2,2,2,2], ir_34 [3,4,6,3], ir_50
[3,4,14,3], ir_101 (``num_layers=100``) [3,13,30,3]; ``BasicBlockIR``: ``shortcut_layer = MaxPool2d(1, stride)``
if ``in == depth`` else ``Sequential(Conv2d(in, depth, 1, stride, bias=False), BatchNorm2d(depth))``, ``res_layer =
Sequential(BN(in), Conv3x3(in, depth, 1), BN(depth), PReLU(depth), Conv3x3(depth, depth, stride), BN(depth))``,
output ``res + shortcut``; ``output_layer = Sequential(BatchNorm2d(512), Dropout(0.4), Flatten(), Linear(512*7*7,
512), BatchNorm1d(512, affine=False))``; ``forward`` returns ``(x / ||x||, ||x||)``.

Compared with insightface the op order of the residual branch, the stem and the head are the same (dropout and
flatten commute; both are no-ops in eval mode), with two differences: (1) the first unit of stage 1 (64 -> 64,
stride 2) has a parameter-free ``MaxPool2d(1, 2)`` shortcut (a 2x subsampling of the input) where insightface has
``conv1x1 + BN``; (2) the embedding BN1d has no affine parameters. :class:`harness.models.iresnet.IResNet` cannot
hold that, so :class:`AdaFaceIR` (below) is an ``IResNet`` whose ``layer1[0].downsample`` is ``MaxPool2d(1, 2)``
and whose ``features`` is ``BatchNorm1d(512, affine=False)``. Its state-dict keys are **ours** (``IResNet`` style);
the AdaFace keys are renamed on load:

    ==========================================================  ==============================================
    AdaFace key (after stripping ``model.``)                     ours (``AdaFaceIR``)
    ==========================================================  ==============================================
    ``input_layer.0.weight`` (64, 3, 3, 3)                       ``conv1.weight``
    ``input_layer.1.*`` (64)                                     ``bn1.*``
    ``input_layer.2.weight`` (64)                                ``prelu.weight``
    ``body.{k}.res_layer.0.*`` (C_in)                            ``layer{s}.{j}.bn1.*``
    ``body.{k}.res_layer.1.weight`` (C, C_in, 3, 3)              ``layer{s}.{j}.conv1.weight``
    ``body.{k}.res_layer.2.*`` (C)                               ``layer{s}.{j}.bn2.*``
    ``body.{k}.res_layer.3.weight`` (C)                          ``layer{s}.{j}.prelu.weight``
    ``body.{k}.res_layer.4.weight`` (C, C, 3, 3)                 ``layer{s}.{j}.conv2.weight``
    ``body.{k}.res_layer.5.*`` (C)                               ``layer{s}.{j}.bn3.*``
    ``body.{k}.shortcut_layer.0.weight`` (C, C_in, 1, 1)         ``layer{s}.0.downsample.0.weight`` (s = 2..4)
    ``body.{k}.shortcut_layer.1.*`` (C)                          ``layer{s}.0.downsample.1.*`` (s = 2..4)
    (none: ``MaxPool2d(1, 2)`` shortcut of ``body.0``)           ``layer1.0.downsample`` = ``MaxPool2d(1, 2)``
    ``output_layer.0.*`` (512)                                   ``bn2.*``
    ``output_layer.3.weight`` (512, 25088), ``.bias`` (512)      ``fc.weight``, ``fc.bias``
    ``output_layer.4.{running_mean,running_var,nbt}`` (512)      ``features.*`` (``BatchNorm1d(affine=False)``)
    ``head.kernel``, ``head.t``, ``head.batch_mean/std``         not loaded (training head; reported)
    ==========================================================  ==============================================

(``k`` counts units over all stages in order: stage ``s`` block ``j`` is ``k = sum(n[:s-1]) + j``.) Input
convention, AdaFace ``inference.py`` ``to_input``: the aligned PIL **RGB** image is reversed to **BGR**
(``np_img[:, :, ::-1]``) and scaled ``((x / 255.) - 0.5) / 0.5``; the IJB evaluation
(``validation_mixed/validate_IJB_BC.py``) reads crops with cv2 (BGR), uses flip test with
``pre_norm_vector_add`` (``emb * norm`` of the image and its mirror added) and no faceness weighting. The model
returns ``(embedding, norm)``; :func:`harness.eval.features.embed_batches` turns that into ``embedding * norm``,
the un-normalised feature, as AdaFace's ``pre_norm_vector_add`` does.

Strictness: every key of the file must map to a parameter or buffer of the model, every parameter and buffer must
be present (only ``num_batches_tracked`` may be absent: it is unused in eval mode and missing from checkpoints
converted from other frameworks), every shape must match and every value must be finite; otherwise
:class:`CheckpointError` (a :class:`~harness.core.errors.DataFormatError`: ``<file>:key '<name>': <problem>``, one
line).
Files are read with ``torch.load(weights_only=True)``; a Lightning checkpoint that pickles other objects (e.g.
hyper-parameters as an ``argparse.Namespace``) needs ``trust_pickle=True`` / ``--trust-pickle`` (only for files
from a source you trust: unpickling can run code).

Evaluating an imported checkpoint with the existing evaluators
--------------------------------------------------------------

:func:`evaluate_imported` runs :func:`harness.eval.registry.evaluate_all` (the pipeline's own evaluation, as
``harness.run`` runs it: IJB-B/C 1:1 and 1:N, IJB-S, TinyFace) with the import's input size, channel order and its
source's protocol defaults (:attr:`ImportedModel.eval_defaults`). By hand, with the evaluator classes::

    import os
    from harness.import_weights import load_public_checkpoint, evaluate_imported
    from harness.eval.ijb_verification import IJBVerification, VerificationProtocol
    from harness.eval.tinyface import TinyFaceEvaluation, TinyFaceSettings

    imported = load_public_checkpoint("adaface_ir50_ms1mv2.ckpt", layout="adaface", arch="ir_50")
    rows = evaluate_imported(imported, release, benchmarks=("IJBB", "TinyFace"))   # result rows, as harness.run

    protocol = VerificationProtocol(channel_order=imported.channel_order, align_size=imported.input_size,
                                    flip=imported.eval_defaults["flip"], faceness=imported.eval_defaults["faceness"])
    ijbb = IJBVerification(os.path.join(release, "IJB_release", "IJBB"), protocol=protocol).evaluate(imported.backbone)
    settings = TinyFaceSettings(channel_order=imported.channel_order, input_size=imported.input_size)
    tinyface = TinyFaceEvaluation(release, settings=settings).evaluate(imported.backbone)

``tests/test_import_weights.py::test_docstring_example_on_tiny_release`` runs these lines on the tiny SynthFace
release with a CPU-sized stand-in :class:`ImportedModel` (a 112 px ResNet-18 takes ~0.13 s per image on one core).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.core.atomic import DiskFullError, file_sha256
from harness.core.errors import DataFormatError
from harness.models.iresnet import LAYERS, IResNet

__all__ = [
    "AdaFaceIR",
    "ImportedModel",
    "CheckpointError",
    "LAYOUTS",
    "ARCHS",
    "NORMALISATION",
    "canonical_arch",
    "build_imported_backbone",
    "published_keys",
    "load_public_checkpoint",
    "evaluate_imported",
    "run_overrides",
    "main",
]

LAYOUTS = ("insightface", "adaface")
#: canonical arch -> (insightface name, AdaFace name); blocks per stage are ``LAYERS[arch]`` for both
ARCHS: dict[str, tuple[str, str]] = {
    "r18": ("r18", "ir_18"),
    "r34": ("r34", "ir_34"),
    "r50": ("r50", "ir_50"),
    "r100": ("r100", "ir_101"),
}
NORMALISATION = "(x/255-0.5)/0.5"  # the same string the evaluators record (``VerificationProtocol.normalization``)
INPUT_SIZE = 112
EMBEDDING_SIZE = 512
_NBT = "num_batches_tracked"
_ADAFACE_HEAD_PREFIX = "head."
_ADAFACE_MODEL_PREFIX = "model."

#: per layout: channel order, protocol defaults of the source's own IJB evaluation, description of the source
_LAYOUT_INFO = {
    "insightface": dict(
        channel_order="RGB",
        eval_defaults={"flip": "sum", "faceness": True, "image_norm": False},
        what="insightface arcface_torch iresnet (backbones/iresnet.py) state dict",
    ),
    "adaface": dict(
        channel_order="BGR",
        eval_defaults={"flip": "sum", "faceness": False, "image_norm": False},
        what="AdaFace IR (net.py Backbone, mode 'ir') Lightning checkpoint",
    ),
}


class CheckpointError(DataFormatError):
    """A checkpoint that cannot be loaded strictly; the message is one line naming the file (and key)."""


# --------------------------------------------------------------------------------------------- model
class AdaFaceIR(IResNet):
    """AdaFace's IR backbone (``net.py`` ``Backbone(mode="ir")``) expressed with our IResNet blocks.

    Identical to :class:`IResNet` except the first block of stage 1, whose shortcut is ``MaxPool2d(1, 2)`` (AdaFace
    uses a parameter-free subsampling shortcut whenever a unit keeps its width), and the embedding BN1d without
    affine parameters. ``forward`` returns ``(x / ||x||, ||x||)`` as AdaFace does; the evaluators multiply them back.
    State-dict keys are ours (see the module docstring for the AdaFace -> ours table).
    """

    def __init__(self, layers, **kw):
        super().__init__(layers, **kw)
        widths = [m[0].conv1.out_channels for m in (getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1))]
        in_channels = self.conv1.out_channels
        for i, width in enumerate(widths, start=1):
            if in_channels == width:  # AdaFace: in_channel == depth -> MaxPool2d(1, stride) shortcut
                getattr(self, f"layer{i}")[0].downsample = nn.MaxPool2d(1, 2)
            in_channels = width
        self.features = nn.BatchNorm1d(self.num_features, eps=1e-05, affine=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = super().forward(x)
        norm = torch.norm(x, 2, 1, True)
        return torch.div(x, norm), norm


def canonical_arch(arch: str) -> str:
    """``r50`` for any of ``r50``, ``ir_50``, ``IR-50``, ``iresnet50``, ``ir50`` (``r100`` also for ``ir_101``)."""
    s = re.sub(r"[\s_\-]", "", str(arch).lower())
    m = re.fullmatch(r"(?:iresnet|ir|r)(\d+)", s)
    name = None
    if m:
        depth = int(m.group(1))
        name = "r100" if depth == 101 else f"r{depth}"
    if name not in ARCHS:
        valid = ", ".join(f"{a}/{b}" for a, b in ARCHS.values())
        raise ValueError(f"unknown arch {arch!r}; valid: {valid}")
    return name


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    return layout


def build_imported_backbone(layout: str, arch: str, device: str | torch.device | None = None) -> IResNet:
    """The 112 px, 512-d backbone for ``layout`` / ``arch`` (``IResNet`` or :class:`AdaFaceIR`), uninitialised when
    ``device="meta"`` (shapes only)."""
    layers = list(LAYERS[canonical_arch(arch)])
    cls = AdaFaceIR if _check_layout(layout) == "adaface" else IResNet
    if device is None:
        return cls(layers, input_size=INPUT_SIZE, num_features=EMBEDDING_SIZE)
    with _skip_meta_normal_init(), torch.device(device):
        return cls(layers, input_size=INPUT_SIZE, num_features=EMBEDDING_SIZE)


@contextlib.contextmanager
def _skip_meta_normal_init():
    """``nn.init.normal_`` on a meta tensor has no meta kernel: it goes through ``torch._refs`` and imports the
    compiler stack (~2-4 s once per process). Values are irrelevant on meta (every tensor is overwritten by the
    checkpoint), so skip it there while the backbone is built."""
    real = nn.init.normal_

    def normal_(tensor, *args, **kwargs):
        return tensor if tensor.is_meta else real(tensor, *args, **kwargs)

    nn.init.normal_ = normal_
    try:
        yield
    finally:
        nn.init.normal_ = real


# ------------------------------------------------------------------------------------------- key mapping
_ADAFACE_RES = {"bn1": "0", "conv1": "1", "bn2": "2", "prelu": "3", "conv2": "4", "bn3": "5"}
_ADAFACE_TOP = {
    "conv1": "input_layer.0",
    "bn1": "input_layer.1",
    "prelu": "input_layer.2",
    "bn2": "output_layer.0",
    "fc": "output_layer.3",
    "features": "output_layer.4",
}


def _ours_to_adaface(key: str, offsets: list[int]) -> str:
    """Our key -> AdaFace's (without ``model.``); ``offsets[s-1]`` = index in ``body`` of stage ``s``'s first unit."""
    m = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", key)
    if m:
        k = offsets[int(m.group(1)) - 1] + int(m.group(2))
        rest = m.group(3)
        mod, _, tail = rest.partition(".")
        if mod in _ADAFACE_RES:
            return f"body.{k}.res_layer.{_ADAFACE_RES[mod]}.{tail}"
        if mod == "downsample":
            return f"body.{k}.shortcut_layer.{tail}"
        raise AssertionError(f"unmapped key {key}")
    mod, _, tail = key.partition(".")
    if mod not in _ADAFACE_TOP:
        raise AssertionError(f"unmapped key {key}")
    return f"{_ADAFACE_TOP[mod]}.{tail}"


def _key_map(layout: str, arch: str, model: nn.Module) -> dict[str, str]:
    """Published key -> our key, in our state-dict order."""
    ours = list(model.state_dict().keys())
    if layout == "insightface":
        return {k: k for k in ours}
    layers = LAYERS[canonical_arch(arch)]
    offsets = [sum(layers[:i]) for i in range(len(layers))]
    return {_ours_to_adaface(k, offsets): k for k in ours}


def published_keys(layout: str, arch: str) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a published ``layout`` / ``arch`` checkpoint holds (AdaFace: without ``model.`` and the
    training head), as this module maps them; built on the meta device, so any size is instant."""
    model = build_imported_backbone(layout, arch, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {pub: shapes[our] for pub, our in _key_map(layout, arch, model).items()}


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class ImportedModel:
    """A public checkpoint loaded for evaluation. ``backbone`` is in eval mode and maps (B, 3, 112, 112) inputs,
    scaled ``(x/255-0.5)/0.5`` in ``channel_order``, to 512-d features (AdaFace: ``(embedding, norm)``)."""

    backbone: nn.Module
    layout: str
    arch: str  # canonical (r18 / r34 / r50 / r100)
    channel_order: str  # "RGB" (insightface) or "BGR" (AdaFace)
    source: str  # one line: what was loaded, from where
    path: str = ""
    sha256: str = ""
    normalisation: str = NORMALISATION
    input_size: int = INPUT_SIZE
    embedding_size: int = EMBEDDING_SIZE
    num_parameters: int = 0
    ignored_keys: tuple[str, ...] = ()  # keys of the file that are not part of the backbone (AdaFace's head.*)
    eval_defaults: dict = field(default_factory=dict)  # flip / faceness / image_norm of the source's IJB evaluation

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the import, for result rows."""
        return {
            "layout": self.layout,
            "arch": self.arch,
            "path": self.path,
            "sha256": self.sha256,
            "channel_order": self.channel_order,
            "normalization": self.normalisation,
            "input_size": self.input_size,
            "source": self.source,
        }

    def summary(self) -> str:
        """One line: parameter count, layout, arch, channel order, input convention."""
        return (
            f"{self.path}: {self.layout} {self.published_arch}, {self.num_parameters:,} parameters, "
            f"{self.embedding_size}-d embedding, input {self.input_size}x{self.input_size} {self.channel_order} "
            f"{self.normalisation}, sha256 {self.sha256[:12]}"
        )

    @property
    def published_arch(self) -> str:
        return ARCHS[self.arch][0 if self.layout == "insightface" else 1]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _read(path: str, trust_pickle: bool) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found (no such file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure becomes one line naming the file
        text = str(exc)
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if not trust_pickle and glob:
            raise CheckpointError(
                path,
                None,
                f"pickles an object of type {glob.group(1)}, refused by "
                "torch.load(weights_only=True); if the file comes from a source you trust, pass "
                "trust_pickle=True (--trust-pickle)",
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
        reason = _one_line(detail.group(1)) if detail else _one_line(exc)
        raise CheckpointError(
            path, None, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {reason})"
        ) from None


def _extract(path: str, obj: Any, layout: str) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """(published-key -> tensor, ignored keys, extra description) from the loaded file object."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, None, f"expected a dict, got {type(obj).__name__}")
    if layout == "insightface":
        if isinstance(obj.get("state_dict"), Mapping):
            raise CheckpointError(
                path,
                "key 'state_dict'",
                "holds a nested state dict: expected a plain state dict "
                "(insightface backbone.pth); an AdaFace/Lightning checkpoint? use layout 'adaface'",
            )
        if isinstance(obj.get("state_dict_backbone"), Mapping):
            raise CheckpointError(
                path,
                "key 'state_dict_backbone'",
                "an arcface_torch training checkpoint "
                "(checkpoint_gpu_*.pt), not a backbone.pth state dict: save its 'state_dict_backbone' "
                "alone (torch.save(ckpt['state_dict_backbone'], 'backbone.pth')) and import that",
            )
        for k, v in obj.items():
            if not isinstance(k, str) or not torch.is_tensor(v):
                raise CheckpointError(
                    path,
                    f"key {k!r}",
                    f"is a {type(v).__name__}, not a tensor: expected a plain state dict (insightface backbone.pth)",
                )
        return dict(obj), [], ""
    if "state_dict" not in obj:
        plain = bool(obj) and all(torch.is_tensor(v) for v in obj.values())
        hint = " (a plain state dict? use layout 'insightface')" if plain else ""
        raise CheckpointError(path, "key 'state_dict'", f"missing: expected a PyTorch Lightning checkpoint{hint}")
    sd = obj["state_dict"]
    if not isinstance(sd, Mapping):
        raise CheckpointError(path, "key 'state_dict'", f"is a {type(sd).__name__}, expected a dict of tensors")
    out, ignored = {}, []
    for k, v in sd.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            raise CheckpointError(path, f"key 'state_dict.{k}'", f"is a {type(v).__name__}, not a tensor")
        if k.startswith(_ADAFACE_MODEL_PREFIX):
            out[k[len(_ADAFACE_MODEL_PREFIX) :]] = v
        elif k.startswith(_ADAFACE_HEAD_PREFIX):
            ignored.append(f"{k} {_fmt(v.shape)}")
        else:
            raise CheckpointError(
                path,
                f"key 'state_dict.{k}'",
                "unexpected: neither a backbone key ('model.*') nor the training head's ('head.*')",
            )
    extra = f", epoch {obj['epoch']}" if isinstance(obj.get("epoch"), int) else ""
    return out, ignored, extra


def _fmt(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _validate(
    path: str, layout: str, arch: str, found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]
) -> None:
    """Strict key / shape / value checks; raises :class:`CheckpointError` naming the first offending key."""
    prefix = _ADAFACE_MODEL_PREFIX if layout == "adaface" else ""
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        more = f" ({len(unexpected) - 1} more unexpected)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            path, f"key {prefix + unexpected[0]!r}", f"unexpected: not part of the {layout} {arch} architecture{more}"
        )
    missing = [k for k in expected if k not in found and not k.endswith(_NBT)]
    if missing:
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        first = missing[0]
        raise CheckpointError(
            path, f"key {prefix + first!r}", f"missing (expected shape {_fmt(expected[first])}){more}"
        )
    for k, v in found.items():
        if tuple(v.shape) != expected[k]:
            raise CheckpointError(
                path, f"key {prefix + k!r}", f"has shape {_fmt(v.shape)}, expected {_fmt(expected[k])}"
            )
        if k.endswith(_NBT):
            continue
        if not v.is_floating_point():
            raise CheckpointError(path, f"key {prefix + k!r}", f"has dtype {v.dtype}, expected a floating-point tensor")
        if not bool(torch.isfinite(v).all()):
            raise CheckpointError(path, f"key {prefix + k!r}", "holds NaN or infinite values")


def load_public_checkpoint(
    path: str | os.PathLike, layout: str, arch: str, *, trust_pickle: bool = False, device: str | torch.device = "cpu"
) -> ImportedModel:
    """Load a public checkpoint strictly (see the module docstring) and return it ready for evaluation.

    ``layout``: ``"insightface"`` (arcface_torch ``backbone.pth``) or ``"adaface"`` (AdaFace ``.ckpt``); ``arch``:
    ``r18/r34/r50/r100`` or ``ir_18/ir_34/ir_50/ir_101`` (either spelling for either layout). Errors:
    ``FileNotFoundError`` / ``ValueError`` (bad ``layout`` / ``arch``) / :class:`CheckpointError`, one line each.
    """
    path = os.fspath(path)
    layout = _check_layout(layout)
    arch = canonical_arch(arch)
    obj = _read(path, trust_pickle)
    found, ignored, extra = _extract(path, obj, layout)
    del obj

    model = build_imported_backbone(layout, arch, device="meta")
    key_map = _key_map(layout, arch, model)
    ours = model.state_dict()
    expected = {pub: tuple(ours[our].shape) for pub, our in key_map.items()}
    _validate(path, layout, ARCHS[arch][0 if layout == "insightface" else 1], found, expected)

    model = model.to_empty(device=device)
    state = {}
    for pub, our in key_map.items():
        if pub in found:
            state[our] = found[pub]
        else:  # an absent num_batches_tracked (allowed): unused in eval mode
            state[our] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, strict=True)
    if layout == "insightface":
        model.features.weight.requires_grad = False  # as insightface (frozen embedding BN scale)
    model.eval()

    info = _LAYOUT_INFO[layout]
    published = ARCHS[arch][0 if layout == "insightface" else 1]
    ignored_note = f"; not loaded: {', '.join(ignored)}" if ignored else ""
    source = (
        f"{info['what']}, {published}, {os.path.abspath(path)}{extra}; {len(found)} tensors loaded strictly"
        f"{ignored_note}"
    )
    return ImportedModel(
        backbone=model,
        layout=layout,
        arch=arch,
        channel_order=info["channel_order"],
        source=source,
        path=path,
        sha256=file_sha256(path),
        num_parameters=sum(p.numel() for p in model.parameters()),
        ignored_keys=tuple(k.split(" ")[0] for k in ignored),
        eval_defaults=dict(info["eval_defaults"]),
    )


# -------------------------------------------------------------------------------------------- evaluation
def run_overrides(imported: ImportedModel) -> dict[str, Any]:
    """The :class:`harness.core.config.RunConfig` values an evaluation of ``imported`` needs (dotted keys, as on the
    ``harness.run`` command line): input size, channel order and the source's protocol defaults."""
    return {
        "data.input_size": imported.input_size,
        "data.channel_order": imported.channel_order,
        "eval.flip": imported.eval_defaults.get("flip", "sum"),
        "eval.faceness": imported.eval_defaults.get("faceness", True),
        "eval.image_norm": imported.eval_defaults.get("image_norm", False),
    }


def evaluate_imported(
    imported: ImportedModel,
    release: str,
    benchmarks=("IJBB", "IJBC", "IJBS", "TinyFace"),
    *,
    device: str = "cpu",
    batch_size: int = 64,
    items: dict | None = None,
    **overrides,
) -> list[dict]:
    """Result rows of ``imported`` on the benchmarks of ``release``, computed by
    :func:`harness.eval.registry.evaluate_all` (the pipeline's evaluation) with :func:`run_overrides`; ``overrides``
    (``flip=``, ``faceness=``, ``image_norm=``) replace the source's protocol defaults. Each row gets ``"imported"``
    (:meth:`ImportedModel.describe`).
    """
    from harness.core.config import RunConfig, apply_overrides
    from harness.eval.registry import evaluate_all

    unknown = set(overrides) - {"flip", "faceness", "image_norm"}
    if unknown:
        raise ValueError(f"evaluate_imported: unknown override(s) {sorted(unknown)}; valid: flip, faceness, image_norm")
    values = {**run_overrides(imported), **{f"eval.{k}": v for k, v in overrides.items()}}
    values.update({"data.release": release, "eval.benchmarks": tuple(benchmarks), "eval.batch_size": int(batch_size)})
    cfg = apply_overrides(RunConfig(), values)
    imported.backbone.to(device)
    rows = evaluate_all(cfg, imported.backbone, device, items)
    for row in rows:
        row["imported"] = imported.describe()
    return rows


# --------------------------------------------------------------------------------------------------- CLI
class _UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2 from main(), instead of usage + SystemExit
        raise _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m harness.import_weights",
        description="Load a public insightface / AdaFace checkpoint strictly and summarise it.",
    )
    parser.add_argument("path", help="backbone.pth (insightface) or .ckpt (AdaFace)")
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--arch", required=True, help="r18 | r34 | r50 | r100 (or ir_18 | ir_34 | ir_50 | ir_101)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="torch.load(weights_only=False): only for files from a source you trust",
    )
    parser.add_argument(
        "--evaluate",
        metavar="RELEASE",
        help="also score it on the benchmarks found under this data root (the layout of "
        "`python -m harness.check_data`), with the source project's protocol defaults",
    )
    parser.add_argument("--benchmarks", default="IJBB,IJBC,IJBS,TinyFace", help="comma-separated, with --evaluate")
    parser.add_argument(
        "--result",
        help="with --evaluate: write the result document here (the format harness.run "
        "writes, read by harness.tables), plus its .items.npz",
    )
    parser.add_argument("--name", help="method name in the result (default <layout>-<arch>)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"harness.import_weights: {exc} (see --help)", file=sys.stderr)
        return 2
    try:
        imported = load_public_checkpoint(args.path, args.layout, args.arch, trust_pickle=args.trust_pickle)
    except (FileNotFoundError, ValueError) as exc:  # CheckpointError is a ValueError
        print(f"harness.import_weights: {exc}", file=sys.stderr)
        return 2
    print(imported.summary())
    if args.evaluate:
        try:
            doc = _evaluate_to_result(imported, args)
        except (FileNotFoundError, ValueError) as exc:
            print(f"harness.import_weights: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # writing the result: a full disk (DiskFullError names the file), a read-only folder
            named = (
                str(exc)
                if isinstance(exc, DiskFullError) or exc.filename or exc.errno is None
                else (f"{args.result}: {exc.strerror}")
            )
            print(f"harness.import_weights: {named}", file=sys.stderr)
            return 2
        from harness.eval.results import compact_metrics

        for bench, values in compact_metrics(doc).items():
            shown = "  ".join(f"{k}: {100 * v:.2f}" for k, v in values.items() if isinstance(v, float))
            print(f"{doc['method']} {bench}  {shown}")
    return 0


def _evaluate_to_result(imported: ImportedModel, args) -> dict:
    """Score ``imported`` and, with ``--result``, write the result document (+ items) atomically."""
    import os

    from harness.core.atomic import write_json_atomic, write_npz_atomic
    from harness.eval.results import RESULT_FORMAT, items_path

    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    items: dict = {}
    rows = evaluate_imported(
        imported, args.evaluate, benchmarks, device=args.device, batch_size=args.batch_size, items=items
    )
    from harness.eval.provenance import data_provenance

    doc = {
        "format": RESULT_FORMAT,
        "method": args.name or f"{imported.layout}-{imported.arch}",
        "seed": 0,
        "imported": imported.describe(),
        "knobs": run_overrides(imported),
        "data": data_provenance(args.evaluate, None, benchmarks),
        "results": rows,
    }
    if args.result:
        os.makedirs(os.path.dirname(os.path.abspath(args.result)), exist_ok=True)
        write_npz_atomic(items, items_path(args.result))  # first: the document never names a missing file
        doc["items"] = os.path.basename(items_path(args.result))
        write_json_atomic(doc, args.result)
    return doc


if __name__ == "__main__":
    sys.exit(main())
