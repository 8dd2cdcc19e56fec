"""SynthFace's hidden target-domain degradation: a surveillance-camera model. Methods never see this module.

This is the *only* place where the target domain (the unlabelled WIDER-style crops, and the degraded video
frames of the IJB-style test sets) is defined. No method, trainer or evaluator may import it: they see the
target domain only through the image files, exactly as CFSM sees WIDER FACE. A test enforces that rule.

The process follows a camera pipeline, at a per-image strength ``s`` in [0, 1]:

1. Optics, at the rendering resolution: defocus (Gaussian, sigma ~ s * U(0.3, 1.2) px at 64 px) combined with
   linear motion blur (length ~ s * U(0, 4) px, any direction) into one kernel per image; vignetting (radial
   fall-off ~ s * U(0.15, 0.55)).
2. Sensor: strong down-sampling by 1 / (1 + s * U(1, 3.5)) with antialiasing, so a face ends up 12-40 px wide.
3. Lateral chromatic misalignment at sensor level: red and blue planes shifted in opposite directions by
   s * U(0.3, 1.2) sensor pixels along a random direction (cheap lenses, Bayer demosaicking). *Not sampled by
   generic augmentation libraries.*
4. Sensor noise: signal-dependent shot noise plus read noise, sigma ~ s * U(0.02, 0.08), plus per-row gain
   jitter (line noise).
5. ISP: lower contrast (1 - s * U(0, 0.35)), gamma 2 ** (s * N(0, 0.35)), colour cast (per-channel gain
   exp(N(0, 0.10 s)) and offset N(0, 0.03 s)).
6. Interlacing, with probability 0.6 * s: the odd field is displaced horizontally by 1-2 sensor pixels
   (combing on motion), and its brightness differs slightly. *Not sampled by generic augmentation libraries.*
7. Real JPEG compression at quality 60 - 50 * s * U(0.6, 1) (so 10-60).

The output is the *low-resolution* JPEG (what a camera stores): loose crops keep it as is, aligned target crops
are produced by the 5-point alignment warp, which up-samples it, as a detector-and-align pipeline does.
Parameter ranges follow the SynthFace feasibility study (``docs/cpu_profile.md`` section 2);
tune the domain gap with ``strength`` ranges, never with the metric.

**Target cameras** (issue 20: the paper compares stage-1 subspaces learnt on several target domains). The ranges
above are the ``default`` camera, the release's target and test-set camera; :data:`CAMERAS` holds it and four more
named presets of the same pipeline, each a :class:`Camera` (the ranges its parameters are drawn from at strength
``s``). ``python -m harness.synthface.targets --camera NAME`` writes a target crop folder through one of them.

* ``default``: the ranges above (the release is byte-identical to the one written before the presets existed:
  every camera draws the same random numbers in the same order, so ``default`` draws exactly what it always drew).
* ``webphoto``: a mild consumer/web photo: little blur and down-sampling, faint noise, no interlacing, JPEG 67-92.
* ``surveillance``: a worse CCTV camera than ``default``: heavy defocus and motion blur, strong down-sampling,
  strong noise, interlaced with probability ``min(1, 1.6 s)``, JPEG 5-45 (floored at 10).
* ``tiny``: a far-away face: the sensor keeps 10-40 px of the loose crop (TinyFace-like; floor 8 px instead of
  12), otherwise mild.
* ``ageing``: not a camera: an ageing-like appearance change (greying and desaturation, a sallow tint, thin
  horizontal creases over the face, softer local contrast) through an otherwise mild camera;
  it tests the paper's worry that a subspace also captures non-environmental style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.images import decode_image, encode_jpeg

REFERENCE_SIZE = 64  # the feasibility study's resolution: pixel-valued ranges below are scaled by size / 64
MAX_KERNEL = 15


@dataclass(frozen=True)
class Camera:
    """A named camera model: the ranges its per-image parameters are drawn from. ``(lo, hi)`` pairs are uniform
    ranges multiplied by the image's strength ``s`` unless said otherwise; pixel values are at the 64 px reference."""

    name: str
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # Gaussian defocus, px, x s
    motion_len: tuple[float, float] = (0.0, 4.0)  # linear motion blur length, px, x s
    vignette: tuple[float, float] = (0.15, 0.55)  # radial fall-off, x s
    downscale: tuple[float, float] = (1.0, 3.5)  # sensor size = 1 / (1 + s * U(lo, hi)) of the input
    min_side: int = 12  # sensor pixels, at least
    chroma_shift: tuple[float, float] = (0.3, 1.2)  # sensor px, x s
    noise_sigma: tuple[float, float] = (0.02, 0.08)  # x s
    contrast_drop: tuple[float, float] = (0.0, 0.35)  # contrast = 1 - s * U(lo, hi)
    gamma_sd: float = 0.35  # gamma = 2 ** (s * N(0, sd))
    cast_gain_sd: float = 0.10  # per-channel gain exp(N(0, sd) * s)
    cast_offset_sd: float = 0.03  # per-channel offset N(0, sd) * s
    interlace_prob: float = 0.6  # interlaced with probability min(1, interlace_prob * s)
    jpeg_best: float = 60.0  # quality = clip(round(best - drop * s * U(lo, hi)), floor, best)
    jpeg_drop: float = 50.0
    jpeg_drop_range: tuple[float, float] = (0.6, 1.0)
    jpeg_floor: int = 10
    age: tuple[float, float] = (0.0, 0.0)  # ageing-like style strength, x s (0: none; only ``ageing``)


