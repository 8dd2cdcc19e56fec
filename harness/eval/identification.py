"""Chunked similarity search shared by the identification evaluators (IJB-S, TinyFace, IJB-B/C 1:N).

Real galleries are large (TinyFace: 3,728 probes x 157,871 gallery images), so scores are computed in blocks of
probes x gallery with bounded memory, keeping only what each metric needs: the top-k gallery entries per probe
(``chunked_topk``) and, for open-set metrics, the score of a designated "mate" column per probe
(``gather_scores``). Inputs are float32 feature matrices; callers normalise them as their protocol says. Float32
top-k scores are the float32 values nearest the exact inner products (see :func:`chunked_topk`), so a result does
not depend on the machine's GEMM kernel.
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

    Returns ``(scores (P, k) dtype, indices (P, k) int64)``. Scores: in float32 (the default), the float32 value
    nearest each exact inner product of the float32 rows (float64 products, rounded once; the same on every CPU and
    BLAS, where a float32 GEMM's last bits depend on the kernel); in float64 (where a protocol's published code
    scores in float64), the float64 matrix product.

    Ties (exactly equal scores) are ordered by ``ties``: ``"low_index_first"`` (a stable descending sort, e.g.
    ``np.argsort(-s, kind="stable")``) or ``"high_index_first"`` (the reverse of a stable ascending sort,
    ``np.argsort(s, kind="stable")[::-1]``, the order of AdaFace's / PFE's ``DIR_FAR`` and insightface's
    ``evaluation_1N``). Bitwise identical gallery rows tie exactly: each distinct row is scored once and its score
    copied to its duplicates.

    Memory is bounded by ``max_bytes`` for the score block plus O(P k) for the running top-k (with duplicate gallery
    rows: the scores of a probe block against the distinct rows, then against all rows, and a float64 copy of the
    distinct rows).

    Selection without a full ``argpartition`` (which costs more than the matrix product at TinyFace scale, and
    keeps arbitrary members of a tie that straddles position k): each row's current k-th best score is a threshold;
    only block entries ``>=`` it (every member of a tie at the threshold) are gathered and merged with the running
    top-k by one ``lexsort`` (row, score descending, gallery index by ``ties``). In the first block the threshold is
    the k-th best of its first ``seed_cols`` columns, never above the block's true k-th best, so no top-k entry is
    lost.

    In float32 with no two gallery rows equal (checked on two columns first, then :func:`unique_rows` only if two
    rows agree there), the scores are searched in bfloat16 with a proven error bound and only the candidates that
    bound cannot rule out are scored exactly (:func:`_topk_float32`; TinyFace scale: 2.9 s on 2 cores against 5.6 s
    for a float32 GEMM search); other inputs take float64 product blocks (:func:`_topk_general`). Both give the same
    scores and order (up to float64 rounding of the inner products).
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
    return _topk_general(probe, gallery, k, sign, seed_cols, max_bytes)


def _product(probe: np.ndarray, gallery: np.ndarray, dtype) -> np.ndarray:
    """``probe @ gallery.T`` in the scores' definition: float64 as computed; float32 as the float32 value nearest the
    exact inner product (a float64 product of the float32 rows, rounded once), as :func:`_exact_scores` gives it."""
    if dtype == np.float32:
        return (probe.astype(np.float64) @ gallery.astype(np.float64, copy=False).T).astype(np.float32)
    return probe @ gallery.T


def _topk_general(probe: np.ndarray, gallery: np.ndarray, k: int, sign: int, seed_cols: int, max_bytes: int):
    """:func:`chunked_topk` on any gallery (duplicate rows included) and dtype: blocks of :func:`_product`."""
    dtype = probe.dtype
    n_p, n_g = len(probe), len(gallery)
    first, inverse = unique_rows(gallery)
    dedup = first.size < n_g
    itemsize = 8  # float64 products either way
    if dedup:  # one score per distinct row, copied to its duplicates: whole gallery rows per probe block
        distinct = gallery[first].astype(np.float64)  # converted once (float32 scores come from float64 products)
        gb = n_g
        pb = min(n_p, max(1, max_bytes // (itemsize * (n_g + first.size))))
    else:
        pb, gb = _blocks(n_p, n_g, max_bytes, itemsize)
    out_s = np.empty((n_p, k), dtype)
    out_i = np.empty((n_p, k), np.int64)
    for p0 in range(0, n_p, pb):
        p1 = min(n_p, p0 + pb)
        n = p1 - p0
        best_s = np.empty((n, 0), dtype)
        best_i = np.empty((n, 0), np.int64)
        for g0 in range(0, n_g, gb):
            g1 = min(n_g, g0 + gb)
            if dedup:
                s = _product(probe[p0:p1], distinct, dtype)[:, inverse]
            else:
                s = _product(probe[p0:p1], gallery[g0:g1], dtype)
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


#: unit roundoff of bfloat16 (8 significant bits, round to nearest)
_BF16_U = 2.0**-8


def _bf16_bounds(probe: np.ndarray, gallery: np.ndarray, p16, g16) -> tuple[np.ndarray, float]:
    """``(r, v)`` with ``|x - s| <= r[i] + v * |s|`` for every entry ``s`` of the bf16 product ``p16[i] . g16[j]``
    (fp32 accumulation, rounded to bf16) and the exact inner product ``x`` of the float32 rows, also covering the
    float32 rounding of the rescored ``x``.

    With ``a = a_hi + a_lo`` (``a_hi`` the bf16 row; ``a_lo`` exact in float32): ``x - a_hi . b_hi = a_lo . b_hi +
    a_hi . b_lo + a_lo . b_lo``, bounded by Cauchy-Schwarz with the actual residual norms (row ``i``, largest over
    the gallery); the fp32 accumulation of ``D`` terms adds at most ``gamma_D * sum |a_hi b_hi| <= gamma_D |a_hi|
    |b_hi|`` (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1); the final rounding to bf16 at
    most ``u |x_acc| <= u / (1 - u) |s|``; the rescoring's float32 rounding a half-ulp of ``|x| <= |a| |b|`` on each
    side of a comparison. Norms are computed in float32 and inflated by 1e-4 (their own rounding is below 1e-5); a
    tiny absolute term covers flushed subnormals."""
    import torch

    def norms(x: np.ndarray, x16) -> tuple[torch.Tensor, torch.Tensor]:
        hi = x16.to(torch.float32)
        return torch.linalg.vector_norm(hi, dim=1), torch.linalg.vector_norm(torch.from_numpy(x) - hi, dim=1)

    pa, pl = (t.numpy().astype(np.float64) * (1 + 1e-4) for t in norms(probe, p16))
    ga = gl = 0.0
    for s in range(0, gallery.shape[0], 8192):  # chunks: no float32 copy of the whole bf16 gallery
        a_, l_ = norms(gallery[s : s + 8192], g16[s : s + 8192])
        ga, gl = max(ga, float(a_.max()) * (1 + 1e-4)), max(gl, float(l_.max()) * (1 + 1e-4))
    d = probe.shape[1]
    gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
    r = (pl * ga + pa * gl + pl * gl) + (gamma + 2.0**-23) * (pa + pl) * (ga + gl)
    return r * (1 + 1e-9) + 1e-30 * d, _BF16_U / (1 - _BF16_U)


def _exact_scores(probe: np.ndarray, gallery: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``float32(probe[rows[i]] . gallery[cols[i]])`` from float64 products (exact) summed in float64: the float32
    score nearest the true inner product (up to float64 rounding), whatever the BLAS or the CPU. By chunks."""
    out = np.empty(rows.shape[0], np.float32)
    for s in range(0, rows.shape[0], 8192):
        e = min(rows.shape[0], s + 8192)
        a = probe[rows[s:e]].astype(np.float64)
        b = gallery[cols[s:e]].astype(np.float64)
        out[s:e] = np.einsum("ij,ij->i", a, b)
    return out


