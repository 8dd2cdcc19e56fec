"""Differentiable, batched, per-sample image degradations (torch + kornia), shared by the degradation methods.

Used by ``kornia_degrade`` (random per-sample degradations in the spirit of AdaFace's augmenter) and
``adv_degrade`` (CFSM's one-step FGSM guidance on the degradation parameters instead of a learned style space).
Written from the literature only; it knows nothing of SynthFace's camera model and must never import it.

Images are ``(B, C, H, W)`` float tensors in [-1, 1] (the trainer's normalisation), any memory format. ``apply``
converts to [0, 1], runs every op in float32 with autocast disabled, clamps to [0, 1] and returns [-1, 1] in
the input's dtype and memory format.

**The ops, in the order** :func:`apply` **runs them** (``OPS``); each has its own per-sample mask ``"<op>_on"``
(``(B,)`` bool; a missing mask means "every sample"), so each sample gets its own subset of ops and its own
parameters, and an op only computes on the samples whose mask is set:

=========  ======================================================  =====================================================
op         what it does (parameter tensors, all ``(B,)``)           differentiable in
=========  ======================================================  =====================================================
crop       AdaFace's "crop with zero padding": keep a box, black    the image only (the box ``crop_box`` (B, 4) =
           elsewhere; box drawn as torchvision RandomResizedCrop    top, left, height, width in pixels is discrete)
color      photometric jitter as torchvision ``ColorJitter``:       ``brightness``, ``contrast``, ``saturation``
           brightness x*b, contrast and saturation blends with      (affine blends; zero gradient where a value is
           the grey mean / grey image, clamped after each as        clipped to [0, 1]); ``hue`` (torchvision units,
           torchvision does; order per sample ``color_order``       [-0.5, 0.5]) through ``kornia.enhance.adjust_hue``;
           (index of one of the 6 permutations of b, c, s); hue     not in the order (discrete)
           last, skipped when all zero
blur       isotropic Gaussian blur, ``blur_sigma`` (px)             ``blur_sigma`` (kernel exp(-t^2 / 2 sigma^2),
                                                                    truncated at 3 sigma; vanishes as sigma -> 0)
motion     linear motion blur, ``motion_length`` (px) and           both (piecewise smooth): the kernel is the mean
           ``motion_angle`` (degrees)                               of bilinear splats of points spread along the
                                                                    segment, which move with both
resize     down-and-up scaling by ``scale`` in (0, 1]               ``scale``, almost everywhere: the output blends the
           (antialiased bilinear down, bilinear up)                 two bracketing integer sizes, see :func:`down_up`
noise      additive Gaussian noise ``noise_sigma`` (in [0, 1]       ``noise_sigma`` (reparameterised: sigma * eps with
           intensity units) times a fixed N(0, 1) field ``noise``   the field fixed; zero where clipped)
           (B, C, H, W); drawn from torch's global generator if
           absent
jpeg       JPEG compression, ``jpeg_quality`` in [1, 100]           ``jpeg_quality``, via
                                                                    ``kornia.enhance.jpeg_codec_differentiable``
                                                                    (Reich et al. 2024)
=========  ======================================================  =====================================================

Every op is also differentiable in the image, so gradients reach anything upstream. The masks, the crop box
and the colour order are not parameters of a gradient.

The order follows AdaFace's augmenter for its three ops (crop, then low resolution, then photometric) and the
blur -> resize -> noise -> JPEG camera chain of the face-restoration degradation model (GFPGAN, Wang et al. CVPR
2021, after Real-ESRGAN); photometric jitter is put before the blur (scene/exposure, then optics and sensor):
brightness, contrast and saturation are per-pixel affine maps that commute with the linear blurs and the resize
up to clipping, so this differs from AdaFace's order (photometric after low-res) only there. Channel order:
grey weights and JPEG's YCbCr assume RGB; on a BGR pipeline the grey weights of R and B swap (a small change).

**Parameter space.** :class:`DegradationSpace` holds one range per continuous parameter at the reference face size
112 px (spatial ranges in pixels at 112 px are scaled by ``H / 112``). A normalised vector ``z`` in [0, 1]^D maps
linearly to the ranges (:func:`unit_to_params`): ``value = lo + z * (hi - lo)``; ``lo`` is the mild end for the
degradations (z = 0: sigma 0, length 0, scale 1, noise 0, quality 100) and the low factor for the photometric
ones (z = 0.5 is the identity there). Parameters whose range is empty (hue by default) are left out of ``z``
(:meth:`DegradationSpace.active`). :func:`sample_params` draws ``z ~ U[0, 1]^D`` (i.e. every parameter uniformly
in its range, as the cited augmenters do), the masks, crop boxes, colour orders and the noise field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.data.images import memory_format_of

OPS = ("crop", "color", "blur", "motion", "resize", "noise", "jpeg")
#: continuous parameters in the order of the normalised vector z (the full one; see DegradationSpace.active)
PARAMS = (
    "blur_sigma",
    "motion_length",
    "motion_angle",
    "scale",
    "noise_sigma",
    "jpeg_quality",
    "brightness",
    "contrast",
    "saturation",
    "hue",
)
#: the op each continuous parameter belongs to
PARAM_OP = {
    "blur_sigma": "blur",
    "motion_length": "motion",
    "motion_angle": "motion",
    "scale": "resize",
    "noise_sigma": "noise",
    "jpeg_quality": "jpeg",
    "brightness": "color",
    "contrast": "color",
    "saturation": "color",
    "hue": "color",
}
SPATIAL = ("blur_sigma", "motion_length")  # in pixels at the reference size, scaled with the image
REFERENCE_SIZE = 112  # the aligned-face size of insightface / AdaFace / CFSM
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_PERMS = (
    (0, 1, 2),
    (0, 2, 1),
    (1, 0, 2),
    (1, 2, 0),
    (2, 0, 1),
    (2, 1, 0),
)  # orders of brightness, contrast, saturation


# ------------------------------------------------------------------------------------------------ the space
@dataclass(frozen=True)
class DegradationSpace:
    """One ``(lo, hi)`` range per continuous parameter, at the 112 px reference size; ``z = 0`` maps to ``lo``.

    Defaults and their sources (none tuned on SynthFace):

    * ``blur_sigma`` 0 .. 2.2 px: GFPGAN's training degradation (``options/train_gfpgan_v1.yml``,
      ``blur_sigma: [0.1, 10]`` at 512 px) rescaled to 112 px (10 * 112 / 512 = 2.19).
    * ``motion_length`` 0 .. 12 px, ``motion_angle`` -45 .. 45 degrees: ImageNet-C's motion blur (Hendrycks &
      Dietterich, ICLR 2019: angle ``uniform(-45, 45)``; the 64 px Tiny-ImageNet-C variant uses a Gaussian-weighted
      streak of sigma 1 .. 3 px, about a 2.5 sigma = 2.5 .. 7.5 px segment, i.e. up to ~13 px at 112 px).
    * ``scale`` 1 .. 0.2: AdaFace's low-resolution augmentation (``dataset/augmenter.py``:
      ``side_ratio = np.random.uniform(0.2, 1.0)``).
    * ``noise_sigma`` 0 .. 20/255: GFPGAN ``noise_range: [0, 20]`` (0-255 scale).
    * ``jpeg_quality`` 100 .. 60: GFPGAN ``jpeg_range: [60, 100]``.
    * ``brightness`` / ``contrast`` / ``saturation`` 0.5 .. 1.5, ``hue`` 0: AdaFace's photometric augmentation
      (``transforms.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0)``).
    """

    blur_sigma: tuple[float, float] = (0.0, 2.2)
    motion_length: tuple[float, float] = (0.0, 12.0)
    motion_angle: tuple[float, float] = (-45.0, 45.0)
    scale: tuple[float, float] = (1.0, 0.2)
    noise_sigma: tuple[float, float] = (0.0, 20.0 / 255.0)
    jpeg_quality: tuple[float, float] = (100.0, 60.0)
    brightness: tuple[float, float] = (0.5, 1.5)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (0.0, 0.0)
    reference_size: int = REFERENCE_SIZE

    def __post_init__(self):
        checks = {
            "blur_sigma": (0, math.inf),
            "motion_length": (0, math.inf),
            "motion_angle": (-180, 180),
            "scale": (1e-6, 1),
            "noise_sigma": (0, math.inf),
            "jpeg_quality": (1, 100),
            "brightness": (0, math.inf),
            "contrast": (0, math.inf),
            "saturation": (0, math.inf),
            "hue": (-0.5, 0.5),
        }
        for name, (lo, hi) in checks.items():
            r = getattr(self, name)
            if len(r) != 2 or not all(lo <= float(v) <= hi for v in r):
                raise ValueError(f"DegradationSpace.{name} = {r}: both ends must be in [{lo}, {hi}]")

    def range(self, name: str, image_size: int) -> tuple[float, float]:
        lo, hi = (float(v) for v in getattr(self, name))
        if name in SPATIAL:
            f = image_size / self.reference_size
            lo, hi = lo * f, hi * f
        return lo, hi

    def active(self, ops: Sequence[str] = OPS) -> tuple[str, ...]:
        """The parameters of ``ops`` with a non-empty range, in ``PARAMS`` order (the coordinates of z)."""
        return tuple(n for n in PARAMS if PARAM_OP[n] in ops and getattr(self, n)[0] != getattr(self, n)[1])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def space_hparams() -> dict[str, tuple[Any, Any]]:
    """Hyperparameter declarations (``name -> (default, sampler)``) for the ranges of :class:`DegradationSpace`.
    The ranges come from the literature (see the class) and are not searched: every sampler returns the default."""
    d = DegradationSpace()

    def fixed(value):
        return (value, lambda rng: value)

    return {
        "blur_sigma_max": fixed(d.blur_sigma[1]),  # px at 112 px (GFPGAN, rescaled)
        "motion_length_max": fixed(d.motion_length[1]),  # px at 112 px (ImageNet-C, rescaled)
        "motion_angle_max": fixed(d.motion_angle[1]),  # degrees, symmetric (ImageNet-C)
        "scale_min": fixed(d.scale[1]),  # AdaFace low-res side ratio
        "noise_sigma_max": fixed(20.0),  # 0-255 scale (GFPGAN)
        "jpeg_quality_min": fixed(d.jpeg_quality[1]),  # GFPGAN
        "brightness": fixed(0.5),
        "contrast": fixed(0.5),
        "saturation": fixed(0.5),  # AdaFace ColorJitter
        "hue": fixed(0.0),  # AdaFace: hue=0
    }


def space_from_hparams(h: Mapping[str, Any]) -> DegradationSpace:
    """The :class:`DegradationSpace` of a method's resolved hyperparameters (see :func:`space_hparams`)."""

    def jitter(v):
        v = float(v)
        return (max(0.0, 1.0 - v), 1.0 + v)

    return DegradationSpace(
        blur_sigma=(0.0, float(h["blur_sigma_max"])),
        motion_length=(0.0, float(h["motion_length_max"])),
        motion_angle=(-float(h["motion_angle_max"]), float(h["motion_angle_max"])),
        scale=(1.0, float(h["scale_min"])),
        noise_sigma=(0.0, float(h["noise_sigma_max"]) / 255.0),
        jpeg_quality=(100.0, float(h["jpeg_quality_min"])),
        brightness=jitter(h["brightness"]),
        contrast=jitter(h["contrast"]),
        saturation=jitter(h["saturation"]),
        hue=(-float(h["hue"]), float(h["hue"])),
    )