#: The named target cameras (module docstring, "Target cameras"); ``default`` is the release's.
CAMERAS: dict[str, Camera] = {
    c.name: c
    for c in (
        Camera("default"),
        Camera(
            "webphoto",
            blur_sigma=(0.0, 0.4),
            motion_len=(0.0, 0.5),
            vignette=(0.0, 0.2),
            downscale=(0.0, 0.6),
            chroma_shift=(0.0, 0.3),
            noise_sigma=(0.005, 0.02),
            contrast_drop=(0.0, 0.1),
            gamma_sd=0.15,
            cast_gain_sd=0.05,
            cast_offset_sd=0.01,
            interlace_prob=0.0,
            jpeg_best=92.0,
            jpeg_drop=25.0,
            jpeg_drop_range=(0.0, 1.0),
        ),
        Camera(
            "surveillance",
            blur_sigma=(0.8, 2.0),
            motion_len=(1.0, 6.0),
            vignette=(0.2, 0.6),
            downscale=(2.0, 4.5),
            chroma_shift=(0.5, 1.5),
            noise_sigma=(0.05, 0.12),
            contrast_drop=(0.1, 0.4),
            interlace_prob=1.6,
            jpeg_best=45.0,
            jpeg_drop=40.0,
            jpeg_drop_range=(0.5, 1.0),
        ),
        Camera(
            "tiny",
            blur_sigma=(0.2, 0.6),
            motion_len=(0.0, 1.0),
            vignette=(0.0, 0.2),
            downscale=(3.0, 8.0),
            min_side=8,
            chroma_shift=(0.0, 0.3),
            noise_sigma=(0.01, 0.03),
            contrast_drop=(0.0, 0.15),
            gamma_sd=0.15,
            interlace_prob=0.0,
            jpeg_best=85.0,
            jpeg_drop=30.0,
        ),
        Camera(
            "ageing",
            blur_sigma=(0.0, 0.3),
            motion_len=(0.0, 0.3),
            vignette=(0.0, 0.1),
            downscale=(0.0, 0.3),
            chroma_shift=(0.0, 0.2),
            noise_sigma=(0.0, 0.01),
            contrast_drop=(0.0, 0.05),
            gamma_sd=0.1,
            cast_gain_sd=0.03,
            cast_offset_sd=0.01,
            interlace_prob=0.0,
            jpeg_best=92.0,
            jpeg_drop=10.0,
            jpeg_drop_range=(0.0, 1.0),
            age=(0.7, 1.0),
        ),
    )
}


def camera_named(name: str) -> Camera:
    """The preset ``name``; an unknown name is a one-line ValueError listing the valid ones."""
    if name not in CAMERAS:
        raise ValueError(f"unknown camera {name!r}; valid: {', '.join(CAMERAS)}")
    return CAMERAS[name]


@dataclass
class DegradationParams:
    """Per-image parameters of the camera model (vectorised, leading axis = image)."""

    strength: np.ndarray
    blur_sigma: np.ndarray  # px at the reference size
    motion_len: np.ndarray
    motion_angle: np.ndarray
    vignette: np.ndarray
    downscale: np.ndarray  # output size / input size
    chroma_shift: np.ndarray  # sensor px
    chroma_angle: np.ndarray
    noise_sigma: np.ndarray
    contrast: np.ndarray
    gamma: np.ndarray
    cast_gain: np.ndarray  # (B, 3)
    cast_offset: np.ndarray  # (B, 3)
    interlace: np.ndarray  # 0 = progressive, else field displacement in sensor px (+-1, +-2)
    jpeg_quality: np.ndarray
    min_side: np.ndarray  # sensor pixels, at least
    age: np.ndarray  # ageing-like style strength (0: none)
    age_freq: np.ndarray  # creases over the image height
    age_phase: np.ndarray

    def take(self, index: np.ndarray) -> DegradationParams:
        """Rows ``index`` (e.g. one camera's parameters repeated for every frame of a video)."""
        return DegradationParams(**{k: np.asarray(v)[index] for k, v in self.__dict__.items()})


