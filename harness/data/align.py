"""5-point face alignment to the ArcFace template, batched in torch (no cv2 / skimage dependency).

This reproduces the alignment used by insightface (``python-package/insightface/utils/face_align.py``,
``estimate_norm`` / ``norm_crop``, and ``recognition/_evaluation_/ijb/ijb_11.py``):

1. A least-squares *similarity* transform (uniform scale, rotation with det +1, translation; no reflection) is
   estimated from the 5 detected landmarks to the ArcFace 112x112 template with Umeyama's method
   (S. Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
   IEEE TPAMI 13(4), 1991). This is exactly what ``skimage.transform.SimilarityTransform().estimate(src, dst)``
   computes, which insightface calls.
2. The image is warped with that matrix as ``cv2.warpAffine(img, M[:2], (S, S), borderValue=0)``: bilinear
   interpolation, constant (zero) border.

Landmark order: eye on the image's left, eye on the image's right, nose tip, left mouth corner, right mouth
corner; ``(x, y)`` pixel coordinates.

Pixel-centre convention (the one of ``cv2.warpAffine``): pixel ``(i, j)`` (column ``i``, row ``j``) has its
centre at the integer point ``(x, y) = (i, j)``. The destination pixel ``(u, v)`` takes the bilinear sample of
the source at ``M^-1 (u, v, 1)``, with the four neighbouring pixel centres at integer coordinates and pixels
outside the image replaced by the border value. We reproduce it with ``torch.nn.functional.grid_sample(...,
mode="bilinear", align_corners=False)`` by converting source pixel coordinates ``x`` in ``[0, W)`` to normalised
coordinates ``x_n = (2 x + 1) / W - 1`` (and likewise for ``y`` with ``H``). The only intended difference from
cv2 is precision: cv2 quantises the source coordinates to 1/32 pixel (``INTER_BITS = 5``) and uses fixed-point
weights for 8-bit images, whereas we interpolate with exact (float32/float64) weights, so results may differ
from cv2 by about one grey level on uint8 images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "arcface_template",
    "umeyama_similarity",
    "warp_affine",
    "align_faces",
    "transform_points",
]

#: The ArcFace 5-point template for a 112x112 crop (insightface ``face_align.arcface_dst``), (x, y) pixels.
ARCFACE_TEMPLATE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.setflags(write=False)


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or an (h, w) pair, got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def arcface_template(size: int | tuple[int, int] = 112) -> np.ndarray:
    """The ArcFace template for an output of ``size`` (an int ``S`` or ``(h, w)``), as a new (5, 2) float64 array.

    The 112x112 template is scaled by ``S / 112`` (x by ``w / 112``, y by ``h / 112``), so that alignment goes
    straight to the model's input size. Note: this is a deliberate choice of this harness; insightface's
    ``estimate_norm`` instead uses ``ratio = S / 128`` plus an x offset of ``8 * ratio`` when ``S`` is not a
    multiple of 112, and scaling coordinates (pixel centres at integers) is not exactly the same as resizing a
    112x112 crop (which maps ``x -> (x + 0.5) * S / 112 - 0.5``).
    """
    h, w = _size_hw(size)
    return ARCFACE_TEMPLATE_112 * np.array([w / 112.0, h / 112.0], dtype=np.float64)


def umeyama_similarity(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity transform (Umeyama 1991, without reflection) mapping ``src`` onto ``dst``.

    ``src`` is (B, N, 2) or (N, 2); ``dst`` is the same or broadcastable to it (e.g. one (N, 2) template for a
    batch of landmark sets). Returns float64 homogeneous matrices ``M`` of shape (B, 3, 3) ((3, 3) when both
    inputs are 2-D) minimising ``sum_i ||dst_i - (c R src_i + t)||^2`` with ``c >= 0`` and ``det R = +1``, so
    ``dst ~= M @ [src; 1]``. Same result as ``skimage.transform.SimilarityTransform().estimate(src, dst)``
    (the estimator of insightface ``face_align.estimate_norm``).

    Following the paper: ``Sigma = (1/N) sum (dst_i - mu_d)(src_i - mu_s)^T = U D V^T``,
    ``S = diag(1, d)`` with ``d = det(U) det(V)`` (equal to ``sign(det Sigma)`` when ``Sigma`` has full rank, and
    the paper's rank-1 rule otherwise), ``R = U S V^T``, ``c = tr(D S) / sigma_s^2``, ``t = mu_d - c R mu_s``.

    Raises ``ValueError`` naming the batch index when the points are non-finite, when the source points all
    coincide (zero variance), or when the best-fit scale is zero (e.g. all destination points coincide), since
    no invertible similarity exists then.
    """
    src_t = torch.as_tensor(src)
    dst_t = torch.as_tensor(dst, device=src_t.device)
    unbatched = src_t.dim() == 2 and dst_t.dim() == 2
    if src_t.dim() not in (2, 3) or dst_t.dim() not in (2, 3) or src_t.shape[-1] != 2 or dst_t.shape[-1] != 2:
        raise ValueError(
            f"umeyama_similarity: expected points of shape (B, N, 2) or (N, 2), got src {tuple(src_t.shape)}, "
            f"dst {tuple(dst_t.shape)}"
        )
    src_t = src_t.to(torch.float64)
    dst_t = dst_t.to(torch.float64)
    if src_t.dim() == 2:
        src_t = src_t.unsqueeze(0)
    if dst_t.dim() == 2:
        dst_t = dst_t.unsqueeze(0)
    try:
        src_t, dst_t = torch.broadcast_tensors(src_t, dst_t)
    except RuntimeError:
        raise ValueError(
            f"umeyama_similarity: src {tuple(src_t.shape)} and dst {tuple(dst_t.shape)} do not broadcast"
        ) from None
    b, n, _ = src_t.shape
    if n < 2:
        raise ValueError(f"umeyama_similarity: need at least 2 point pairs, got {n}")

    finite = torch.isfinite(src_t).all(dim=(1, 2)) & torch.isfinite(dst_t).all(dim=(1, 2))
    if not bool(finite.all()):
        idx = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"umeyama_similarity: batch index {idx}: points contain NaN or infinity")

    mu_s = src_t.mean(dim=1)  # (B, 2)
    mu_d = dst_t.mean(dim=1)
    src_c = src_t - mu_s[:, None, :]
    dst_c = dst_t - mu_d[:, None, :]
    var_s = src_c.square().sum(dim=2).mean(dim=1)  # sigma_s^2, (B,)
    var_d = dst_c.square().sum(dim=2).mean(dim=1)
    # Zero variance up to rounding: a spread below 1e-9 of the points' magnitude (or exactly zero).
    degenerate = (var_s <= 1e-18 * src_t.square().sum(dim=2).mean(dim=1)) | (var_s <= 0)
    if bool(degenerate.any()):
        idx = int(torch.nonzero(degenerate)[0, 0])
        raise ValueError(
            f"umeyama_similarity: batch index {idx}: source points have zero variance (all points coincide); "
            "cannot estimate a similarity transform"
        )

    sigma = dst_c.transpose(1, 2) @ src_c / n  # (B, 2, 2)
    u, d_sv, vh = torch.linalg.svd(sigma)
    d_sign = torch.where(torch.linalg.det(u) * torch.linalg.det(vh) < 0, -1.0, 1.0).to(torch.float64)
    s_diag = torch.stack([torch.ones_like(d_sign), d_sign], dim=1)  # diag(1, d), (B, 2)
    rot = u @ (s_diag[:, :, None] * vh)  # U S V^T
    tr_ds = (d_sv * s_diag).sum(dim=1)
    # tr(DS) <= sqrt(var_s var_d) (Cauchy-Schwarz); a (relatively) zero value means a zero best-fit scale.
    zero_scale = tr_ds <= 1e-12 * torch.sqrt(var_s * var_d)
    if bool(zero_scale.any()):
        idx = int(torch.nonzero(zero_scale)[0, 0])
        raise ValueError(
            f"umeyama_similarity: batch index {idx}: best-fit scale is zero (destination points coincide or are "
            "uncorrelated with the source); no invertible similarity transform exists"
        )
    scale = tr_ds / var_s
    lin = scale[:, None, None] * rot
    trans = mu_d - (lin @ mu_s[:, :, None])[:, :, 0]

    out = torch.zeros((b, 3, 3), dtype=torch.float64, device=src_t.device)
    out[:, :2, :2] = lin
    out[:, :2, 2] = trans
    out[:, 2, 2] = 1.0
    return out[0] if unbatched else out