def _topk_float32(probe: np.ndarray, gallery: np.ndarray, k: int, sign: int, seed_cols: int, max_bytes: int):
    """:func:`chunked_topk` without duplicate gallery rows, float32: a bfloat16 prefilter with exact rescoring.

    The product is computed in bf16 (``torch.mm``; AVX-512 BF16 where the CPU has it: about 2.4x the float32 rate on
    the 2-core VM) on cache-sized blocks, probe blocks shared among ``torch.get_num_threads()`` threads each running
    single-threaded kernels. Every entry's distance to the exact inner product is bounded (:func:`_bf16_bounds`), so
    the k-th best exact score of a row is at least ``L`` = the k-th best bf16 score's lower bound, and only entries
    whose upper bound reaches ``L`` can be in the top k: those candidates are kept (ties included), rescored exactly
    (:func:`_exact_scores`) and ranked by (score descending, gallery index by the tie order ``sign``). The scores are
    the float32 values nearest the true inner products, the same on every machine. Memory: one score block per
    thread (all of them within ``max_bytes``), the bf16 copies (half the float32 size) and the candidates."""
    import torch

    n_p, n_g = probe.shape[0], gallery.shape[0]
    out_s = np.empty((n_p, k), np.float32)
    out_i = np.empty((n_p, k), np.int64)
    if n_p == 0:
        return out_s, out_i
    p16 = torch.from_numpy(probe).to(torch.bfloat16)
    g16 = torch.from_numpy(gallery).to(torch.bfloat16)
    r_bound, v = _bf16_bounds(probe, gallery, p16, g16)
    n_threads = max(1, min(torch.get_num_threads(), n_p))
    budget = max(1, max_bytes // (4 * n_threads))  # scores per thread's block
    # probe blocks of at most _PROBE_BLOCK rows, as many per thread (balanced: TinyFace's 3,728 -> 4 x 932)
    per_thread = -(-n_p // n_threads)
    pb = min(-(-per_thread // -(-per_thread // _PROBE_BLOCK)), budget)
    gb = min(_GALLERY_BLOCK, n_g, max(1, budget // pb))
    starts = list(range(0, n_p, pb))

    def floor_of(best: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Per row, the least bf16 score ``s`` whose upper bound ``s + r + v |s|`` reaches the lower bound
        ``best - r - v |best|`` of the k-th best exact score (``best``: the k-th best bf16 score)."""
        t = best.astype(np.float64) - r - v * np.abs(best) - r
        return np.where(t >= 0, t / (1 + v), t / (1 - v))

    def work(mine: list[int]) -> None:
        flat = torch.empty(pb * gb, dtype=torch.bfloat16)
        for p0 in mine:
            p1 = min(n_p, p0 + pb)
            n = p1 - p0
            r = r_bound[p0:p1]
            best_s = np.empty((n, 0), np.float32)  # running top-k of the bf16 scores (for the threshold)
            best_i = np.empty((n, 0), np.int64)
            cand: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, gallery columns, bf16 scores)
            found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for b, g0 in enumerate(range(0, n_g, gb)):
                g1 = min(n_g, g0 + gb)
                m = g1 - g0
                blk16 = flat[: n * m].view(n, m)
                torch.mm(p16[p0:p1], g16[g0:g1].T, out=blk16)
                block = blk16.to(torch.float32).numpy()
                if best_s.shape[1] < k:  # the first block(s): the running top-k starts here
                    best_s, best_i = _merge_block(best_s, best_i, block, g0, k, sign, seed_cols)
                    low = floor_of(best_s[:, -1], r) if best_s.shape[1] == k else np.full(n, -np.inf)
                    rows, cols = np.nonzero(block >= low[:, None])
                    cand.append((rows, cols + g0, block[rows, cols]))
                    continue
                thr = floor_of(best_s[:, k - 1], r)
                rows, cols = np.nonzero(block >= thr[:, None])
                if rows.size:
                    hit = (rows, cols + g0, block[rows, cols])
                    cand.append(hit)
                    found.append(hit)
                if found and (b % _MERGE_EVERY == 0 or g1 == n_g):
                    best_s, best_i = _merge_found(best_s, best_i, found, k, sign)
                    found = []
            rows = np.concatenate([c[0] for c in cand])
            cols = np.concatenate([c[1] for c in cand])
            vals = np.concatenate([c[2] for c in cand])
            keep = vals >= floor_of(best_s[:, k - 1], r)[rows]  # the final floor
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
            exact = _exact_scores(probe[p0:p1], gallery, rows, cols)
            if not (np.abs(exact.astype(np.float64) - vals) <= r[rows] + v * np.abs(vals)).all():
                # the bf16 kernel broke the error model on a candidate (never seen): redo this block exactly
                out_s[p0:p1], out_i[p0:p1] = _topk_general(probe[p0:p1], gallery, k, sign, seed_cols, max_bytes)
                continue
            order = np.lexsort((sign * cols, -exact, rows))
            cnt = np.bincount(rows, minlength=n)
            kk = min(k, int(cnt.min()))
            sel = order[((np.cumsum(cnt) - cnt)[:, None] + np.arange(kk)).reshape(-1)]
            out_s[p0:p1] = exact[sel].reshape(n, kk)
            out_i[p0:p1] = cols[sel].reshape(n, kk)

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
    """Score of each probe row with one gallery row ``columns[i]`` (``-1``: no such column -> NaN), float32, in the
    definition of :func:`chunked_topk`'s float32 scores (the float32 value nearest the exact inner product), so a
    pair has the same score here as in a top-k list."""
    columns = np.asarray(columns)
    out = np.full(len(probe), np.nan, dtype=np.float32)
    has = np.flatnonzero(columns >= 0)
    if has.size:
        out[has] = _exact_scores(
            np.asarray(probe, np.float32), np.asarray(gallery, np.float32), has, columns[has].astype(np.int64)
        )
    return out


def l2_normalize(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Row-wise L2 normalisation; ``eps`` is added to the norm (AdaFace's ``average_fuse`` uses 1e-8). By chunks of
    rows (the same arithmetic per row as on the whole matrix, without a matrix-sized temporary)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, np.float32)
    for s in range(0, x.shape[0], 8192):
        c = x[s : s + 8192]
        norm = np.linalg.norm(c, axis=1, keepdims=True)
        np.divide(c, (norm + eps) if eps else np.where(norm == 0, 1, norm), out=out[s : s + 8192])
    return out
