"""Learned augmentation policies (AutoAugment, RandAugment, TrivialAugment, AugMix) applied PER SAMPLE to a batch.

Why not the library transforms on the batch: torchvision's
``v2.AutoAugment/RandAugment/TrivialAugmentWide/AugMix`` called on a (B, C, H, W) tensor draw one op and one
magnitude for the whole batch; kornia 0.9's ``kornia.augmentation.auto`` draws one sub-policy (the op choice) per
call too (``get_forward_sequence``: ``rand_selector.sample((1,))``) and varies only magnitudes and probabilities
per sample. Looping torchvision over the images is per-sample but slow. Here every sample draws its own ops and
magnitudes (a *plan*: per stage one op id and one magnitude per sample); a stage is then applied with few calls
(batch 128 x 64 px, 1 CPU thread, medians on a busy machine: RandAugment 30 ms vs 63 ms for the torchvision loop,
TrivialAugment 18 vs 37, AutoAugment 20 vs 43, AugMix ~100 ms per view vs ~225):

* the geometric ops (ShearX/Y, TranslateX/Y, Rotate) of all samples in one ``grid_sample`` with one affine matrix
  per sample, built exactly as ``torchvision.transforms.v2.functional.affine`` / ``rotate`` build theirs
  (``_get_inverse_affine_matrix`` + ``_affine_grid``; fill 0, ``align_corners=False``, rounded back to uint8), so
  the result equals the per-image torchvision call (bit-exact with nearest; bilinear may round a pixel one grey
  level apart, the grid being one GEMM instead of a per-image bmm); autocast is off inside it;
* Solarize with a per-sample threshold in one ``where``;
* every other op once per distinct (op, magnitude) group, through the public ``torchvision.transforms.v2.functional``
  kernel on that group's images (all of them treat the images of a batch independently: ``equalize`` and
  ``autocontrast`` use per-image histograms / extrema).

Op sets and magnitude tables are torchvision's (which follow the papers' op lists): RandAugment's 14 ops (Cubuk et
al., NeurIPS 2020, the Python listing of its transformations: identity, autoContrast, equalize, rotate, solarize,
color, posterize, contrast, brightness, sharpness, shear-x/y, translate-x/y) on ``num_bins`` magnitude bins;
TrivialAugment's "wide" space (Müller & Hutter, ICCV 2021, its augmentation-space table: shear 0.99, translate 32
px, rotate 135 deg, enhance factors 1 +- 0.99, posterize 2-8 bits, solarize 0-256); AutoAugment's ImageNet policy
(Cubuk et al., CVPR 2019, appendix: 25 sub-policies of two (op, probability, magnitude 0-9) each). Known, documented
torchvision deviations kept as they are: enhance ops use factor ``1 + signed magnitude`` instead of the TF release's
``0.1 + 1.8 * level/10`` (so AutoAugment's "Color, magnitude 0" is the identity here, not a near-greyscale image);
magnitudes of signed ops get a random sign. AugMix follows the authors' release (``google-research/augmix``,
``augmentations.py``): 9 ops (autocontrast, equalize, posterize, rotate, solarize, shear_x/y, translate_x/y; the
ImageNet-C-overlapping brightness/color/contrast/sharpness are excluded, the release's default), level ``U(0.1,
severity)`` per op, the release's int/float parameterisation (e.g. rotate ``int(level * 3)`` deg, translate
``int(level * W/3 / 10)`` px, posterize ``4 - int(level * 0.4)`` bits), bilinear geometry, and the chains mixed in
float (not re-quantised): ``(1 - m) x + m sum_i w_i chain_i(x)``, ``w ~ Dir(alpha)``, ``m ~ Beta(alpha, alpha)`` per
sample. (torchvision's ``v2.AugMix`` differs: ``all_ops=True`` by default, levels from 3 of 10 bins, one op draw per
call, output truncated to uint8.)

Images travel as uint8 (the trainer's [-1, 1] float is ``(u8 / 255 - 0.5) / 0.5``, so the round trip of an
untouched image is exact); dtype, device, shape and memory format of the input are kept. Randomness comes from
``generator`` or, when None, torch's global CPU generator (seeded by the trainer), so a seed fixes the output.
Colour ops assume RGB channel order (``Color`` / ``Contrast`` use RGB greyscale weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.data.images import memory_format_of


def _tv():
    """torchvision's ``transforms.v2.functional``, imported on first use: importing torchvision costs about a second
    on the 2-core VM (its ``ops`` pull in torch's compiler stack), which every process that imports the method
    registry (each training and evaluation stage) would otherwise pay without using it."""
    from torchvision.transforms.v2 import functional

    return functional


OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
OP_ID = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_GEO_IDS = torch.tensor([OP_ID[n] for n in GEOMETRIC])
_FAST_ANGLES = torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64)  # rotate(): rot90 / clone fast paths


@dataclass
class Stage:
    """One op per sample: ``ops`` (B,) int64 ids into :data:`OPS`, ``mags`` (B,) float64 magnitudes in the units
    the op takes (shear: the affine coefficient; translate: pixels; rotate: degrees; enhance: factor - 1;
    posterize: bits; solarize: threshold in 0-255 pixel units)."""

    ops: Tensor
    mags: Tensor


# ---------------------------------------------------------------------------------------------- magnitude spaces
def augmentation_space(kind: str, num_bins: int, height: int, width: int) -> dict[str, tuple[Tensor | None, bool]]:
    """torchvision's tables: ``name -> (magnitudes over num_bins bins or None, signed)``; Solarize is returned
    as a 0-255 threshold (torchvision: ``255 * linspace(1, 0)``)."""
    lin = lambda hi: torch.linspace(0.0, hi, num_bins, dtype=torch.float64)  # noqa: E731
    if kind == "wide":  # TrivialAugmentWide
        geo = {
            "ShearX": lin(0.99),
            "ShearY": lin(0.99),
            "TranslateX": lin(32.0),
            "TranslateY": lin(32.0),
            "Rotate": lin(135.0),
        }
        enhance, post_range = 0.99, 6
    elif kind in ("randaugment", "autoaugment"):
        geo = {
            "ShearX": lin(0.3),
            "ShearY": lin(0.3),
            "TranslateX": lin(150.0 / 331.0 * width),
            "TranslateY": lin(150.0 / 331.0 * height),
            "Rotate": lin(30.0),
        }
        enhance, post_range = 0.9, 4
    else:
        raise ValueError(f"unknown augmentation space {kind!r}: expected 'randaugment', 'autoaugment' or 'wide'")
    space: dict[str, tuple[Tensor | None, bool]] = {}
    if kind != "autoaugment":
        space["Identity"] = (None, False)
    space.update({k: (v, True) for k, v in geo.items()})
    space.update({k: (lin(enhance), True) for k in ("Brightness", "Color", "Contrast", "Sharpness")})
    space["Posterize"] = (
        (8 - torch.arange(num_bins, dtype=torch.float64) / ((num_bins - 1) / post_range)).round(),
        False,
    )
    space["Solarize"] = (255.0 * torch.linspace(1.0, 0.0, num_bins, dtype=torch.float64), False)
    space.update({k: (None, False) for k in ("AutoContrast", "Equalize")})
    if kind == "autoaugment":
        space["Invert"] = (None, False)
    return space


def _tables(space: dict[str, tuple[Tensor | None, bool]], num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """(ids (K,), magnitudes (K, num_bins) with 0 for magnitude-free ops, signed (K,) bool)."""
    ids = torch.tensor([OP_ID[n] for n in space])
    mags = torch.stack([m if m is not None else torch.zeros(num_bins, dtype=torch.float64) for m, _ in space.values()])
    signed = torch.tensor([s for _, s in space.values()])
    return ids, mags, signed


def _signs(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.where(torch.rand(n, generator=generator) <= 0.5, -1.0, 1.0).double()


def _uniform_stage(space, num_bins: int, bins: Tensor, generator) -> Stage:
    """Each sample: an op uniformly from ``space`` at its own bin ``bins[i]``, a random sign if signed."""
    ids, table, signed = _tables(space, num_bins)
    k = torch.randint(len(ids), (len(bins),), generator=generator)
    sign = _signs(len(bins), generator)
    mags = table[k, bins] * torch.where(signed[k], sign, torch.ones_like(sign))
    return Stage(ids[k], mags)


# ---------------------------------------------------------------------------------------------- policies (plans)
def randaugment_plan(
    batch: int,
    height: int,
    width: int,
    num_ops: int = 2,
    magnitude: int = 9,
    num_bins: int = 31,
    generator: torch.Generator | None = None,
) -> list[Stage]:
    """RandAugment: ``num_ops`` ops drawn uniformly (with replacement) per sample, all at bin ``magnitude``."""
    if num_ops < 0 or not 0 <= magnitude < num_bins:
        raise ValueError(
            f"RandAugment needs num_ops >= 0 and 0 <= magnitude < num_bins; got {num_ops}, {magnitude}, {num_bins}"
        )
    space = augmentation_space("randaugment", num_bins, height, width)
    bins = torch.full((batch,), int(magnitude), dtype=torch.long)
    return [_uniform_stage(space, num_bins, bins, generator) for _ in range(num_ops)]


def trivialaugment_plan(
    batch: int, height: int, width: int, num_bins: int = 31, generator: torch.Generator | None = None
) -> list[Stage]:
    """TrivialAugment (wide): one op per sample, uniformly, at a uniformly drawn bin."""
    space = augmentation_space("wide", num_bins, height, width)
    bins = torch.randint(num_bins, (batch,), generator=generator)
    return [_uniform_stage(space, num_bins, bins, generator)]


# AutoAugment's ImageNet policy (Cubuk et al., CVPR 2019, appendix), as torchvision lists it: (op, p, magnitude bin).
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)


def autoaugment_plan(batch: int, height: int, width: int, generator: torch.Generator | None = None) -> list[Stage]:
    """AutoAugment ImageNet policy: per sample one of the 25 sub-policies; each of its two ops applies with its
    probability at its magnitude bin (10 bins), signed ops with a random sign."""
    space = augmentation_space("autoaugment", 10, height, width)
    pick = torch.randint(len(IMAGENET_POLICY), (batch,), generator=generator)
    stages = []
    for s in range(2):
        ops = torch.tensor([OP_ID[p[s][0]] for p in IMAGENET_POLICY])[pick]
        prob = torch.tensor([p[s][1] for p in IMAGENET_POLICY], dtype=torch.float64)[pick]
        mag = torch.tensor(
            [0.0 if p[s][2] is None else float(space[p[s][0]][0][p[s][2]]) for p in IMAGENET_POLICY],
            dtype=torch.float64,
        )[pick]
        signed = torch.tensor([space[p[s][0]][1] for p in IMAGENET_POLICY])[pick]
        apply = torch.rand(batch, generator=generator).double() <= prob
        sign = _signs(batch, generator)
        mag = mag * torch.where(signed, sign, torch.ones_like(sign))
        stages.append(Stage(torch.where(apply, ops, OP_ID["Identity"]), torch.where(apply, mag, 0.0)))
    return stages


AUGMIX_OPS = (
    "AutoContrast",
    "Equalize",
    "Posterize",
    "Rotate",
    "Solarize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)


def augmix_chain_plan(
    batch: int, height: int, width: int, severity: int = 3, depth: int = -1, generator: torch.Generator | None = None
) -> list[Stage]:
    """One AugMix chain per sample (``augmix/augmentations.py``): depth ``depth`` or, if <= 0, per sample uniform
    in {1, 2, 3}; each op uniform over :data:`AUGMIX_OPS` with level ``U(0.1, severity)``."""
    n_stages = depth if depth > 0 else 3
    depths = torch.full((batch,), n_stages) if depth > 0 else torch.randint(1, 4, (batch,), generator=generator)
    ids = torch.tensor([OP_ID[n] for n in AUGMIX_OPS])
    stages = []
    for s in range(n_stages):
        k = torch.randint(len(AUGMIX_OPS), (batch,), generator=generator)
        level = 0.1 + (severity - 0.1) * torch.rand(batch, generator=generator, dtype=torch.float64)
        sign = torch.where(torch.rand(batch, generator=generator) > 0.5, -1.0, 1.0).double()  # release: > 0.5 negates

        def int_p(maxval, level=level):  # int_parameter; level > 0
            return torch.floor(level * maxval / 10)

        per_op = {
            "AutoContrast": torch.zeros_like(level),
            "Equalize": torch.zeros_like(level),
            "Posterize": 4 - int_p(4),
            "Rotate": int_p(30) * sign,
            "Solarize": 256 - int_p(256),
            "ShearX": level * 0.3 / 10 * sign,
            "ShearY": level * 0.3 / 10 * sign,
            "TranslateX": int_p(width / 3) * sign,
            "TranslateY": int_p(height / 3) * sign,
        }
        mags = torch.stack([per_op[n] for n in AUGMIX_OPS])[k, torch.arange(batch)]
        active = depths > s
        stages.append(Stage(torch.where(active, ids[k], OP_ID["Identity"]), torch.where(active, mags, 0.0)))
    return stages


# ---------------------------------------------------------------------------------------------- applying a stage
def _inverse_affine(cx, cy, angle, tx, ty, shx, shy) -> Tensor:
    """``torchvision.transforms.v2.functional._geometry._get_inverse_affine_matrix`` (scale 1), vectorised over
    samples in float64; all arguments are (n,) tensors (angles and shears in degrees). Returns (n, 2, 3)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shx), torch.deg2rad(shy)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3)


