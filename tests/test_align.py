"""Tests for harness.data.align: Umeyama similarity (no reflection), cv2-convention warp, end-to-end alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.data.align import (
    ARCFACE_TEMPLATE_112,
    align_faces,
    arcface_template,
    transform_points,
    umeyama_similarity,
    warp_affine,
)


def _similarity(scale, angle, tx, ty):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0.0, 0.0, 1.0]])


def _apply(M, pts):
    return pts @ M[:2, :2].T + M[:2, 2]


def _lstsq_similarity(src, dst):
    """Independent solution: a similarity without reflection is linear in (a, b, tx, ty): [a -b; b a] x + t."""
    n = len(src)
    A = np.zeros((2 * n, 4))
    A[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], axis=1)
    A[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], axis=1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def _reference_warp(img, M, out_hw, border=0.0):
    """Direct per-pixel cv2 INTER_LINEAR / BORDER_CONSTANT: dst(u, v) = bilinear(src, M^-1 (u, v)), centres at ints."""
    c, h, w = img.shape
    Minv = np.linalg.inv(M)
    out = np.zeros((c, *out_hw))
    for v in range(out_hw[0]):
        for u in range(out_hw[1]):
            x, y, _ = Minv @ np.array([u, v, 1.0])
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            acc = np.zeros(c)
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    yy, xx = y0 + dy, x0 + dx
                    val = img[:, yy, xx] if (0 <= yy < h and 0 <= xx < w) else border
                    acc += wy * wx * val
            out[:, v, u] = acc
    return out


# ----------------------------------------------------------------------------------------------- template


def test_template_scaling():
    np.testing.assert_array_equal(arcface_template(), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2.0)
    t = arcface_template((64, 96))  # (h, w)
    np.testing.assert_allclose(t[:, 0], ARCFACE_TEMPLATE_112[:, 0] * 96 / 112)
    np.testing.assert_allclose(t[:, 1], ARCFACE_TEMPLATE_112[:, 1] * 64 / 112)
    assert np.array_equal(ARCFACE_TEMPLATE_112[0], [38.2946, 51.6963])


# ----------------------------------------------------------------------------------------------- umeyama


def test_umeyama_recovers_known_similarity_batched():
    rng = np.random.default_rng(0)
    angles = list(rng.uniform(-math.pi, math.pi, 40)) + [math.pi, -math.pi, math.pi - 1e-9, -math.pi + 1e-9, 0.0]
    b = len(angles)
    scales = rng.uniform(0.5, 2.0, b)
    trans = rng.uniform(-100, 100, (b, 2))
    src = rng.uniform(0, 128, (b, 5, 2))
    truth = np.stack([_similarity(s, a, *t) for s, a, t in zip(scales, angles, trans)])
    dst = np.stack([_apply(M, p) for M, p in zip(truth, src)])

    M = umeyama_similarity(torch.from_numpy(src), torch.from_numpy(dst))
    assert M.shape == (b, 3, 3) and M.dtype == torch.float64
    np.testing.assert_allclose(M.numpy(), truth, rtol=0, atol=1e-9)

    # unbatched, and float32 input still gives a float64 matrix
    M1 = umeyama_similarity(torch.from_numpy(src[3]), torch.from_numpy(dst[3]))
    assert M1.shape == (3, 3)
    np.testing.assert_allclose(M1.numpy(), truth[3], atol=1e-9)
    assert umeyama_similarity(torch.from_numpy(src[3]).float(), torch.from_numpy(dst[3])).dtype == torch.float64


def test_umeyama_broadcasts_template_and_maps_landmarks_onto_it():
    rng = np.random.default_rng(1)
    template = torch.from_numpy(arcface_template(112))
    truth = np.stack([_similarity(rng.uniform(0.5, 2), rng.uniform(-3, 3), *rng.uniform(-20, 20, 2)) for _ in range(6)])
    lm = np.stack([_apply(np.linalg.inv(M), ARCFACE_TEMPLATE_112) for M in truth])  # template = M(lm)
    M = umeyama_similarity(torch.from_numpy(lm), template)
    np.testing.assert_allclose(M.numpy(), truth, atol=1e-9)
    np.testing.assert_allclose(
        transform_points(M, torch.from_numpy(lm)).numpy(), np.broadcast_to(ARCFACE_TEMPLATE_112, (6, 5, 2)), atol=1e-9
    )


def test_umeyama_matches_independent_lstsq_for_noisy_points():
    rng = np.random.default_rng(2)
    b = 32
    src = rng.uniform(0, 200, (b, 5, 2))
    dst = np.stack(
        [
            _apply(_similarity(rng.uniform(0.5, 2), rng.uniform(-math.pi, math.pi), *rng.uniform(-50, 50, 2)), p)
            for p in src
        ]
    ) + rng.normal(0, 3.0, (b, 5, 2))
    M = umeyama_similarity(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    ref = np.stack([_lstsq_similarity(s, d) for s, d in zip(src, dst)])
    np.testing.assert_allclose(M, ref, rtol=0, atol=1e-9)


def test_umeyama_never_reflects():
    src = ARCFACE_TEMPLATE_112.copy()
    dst = src.copy()
    dst[:, 0] = 112.0 - dst[:, 0]  # mirror image: a reflection would fit exactly
    dst = _apply(_similarity(1.3, 0.4, 5.0, -7.0), dst)
    M = umeyama_similarity(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    assert np.linalg.det(M[:2, :2]) > 0
    np.testing.assert_allclose(M[0, 0], M[1, 1], atol=1e-12)  # [a -b; b a]: rotation times uniform scale
    np.testing.assert_allclose(M[0, 1], -M[1, 0], atol=1e-12)

    # Best fit *with* reflection allowed (orthogonal Procrustes without the sign correction) is exact here ...
    sc, dc = src - src.mean(0), dst - dst.mean(0)
    U, S, Vt = np.linalg.svd(dc.T @ sc)
    Q = U @ Vt
    assert np.linalg.det(Q) < 0
    refl = (S.sum() / (sc**2).sum()) * Q
    resid_refl = np.sum((sc @ refl.T - dc) ** 2)
    # ... while the rotation-only estimate must leave a larger residual, equal to the independent lstsq optimum.
    resid = np.sum((_apply(M, src) - dst) ** 2)
    assert resid_refl < 1e-12 and resid > 1.0
    np.testing.assert_allclose(M, _lstsq_similarity(src, dst), atol=1e-9)
    # closed-form best 2-D rotation angle for centred points: atan2(sum x cross y, sum x dot y)
    theta = math.atan2(np.sum(sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]), np.sum(sc * dc))
    np.testing.assert_allclose(math.atan2(M[1, 0], M[0, 0]), theta, atol=1e-12)


def test_umeyama_degenerate_raises_with_batch_index():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (4, 5, 2))
    src[2] = 37.123  # all points coincide
    with pytest.raises(ValueError, match="batch index 2"):
        umeyama_similarity(torch.from_numpy(src), torch.tensor(ARCFACE_TEMPLATE_112))
    dst = np.broadcast_to(ARCFACE_TEMPLATE_112, (4, 5, 2)).copy()
    src[2] = rng.uniform(0, 100, (5, 2))
    dst[1] = [10.0, 20.0]  # zero best-fit scale
    with pytest.raises(ValueError, match="batch index 1"):
        umeyama_similarity(torch.from_numpy(src), torch.from_numpy(dst))
    src[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="batch index 3"):
        umeyama_similarity(torch.from_numpy(src), torch.tensor(ARCFACE_TEMPLATE_112))


# ----------------------------------------------------------------------------------------------- warp


def test_warp_identity_returns_input():
    rng = np.random.default_rng(4)
    img8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 17, 23), dtype=np.uint8))
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    assert torch.equal(warp_affine(img8, eye, (17, 23)), img8)
    imgf = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 17, 23)))
    out = warp_affine(imgf, eye[:, :2], (17, 23))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), imgf.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(warp_affine(imgf.float(), eye, (17, 23)).numpy(), imgf.float().numpy(), atol=1e-5)


def test_warp_integer_translation_is_exact_shift():
    rng = np.random.default_rng(5)
    h, w, tx, ty = 20, 30, 3, -2
    img = rng.uniform(0, 1, (1, 2, h, w))
    M = torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty]])  # dst(x, y) = src(x - tx, y - ty)
    out = warp_affine(torch.from_numpy(img), M, (h, w)).numpy()
    expected = np.zeros_like(img)
    expected[:, :, : h + ty, tx:] = img[:, :, -ty:, : w - tx]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)

    img8 = (img * 255).round().astype(np.uint8)
    out8 = warp_affine(torch.from_numpy(img8), M, (h, w)).numpy()
    exp8 = np.zeros_like(img8)
    exp8[:, :, : h + ty, tx:] = img8[:, :, -ty:, : w - tx]
    np.testing.assert_array_equal(out8, exp8)


def test_warp_rotated_checkerboard_matches_per_pixel_reference():
    h, w = 40, 50  # non-square input and output catch h/w mix-ups
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // 5) + (xx // 5)) % 2).astype(np.float64)
    img = np.stack([board, 1.0 - 0.5 * board])
    M = _similarity(1.1, math.radians(30), 0.0, 0.0)
    M[:2, 2] = [17.0, 22.0] - M[:2, :2] @ [w / 2, h / 2] + [0.37, -0.21]
    out_hw = (45, 35)
    ref = _reference_warp(img, M, out_hw)
    out = warp_affine(torch.from_numpy(img)[None], torch.from_numpy(M)[None], out_hw).numpy()[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    assert (ref == 0).any() and (ref > 0).any()  # border region is exercised
    out32 = warp_affine(torch.from_numpy(img).float()[None], torch.from_numpy(M)[None], out_hw).numpy()[0]
    np.testing.assert_allclose(out32, ref, rtol=0, atol=1e-4)

    # constant non-zero border, and a batch where two images share one broadcast matrix
    ref_b = _reference_warp(img, M, out_hw, border=0.75)
    out_b = warp_affine(torch.from_numpy(img)[None].repeat(2, 1, 1, 1), torch.from_numpy(M), out_hw, 0.75).numpy()
    np.testing.assert_allclose(out_b[1], ref_b, rtol=0, atol=1e-4)

    img8 = (img * 200).astype(np.uint8)
    out8 = warp_affine(torch.from_numpy(img8)[None], torch.from_numpy(M)[None], out_hw).numpy()[0]
    ref8 = _reference_warp(img8.astype(np.float64), M, out_hw)
    assert out8.dtype == np.uint8
    assert np.abs(out8.astype(np.float64) - ref8).max() <= 0.5 + 1e-3


def test_warp_rejects_singular_matrix():
    with pytest.raises(ValueError, match="batch index 1"):
        warp_affine(torch.zeros(2, 1, 4, 4), torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[1.0, 2, 0], [2, 4, 0]]]), (4, 4))


# ----------------------------------------------------------------------------------------------- end to end


def _dot_image(h, w, pts, sigma=2.5, channels=3):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in pts:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat((img * 250.0)[:, :, None], channels, axis=2)


def _centroids(img_chw, expected, radius):
    """Intensity-weighted centroid of each dot, within a window of ``radius`` around its expected position."""
    a = np.asarray(img_chw, dtype=np.float64).mean(axis=0)
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    out = []
    for ex, ey in expected:
        win = (np.abs(xx - ex) <= radius) & (np.abs(yy - ey) <= radius)
        wgt = a * win
        out.append([(wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()])
    return np.array(out)


@pytest.mark.parametrize("size", [112, 48])
def test_align_faces_puts_dots_on_template(size):
    # A 128x128 loose crop whose landmarks are the template mapped through a known similarity.
    T = _similarity(1.05, math.radians(12), 10.0, 2.0)
    lm = _apply(T, ARCFACE_TEMPLATE_112)
    img = _dot_image(128, 128, lm)
    tmpl = arcface_template(size)
    radius = 4.5 * 2.5 * (size / 112) / 1.05

    out = align_faces(torch.from_numpy(img).permute(2, 0, 1)[None].float(), torch.from_numpy(lm)[None], size)
    assert out.shape == (1, 3, size, size) and out.dtype == torch.float32
    np.testing.assert_allclose(_centroids(out[0].numpy(), tmpl, radius), tmpl, rtol=0, atol=0.25)

    # List of differently sized uint8 HxWx3 crops -> one (B, 3, S, S) uint8 tensor.
    T2 = _similarity(1.3, math.radians(-25), -5.0, 15.0)
    lm2 = _apply(T2, ARCFACE_TEMPLATE_112)
    imgs = [img.round().astype(np.uint8), _dot_image(150, 170, lm2).round().astype(np.uint8)]
    out8, M = align_faces(imgs, np.stack([lm, lm2]), size, return_matrices=True)
    assert out8.shape == (2, 3, size, size) and out8.dtype == torch.uint8
    np.testing.assert_allclose(
        transform_points(M, torch.from_numpy(np.stack([lm, lm2]))).numpy(), np.broadcast_to(tmpl, (2, 5, 2)), atol=1e-9
    )
    for k, s in enumerate([1.05, 1.3]):
        got = _centroids(out8[k].numpy(), tmpl, 4.5 * 2.5 * (size / 112) / s)
        np.testing.assert_allclose(got, tmpl, rtol=0, atol=0.25)


def test_align_faces_degenerate_landmarks_raise():
    imgs = torch.zeros(3, 3, 64, 64, dtype=torch.uint8)
    lm = np.broadcast_to(ARCFACE_TEMPLATE_112 / 2, (3, 5, 2)).copy()
    lm[1] = [30.0, 30.0]
    with pytest.raises(ValueError, match="batch index 1"):
        align_faces(imgs, torch.from_numpy(lm))
    with pytest.raises(ValueError, match="landmarks"):
        align_faces(imgs, torch.from_numpy(lm[:, :4]))