def sample_params(
    rng: np.random.Generator, strength: np.ndarray, camera: Camera = CAMERAS["default"]
) -> DegradationParams:
    """Draw camera parameters for images of the given strengths (an array in [0, 1]). Every camera draws the same
    random numbers in the same order (only the ranges differ), except the ageing style's two extra draws at the end,
    made only by a camera with ``age``; so the ``default`` camera draws exactly what the release always drew."""
    c = camera
    s = np.asarray(strength, dtype=np.float64)
    b = len(s)
    u = rng.uniform
    interlaced = u(0, 1, b) < c.interlace_prob * s
    displacement = rng.choice([-2, -1, 1, 2], b)
    params = dict(
        strength=s,
        blur_sigma=s * u(*c.blur_sigma, b),
        motion_len=s * u(*c.motion_len, b),
        motion_angle=u(0, np.pi, b),
        vignette=s * u(*c.vignette, b),
        downscale=1.0 / (1.0 + s * u(*c.downscale, b)),
        chroma_shift=s * u(*c.chroma_shift, b),
        chroma_angle=u(0, 2 * np.pi, b),
        noise_sigma=s * u(*c.noise_sigma, b),
        contrast=1.0 - s * u(*c.contrast_drop, b),
        gamma=2.0 ** (s * rng.normal(0, c.gamma_sd, b)),
        cast_gain=np.exp(rng.normal(0, c.cast_gain_sd, (b, 3)) * s[:, None]),
        cast_offset=rng.normal(0, c.cast_offset_sd, (b, 3)) * s[:, None],
        interlace=np.where(interlaced, displacement, 0),
        jpeg_quality=np.clip(
            np.round(c.jpeg_best - c.jpeg_drop * s * u(*c.jpeg_drop_range, b)), c.jpeg_floor, c.jpeg_best
        ).astype(np.int64),
        min_side=np.full(b, c.min_side, dtype=np.int64),
    )
    if c.age[1] > 0:
        params.update(age=s * u(*c.age, b), age_freq=u(7.0, 12.0, b), age_phase=u(0, 2 * np.pi, b))
    else:
        params.update(age=np.zeros(b), age_freq=np.zeros(b), age_phase=np.zeros(b))
    return DegradationParams(**params)


def _age(x: torch.Tensor, p: DegradationParams) -> torch.Tensor:
    """The ageing-like style on (B, 3, L, L) images in [0, 1]: greying (desaturation by ``age / 2``), a sallow tint,
    thin horizontal creases over the face (``age_freq`` of them over the height, dark by up to ``0.3 age``, inside
    the central disc where the loose crop holds the face) and softer local contrast. Images with ``age == 0`` are
    returned unchanged."""
    b, _, size, _ = x.shape
    a = torch.as_tensor(p.age, dtype=torch.float32).view(b, 1, 1, 1)
    grey = x.mean(1, keepdim=True)
    y = x + (grey - x) * (0.5 * a)
    tint = torch.tensor([1.04, 1.0, 0.88]).view(1, 3, 1, 1)
    y = y * (1 + (tint - 1) * a)
    r = torch.linspace(-1, 1, size)
    rows, cols = r.view(1, 1, size, 1), r.view(1, 1, 1, size)
    freq = torch.as_tensor(p.age_freq, dtype=torch.float32).view(b, 1, 1, 1)
    phase = torch.as_tensor(p.age_phase, dtype=torch.float32).view(b, 1, 1, 1)
    crease = torch.relu(torch.cos(freq * math.pi * rows + phase)) ** 8
    face = torch.sigmoid((0.6 - (rows**2 + cols**2).sqrt()) * 20)  # the face's disc of the loose crop
    y = y * (1 - 0.3 * a * crease * face)
    mean = y.mean((2, 3), keepdim=True)
    y = (y - mean) * (1 - 0.2 * a) + mean
    return torch.where(a > 0, y.clamp(0, 1), x)