def _geometric_theta(ops: Tensor, mags: Tensor, height: int, width: int) -> Tensor:
    """The inverse affine matrix torchvision's ``_apply_image_or_video_transform`` uses for each sample's op."""
    z = torch.zeros_like(mags)
    name = lambda n: ops == OP_ID[n]  # noqa: E731
    shear_deg = torch.rad2deg(torch.atan(mags))
    corner = name("ShearX") | name("ShearY")  # shears about the top-left corner (center=[0, 0]), as PIL does
    cx = torch.where(corner, z - width * 0.5, z)
    cy = torch.where(corner, z - height * 0.5, z)
    tx = torch.where(name("TranslateX"), torch.trunc(mags), z)
    ty = torch.where(name("TranslateY"), torch.trunc(mags), z)
    angle = torch.where(name("Rotate"), -torch.remainder(mags, 360.0), z)  # rotate(): angle % 360, then -angle
    shx = torch.where(name("ShearX"), shear_deg, z)
    shy = torch.where(name("ShearY"), shear_deg, z)
    return _inverse_affine(cx, cy, angle, tx, ty, shx, shy)


def warp_affine(images: Tensor, theta: Tensor, mode: str = "nearest") -> Tensor:
    """uint8 (n, C, H, W) through one inverse affine matrix per image (n, 2, 3), as torchvision's tensor kernel
    does it for one image (``_affine_grid`` + ``grid_sample``, zero fill, rounded)."""
    with torch.autocast(device_type=images.device.type, enabled=False):  # the trainer calls augment under AMP
        return _warp_affine(images, theta, mode)