def _as_homogeneous(M: Tensor, dtype: torch.dtype) -> Tensor:
    """(…, 2, 3) or (…, 3, 3) -> (…, 3, 3) in ``dtype``."""
    M = torch.as_tensor(M)
    if M.shape[-1] != 3 or M.shape[-2] not in (2, 3):
        raise ValueError(f"expected affine matrices of shape (..., 2, 3) or (..., 3, 3), got {tuple(M.shape)}")
    M = M.to(dtype)
    if M.shape[-2] == 2:
        last = torch.zeros(M.shape[:-2] + (1, 3), dtype=dtype, device=M.device)
        last[..., 0, 2] = 1.0
        M = torch.cat([M, last], dim=-2)
    return M


def transform_points(M: Tensor, pts: Tensor) -> Tensor:
    """Apply affine matrices ``M`` ((B, 3, 3) / (B, 2, 3), or unbatched) to points ``pts`` ((B, N, 2) or (N, 2)).

    Returns ``(M @ [x, y, 1]^T)[:2]`` for every point, in the promoted floating dtype of ``M`` and ``pts``
    (batch dimensions broadcast). Rows of a 3x3 ``M`` beyond the affine part are ignored (no projective divide).
    """
    M = torch.as_tensor(M)
    pts = torch.as_tensor(pts, device=M.device)
    if pts.shape[-1] != 2:
        raise ValueError(f"transform_points: expected points of shape (..., N, 2), got {tuple(pts.shape)}")
    dtype = torch.promote_types(M.dtype, pts.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    A = _as_homogeneous(M, dtype)[..., :2, :]
    pts = pts.to(dtype)
    return pts @ A[..., :2, :2].transpose(-1, -2) + A[..., None, :2, 2]


def warp_affine(images: Tensor, M: Tensor, out_size: tuple[int, int], border_value: float = 0.0) -> Tensor:
    """Batched equivalent of ``cv2.warpAffine(img, M[:2], (out_w, out_h), flags=INTER_LINEAR,
    borderMode=BORDER_CONSTANT, borderValue=border_value)``.

    ``images``: (B, C, H, W) floating or uint8 (uint8 is interpolated in float32, then rounded half up and
    clamped back to uint8). ``M``: (B, 2, 3) or (B, 3, 3) forward matrices source -> destination, exactly like
    cv2's ``M`` (a single (2, 3)/(3, 3) matrix or a batch of 1 is broadcast). ``out_size`` is ``(out_h, out_w)``
    (note: cv2's ``dsize`` is ``(w, h)``). Returns (B, C, out_h, out_w) in the input dtype.

    Convention (cv2's): destination pixel centre ``(u, v)`` (integers) samples the source bilinearly at
    ``M^-1 (u, v, 1)``, source pixel centres at integer coordinates, pixels outside the source replaced by
    ``border_value``. Implemented with ``grid_sample(align_corners=False)`` using ``x_n = (2 x + 1) / W - 1``;
    the sampling grid is computed in float64 (except for half-precision / MPS inputs) to keep integer shifts
    exact up to rounding.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(
            f"warp_affine: images must be a (B, C, H, W) tensor, got {type(images).__name__} "
            f"{tuple(getattr(images, 'shape', ()))}"
        )
    out_h, out_w = _size_hw(out_size)
    b, c, h, w = images.shape
    is_uint8 = images.dtype == torch.uint8
    if is_uint8:
        work_dtype = torch.float32
    elif images.dtype.is_floating_point:
        work_dtype = images.dtype
    else:
        raise TypeError(f"warp_affine: images must be uint8 or floating point, got {images.dtype}")
    device = images.device
    grid_dtype = torch.float32 if device.type == "mps" else torch.float64

    M = torch.as_tensor(M)
    # Tiny 3x3 algebra: done in float64 on the CPU, only the sampling grid lives on the images' device.
    Mh = _as_homogeneous(M.detach().to("cpu"), torch.float64)
    if Mh.dim() == 2:
        Mh = Mh.unsqueeze(0)
    if Mh.dim() != 3 or Mh.shape[0] not in (1, b):
        raise ValueError(f"warp_affine: {b} images but matrices of shape {tuple(M.shape)}")
    lin = Mh[:, :2, :2]
    det = torch.linalg.det(lin)
    bad = ~torch.isfinite(Mh).all(dim=(1, 2)) | (det.abs() <= 1e-300)
    if bool(bad.any()):
        idx = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"warp_affine: matrix at batch index {idx} is singular or non-finite")
    inv = torch.linalg.inv(Mh)[:, :2, :].to(dtype=grid_dtype).to(device)  # dst -> src, (B', 2, 3)

    vs = torch.arange(out_h, dtype=grid_dtype, device=device)
    us = torch.arange(out_w, dtype=grid_dtype, device=device)
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    dst_pts = torch.stack([uu, vv], dim=-1).reshape(1, out_h * out_w, 2)
    src_pts = transform_points(inv, dst_pts)  # (B', out_h*out_w, 2), pixel-centre coords
    grid = (2.0 * src_pts + 1.0) / torch.tensor([w, h], dtype=grid_dtype, device=device) - 1.0
    grid = grid.reshape(-1, out_h, out_w, 2).to(work_dtype)
    if grid.shape[0] != b:
        grid = grid.expand(b, -1, -1, -1)

    x = images.to(work_dtype)
    bv = float(border_value)
    if bv != 0.0:
        # cv2 BORDER_CONSTANT: outside taps take the border value; bilinear weights sum to 1, so
        # sum w_i p_i (p_i = bv outside) = sample(img - bv, zero padding) + bv.
        out = F.grid_sample(x - bv, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bv
    else:
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if is_uint8:
        out = torch.floor(out + 0.5).clamp_(0, 255).to(torch.uint8)
    return out


def _landmarks_tensor(landmarks, batch: int) -> Tensor:
    if isinstance(landmarks, Tensor):
        lm = landmarks.detach().to("cpu", torch.float64)
    else:
        lm = torch.as_tensor(np.asarray(landmarks, dtype=np.float64))
    if lm.dim() == 2:
        lm = lm.unsqueeze(0)
    if lm.shape[1:] != (5, 2) or lm.shape[0] != batch:
        raise ValueError(f"align_faces: expected landmarks of shape ({batch}, 5, 2), got {tuple(lm.shape)}")
    return lm


def _estimate(lm: Tensor, size) -> Tensor:
    template = torch.as_tensor(arcface_template(size), dtype=torch.float64)
    try:
        return umeyama_similarity(lm, template)
    except ValueError as exc:
        raise ValueError(f"align_faces: degenerate landmarks: {exc}") from None


def align_faces(
    images: Tensor | Sequence[np.ndarray],
    landmarks: Tensor | np.ndarray,
    size: int | tuple[int, int] = 112,
    *,
    return_matrices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Align faces to ``arcface_template(size)``: Umeyama similarity from the 5 landmarks, then ``warp_affine``.

    Equivalent to insightface ``face_align.norm_crop(img, landmark, image_size)`` for ``size == 112`` (for other
    sizes the template is scaled by ``size / 112``; see :func:`arcface_template`).

    ``images``: a (B, C, H, W) tensor (uint8 or float), or a sequence of B HxWxC uint8/float numpy arrays
    that may differ in size (loose crops); those are warped grouped by size and returned as one
    (B, C, S_h, S_w) tensor (uint8 for uint8 input). ``landmarks``: (B, 5, 2) in each image's own pixel
    coordinates (pixel centres at integers), order: left eye, right eye, nose, left / right mouth corner.
    With ``return_matrices=True`` also returns the (B, 3, 3) float64 forward matrices (image -> aligned).
    Degenerate landmarks raise ``ValueError`` naming the face's batch index.
    """
    out_hw = _size_hw(size)
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"align_faces: expected images (B, C, H, W), got {tuple(images.shape)}")
        lm = _landmarks_tensor(landmarks, images.shape[0])
        M = _estimate(lm, out_hw)
        out = warp_affine(images, M.to(images.device), out_hw)
        return (out, M) if return_matrices else out

    imgs = list(images)
    if not imgs:
        raise ValueError("align_faces: no images")
    arrs = []
    for i, im in enumerate(imgs):
        a = np.asarray(im)
        if a.ndim != 3:
            raise ValueError(f"align_faces: image {i} must be HxWxC, got shape {a.shape}")
        arrs.append(a)
    channels = {a.shape[2] for a in arrs}
    dtypes = {a.dtype for a in arrs}
    if len(channels) != 1 or len(dtypes) != 1:
        raise ValueError(f"align_faces: images must share channel count and dtype, got {channels}, {dtypes}")
    lm = _landmarks_tensor(landmarks, len(arrs))
    M = _estimate(lm, out_hw)

    first = torch.from_numpy(np.ascontiguousarray(arrs[0]))
    out = torch.empty((len(arrs), arrs[0].shape[2]) + out_hw, dtype=first.dtype)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arrs):
        groups.setdefault(a.shape[:2], []).append(i)
    for idx in groups.values():
        batch = torch.from_numpy(np.stack([arrs[i] for i in idx])).permute(0, 3, 1, 2)
        out[idx] = warp_affine(batch, M[idx], out_hw)
    return (out, M) if return_matrices else out
