"""Chunked top-k search equals the dense computation, with bounded blocks and a stable tie order."""

from __future__ import annotations

import numpy as np
import pytest

from harness.eval.identification import chunked_topk, gather_scores, l2_normalize


@pytest.mark.parametrize("max_bytes", [64, 4096, 1 << 30])
def test_chunked_topk_matches_dense_sort(max_bytes):
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(37, 8)).astype(np.float32)
    gallery = rng.normal(size=(203, 8)).astype(np.float32)
    gallery = l2_normalize(gallery)
    gallery[50] = gallery[10]  # exact ties: the lower index must come first
    probe[3] = gallery[10]  # its best match (cosine 1) is tied between 10 and 50
    s, i = chunked_topk(probe, gallery, 5, max_bytes=max_bytes)
    dense = probe @ gallery.T
    for p in range(len(probe)):
        order = sorted(range(len(gallery)), key=lambda g: (-dense[p, g], g))[:5]
        assert i[p].tolist() == order
        np.testing.assert_allclose(s[p], dense[p, order], rtol=1e-5, atol=1e-6)
    assert i[3, 0] == 10 and i[3, 1] == 50


def test_topk_larger_than_gallery_and_gather():
    probe = np.eye(3, dtype=np.float32)
    gallery = np.array([[1, 0, 0], [0, 2, 0]], np.float32)
    s, i = chunked_topk(probe, gallery, 10)
    assert s.shape == (3, 2) and i[1].tolist() == [1, 0]
    got = gather_scores(probe, gallery, np.array([0, 1, -1]))
    assert got[0] == 1 and got[1] == 2 and np.isnan(got[2])
    n = l2_normalize(np.array([[3, 4], [0, 0]], np.float32))
    assert np.allclose(n, [[0.6, 0.8], [0, 0]])


def test_topk_keeps_the_lowest_indices_of_a_tie_straddling_k():
    """Integer scores: every k-boundary is a large tie; the lower gallery indices must be kept, in order."""
    rng = np.random.default_rng(1)
    probe = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 25)]
    gallery = rng.integers(0, 3, (3000, 6)).astype(np.float32)
    for max_bytes in (4 * 25 * 7, 1 << 30):
        s, i = chunked_topk(probe, gallery, 20, max_bytes=max_bytes)
        dense = probe @ gallery.T
        for p in range(len(probe)):
            want = np.lexsort((np.arange(3000), -dense[p]))[:20]
            assert i[p].tolist() == want.tolist()