def _warp_affine(images: Tensor, theta: Tensor, mode: str) -> Tensor:
    n, _, h, w = images.shape
    dev = images.device
    base = torch.empty(1, h, w, 3, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.to(device=dev, dtype=torch.float32).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = torch.einsum("pk,nkj->npj", base.view(h * w, 3), scaled).reshape(
        n, h, w, 2
    )  # one GEMM; bmm over n is ~6x slower
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round_().to(images.dtype)


def _apply_grouped(images: Tensor, op: str, mag: float, interpolation: str) -> Tensor:
    """One op at one magnitude on a sub-batch, through torchvision's public kernels (torchvision's semantics)."""
    TF = _tv()
    if op == "Rotate":  # only the fast-path angles (0/90/180/270) come here
        return TF.rotate(images, angle=mag, interpolation=interpolation)
    if op == "Brightness":
        return TF.adjust_brightness(images, 1.0 + mag)
    if op == "Color":
        return TF.adjust_saturation(images, 1.0 + mag)
    if op == "Contrast":
        return TF.adjust_contrast(images, 1.0 + mag)
    if op == "Sharpness":
        return TF.adjust_sharpness(images, 1.0 + mag)
    if op == "Posterize":
        return TF.posterize(images, bits=int(mag))
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return TF.invert(images)
    raise ValueError(f"no grouped kernel for op {op!r}")


def apply_stage(images: Tensor, stage: Stage, interpolation: str = "nearest") -> Tensor:
    """Apply each sample's op of ``stage`` to a uint8 (B, C, H, W) batch; returns a new contiguous tensor.

    The samples are split into parts (untouched, geometric, solarize, one part per other (op, magnitude) group),
    each part is computed from an ``index_select`` of its samples, and one final ``index_select`` puts the
    concatenated parts back in batch order (many small indexed writes cost more than the ops themselves)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"apply_stage works on uint8 images, got {images.dtype}")
    ops, mags = stage.ops.cpu(), stage.mags.cpu().double()
    if len(ops) != images.shape[0]:
        raise ValueError(f"stage has {len(ops)} samples for a batch of {images.shape[0]}")
    images = images.contiguous()
    if images.shape[0] == 0:
        return images.clone()
    h, w = images.shape[-2:]
    dev = images.device
    parts: list[Tensor] = []
    order: list[Tensor] = []

    def take(mask: Tensor) -> tuple[Tensor, Tensor]:
        idx = mask.nonzero().squeeze(1)
        order.append(idx)
        return idx, images.index_select(0, idx.to(dev))

    fast_rot = (ops == OP_ID["Rotate"]) & torch.isin(torch.remainder(mags, 360.0), _FAST_ANGLES)
    geo = torch.isin(ops, _GEO_IDS) & ~fast_rot
    sol = ops == OP_ID["Solarize"]
    ident = ops == OP_ID["Identity"]
    if ident.any():
        parts.append(take(ident)[1])
    if geo.any():
        idx, sub = take(geo)
        parts.append(warp_affine(sub, _geometric_theta(ops[idx], mags[idx], h, w), interpolation))
    if sol.any():  # torchvision: where(img >= threshold, 255 - img, img), here with a per-sample threshold
        idx, sub = take(sol)
        thr = mags[idx].to(device=dev, dtype=torch.float32).view(-1, 1, 1, 1)
        parts.append(torch.where(sub >= thr, 255 - sub, sub))
    rest = ~(geo | sol | ident)
    keys = sorted({(o, m) for o, m in zip(ops[rest].tolist(), mags[rest].tolist())})
    for o, m in keys:
        parts.append(_apply_grouped(take(rest & (ops == o) & (mags == m))[1], OPS[o], m, interpolation))
    if len(parts) == 1:
        return parts[0]
    inverse = torch.argsort(torch.cat(order)).to(dev)
    return torch.cat(parts).index_select(0, inverse)


def apply_plan(images: Tensor, plan: Sequence[Stage], interpolation: str = "nearest") -> Tensor:
    for stage in plan:
        images = apply_stage(images, stage, interpolation)
    return images


# ---------------------------------------------------------------------------------------------- float <-> uint8
def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] float -> uint8 (inverse of the trainer's ``to_model_input``; exact on its outputs)."""
    u8 = (x.detach().float() + 1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return u8.contiguous()  # NCHW: torchvision's kernels and index_select are faster on it


def from_uint8(images: Tensor, like: Tensor) -> Tensor:
    """uint8 -> [-1, 1] float exactly as ``harness.data.loaders.to_model_input``, in ``like``'s dtype and memory
    format."""
    x = images.float().div_(255.0).sub_(0.5).div_(0.5).to(like.dtype)
    return x.contiguous(memory_format=memory_format_of(like))


def apply_policy(x: Tensor, plan: Sequence[Stage], interpolation: str = "nearest") -> Tensor:
    """A [-1, 1] float batch through a per-sample plan; dtype, device, shape and memory format kept."""
    if not plan:
        return x
    return from_uint8(apply_plan(to_uint8(x), plan, interpolation), x)


# ---------------------------------------------------------------------------------------------- AugMix
def augmix_view(
    x: Tensor,
    width: int = 3,
    depth: int = -1,
    severity: int = 3,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One AugMix view of a [-1, 1] float batch (``augment_and_mix`` of the release, per sample):
    ``(1 - m) x + m * sum_i w_i chain_i(x)`` in float, ``w ~ Dir(alpha * 1_width)``, ``m ~ Beta(alpha, alpha)``."""
    b, _, h, w_px = x.shape
    conc = torch.full((b, width), float(alpha))
    weights = torch._sample_dirichlet(conc, generator=generator)  # what torchvision's AugMix uses
    m = torch._sample_dirichlet(torch.full((b, 2), float(alpha)), generator=generator)[:, 0]  # Beta(alpha, alpha)
    u8 = to_uint8(x)
    xf = x.detach().float()
    mix = torch.zeros_like(xf)
    for i in range(width):
        plan = augmix_chain_plan(b, h, w_px, severity, depth, generator)
        chain = apply_plan(u8, plan, "bilinear").float().div_(255.0).sub_(0.5).div_(0.5)
        mix.add_(weights[:, i].to(xf.device).view(-1, 1, 1, 1) * chain)
    mv = m.to(xf.device).view(-1, 1, 1, 1)
    out = (1.0 - mv) * xf + mv * mix
    return out.clamp_(-1.0, 1.0).to(x.dtype).contiguous(memory_format=memory_format_of(x))


def jensen_shannon(*logits: Tensor) -> Tensor:
    """AugMix's consistency loss (``augmix/imagenet.py``): with ``p_i = softmax(logits_i)`` and
    ``M = clamp(mean_i p_i, 1e-7, 1)``, ``JS = mean_i KL(p_i || M)`` averaged over the batch (``batchmean``)."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1.0).log()
    return sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / len(probs)


def check_interpolation(value: str) -> str:
    if value not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {value!r}")
    return value


__all__ = [
    "OPS",
    "Stage",
    "augmentation_space",
    "randaugment_plan",
    "trivialaugment_plan",
    "autoaugment_plan",
    "augmix_chain_plan",
    "apply_stage",
    "apply_plan",
    "apply_policy",
    "augmix_view",
    "jensen_shannon",
    "to_uint8",
    "from_uint8",
    "warp_affine",
    "IMAGENET_POLICY",
    "AUGMIX_OPS",
    "check_interpolation",
]
