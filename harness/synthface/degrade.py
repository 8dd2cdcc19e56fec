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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.images import decode_image, encode_jpeg

REFERENCE_SIZE = 64  # the feasibility study's resolution: pixel-valued ranges below are scaled by size / 64
MAX_KERNEL = 15


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

    def take(self, index: np.ndarray) -> "DegradationParams":
        """Rows ``index`` (e.g. one camera's parameters repeated for every frame of a video)."""
        return DegradationParams(**{k: np.asarray(v)[index] for k, v in self.__dict__.items()})


def sample_params(rng: np.random.Generator, strength: np.ndarray) -> DegradationParams:
    """Draw camera parameters for images of the given strengths (an array in [0, 1])."""
    s = np.asarray(strength, dtype=np.float64)
    b = len(s)
    u = rng.uniform
    interlaced = u(0, 1, b) < 0.6 * s
    displacement = rng.choice([-2, -1, 1, 2], b)
    return DegradationParams(
        strength=s,
        blur_sigma=s * u(0.3, 1.2, b),
        motion_len=s * u(0.0, 4.0, b),
        motion_angle=u(0, np.pi, b),
        vignette=s * u(0.15, 0.55, b),
        downscale=1.0 / (1.0 + s * u(1.0, 3.5, b)),
        chroma_shift=s * u(0.3, 1.2, b),
        chroma_angle=u(0, 2 * np.pi, b),
        noise_sigma=s * u(0.02, 0.08, b),
        contrast=1.0 - s * u(0.0, 0.35, b),
        gamma=2.0 ** (s * rng.normal(0, 0.35, b)),
        cast_gain=np.exp(rng.normal(0, 0.10, (b, 3)) * s[:, None]),
        cast_offset=rng.normal(0, 0.03, (b, 3)) * s[:, None],
        interlace=np.where(interlaced, displacement, 0),
        jpeg_quality=np.clip(np.round(60 - 50 * s * u(0.6, 1.0, b)), 10, 60).astype(np.int64),
    )


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

    jpegs: list[bytes] = []
    lows: list[np.ndarray] = []
    out_lm = torch.empty_like(landmarks)
    for i in range(b):
        # 2. Sensor resolution.
        lo = max(12, int(round(size * float(p.downscale[i]))))
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
