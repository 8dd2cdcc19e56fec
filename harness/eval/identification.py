"""Chunked similarity search shared by the identification evaluators (IJB-S, TinyFace, IJB-B/C 1:N).

Real galleries are large (TinyFace: 3,728 probes x 157,871 gallery images), so scores are computed in blocks of
probes x gallery with bounded memory, keeping only what each metric needs: the top-k gallery entries per probe
(``chunked_topk``) and, for open-set metrics, the score of a designated "mate" column per probe
(``gather_scores``). Inputs are float32 feature matrices; callers normalise them as their protocol says.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BLOCK_BYTES = 256 << 20


TIES = ("low_index_first", "high_index_first")


def _blocks(n_probe: int, n_gallery: int, max_bytes: int, itemsize: int = 4) -> tuple[int, int]:
    """Probe and gallery block sizes whose score block (``itemsize`` bytes per score) fits in ``max_bytes``."""
    g = min(n_gallery, max(1, max_bytes // (itemsize * max(1, min(n_probe, 1024)))))
    p = min(n_probe, max(1, max_bytes // (itemsize * g)))
    return p, g


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: ``x[first]`` are the distinct rows of ``x`` (bitwise, with ``-0.0`` read as ``0.0``) in
    order of first appearance, and ``x[first][inverse] == x`` row for row."""
    x = np.ascontiguousarray(x) + 0  # -0.0 -> 0.0: equal values, equal products
    if x.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # renumber by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order].astype(np.int64), rank[inverse.reshape(-1)].astype(np.int64)


def chunked_topk(probe: np.ndarray, gallery: np.ndarray, k: int, max_bytes: int = DEFAULT_BLOCK_BYTES, seed_cols: int = 2048,
                 *, ties: str = "low_index_first", dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest inner products of each probe row with the gallery rows, in descending order.

    Returns ``(scores (P, k) dtype, indices (P, k) int64)``; scores are ``probe @ gallery.T`` computed in ``dtype``
    (float32 by default; float64 where a protocol's published code scores in float64).

    Ties (exactly equal scores) are ordered by ``ties``: ``"low_index_first"`` (a stable descending sort, e.g.
    ``np.argsort(-s, kind="stable")``) or ``"high_index_first"`` (the reverse of a stable ascending sort,
    ``np.argsort(s, kind="stable")[::-1]``, the order of AdaFace's / PFE's ``DIR_FAR`` and insightface's
    ``evaluation_1N``). Bitwise identical gallery rows tie exactly: each distinct row is scored once and its score
    copied to its duplicates, so a matrix-product kernel that rounds columns differently cannot split them.

    Memory is bounded by ``max_bytes`` for the score block plus O(P k) for the running top-k (with duplicate gallery
    rows: the scores of a probe block against the distinct rows, then against all rows).

    Selection without a full ``argpartition`` (which costs more than the matrix product at TinyFace scale, and
    keeps arbitrary members of a tie that straddles position k): each row's current k-th best score is a threshold;
    only block entries ``>=`` it (every member of a tie at the threshold) are gathered and merged with the running
    top-k by one ``lexsort`` (row, score descending, gallery index by ``ties``). In the first block the threshold is
    the k-th best of its first ``seed_cols`` columns, never above the block's true k-th best, so no top-k entry is
    lost.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    dtype = np.dtype(dtype)
    probe = np.ascontiguousarray(probe, dtype=dtype)
    gallery = np.ascontiguousarray(gallery, dtype=dtype)
    n_p, n_g = len(probe), len(gallery)
    k = min(k, n_g)
    if k <= 0:
        return np.empty((n_p, 0), dtype), np.empty((n_p, 0), np.int64)
    first, inverse = unique_rows(gallery)
    dedup = first.size < n_g
    if dedup:  # one score per distinct row, copied to its duplicates: whole gallery rows per probe block
        distinct = gallery[first]
        gb = n_g
        pb = min(n_p, max(1, max_bytes // (dtype.itemsize * (n_g + first.size))))
    else:
        pb, gb = _blocks(n_p, n_g, max_bytes, dtype.itemsize)
    sign = 1 if ties == "low_index_first" else -1
    out_s = np.empty((n_p, k), dtype)
    out_i = np.empty((n_p, k), np.int64)
    for p0 in range(0, n_p, pb):
        p1 = min(n_p, p0 + pb)
        n = p1 - p0
        best_s = np.empty((n, 0), dtype)
        best_i = np.empty((n, 0), np.int64)
        for g0 in range(0, n_g, gb):
            g1 = min(n_g, g0 + gb)
            s = (probe[p0:p1] @ distinct.T)[:, inverse] if dedup else probe[p0:p1] @ gallery[g0:g1].T
            if best_s.shape[1] < k:
                c = min(g1 - g0, max(k, seed_cols))
                thr = np.partition(s[:, :c], c - k, axis=1)[:, c - k] if k <= c else np.full(n, -np.inf, dtype)
            else:
                thr = best_s[:, k - 1]
            rows, cols = np.nonzero(s >= thr[:, None])
            all_r = np.concatenate([np.repeat(np.arange(n), best_s.shape[1]), rows])
            all_s = np.concatenate([best_s.reshape(-1), s[rows, cols]])
            all_i = np.concatenate([best_i.reshape(-1), cols + g0])
            order = np.lexsort((sign * all_i, -all_s, all_r))
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
