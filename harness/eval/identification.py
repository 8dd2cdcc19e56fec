"""Chunked similarity search shared by the identification evaluators (IJB-S, TinyFace, IJB-B/C 1:N).

Real galleries are large (TinyFace: 3,728 probes x 157,871 gallery images), so scores are computed in blocks of
probes x gallery with bounded memory, keeping only what each metric needs: the top-k gallery entries per probe
(``chunked_topk``) and, for open-set metrics, the score of a designated "mate" column per probe
(``gather_scores``). Inputs are float32 feature matrices; callers normalise them as their protocol says.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BLOCK_BYTES = 256 << 20


def _blocks(n_probe: int, n_gallery: int, max_bytes: int) -> tuple[int, int]:
    """Probe and gallery block sizes whose float32 score block fits in ``max_bytes``."""
    g = min(n_gallery, max(1, max_bytes // (4 * max(1, min(n_probe, 1024)))))
    p = min(n_probe, max(1, max_bytes // (4 * g)))
    return p, g


def chunked_topk(probe: np.ndarray, gallery: np.ndarray, k: int, max_bytes: int = DEFAULT_BLOCK_BYTES, seed_cols: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest inner products of each probe row with the gallery rows, in descending order.

    Returns ``(scores (P, k) float32, indices (P, k) int64)``. Ties keep the lower gallery index first (a stable
    order, documented because published code differs here and only exact ties are affected). Memory is bounded by
    ``max_bytes`` for the score block plus O(P k) for the running top-k.

    Selection without a full ``argpartition`` (which costs more than the matrix product at TinyFace scale, and
    keeps arbitrary members of a tie that straddles position k): each row's current k-th best score is a threshold;
    only block entries ``>=`` it are gathered and merged with the running top-k by one ``lexsort`` (row, score
    descending, gallery index ascending). In the first block the threshold is the k-th best of its first
    ``seed_cols`` columns, never above the block's true k-th best, so no top-k entry is lost.
    """
    probe = np.ascontiguousarray(probe, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    n_p, n_g = len(probe), len(gallery)
    k = min(k, n_g)
    if k <= 0:
        return np.empty((n_p, 0), np.float32), np.empty((n_p, 0), np.int64)
    pb, gb = _blocks(n_p, n_g, max_bytes)
    out_s = np.empty((n_p, k), np.float32)
    out_i = np.empty((n_p, k), np.int64)
    for p0 in range(0, n_p, pb):
        p1 = min(n_p, p0 + pb)
        n = p1 - p0
        best_s = np.empty((n, 0), np.float32)
        best_i = np.empty((n, 0), np.int64)
        for g0 in range(0, n_g, gb):
            g1 = min(n_g, g0 + gb)
            s = probe[p0:p1] @ gallery[g0:g1].T
            if best_s.shape[1] < k:
                c = min(g1 - g0, max(k, seed_cols))
                thr = np.partition(s[:, :c], c - k, axis=1)[:, c - k] if k <= c else np.full(n, -np.inf, np.float32)
            else:
                thr = best_s[:, k - 1]
            rows, cols = np.nonzero(s >= thr[:, None])
            all_r = np.concatenate([np.repeat(np.arange(n), best_s.shape[1]), rows])
            all_s = np.concatenate([best_s.reshape(-1), s[rows, cols]])
            all_i = np.concatenate([best_i.reshape(-1), cols + g0])
            order = np.lexsort((all_i, -all_s, all_r))
            cnt = np.bincount(all_r, minlength=n)
            kk = min(k, int(cnt.min()))
            sel = order[((np.cumsum(cnt) - cnt)[:, None] + np.arange(kk)).reshape(-1)]
            best_s, best_i = all_s[sel].reshape(n, kk), all_i[sel].reshape(n, kk)
        out_s[p0:p1], out_i[p0:p1] = best_s, best_i
    return out_s, out_i


def gather_scores(probe: np.ndarray, gallery: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Score of each probe row with one gallery row ``columns[i]`` (``-1``: no such column -> NaN)."""
    columns = np.asarray(columns)
    out = np.full(len(probe), np.nan, dtype=np.float32)
    has = columns >= 0
    if has.any():
        out[has] = np.einsum("ij,ij->i", np.asarray(probe, np.float32)[has], np.asarray(gallery, np.float32)[columns[has]])
    return out


def l2_normalize(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Row-wise L2 normalisation; ``eps`` is added to the norm (AdaFace's ``average_fuse`` uses 1e-8)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / (norm + eps) if eps else x / np.where(norm == 0, 1, norm)
