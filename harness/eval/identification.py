"""Chunked similarity search shared by the identification evaluators (IJB-S, TinyFace, IJB-B/C 1:N).

Real galleries are large (TinyFace: 3,728 probes x 157,871 gallery images), so scores are computed in blocks of
probes x gallery with bounded memory, keeping only what each metric needs: the top-k gallery entries per probe
(``chunked_topk``) and, for open-set metrics, the score of a designated "mate" column per probe
(``gather_scores``). Inputs are float32 feature matrices; callers normalise them as their protocol says.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def chunked_topk(
    probe: np.ndarray,
    gallery: np.ndarray,
    k: int,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    seed_cols: int = 2048,
    *,
    ties: str = "low_index_first",
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
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

    In float32 with no two gallery rows equal (checked on two columns first, then :func:`unique_rows` only if two
    rows agree there), the same selection runs on cache-sized blocks scored by ``torch.mm``, one thread per core
    (:func:`_topk_float32`; TinyFace scale: same top-20 indices and scores as NumPy's product, bit for bit, in
    about 60 % of the CPU time). Scores of other shapes may differ from NumPy's ``@`` in the last bit (another
    kernel); the tie rule above is unchanged, and duplicate rows never reach that path.
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
    sign = 1 if ties == "low_index_first" else -1
    if dtype == np.float32 and not _may_have_duplicates(gallery):
        return _topk_float32(probe, gallery, k, sign, seed_cols, max_bytes)
    first, inverse = unique_rows(gallery)
    dedup = first.size < n_g
    if dedup:  # one score per distinct row, copied to its duplicates: whole gallery rows per probe block
        distinct = gallery[first]
        gb = n_g
        pb = min(n_p, max(1, max_bytes // (dtype.itemsize * (n_g + first.size))))
    else:
        pb, gb = _blocks(n_p, n_g, max_bytes, dtype.itemsize)
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
            best_s, best_i = _merge_block(best_s, best_i, s, g0, k, sign, seed_cols)
        out_s[p0:p1], out_i[p0:p1] = best_s, best_i
    return out_s, out_i


def _merge_block(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, g0: int, k: int, sign: int, seed_cols: int):
    """Running top-k of a probe block (``best_s`` descending, ``best_i``) merged with the score block ``s`` of gallery
    columns ``g0 ...``: only entries ``>=`` each row's current k-th best (all members of a tie there) are gathered,
    then one ``lexsort`` (row, score descending, gallery index by the tie order ``sign``)."""
    n = s.shape[0]
    if best_s.shape[1] < k:
        c = min(s.shape[1], max(k, seed_cols))
        thr = np.partition(s[:, :c], c - k, axis=1)[:, c - k] if k <= c else np.full(n, -np.inf, s.dtype)
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
    return all_s[sel].reshape(n, kk), all_i[sel].reshape(n, kk)


def _may_have_duplicates(x: np.ndarray) -> bool:
    """False only if no two rows of ``x`` are equal (``-0.0`` read as ``0.0``), decided on two columns: distinct
    (first, middle) column pairs mean distinct rows. True (then :func:`unique_rows` decides) if two rows agree there."""
    if x.shape[0] < 2 or x.shape[1] == 0:
        return x.shape[0] >= 2
    cols = np.ascontiguousarray(x[:, [0, x.shape[1] // 2]], dtype=np.float32) + np.float32(0)  # -0.0 -> 0.0
    key = np.sort(cols.view(np.uint64).reshape(-1))
    return bool((key[1:] == key[:-1]).any())


#: ``_topk_float32`` blocks: at most probes x gallery columns per score block (1024 x 2048 float32 = 8 MiB; the
#: least CPU of the shapes measured on the 2-core VM, 256..1024 x 1024..4096), and how many blocks' candidates are
#: merged at once
_PROBE_BLOCK, _GALLERY_BLOCK, _MERGE_EVERY = 1024, 2048, 4


def _merge_found(best_s: np.ndarray, best_i: np.ndarray, found: list, k: int, sign: int):
    """Full running top-k lists (n, k) merged with candidate entries ``found`` (rows, gallery indices, scores): only
    the rows with candidates are re-sorted (row, score descending, gallery index by the tie order ``sign``)."""
    rows = np.concatenate([f[0] for f in found])
    idx = np.concatenate([f[1] for f in found])
    val = np.concatenate([f[2] for f in found])
    hit = np.unique(rows)
    h = hit.shape[0]
    all_r = np.concatenate([np.repeat(np.arange(h), k), np.searchsorted(hit, rows)])
    all_s = np.concatenate([best_s[hit].reshape(-1), val])
    all_i = np.concatenate([best_i[hit].reshape(-1), idx])
    order = np.lexsort((sign * all_i, -all_s, all_r))
    cnt = np.bincount(all_r, minlength=h)
    sel = order[((np.cumsum(cnt) - cnt)[:, None] + np.arange(k)).reshape(-1)]
    best_s[hit] = all_s[sel].reshape(h, k)
    best_i[hit] = all_i[sel].reshape(h, k)
    return best_s, best_i


def _topk_float32(probe: np.ndarray, gallery: np.ndarray, k: int, sign: int, seed_cols: int, max_bytes: int):
    """:func:`chunked_topk` without duplicate gallery rows, float32: ``torch.mm`` on cache-sized score blocks (each
    block scored and selected while it is in cache), probe blocks shared among ``torch.get_num_threads()`` threads,
    each running single-threaded kernels (the selection runs in parallel with the other thread's products).
    Memory: one score block per thread (all of them within ``max_bytes``) plus the running top-k."""
    import torch

    n_p, n_g = probe.shape[0], gallery.shape[0]
    out_s = np.empty((n_p, k), np.float32)
    out_i = np.empty((n_p, k), np.int64)
    if n_p == 0:
        return out_s, out_i
    tp, tg = torch.from_numpy(probe), torch.from_numpy(gallery)
    n_threads = max(1, min(torch.get_num_threads(), n_p))
    budget = max(1, max_bytes // (4 * n_threads))  # scores per thread's block
    # probe blocks of at most _PROBE_BLOCK rows, as many per thread (balanced: TinyFace's 3,728 -> 4 x 932)
    per_thread = -(-n_p // n_threads)
    pb = min(-(-per_thread // -(-per_thread // _PROBE_BLOCK)), budget)
    gb = min(_GALLERY_BLOCK, n_g, max(1, budget // pb))
    starts = list(range(0, n_p, pb))

    def work(mine: list[int]) -> None:
        flat = torch.empty(pb * gb, dtype=torch.float32)
        flat_np = flat.numpy()
        for p0 in mine:
            p1 = min(n_p, p0 + pb)
            n = p1 - p0
            best_s = np.empty((n, 0), np.float32)
            best_i = np.empty((n, 0), np.int64)
            found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, gallery columns, scores)
            for b, g0 in enumerate(range(0, n_g, gb)):
                g1 = min(n_g, g0 + gb)
                m = g1 - g0
                torch.mm(tp[p0:p1], tg[g0:g1].T, out=flat[: n * m].view(n, m))
                block = flat_np[: n * m].reshape(n, m)
                if best_s.shape[1] < k:
                    best_s, best_i = _merge_block(best_s, best_i, block, g0, k, sign, seed_cols)
                    thr = best_s[:, k - 1] if best_s.shape[1] == k else None  # a view: follows the merges
                    continue
                # entries reaching each row's k-th best (ties included), gathered while the block is in cache and
                # merged every _MERGE_EVERY blocks (a k-th best that is a few blocks old only lets more through)
                rows, cols = np.nonzero(block >= thr[:, None])
                if rows.size:
                    found.append((rows, cols + g0, block[rows, cols]))
                if found and (b % _MERGE_EVERY == 0 or g1 == n_g):
                    best_s, best_i = _merge_found(best_s, best_i, found, k, sign)
                    found = []
            out_s[p0:p1], out_i[p0:p1] = best_s, best_i

    if n_threads == 1:
        work(starts)
        return out_s, out_i
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_threads - 1) as pool:
            jobs = [pool.submit(work, starts[t::n_threads]) for t in range(1, n_threads)]
            work(starts[0::n_threads])
            for j in jobs:
                j.result()
    finally:
        torch.set_num_threads(saved)
    return out_s, out_i


def gather_scores(probe: np.ndarray, gallery: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Score of each probe row with one gallery row ``columns[i]`` (``-1``: no such column -> NaN)."""
    columns = np.asarray(columns)
    out = np.full(len(probe), np.nan, dtype=np.float32)
    has = columns >= 0
    if has.any():
        out[has] = np.einsum(
            "ij,ij->i", np.asarray(probe, np.float32)[has], np.asarray(gallery, np.float32)[columns[has]]
        )
    return out


def l2_normalize(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Row-wise L2 normalisation; ``eps`` is added to the norm (AdaFace's ``average_fuse`` uses 1e-8)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / (norm + eps) if eps else x / np.where(norm == 0, 1, norm)