def _blur_kernels(p: DegradationParams, px_scale: float) -> torch.Tensor:
    """One normalised (k, k) kernel per image: a Gaussian swept along the motion segment."""
    k = MAX_KERNEL
    r = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    sigma = torch.as_tensor(np.maximum(p.blur_sigma * px_scale, 0.25))
    length = torch.as_tensor(p.motion_len * px_scale)
    ang = torch.as_tensor(p.motion_angle)
    kern = torch.zeros(len(sigma), k, k, dtype=torch.float64)
    for t in torch.linspace(-0.5, 0.5, 9, dtype=torch.float64):
        cx = (t * length * torch.cos(ang)).view(-1, 1, 1)
        cy = (t * length * torch.sin(ang)).view(-1, 1, 1)
        kern += torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma.view(-1, 1, 1) ** 2))
    return (kern / kern.sum((1, 2), keepdim=True)).float()


def _shift(plane: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Sub-pixel translation of a (1, 1, H, W) plane, bilinear, edges replicated."""
    _, _, h, w = plane.shape
    theta = torch.tensor([[[1.0, 0.0, -2.0 * dx / w], [0.0, 1.0, -2.0 * dy / h]]], dtype=plane.dtype)
    grid = F.affine_grid(theta, list(plane.shape), align_corners=False)
    return F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=False)


def degrade(images: torch.Tensor, landmarks: torch.Tensor, p: DegradationParams, rng: np.random.Generator):
    """Apply the camera model to clean renders.

    ``images``: (B, 3, L, L) float in [0, 1]; ``landmarks``: (B, 5, 2) pixel coordinates (centres at integers).
    Returns ``(jpegs, lowres_landmarks, decoded)``: the stored low-resolution JPEG bytes of each image, its
    landmarks in that image's pixels, and the decoded uint8 (h, w, 3) arrays (what a reader will see).
    """
    b, _, size, _ = images.shape
    px_scale = size / REFERENCE_SIZE

    # 1. Optics: per-image blur kernel as a grouped convolution, then vignetting.
    kern = _blur_kernels(p, px_scale)
    pad = MAX_KERNEL // 2
    x = F.pad(images.reshape(1, b * 3, size, size), (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, kern.repeat_interleave(3, 0).unsqueeze(1), groups=b * 3).view(b, 3, size, size)
    r = torch.linspace(-1, 1, size)
    rr = (r[None, :] ** 2 + r[:, None] ** 2) / 2
    x = x * (1 - torch.as_tensor(p.vignette, dtype=torch.float32).view(b, 1, 1, 1) * rr)
    if np.any(p.age > 0):  # the ageing style (a scene change, before the sensor); no camera but ``ageing`` has it
        x = _age(x, p)

    jpegs: list[bytes] = []
    lows: list[np.ndarray] = []
    out_lm = torch.empty_like(landmarks)
    for i in range(b):
        # 2. Sensor resolution.
        lo = max(int(p.min_side[i]), int(round(size * float(p.downscale[i]))))
        y = F.interpolate(x[i : i + 1], size=(lo, lo), mode="bilinear", antialias=True, align_corners=False)
        ratio = lo / size
        out_lm[i] = (landmarks[i] + 0.5) * ratio - 0.5
        # 3. Lateral chromatic misalignment: red and blue planes move in opposite directions.
        d = float(p.chroma_shift[i])
        dx, dy = d * np.cos(p.chroma_angle[i]), d * np.sin(p.chroma_angle[i])
        y = torch.cat([_shift(y[:, 0:1], dx, dy), y[:, 1:2], _shift(y[:, 2:3], -dx, -dy)], 1)
        y = y[0].double().numpy()
        # 4. Sensor noise: shot + read noise, and per-row gain jitter.
        sig = float(p.noise_sigma[i])
        y = y + rng.normal(0, 1, y.shape) * sig * np.sqrt(0.3 + 0.7 * np.clip(y, 0, 1))
        y = y * (1 + rng.normal(0, 0.25 * sig, (1, lo, 1)))
        # 5. ISP: contrast, gamma, colour cast.
        mean = y.mean()
        y = (y - mean) * p.contrast[i] + mean
        y = np.clip(y, 0, 1) ** p.gamma[i]
        y = y * p.cast_gain[i][:, None, None] + p.cast_offset[i][:, None, None]
        # 6. Interlacing: the odd field is displaced horizontally and slightly brighter or darker.
        if p.interlace[i] != 0:
            odd = y[:, 1::2, :]
            odd = np.roll(odd, int(p.interlace[i]), axis=2)
            y[:, 1::2, :] = odd * (1 + 0.04 * np.sign(p.interlace[i]))
        u8 = (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        # 7. Real JPEG at low quality.
        data = encode_jpeg(np.ascontiguousarray(u8), quality=int(p.jpeg_quality[i]))
        jpegs.append(data)
        lows.append(decode_image(data, "<degrade>"))
    return jpegs, out_lm, lows