def unit_to_params(z: Tensor, space: DegradationSpace, image_size: int, names: Sequence[str]) -> dict[str, Tensor]:
    """Map normalised coordinates ``z`` (B, len(names)) in [0, 1] linearly to each parameter's range (pixels at
    ``image_size``); differentiable in ``z``. Parameters of ``PARAMS`` not in ``names`` are set to ``lo`` (their
    range is empty, or the op is not used)."""
    if z.dim() != 2 or z.size(1) != len(names):
        raise ValueError(f"z must be (B, {len(names)}) for {tuple(names)}, got {tuple(z.shape)}")
    out = {}
    for name in PARAMS:
        lo, hi = space.range(name, image_size)
        if name in names:
            out[name] = lo + z[:, list(names).index(name)] * (hi - lo)
        else:
            out[name] = torch.full((z.size(0),), lo, dtype=z.dtype, device=z.device)
    return out


# ------------------------------------------------------------------------------------------------ sampling
def crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Tensor:
    """Per-sample boxes (B, 4) = (top, left, h, w), int64, drawn as torchvision ``RandomResizedCrop.get_params``
    (10 attempts at an area fraction ``U(scale)`` and a log-uniform aspect ratio, else the central crop clamped to
    ``ratio``); AdaFace's crop augmentation uses ``scale=(0.2, 1.0), ratio=(0.75, 4/3)``."""
    area = height * width
    u_area = torch.rand(batch_size, attempts, generator=generator, dtype=torch.float64)
    u_ratio = torch.rand(batch_size, attempts, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio
    ar = torch.exp(logr)
    w = torch.round(torch.sqrt(target * ar)).long()
    h = torch.round(torch.sqrt(target / ar)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    pos = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
    first = torch.where(valid.any(1), valid.float().argmax(1), torch.zeros(batch_size, dtype=torch.long))
    h = h.gather(1, first[:, None]).squeeze(1)
    w = w.gather(1, first[:, None]).squeeze(1)
    # fallback (no valid attempt): torchvision's central crop with the aspect ratio clamped to `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    ok = valid.any(1)
    h = torch.where(ok, h, torch.full_like(h, fh))
    w = torch.where(ok, w, torch.full_like(w, fw))
    top = torch.where(ok, (pos[:, 0] * (height - h + 1)).floor().long(), (height - h) // 2)
    left = torch.where(ok, (pos[:, 1] * (width - w + 1)).floor().long(), (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def sample_params(
    batch_size: int,
    generator: torch.Generator | None = None,
    space: DegradationSpace | None = None,
    probs: Mapping[str, float] | None = None,
    image_shape: Sequence[int] = (3, REFERENCE_SIZE, REFERENCE_SIZE),
    noise_field: bool = True,
    quantize_scale: bool = False,
) -> dict[str, Tensor]:
    """Draw per-sample degradation parameters on the CPU (from ``generator``, or torch's global generator).

    ``probs``: op -> probability that a sample gets it (``"<op>_on"`` masks, independent per sample and op);
    ops not named get probability 1. Every continuous parameter is uniform in its range (``z ~ U[0, 1]^D``
    through :func:`unit_to_params`, also returned as ``"z"`` with ``"z_names"`` implied by ``space.active()``).
    ``image_shape`` = (C, H, W) sizes the spatial ranges, the crop boxes and the noise field (drawn only when
    ``noise_field``). ``quantize_scale`` rounds ``scale * H`` down to an integer size (AdaFace's
    ``int(side_ratio * H)``), so :func:`down_up` does one discrete resize instead of a blend.

    The draws happen in a fixed order (z, masks, crop boxes, colour orders, noise), so the same generator state
    gives the same parameters.
    """
    space = space or DegradationSpace()
    probs = dict(probs or {})
    unknown = set(probs) - set(OPS)
    if unknown:
        raise ValueError(f"unknown degradation ops {sorted(unknown)}; valid: {', '.join(OPS)}")
    C, H, W = (int(v) for v in image_shape)
    names = space.active()
    z = torch.rand(batch_size, len(names), generator=generator)
    params = unit_to_params(z, space, H, names)
    if quantize_scale:
        params["scale"] = (params["scale"] * H + 1e-4).floor().clamp(1, H) / H
    u = torch.rand(batch_size, len(OPS), generator=generator)
    for k, op in enumerate(OPS):
        p = float(probs.get(op, 1.0))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability of {op} must be in [0, 1], got {p}")
        params[f"{op}_on"] = u[:, k] < p
    params["crop_box"] = crop_boxes(batch_size, H, W, generator)
    params["color_order"] = torch.randint(len(_PERMS), (batch_size,), generator=generator)
    if noise_field:
        params["noise"] = torch.randn(batch_size, C, H, W, generator=generator)
    params["z"] = z
    return params


def select(params: Mapping[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    """The parameters of the samples ``idx`` (every tensor indexed along its first axis)."""
    return {k: v[idx.to(v.device)] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in params.items()}


# ------------------------------------------------------------------------------------------------ the ops
def _col(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1, 1)


def _grey(u: Tensor) -> Tensor:
    r, g, b = u[:, 0:1], u[:, 1:2], u[:, 2:3]
    return GREY[0] * r + GREY[1] * g + GREY[2] * b


def crop_mask(u: Tensor, box: Tensor) -> Tensor:
    """Zero (black) outside each sample's box ``(top, left, h, w)``: AdaFace's crop with zero padding."""
    B, _, H, W = u.shape
    box = box.to(u.device)
    rows, cols = torch.arange(H, device=u.device), torch.arange(W, device=u.device)
    top, left, h, w = box.unbind(1)
    mr = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])
    mc = (cols[None] >= left[:, None]) & (cols[None] < (left + w)[:, None])
    return u * (mr[:, :, None] & mc[:, None, :]).unsqueeze(1).to(u.dtype)


def color_jitter(
    u: Tensor,
    brightness: Tensor,
    contrast: Tensor,
    saturation: Tensor,
    hue: Tensor | None = None,
    order: Tensor | None = None,
) -> Tensor:
    """torchvision ``ColorJitter`` semantics per sample (multiplicative brightness, blend with the grey mean for
    contrast, blend with the grey image for saturation, clamp to [0, 1] after each), in the per-sample order
    ``_PERMS[order]``; hue (torchvision units) last, skipped when all zero."""
    B = u.size(0)
    order = torch.zeros(B, dtype=torch.long, device=u.device) if order is None else order.to(u.device)
    perm = torch.tensor(_PERMS, device=u.device)[order]  # (B, 3)
    b, c, s = _col(brightness), _col(contrast), _col(saturation)
    for pos in range(3):
        which = _col(perm[:, pos])
        bright = (u * b).clamp(0, 1)
        mean = _grey(u).mean(dim=(1, 2, 3), keepdim=True)
        contr = (c * u + (1 - c) * mean).clamp(0, 1)
        grey = _grey(u)
        satur = (s * u + (1 - s) * grey).clamp(0, 1)
        u = torch.where(which == 0, bright, torch.where(which == 1, contr, satur))
    if hue is not None and bool((hue != 0).any()):
        from kornia.enhance import adjust_hue  # kornia on first use: not every process that imports methods needs it

        u = adjust_hue(u, hue * (2 * math.pi)).clamp(0, 1)
    return u


def gaussian_blur(u: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample isotropic Gaussian blur (reflect border), kernel truncated at 3 sigma of the largest sigma."""
    H, W = u.shape[-2:]
    sigma = sigma.clamp_min(1e-3)
    r = max(1, min(math.ceil(3.0 * float(sigma.detach().max())), min(H, W) // 2 - 1))
    t = torch.arange(-r, r + 1, dtype=u.dtype, device=u.device)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    from kornia.filters import filter2d_separable

    return filter2d_separable(u, k, k, border_type="reflect")


def motion_kernel(length: Tensor, angle_deg: Tensor, radius: int, samples_per_px: int = 4) -> Tensor:
    """(B, 2r+1, 2r+1) kernels of a centred segment of ``length`` px at ``angle_deg`` (0 = horizontal, positive
    turns from +x towards +y, i.e. downwards in the image): the mean of bilinear splats of points spread evenly
    along the segment, so each kernel sums to 1 and ``length`` 0 is the identity (one tap). Differentiable in
    both (the points move with them; piecewise smooth)."""
    n = samples_per_px * (2 * radius + 1)
    t = torch.arange(-radius, radius + 1, dtype=length.dtype, device=length.device)
    s = (torch.arange(n, dtype=length.dtype, device=length.device) + 0.5) / n - 0.5  # (n,) in (-1/2, 1/2)
    theta = angle_deg * (math.pi / 180.0)
    pos = s[None] * length[:, None]  # (B, n) positions along the segment
    px, py = pos * torch.cos(theta)[:, None], pos * torch.sin(theta)[:, None]
    wx = (1 - (t[None, None] - px[..., None]).abs()).clamp_min(0)  # (B, n, k): tent splat along x
    wy = (1 - (t[None, None] - py[..., None]).abs()).clamp_min(0)
    return torch.einsum("bny,bnx->byx", wy, wx) / n


def motion_blur(u: Tensor, length: Tensor, angle_deg: Tensor) -> Tensor:
    H, W = u.shape[-2:]
    r = max(1, min(math.ceil(float(length.detach().max()) / 2 + 1), min(H, W) // 2 - 1))
    from kornia.filters import filter2d

    return filter2d(u, motion_kernel(length.to(u.dtype), angle_deg.to(u.dtype), r), border_type="reflect")


def _down_up_fixed(u: Tensor, size_h: int) -> Tensor:
    H, W = u.shape[-2:]
    if size_h >= H:
        return u
    size_w = max(1, int(round(size_h * W / H)))
    small = F.interpolate(u, size=(size_h, size_w), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


def down_up(u: Tensor, scale: Tensor) -> Tensor:
    """Per-sample down-and-up scaling: down to side ``n = scale * H`` (antialiased bilinear), back up (bilinear).

    A fractional side is a blend of the two bracketing integer sides, ``(1 - w) * DU(floor(n)) + w * DU(floor(n)
    + 1)`` with ``w = n - floor(n)``: exact at integer sides (scale 1 is the identity), continuous and piecewise
    linear in ``scale``, so its gradient is ``H * (DU(floor(n) + 1) - DU(floor(n)))``. Samples are grouped by
    ``floor(n)`` (one pair of resizes per distinct size)."""
    B, _, H, W = u.shape
    n = scale.to(u.dtype).clamp(1.0 / H, 1.0) * H
    lo = (n.detach() + 1e-4).floor().clamp(1, H)
    w = (n - lo).clamp_min(0)
    outs, idxs = [], []
    for k in torch.unique(lo).tolist():
        idx = (lo == k).nonzero().flatten()
        xs = u[idx]
        a = _down_up_fixed(xs, int(k))
        wk = w[idx]
        if int(k) < H and (wk.requires_grad or bool((wk > 1e-4).any())):  # w ~ 0: one discrete resize
            b = _down_up_fixed(xs, int(k) + 1)
            a = a + _col(wk) * (b - a)
        outs.append(a)
        idxs.append(idx)
    if len(idxs) == 1:
        return outs[0]
    idx = torch.cat(idxs)
    return torch.zeros_like(u).index_copy(0, idx, torch.cat(outs))


def add_noise(u: Tensor, sigma: Tensor, field: Tensor | None) -> Tensor:
    if field is None:
        field = torch.randn_like(u)
    return (u + _col(sigma.to(u.dtype)) * field.to(u.device, u.dtype)).clamp(0, 1)


def jpeg(u: Tensor, quality: Tensor) -> Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    return jpeg_codec_differentiable(u.clamp(0, 1), quality.to(u.dtype).clamp(1, 100))


# ------------------------------------------------------------------------------------------------ the pipeline
def _masked(u: Tensor, mask: Tensor | None, fn) -> Tensor:
    """``fn(u_subset, idx)`` on the samples where ``mask`` is set (all if ``mask`` is None), the rest unchanged."""
    if mask is None:
        return fn(u, None)
    mask = mask.to(u.device)
    if bool(mask.all()):
        return fn(u, None)
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return u
    return u.index_copy(0, idx, fn(u[idx], idx))


def _pick(t: Tensor, idx: Tensor | None, device) -> Tensor:
    t = t.to(device)
    return t if idx is None else t[idx]


def apply(x: Tensor, params: Mapping[str, Tensor], ops: Sequence[str] = OPS) -> Tensor:
    """Degrade ``x`` (B, C, H, W) in [-1, 1] with per-sample ``params`` (see the module docstring); returns the
    same shape, dtype and memory format. An op runs if it is in ``ops`` and its parameters are in ``params``,
    on the samples of its ``"<op>_on"`` mask (all if absent)."""
    dtype, fmt, dev = x.dtype, memory_format_of(x), x.device
    p = params
    with torch.autocast(device_type=dev.type, enabled=False):
        u = (x.float().contiguous() + 1.0) * 0.5

        def has(op, *keys):
            return op in ops and all(k in p for k in keys)

        if has("crop", "crop_box"):
            u = _masked(u, p.get("crop_on"), lambda v, i: crop_mask(v, _pick(p["crop_box"], i, dev)))
        if has("color", "brightness", "contrast", "saturation"):
            u = _masked(
                u,
                p.get("color_on"),
                lambda v, i: color_jitter(
                    v,
                    _pick(p["brightness"], i, dev).float(),
                    _pick(p["contrast"], i, dev).float(),
                    _pick(p["saturation"], i, dev).float(),
                    _pick(p["hue"], i, dev).float() if "hue" in p else None,
                    _pick(p["color_order"], i, dev) if "color_order" in p else None,
                ),
            )
        if has("blur", "blur_sigma"):
            u = _masked(u, p.get("blur_on"), lambda v, i: gaussian_blur(v, _pick(p["blur_sigma"], i, dev).float()))
        if has("motion", "motion_length", "motion_angle"):
            u = _masked(
                u,
                p.get("motion_on"),
                lambda v, i: motion_blur(
                    v, _pick(p["motion_length"], i, dev).float(), _pick(p["motion_angle"], i, dev).float()
                ),
            )
        if has("resize", "scale"):
            u = _masked(u, p.get("resize_on"), lambda v, i: down_up(v, _pick(p["scale"], i, dev).float()))
        if has("noise", "noise_sigma"):
            u = _masked(
                u,
                p.get("noise_on"),
                lambda v, i: add_noise(
                    v, _pick(p["noise_sigma"], i, dev).float(), _pick(p["noise"], i, dev) if "noise" in p else None
                ),
            )
        if has("jpeg", "jpeg_quality"):
            u = _masked(u, p.get("jpeg_on"), lambda v, i: jpeg(v, _pick(p["jpeg_quality"], i, dev).float()))
        out = u.clamp(0, 1) * 2.0 - 1.0
    return out.to(dtype).contiguous(memory_format=fmt)
