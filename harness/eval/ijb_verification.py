"""IJB-B / IJB-C 1:1 verification (TAR@FAR), reproducing insightface's evaluation to the last digit.

Sources (facts re-implemented, no code copied):

- insightface ``recognition/_evaluation_/ijb/ijb_11.py`` and ``recognition/arcface_torch/eval_ijbc.py``:
  image features are ``[f(orig) | f(flip)]`` split in half and **added** (not normalised first); optionally
  L2-normalised per image ("N0"; ``use_norm_score=True`` there means *keep* the norm, the default); multiplied by
  the detector faceness score ("D1", default on); pooled per template by ``image2template_feature`` (below); template
  vectors L2-normalised with ``sklearn.preprocessing.normalize``; pair score = ``np.sum(f1 * f2, -1)`` in float64
  over batches of 100k pairs; TAR@FAR from ``sklearn.metrics.roc_curve`` (see :mod:`harness.eval.roc`).
  Input scaling there is ``(x / 255 - 0.5) / 0.5`` on RGB aligned 112x112 crops.
- AdaFace ``validation_mixed/validate_IJB_BC.py``: models trained by AdaFace (and CFSM) take **BGR** input
  (``channel_order="BGR"``); AdaFace does not use faceness weighting (``faceness=False`` reproduces it).
- ``image2template_feature``: for each template id in ``np.unique`` order, its image rows in file order, grouped by
  media id ascending; a media with one image contributes that vector, a media with k > 1 images
  ``np.mean(rows, axis=0)`` (float32); the template vector is ``np.sum`` over its media vectors (float32), stored in
  a float64 matrix, then L2-normalised. NumPy's axis-0 sum/mean add rows sequentially; this module reproduces that
  order exactly with a vectorised rank-by-rank accumulation (``np.add.reduceat`` would not: it sums in another
  order), so template vectors are bit-identical to the per-template loop.
- ``template2id`` in insightface is a zero-initialised array, so a pair naming a template without images silently
  scores template row 0; here it raises :class:`~harness.errors.DataFormatError` naming the pair file and line.

Pair scoring has two paths (``exact`` argument):

- ``exact=True``: insightface's arithmetic, ``np.sum(f1 * f2, -1)`` over gathered float64 template rows in batches
  of 100k pairs. At IJB-C scale (15.7 M pairs x 512-d) this moves ~130 GB through memory: about a minute on 2 cores.
- ``exact=False`` (default): the same cosines as float64 matrix products, ``T[probe block] @ T[gallery].T`` by blocks
  of unique templates of the side with more templates, then a gather of the pairs' entries. Only the summation order
  of each 512-term dot product differs (BLAS vs. NumPy's pairwise sum), i.e. a few ulps (|diff| < 1e-15 for unit
  vectors); ``tests/test_ijb_verification.py`` checks scores within 1e-12 and TAR@FAR identical to the exact path.
  This is what meets the IJB-C budget (< 15 s end to end from features on 2 cores).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError
from harness.core.runtime import in_background
from harness.data.ijb import IJBMeta, check_pairs_known, loose_crop_path, meta_paths, read_ijb, read_ijb_deferred
from harness.eval.roc import (
    DEFAULT_FARS,
    auc_from_roc,
    check_labels,
    check_roc_inputs,
    far_key,
    roc_curve,
    roc_sorted,
    tar_at_far_from_roc,
)

__all__ = [
    "VerificationProtocol",
    "image_to_template_features",
    "pair_scores",
    "evaluate_verification",
    "IJBVerification",
    "BENCHMARK_NAMES",
]

BENCHMARK_NAMES = {"ijbb": "IJB-B", "ijbc": "IJB-C"}
NORMALIZATION = "(x/255-0.5)/0.5"
_FLIPS = ("sum", "none")
_CHANNEL_ORDERS = ("RGB", "BGR")


#: how the loose crops are aligned (:func:`harness.align.align_faces`: insightface's ArcFace 5-point template,
#: similarity transform by Umeyama's method)
ALIGNMENT = "arcface-5pt-umeyama-similarity"
#: insightface ``image2template_feature``: per template, the mean of each media's image features, summed over its
#: medias, then L2-normalised
POOLING = "media-mean-then-sum-l2"


@dataclass(frozen=True)
class VerificationProtocol:
    """The knobs of the IJB 1:1 protocol. Defaults = insightface ``ijb_11.py`` / ``eval_ijbc.py`` defaults.

    - ``flip``: ``"sum"`` adds the features of the aligned image and of its horizontal mirror, un-normalised
      (insightface; AdaFace's ``pre_norm_vector_add`` is the same sum); ``"none"`` uses the original image only.
    - ``faceness``: multiply each image feature by its detector faceness score (insightface "D1"; AdaFace: off).
    - ``image_norm``: L2-normalise each (flip-fused) image feature before the faceness weighting and pooling
      (insightface "N0"); off by default (insightface default "N1", keep the norm).
    - ``align_size``: side of the aligned crop fed to the model (ArcFace template scaled by ``align_size / 112``).
    - ``channel_order``: ``"RGB"`` (insightface) or ``"BGR"`` (models trained with AdaFace's cv2 pipeline, CFSM).
    - ``normalization``: the input scaling, always ``(x/255-0.5)/0.5`` (= insightface's ``(x-127.5)*0.0078125`` up
      to float rounding, and AdaFace's ``Normalize(0.5, 0.5)``); kept as a field so it is recorded in every result.
    - ``fars``: the FARs reported.
    """

    flip: str = "sum"
    faceness: bool = True
    image_norm: bool = False
    align_size: int = 112
    channel_order: str = "RGB"
    normalization: str = NORMALIZATION
    fars: tuple = DEFAULT_FARS

    def __post_init__(self):
        if self.flip not in _FLIPS:
            raise ValueError(f"flip must be one of {_FLIPS}, got {self.flip!r}")
        if self.channel_order not in _CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {_CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.normalization != NORMALIZATION:
            raise ValueError(
                f"normalization must be {NORMALIZATION!r} (the only one supported), got {self.normalization!r}"
            )
        if (
            isinstance(self.align_size, bool)
            or not isinstance(self.align_size, (int, np.integer))
            or self.align_size <= 0
        ):
            raise ValueError(f"align_size must be a positive int, got {self.align_size!r}")
        fars = tuple(float(x) for x in self.fars)
        if not fars or not all(0.0 < x < 1.0 for x in fars):
            raise ValueError(f"fars must be a non-empty tuple of numbers in (0, 1), got {self.fars!r}")
        object.__setattr__(self, "fars", fars)
        object.__setattr__(self, "align_size", int(self.align_size))
        object.__setattr__(self, "faceness", bool(self.faceness))
        object.__setattr__(self, "image_norm", bool(self.image_norm))

    def knobs(self) -> dict:
        """Flat, JSON-ready dict of the protocol, stored in every IJB-B/C result row (1:1 and 1:N): the only source
        of those rows' protocol knobs (``harness.run`` adds run-level facts only, never overwriting these)."""
        return {
            "alignment": ALIGNMENT,
            "input_size": self.align_size,
            "align_size": self.align_size,
            "channel_order": self.channel_order,
            "normalization": self.normalization,
            "flip": self.flip,
            "faceness": self.faceness,
            "image_norm": self.image_norm,
            "pooling": POOLING,
            "score": "cosine (inner product of L2-normalised template features)",
            "score_dtype": "float64",
            "fars": [far_key(x) for x in self.fars],
        }


# ---------------------------------------------------------------------------------------------- pooling


def _sequential_group_sums(
    get_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    items: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    dim: int,
    acc: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group, the float32 sum of its items' rows added one by one in order (NumPy's axis-0 order).

    Group ``g`` is ``items[starts[g] : starts[g] + sizes[g]]``; ``get_rows(item_indices, out)`` writes the float32
    rows of those items into ``out``. Groups are processed sorted by size (largest first), rank by rank:
    ``acc = row_0; acc += row_1; acc += row_2; ...``, the active groups always being a prefix of the accumulator.
    ``acc`` / ``scratch``: float32 buffers of at least (groups, dim) rows to work in (allocated if None).
    Returns ``(acc, slot, by_size)``: ``acc[slot[g]]`` is the sum of group ``g``; ``acc[j]`` that of ``by_size[j]``.
    """
    n_groups = sizes.shape[0]
    by_size = np.argsort(-sizes, kind="stable")
    starts_s = starts[by_size]
    # active[p] = number of groups with more than p items
    active = n_groups - np.cumsum(np.bincount(sizes, minlength=int(sizes.max()) + 1))
    acc = np.empty((n_groups, dim), dtype=np.float32) if acc is None else acc[:n_groups]
    get_rows(items[starts_s], acc)
    if sizes.max() > 1:
        if scratch is None:
            scratch = np.empty((int(active[1]), dim), dtype=np.float32)  # reused: no fresh pages per rank
        for p in range(1, int(sizes.max())):
            n = int(active[p])
            acc[:n] += get_rows(items[starts_s[:n] + p], scratch[:n])
    slot = np.empty(n_groups, dtype=np.int64)
    slot[by_size] = np.arange(n_groups)
    return acc, slot, by_size


@dataclass
class MediaGroups:
    """The image rows grouped as insightface's ``image2template_feature`` walks them: ``order`` (rows by template,
    then media, then file row), media groups (``g_start``, ``g_size`` into ``order``) and per template (sorted ids
    ``template_ids``, ``t_start`` / ``t_size`` into the media groups, ``max_media``: its largest media group)."""

    order: np.ndarray
    g_start: np.ndarray
    g_size: np.ndarray
    t_start: np.ndarray
    t_size: np.ndarray
    template_ids: np.ndarray
    max_media: np.ndarray


def media_groups(templates: np.ndarray, medias: np.ndarray) -> MediaGroups:
    """:class:`MediaGroups` of per-row template and media ids (both int64, same length, not empty)."""
    n = templates.shape[0]
    if n == 0:
        raise ValueError("no image rows")
    order = np.lexsort((medias, templates))  # template, then media, then file row (lexsort is stable)
    t_s = templates[order]
    m_s = medias[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.logical_or(t_s[1:] != t_s[:-1], m_s[1:] != m_s[:-1], out=new[1:])
    g_start = np.flatnonzero(new)
    del new, m_s
    g_size = np.diff(np.append(g_start, n))
    # templates: media groups are contiguous per template, media ascending
    g_tid = t_s[g_start]
    del t_s
    tnew = np.empty(g_tid.shape[0], dtype=bool)
    tnew[0] = True
    np.not_equal(g_tid[1:], g_tid[:-1], out=tnew[1:])
    t_start = np.flatnonzero(tnew)
    t_size = np.diff(np.append(t_start, g_tid.shape[0]))
    return MediaGroups(
        order=order,
        g_start=g_start,
        g_size=g_size,
        t_start=t_start,
        t_size=t_size,
        template_ids=g_tid[t_start].astype(np.int64, copy=False),
        max_media=np.maximum.reduceat(g_size, t_start),
    )


def _pool(
    get_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    templates: np.ndarray,
    medias: np.ndarray,
    dim: int,
    groups: MediaGroups | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core of :func:`image_to_template_features` on image rows written by ``get_rows(row_indices, out)`` into a
    float32 (k, D) ``out`` (which it returns); ``groups``: :func:`media_groups` of ``templates`` / ``medias`` if
    already computed.

    Returns ``(template_ids, template_feats float64 L2-normalised, media_group_sizes_max_per_template)``.
    """
    if groups is None:
        groups = media_groups(templates, medias)
    g_start, g_size, t_start, t_size = groups.g_start, groups.g_size, groups.t_start, groups.t_size
    n_g, n_t = g_start.shape[0], t_start.shape[0]
    # templates in chunks of at most _POOL_CHUNK_GROUPS media groups (or one template), worked in reused buffers:
    # the same sums (each group's and template's own order), without a fresh (groups, dim) accumulator
    ends = np.append(t_start, n_g)  # media groups of template t: [ends[t], ends[t + 1])
    bounds = [0]
    while bounds[-1] < n_t:
        ta = bounds[-1]
        tb = int(np.searchsorted(ends, ends[ta] + _POOL_CHUNK_GROUPS, side="right")) - 1
        bounds.append(min(n_t, max(tb, ta + 1)))
    most = int(max(ends[b] - ends[a] for a, b in zip(bounds[:-1], bounds[1:])))
    media_buf = np.empty((most, dim), dtype=np.float32)
    scratch = np.empty((most, dim), dtype=np.float32)
    tsum_buf = np.empty((most, dim), dtype=np.float32)
    feats = np.empty((n_t, dim), dtype=np.float64)
    for ta, tb in zip(bounds[:-1], bounds[1:]):
        ga, gb = int(ends[ta]), int(ends[tb])
        # media vectors: sequential float32 sum, then np.mean's division (float32 / intp in float64, cast back)
        media, slot, by_size = _sequential_group_sums(
            get_rows, groups.order, g_start[ga:gb], g_size[ga:gb], dim, media_buf, scratch
        )
        np.true_divide(media, g_size[ga:gb][by_size][:, None], out=media, casting="unsafe")
        # templates: the sum of their media vectors, in media order
        tsum, _, t_by_size = _sequential_group_sums(
            _rows_of(media, slot), np.arange(gb - ga), t_start[ta:tb] - ga, t_size[ta:tb], dim, tsum_buf, scratch
        )
        feats[ta + t_by_size] = tsum  # float32 -> float64 (exact), back in template order
    _l2_normalize_rows(feats)
    return groups.template_ids, feats, groups.max_media


#: :func:`_pool` pools the templates in chunks of about this many media groups (8 k x 512-d float32: 16 MB buffers)
_POOL_CHUNK_GROUPS = 1 << 13


def _rows_of(src: np.ndarray, slot: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``get_rows`` over the rows of ``src`` (group ``g`` at ``src[slot[g]]``)."""

    def rows(idx: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.take(src, slot[idx], axis=0, out=out, mode="clip")  # indices valid; "clip" avoids a buffered copy

    return rows


def _l2_normalize_rows(x: np.ndarray) -> None:
    """In place, exactly as ``sklearn.preprocessing.normalize(x)`` (l2, rows): ``x /= sqrt(einsum('ij,ij->i'))``,
    norms below ``10 * eps`` replaced by 1 (sklearn ``_handle_zeros_in_scale``)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    with np.errstate(invalid="ignore"):  # NaN/inf rows stay non-finite; the caller names the culprit
        x /= norms[:, None]


def _as_ids(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def image_to_template_features(feats: np.ndarray, templates, medias) -> tuple[np.ndarray, np.ndarray]:
    """insightface ``image2template_feature``: ``(template_ids, template_feats)``.

    ``feats``: (N, D) float32 per-image features (already flip-fused and weighted); ``templates``/``medias``: (N,)
    ids of each row. ``template_ids`` are the sorted unique template ids (int64); ``template_feats`` (T, D) float64
    are the L2-normalised sums over media of the media means, bit-identical to insightface's loop.
    """
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.dtype != np.float32:
        raise ValueError(f"feats must be a (N, D) float32 array, got {feats.dtype} {feats.shape}")
    templates = _as_ids(templates, "templates")
    medias = _as_ids(medias, "medias")
    if not (templates.shape[0] == medias.shape[0] == feats.shape[0]):
        raise ValueError(
            f"feats ({feats.shape[0]}), templates ({templates.shape[0]}) and medias ({medias.shape[0]}) differ in rows"
        )
    tids, tf, _ = _pool(
        lambda r, out: np.take(feats, r, axis=0, out=out, mode="clip"), templates, medias, feats.shape[1]
    )
    return tids, tf


# ---------------------------------------------------------------------------------------------- pair scores

_LUT_MAX = 1 << 25  # template ids up to 32 M are mapped with a lookup table, larger ones with searchsorted


def _pair_rows(template_ids: np.ndarray, pairs: np.ndarray, pair_file) -> np.ndarray:
    """Row of each pair's templates in ``template_ids`` ((P, 2) int32/int64); unknown ids raise DataFormatError."""
    n_t = template_ids.shape[0]
    pmin, pmax = (int(pairs.min()), int(pairs.max())) if pairs.size else (0, 0)
    tmax = int(template_ids[-1]) if n_t else -1
    if pairs.size and pmin >= 0 and max(pmax, tmax) < _LUT_MAX and template_ids[0] >= 0:
        lut = np.full(max(pmax, tmax) + 1, -1, dtype=np.int32)
        lut[template_ids] = np.arange(n_t, dtype=np.int32)
        rows = lut[pairs]
        bad = rows < 0
    else:
        rows = np.searchsorted(template_ids, pairs)
        np.minimum(rows, max(n_t - 1, 0), out=rows)
        bad = template_ids[rows] != pairs if n_t else np.ones(pairs.shape, bool)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        tid = int(pairs[i, 0] if bad[i, 0] else pairs[i, 1])
        col = 1 if bad[i, 0] else 2
        raise DataFormatError(
            pair_file, f"line {i + 1}", f"tid{col} {tid} is not a template of face_tid_mid (unknown template id {tid})"
        )
    return rows


def pair_scores(
    template_ids,
    template_feats: np.ndarray,
    pairs,
    batch: int = 100_000,
    *,
    pair_file: str | os.PathLike = "<pairs>",
    exact: bool = False,
    block_bytes: int = 768 << 20,
) -> np.ndarray:
    """Cosine score (float64) of each pair ``(tid1, tid2)`` of L2-normalised template vectors.

    ``exact=True``: insightface's ``np.sum(f1 * f2, -1)`` over batches of ``batch`` pairs (bit-identical, slow at
    IJB-C scale). ``exact=False`` (default): float64 matrix products by blocks of unique templates of the larger side
    (each block's product at most ``block_bytes``), within a few ulps of the exact path (see module docstring).
    A pair naming a template absent from ``template_ids`` raises ``DataFormatError(pair_file, "line <i+1>", ...)``.
    """
    template_ids = _as_ids(template_ids, "template_ids")
    tf = np.asarray(template_feats, dtype=np.float64)
    if tf.ndim != 2 or tf.shape[0] != template_ids.shape[0]:
        raise ValueError(f"template_feats must be (T, D) with T = {template_ids.shape[0]}, got {tf.shape}")
    if template_ids.shape[0] > 1 and not (np.diff(template_ids) > 0).all():
        raise ValueError("template_ids must be sorted and unique (np.unique order)")
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
        raise ValueError(f"pairs must be a (P, 2) integer array, got {pairs.dtype} {pairs.shape}")
    pairs = pairs.astype(np.int64, copy=False)
    n_p = pairs.shape[0]
    out = np.empty(n_p, dtype=np.float64)
    if n_p == 0:
        return out
    rows = _pair_rows(template_ids, pairs, pair_file)
    _scores_from_rows(tf, rows, out, exact, batch, block_bytes)
    return out


def _scores_from_rows(
    tf: np.ndarray, rows: np.ndarray, out: np.ndarray, exact: bool, batch: int = 100_000, block_bytes: int = 768 << 20
) -> None:
    if exact:
        batch = max(1, int(batch))
        for s in range(0, rows.shape[0], batch):
            e = min(rows.shape[0], s + batch)
            out[s:e] = np.sum(tf[rows[s:e, 0]] * tf[rows[s:e, 1]], -1)
    else:
        _matmul_scores(tf, rows, out, block_bytes)


def _matmul_scores(tf: np.ndarray, rows: np.ndarray, out: np.ndarray, block_bytes: int) -> None:
    """``out[i] = tf[rows[i, 0]] . tf[rows[i, 1]]`` via float64 matrix products of unique templates."""
    n_t = tf.shape[0]
    r0, r1 = rows[:, 0], rows[:, 1]
    used0 = np.zeros(n_t, dtype=bool)
    used0[r0] = True
    used1 = np.zeros(n_t, dtype=bool)
    used1[r1] = True
    if used0.sum() > used1.sum():  # the side with fewer distinct templates is kept whole (the "gallery")
        r0, r1, used0, used1 = r1, r0, used1, used0
    small = np.flatnonzero(used0)
    large = np.flatnonzero(used1)
    ns, nl = small.shape[0], large.shape[0]
    pos = np.zeros(n_t, dtype=np.int32)
    pos[small] = np.arange(ns, dtype=np.int32)
    col = np.take(pos, r0)  # column of each pair in a product block
    pos[large] = np.arange(nl, dtype=np.int32)
    row = np.take(pos, r1)  # row of each pair among the large side's templates
    del pos
    gal = np.ascontiguousarray(tf[small].T)  # (D, ns)
    per_block = max(1, min(nl, int(block_bytes // (8 * ns))))
    if per_block >= nl and nl * ns < 2**31:  # one product; flat indices fit int32 and are built in place
        prod = tf[large] @ gal
        np.multiply(row, ns, out=row)
        row += col
        del col
        flat = prod.reshape(-1)
        half = row.shape[0] // 2  # the random gather (15.7 M pairs from a 550 MB product) in two threads
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(np.take, flat, row[half:], out=out[half:], mode="clip")
            np.take(flat, row[:half], out=out[:half], mode="clip")
            job.result()
        return
    buf = np.empty((per_block, ns), dtype=np.float64)
    key = row // per_block
    for b in range(-(-nl // per_block)):
        b0 = b * per_block
        blk = large[b0 : b0 + per_block]
        sel = np.flatnonzero(key == b)
        if sel.shape[0] == 0:
            continue
        prod = np.matmul(tf[blk], gal, out=buf[: blk.shape[0]])
        flat = (row[sel] - b0).astype(np.int64) * ns + col[sel]
        out[sel] = prod.reshape(-1)[flat]


#: :func:`scores_by_kind`: bytes of one product block (rows of the larger side x the smaller side, float64), about
#: the L3 cache (32 MiB on the 2-core VM): fewer BLAS calls than 8 MiB blocks, for the same CPU time
_PART_BLOCK_BYTES = 32 << 20


@dataclass
class ProductLayout:
    """Where each pair sits in the template product ``tf[large] @ tf[small].T`` (:func:`pair_layout`): ``marked``
    (flat bool, rows x columns) marks the pairs, ``gen_flat`` the sorted flat indices of the genuine ones; the probe
    side (rows, or columns if ``probe_cols``) lists its stills templates first, ``k_still`` of them; ``n_still`` /
    ``n_video`` pairs have a stills / video probe; ``sample``: template rows of a strided sample of the pairs;
    ``probe_used``: per template, whether it is some pair's probe ``tid2``."""

    small: np.ndarray
    large: np.ndarray
    probe_cols: bool
    k_still: int
    marked: np.ndarray
    gen_flat: np.ndarray
    n_still: int
    n_video: int
    sample: np.ndarray
    probe_used: np.ndarray


def pair_layout(pairs: np.ndarray, genuine: np.ndarray, groups: MediaGroups) -> ProductLayout | None:
    """:class:`ProductLayout` of ``pairs`` ((P, 2) template ids, the probe ``tid2`` second) on the templates of
    ``groups``, straight from the ids by lookup tables (no (P, 2) array of template rows); None if a pair repeats, an
    id is negative or above the tables' range, or a template has no images (the caller's row mapping then names the
    line). Needs no features: it is built while they are pooled. The side with fewer templates gives the columns."""
    tids = groups.template_ids
    ids0, ids1 = pairs[:, 0], pairs[:, 1]
    lo = min(int(ids0.min()), int(ids1.min()), int(tids[0]))
    hi = max(int(ids0.max()), int(ids1.max()), int(tids[-1]))
    if lo < 0 or hi >= _LUT_MAX:
        return None
    known = np.zeros(hi + 1, dtype=bool)
    known[tids] = True
    used_id = []
    for ids in (ids0, ids1):
        u = np.zeros(hi + 1, dtype=bool)
        u[ids] = True
        if (u & ~known).any():  # a template without images
            return None
        used_id.append(u[tids])  # per template row
    used0, used1 = used_id
    probe_used = used1.copy()
    probe_cols = np.count_nonzero(used0) > np.count_nonzero(used1)
    if probe_cols:
        ids0, ids1, used0, used1 = ids1, ids0, used1, used0
    small = np.flatnonzero(used0)
    large = np.flatnonzero(used1)
    probe = small if probe_cols else large
    v = groups.max_media[probe] > 1
    probe = np.concatenate((probe[~v], probe[v]))  # stills probes first
    k_still = int(probe.shape[0] - np.count_nonzero(v))
    if probe_cols:
        small = probe
    else:
        large = probe
    ns, nl = small.shape[0], large.shape[0]
    itype = np.int32 if nl * ns < 2**31 else np.int64
    pos = np.zeros(hi + 1, dtype=itype)
    pos[tids[small]] = np.arange(ns, dtype=itype)
    flat = np.take(pos, ids0)
    pos[tids[large]] = np.arange(0, nl * ns, ns, dtype=itype)
    flat += np.take(pos, ids1)  # row * ns + column of each pair
    del pos
    marked = np.zeros(nl * ns, dtype=bool)
    marked[flat] = True
    if np.count_nonzero(marked) != pairs.shape[0]:  # two pairs on one entry: the same pair twice
        return None
    grid = marked.reshape(nl, ns)
    n_still = int(np.count_nonzero(grid[:, :k_still] if probe_cols else grid[:k_still]))
    sample = np.searchsorted(tids, pairs[:: max(1, pairs.shape[0] // _PIVOT_PAIRS)])  # template rows (ids known)
    return ProductLayout(
        small=small,
        large=large,
        probe_cols=bool(probe_cols),
        k_still=k_still,
        marked=marked,
        gen_flat=np.sort(flat[genuine]),
        n_still=n_still,
        n_video=pairs.shape[0] - n_still,
        sample=sample,
        probe_used=probe_used,
    )


def scores_by_kind(
    tf: np.ndarray, layout: ProductLayout, block_bytes: int = _PART_BLOCK_BYTES
) -> tuple[SplitScores, SplitScores]:
    """The pairs' scores, as :func:`_matmul_scores` computes them, by probe media kind (stills, video), each split
    at a pivot (the median of a sample of pair scores) as :func:`_tar_blocks_two` sorts them; not in pair order.

    What the ROC needs without the cost of pair order: the product is computed by cache-sized blocks of the larger
    side into two reused buffers (a worker picks one block while the next is computed); each kind's marked entries
    (a contiguous range of rows or columns, see :func:`pair_layout`) are picked out of the block in one pass and
    written, below the pivot from the front of the kind's buffer and the others from its back; the (few) genuine
    ones are gathered by their flat index. No full product (IJB-C: 550 MB of fresh pages), no random gather from
    it, no copy of the scores.
    """
    small, large, k, marked, gen_flat = layout.small, layout.large, layout.k_still, layout.marked, layout.gen_flat
    ns, nl = small.shape[0], large.shape[0]
    sample = layout.sample
    pivot = _median_of(np.einsum("ij,ij->i", tf[sample[:, 0]], tf[sample[:, 1]]))
    gal = np.ascontiguousarray(tf[small].T)  # (D, ns)
    per_block = max(1, min(nl, int(block_bytes // (8 * ns))))
    blocks = [np.empty((per_block, ns), dtype=np.float64) for _ in range(2)]  # one computed while one is picked
    bufs = [np.empty(layout.n_still, dtype=np.float64), np.empty(layout.n_video, dtype=np.float64)]
    lo = [0, 0]  # next free slot from the front, per kind
    hi = [b.shape[0] for b in bufs]  # end of the free slots (the back is filled downwards)
    gens: list[list[np.ndarray]] = [[], []]

    def put(kind: int, vals: np.ndarray) -> None:
        below = vals < pivot
        n_b = int(np.count_nonzero(below))
        out = bufs[kind]
        out[lo[kind] : lo[kind] + n_b] = vals[below]
        out[hi[kind] - (vals.shape[0] - n_b) : hi[kind]] = vals[~below]
        lo[kind] += n_b
        hi[kind] -= vals.shape[0] - n_b

    def pick(prod: np.ndarray, b0: int, b1: int) -> None:
        blk = marked[b0 * ns : b1 * ns].reshape(b1 - b0, ns)
        g = gen_flat[np.searchsorted(gen_flat, b0 * ns) : np.searchsorted(gen_flat, b1 * ns)] - b0 * ns
        g_val = prod.reshape(-1)[g]
        if layout.probe_cols:
            put(0, prod[:, :k][blk[:, :k]])
            put(1, prod[:, k:][blk[:, k:]])
            g_video = g % ns >= k
        else:
            cut = min(max(k - b0, 0), b1 - b0)  # block rows [0, cut): stills probes
            put(0, prod[:cut][blk[:cut]])
            put(1, prod[cut:][blk[cut:]])
            g_video = g >= cut * ns
        gens[0].append(g_val[~g_video])
        gens[1].append(g_val[g_video])

    # block i + 1's product (BLAS, both cores) while a worker picks block i (memory-bound, one core): the jobs run
    # one after the other, in block order
    with ThreadPoolExecutor(1) as pool:
        job = None
        for i, b0 in enumerate(range(0, nl, per_block)):
            b1 = min(nl, b0 + per_block)
            prod = np.matmul(tf[large[b0:b1]], gal, out=blocks[i % 2][: b1 - b0])
            if job is not None:
                job.result()
            job = pool.submit(pick, prod, b0, b1)
        if job is not None:
            job.result()
    assert lo == hi, (lo, hi)  # every slot written once
    return SplitScores(bufs[0], lo[0], np.concatenate(gens[0])), SplitScores(bufs[1], lo[1], np.concatenate(gens[1]))


# ---------------------------------------------------------------------------------------------- evaluation


def as_int32(a, what: str) -> np.ndarray:
    """Integer ids as int32 (the per-item arrays of :mod:`harness.bootstrap`); ValueError if one does not fit."""
    a = np.asarray(a)
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{what} does not fit int32 (range {a.min()} .. {a.max()})")
    return a.astype(np.int32)


def _image_row_fn(
    feats: np.ndarray, faceness: np.ndarray | None, protocol: VerificationProtocol, flip_concat: bool
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``rows(r, out)``: float32 image features of rows ``r`` after insightface's per-image steps, in its order:
    flip fusion of ``[orig | flip]`` (sum, or first half for ``flip="none"``), optional L2 norm
    ``x / sqrt(sum(x**2, -1))`` ("N0"), times faceness ("D1"); written into ``out`` (k, D)."""
    half = feats.shape[1] // 2
    w = faceness.astype(np.float32, copy=False) if faceness is not None else None

    def rows(r: np.ndarray, out: np.ndarray) -> np.ndarray:
        if flip_concat:
            x = feats[r]
            if protocol.flip == "sum":
                np.add(x[:, :half], x[:, half:], out=out)
            else:
                out[...] = x[:, :half]
        else:
            np.take(feats, r, axis=0, out=out, mode="clip")
        if protocol.image_norm:
            np.divide(out, np.sqrt(np.sum(out**2, -1, keepdims=True)), out=out)
        if w is not None:
            np.multiply(out, w[r, None], out=out)
        return out

    return rows


def _first_bad_row(feats: np.ndarray, chunk: int = 65536) -> int | None:
    for s in range(0, feats.shape[0], chunk):
        ok = np.isfinite(feats[s : s + chunk]).all(axis=1)
        if not ok.all():
            return s + int(np.flatnonzero(~ok)[0])
    return None


def _first_zero_row(feats: np.ndarray, chunk: int = 65536) -> int | None:
    for s in range(0, feats.shape[0], chunk):
        nz = (feats[s : s + chunk] != 0).any(axis=1)
        if not nz.all():
            return s + int(np.flatnonzero(~nz)[0])
    return None


def _tar_block(scores: np.ndarray, labels: np.ndarray, fars) -> dict:
    n_gen = int(np.count_nonzero(labels))
    counts = {"pairs": int(labels.shape[0]), "genuine": n_gen, "impostor": int(labels.shape[0]) - n_gen}
    if n_gen == 0 or n_gen == labels.shape[0]:
        return {"tar_at_far": {far_key(x): None for x in fars}, "auc": None, "counts": counts}
    fpr, tpr, _ = roc_curve(labels, scores)
    tars = tar_at_far_from_roc(fpr, tpr, fars)
    return {"tar_at_far": {far_key(x): tars[float(x)] for x in fars}, "auc": auc_from_roc(fpr, tpr), "counts": counts}


def _block_from_sorted(asc: np.ndarray, gen_asc: np.ndarray, fars) -> dict:
    """:func:`_tar_block` from the block's scores sorted ascending and its genuine scores sorted ascending."""
    n, n_gen = asc.shape[0], gen_asc.shape[0]
    counts = {"pairs": int(n), "genuine": int(n_gen), "impostor": int(n - n_gen)}
    if n_gen == 0 or n_gen == n:
        return {"tar_at_far": {far_key(x): None for x in fars}, "auc": None, "counts": counts}
    fpr, tpr, _ = roc_sorted(asc, gen_asc)
    tars = tar_at_far_from_roc(fpr, tpr, fars)
    return {"tar_at_far": {far_key(x): tars[float(x)] for x in fars}, "auc": auc_from_roc(fpr, tpr), "counts": counts}


def _tar_blocks_split(scores: np.ndarray, labels: np.ndarray, split: np.ndarray, fars) -> tuple[dict, dict, dict]:
    """:func:`_tar_block` of all pairs, of the pairs with ``split`` False and of those with ``split`` True, the
    same dicts, from one parallel sort of each part and their merge (:func:`_tar_blocks_two`). A sorted array of the
    same numbers is the same array (-0.0 and 0.0 compare equal and only their counts are used), so the ROCs are those
    of ``roc_curve`` bit for bit.
    """
    n_gen = int(np.count_nonzero(labels))
    if n_gen == 0 or n_gen == labels.shape[0]:  # the caller raises; no ROC to build
        return _tar_block(scores, labels, fars), None, None
    genuine, scores = check_roc_inputs(labels, scores)  # 0/1 labels, finite scores (roc_curve's checks)
    pivot = _median_of(scores[:: max(1, scores.shape[0] // _PIVOT_SAMPLE)])
    parts = []
    for mask in (~split, split):
        s = scores[mask]
        below = s < pivot
        n_lo = int(np.count_nonzero(below))
        buf = np.empty_like(s)
        buf[:n_lo] = s[below]
        buf[n_lo:] = s[~below]
        parts.append(SplitScores(buf, n_lo, s[genuine[mask]]))
    return _tar_blocks_two(parts, fars)


#: about how many scores the median that splits the ROC's sort between two threads is taken from
_PIVOT_SAMPLE = 1 << 16
#: the same when the scores are not computed yet: pairs scored for the sample (two (n, D) float64 gathers)
_PIVOT_PAIRS = 1 << 12


def _median_of(sample: np.ndarray) -> float:
    """The (upper) median of a sample, 0.0 if empty: a pivot that splits the scores about in half."""
    return float(np.partition(sample, sample.shape[0] // 2)[sample.shape[0] // 2]) if sample.shape[0] else 0.0


@dataclass
class SplitScores:
    """One part's scores for :func:`_tar_blocks_two`: ``buf`` holds those below a pivot in ``[0, n_lo)`` and the
    others in ``[n_lo, len)``, each range in any order (sorted in place later); ``gen`` its genuine scores."""

    buf: np.ndarray
    n_lo: int
    gen: np.ndarray


def _tar_blocks_two(parts: list[SplitScores], fars) -> tuple[dict, dict, dict]:
    """The three :func:`_block_from_sorted` dicts (all, part 0, part 1) from two parts split at a common pivot.

    The sort, which is most of the time, is split by value instead of by part, so that the two threads sort about
    as many numbers whatever the parts' sizes (IJB-C's stills part is a few % of the pairs): each thread sorts one
    range (below / from the pivot) of both parts in place (NumPy's sorts release the GIL), so each part's buffer
    ends up sorted as a whole, and merges the two parts' ranges into its range of the whole (a stable sort of two
    sorted runs: timsort merges them in linear time). No copy of the scores but the whole's.
    """
    p0, p1 = parts
    n0, n1 = p0.buf.shape[0], p1.buf.shape[0]
    whole = np.empty(n0 + n1, dtype=np.float64)

    def sort_range(upper: bool) -> None:
        r0 = p0.buf[p0.n_lo :] if upper else p0.buf[: p0.n_lo]
        r1 = p1.buf[p1.n_lo :] if upper else p1.buf[: p1.n_lo]
        r0.sort()
        r1.sort()
        w = whole[p0.n_lo + p1.n_lo :] if upper else whole[: p0.n_lo + p1.n_lo]
        np.concatenate((r0, r1), out=w)
        w.sort(kind="stable")

    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(sort_range, True)
        sort_range(False)
        job.result()
        job = pool.submit(_block_from_sorted, whole, np.sort(np.concatenate((p0.gen, p1.gen))), fars)
        b0 = _block_from_sorted(p0.buf, np.sort(p0.gen), fars)
        b1 = _block_from_sorted(p1.buf, np.sort(p1.gen), fars)
        return job.result(), b0, b1


def check_faceness(faceness, where: str) -> np.ndarray:
    """Faceness scores as float32, refusing a NaN or negative one (``where:line N: ...``, N = 1-based row of
    ``<t>_name_5pts_score.txt``): a weight that is not a detector confidence would silently flip or void an image's
    contribution to its template."""
    w = np.asarray(faceness, dtype=np.float32).reshape(-1)
    bad = np.flatnonzero(~(w >= 0))  # NaN fails >= too
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            where,
            f"line {i + 1}",
            f"faceness score {float(w[i])!r} is {'NaN' if np.isnan(w[i]) else 'negative'} (must be >= 0)",
        )
    return w


def pool_image_features(
    feats: np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    faceness,
    protocol: VerificationProtocol,
    flip_concat: bool,
    where: str,
    faceness_where: str = "<faceness>",
    groups: MediaGroups | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked per-image features -> (template ids, L2-normalised float64 template features, largest media size).

    Shared by the 1:1 and 1:N protocols: shape/dtype/row-count checks naming ``where``, optional flip split,
    per-image normalisation and faceness weighting (``protocol``; a NaN or negative faceness score is an error
    naming ``faceness_where``), insightface's media-mean-then-sum pooling (``groups``: :func:`media_groups` of
    ``templates`` / ``medias`` if already computed), and a non-finite check that names the first bad image row. An
    all-zero feature matrix (nothing was extracted) is an error.
    """
    n_rows = templates.shape[0]
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise DataFormatError(where, "shape", f"features must be a 2-D (rows, dim) array, got shape {feats.shape}")
    if feats.dtype.kind != "f":
        raise DataFormatError(where, "dtype", f"features must be floating point, got {feats.dtype}")
    if feats.shape[0] != n_rows:
        raise DataFormatError(where, "rows", f"{feats.shape[0]} feature rows but face_tid_mid has {n_rows}")
    if flip_concat and (feats.shape[1] == 0 or feats.shape[1] % 2):
        raise DataFormatError(
            where, "shape", f"flip_concat needs an even feature width [orig | flip], got {feats.shape[1]}"
        )
    if feats.shape[1] == 0:
        raise DataFormatError(where, "shape", "features have width 0")
    if feats.dtype != np.float32:  # model outputs are float32; insightface's arithmetic is float32 throughout
        feats = feats.astype(np.float32)
    if protocol.image_norm:
        z = _first_zero_row(feats)
        if z is not None:
            if not feats.any():
                raise DataFormatError(
                    where, "rows", f"all {feats.shape[0]} feature rows are zero (no features were written)"
                )
            raise DataFormatError(where, f"row {z}", "all-zero feature row cannot be L2-normalised (image_norm)")
    w = check_faceness(faceness, faceness_where) if protocol.faceness else None
    get_rows = _image_row_fn(feats, w, protocol, flip_concat)
    dim = feats.shape[1] // 2 if flip_concat else feats.shape[1]
    tids, tf, max_media = _pool(get_rows, templates, medias, dim, groups)
    # all-zero features give all-zero templates, so the full scan (a second pass over a memory-mapped file) is only
    # needed when every template vector is zero (or non-finite)
    if feats.size and not (tf != 0).any() and not feats.any():
        raise DataFormatError(where, "rows", f"all {feats.shape[0]} feature rows are zero (no features were written)")
    if not np.isfinite(tf).all():  # cheap check on T rows; scan the N rows only to name the culprit
        bad = _first_bad_row(feats)
        if bad is not None:
            raise DataFormatError(
                where, f"row {bad}", f"feature row {bad} (0-based, image {bad + 1}) is not finite (NaN/inf)"
            )
        raise DataFormatError(where, None, "features give non-finite template vectors (float32 overflow)")
    return tids, tf, max_media


@dataclass
class PairPlan:
    """The pair list as the 1:1 scoring uses it, features aside (:func:`plan_pairs`): ``pairs`` (P, 2) and
    ``labels`` (P,) as read; ``probe_used`` per template (some pair's probe ``tid2``); then either the product
    ``layout`` (:func:`pair_layout`) or, when it was not asked for or could not be built, ``rows`` (the pairs'
    template rows, into :attr:`MediaGroups.template_ids`) and ``video_probe`` (the probe template holds a media with
    several rows: the ``with_video`` split)."""

    pairs: np.ndarray
    labels: np.ndarray
    probe_used: np.ndarray
    layout: ProductLayout | None = None
    rows: np.ndarray | None = None
    video_probe: np.ndarray | None = None


def plan_pairs(pairs, labels, groups: MediaGroups, pair_file, layout: bool) -> PairPlan:
    """:class:`PairPlan` of ``pairs`` / ``labels`` on the templates of ``groups``; a pair naming a template without
    images raises ``DataFormatError(pair_file, "line <i+1>", ...)``."""
    pairs = np.asarray(pairs)
    labels = np.asarray(labels)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu" or labels.shape != (pairs.shape[0],):
        raise ValueError(
            f"pairs must be (P, 2) integers and labels (P,), got {pairs.dtype} {pairs.shape} and {labels.shape}"
        )
    pairs = pairs.astype(np.int64, copy=False)
    if layout and pairs.shape[0]:
        genuine = check_labels(labels)
        if 0 < np.count_nonzero(genuine) < genuine.shape[0]:
            lay = pair_layout(pairs, genuine, groups)
            if lay is not None:
                return PairPlan(pairs, labels, lay.probe_used, layout=lay)
    rows = _pair_rows(groups.template_ids, pairs, pair_file)
    probe_used = np.zeros(groups.template_ids.shape[0], dtype=bool)
    probe_used[rows[:, 1]] = True
    # domain-gap split by probe template (tid2): stills only vs. holding a video (a media with several rows)
    video_probe = (groups.max_media > 1)[rows[:, 1]]
    return PairPlan(pairs, labels, probe_used, rows=rows, video_probe=video_probe)


def evaluate_verification(
    feats: np.ndarray,
    templates,
    medias,
    faceness,
    pairs,
    labels,
    protocol: VerificationProtocol = VerificationProtocol(),
    *,
    flip_concat: bool = False,
    features_path: str | os.PathLike | None = None,
    pair_file: str | os.PathLike = "<pairs>",
    benchmark: str = "IJB",
    exact: bool = False,
    faceness_file: str | os.PathLike = "<faceness>",
) -> dict:
    """The whole 1:1 protocol on in-memory arrays (what :meth:`IJBVerification.evaluate_features` runs).

    ``feats``: (N, D) flip-fused features, or (N, 2D) ``[orig | flip]`` with ``flip_concat``; row i is image row i
    of face_tid_mid. Returns the result dict described in :meth:`IJBVerification.evaluate_features`.
    """
    return _verification(
        feats,
        templates,
        medias,
        faceness,
        pairs,
        labels,
        protocol,
        flip_concat=flip_concat,
        features_path=features_path,
        pair_file=pair_file,
        benchmark=benchmark,
        exact=exact,
        faceness_file=faceness_file,
        need_scores=False,
    )[0]


def _verification(
    feats,
    templates,
    medias,
    faceness,
    pairs,
    labels,
    protocol: VerificationProtocol,
    *,
    flip_concat: bool,
    features_path,
    pair_file,
    benchmark: str,
    exact: bool,
    faceness_file="<faceness>",
    need_scores: bool = True,
) -> tuple[dict, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`evaluate_verification`, also returning the per-pair ``scores`` (float64, the ones the ROC is built
    from; None unless ``need_scores``), the template ``rows`` of each pair ((P, 2), into ``tids``), ``tids`` (sorted
    template ids) and the per-pair ``video_probe`` flags (bool: the probe template holds a video, the ``with_video``
    split). Without ``need_scores`` (and without ``exact``) the scores are computed by product blocks and sorted
    part by part, never put in pair order (:func:`scores_by_kind`): the same numbers, the same ROC."""
    where = os.fspath(features_path) if features_path is not None else "<features>"
    templates = _as_ids(templates, "templates")
    medias = _as_ids(medias, "medias")
    groups = media_groups(templates, medias)
    want_layout = not exact and not need_scores  # the ROC needs each kind's scores in any order: no pair order
    # IJBVerification: `pairs` starts building the pair plan in a background thread, while the features are pooled
    plan_job = pairs(groups, want_layout) if callable(pairs) else None
    tids, tf, max_media = pool_image_features(
        feats, templates, medias, faceness, protocol, flip_concat, where, os.fspath(faceness_file), groups
    )
    if plan_job is not None:
        plan = plan_job.result()
    else:
        plan = plan_pairs(pairs, labels, groups, pair_file, want_layout)
    pairs, labels, rows, video_probe = plan.pairs, plan.labels, plan.rows, plan.video_probe
    fars = protocol.fars
    video_template = max_media > 1
    parts = scores_by_kind(tf, plan.layout) if plan.layout is not None else None
    if parts is None:
        scores = np.empty(pairs.shape[0], dtype=np.float64)
        _scores_from_rows(tf, rows, scores, exact)
        main, stills, video = _tar_blocks_split(scores, labels, video_probe, fars)
    else:
        scores = None
        main, stills, video = _tar_blocks_two(parts, fars)
        del parts
    if main["auc"] is None:
        raise ValueError(f"{os.fspath(pair_file)}: needs both genuine and impostor pairs, got {main['counts']}")
    seen = plan.probe_used  # probe templates; a template's pairs all fall in one part (video is per template)
    by_media = {}
    for name, block, is_video in (("stills_only", stills, False), ("with_video", video, True)):
        block["counts"]["probe_templates"] = int(np.count_nonzero(seen & (video_template == is_video)))
        by_media[name] = block
    return (
        {
            "benchmark": benchmark,
            "protocol": "1:1 verification",
            "tar_at_far": main["tar_at_far"],
            "auc": main["auc"],
            "knobs": protocol.knobs(),
            "scoring": "exact" if exact else "matmul",
            "input": {"flip_concat": bool(flip_concat), "dim": int(np.shape(feats)[1])},
            "counts": {
                "rows": int(templates.shape[0]),
                "templates": int(tids.shape[0]),
                "pairs": main["counts"]["pairs"],
                "genuine": main["counts"]["genuine"],
                "impostor": main["counts"]["impostor"],
            },
            "by_probe_media": by_media,
        },
        scores,
        rows,
        tids,
        video_probe,
    )


class IJBVerification:
    """IJB-B / IJB-C 1:1 verification on one release folder (``IJB_release/IJBB`` or ``IJB_release/IJBC``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        prefix: str | None = None,
        protocol: VerificationProtocol = VerificationProtocol(),
        *,
        defer_pairs: bool = False,
    ):
        """``defer_pairs=True`` (for callers that evaluate right away, e.g. ``python -m harness.evaluate``): the pair
        file (IJB-C: 15.7 M lines) is read in a background thread while the template features are pooled; its
        errors are raised at the first use of :attr:`meta` or :meth:`evaluate_features` instead of here."""
        self._pair_job = None
        if defer_pairs:
            self._meta, self._pair_job = read_ijb_deferred(root, prefix)
        else:
            self._meta = read_ijb(root, prefix, with_pairs=True)
        self.root = self._meta.root
        self.prefix = self._meta.prefix
        self.protocol = protocol
        self.pair_file = meta_paths(self.root, self.prefix)["template_pair_label"]
        self.benchmark = BENCHMARK_NAMES[self.prefix]
        self._template_subjects: tuple[np.ndarray, np.ndarray] | None = None

    def _pairs(self, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(pairs, labels)`` of the release, waiting for (and, unless the caller maps every id itself, checking
        with :func:`~harness.data.ijb.check_pairs_known`) a deferred read first."""
        if self._pair_job is not None:
            pairs, labels = self._pair_job.result()
            if check:
                check_pairs_known(pairs, self._meta.templates, self.pair_file)
            self._meta.pairs, self._meta.labels = pairs, labels
            self._pair_job = None
        return self._meta.pairs, self._meta.labels

    def _start_plan(self, groups: MediaGroups, layout: bool) -> Future:
        """A :class:`PairPlan` built in a background thread (after a deferred pair read finishes) while the caller
        pools the features; its errors come with ``result()``. No separate id check: plan_pairs maps every id, and
        an unknown one raises check_pairs_known's error (same line, same words)."""
        return in_background(lambda: plan_pairs(*self._pairs(check=False), groups, self.pair_file, layout))

    @property
    def meta(self) -> IJBMeta:
        """The release's :class:`~harness.data.ijb.IJBMeta` (pairs and labels included)."""
        self._pairs()
        return self._meta

    def __len__(self) -> int:
        return len(self._meta)

    def template_subjects(self) -> tuple[np.ndarray, np.ndarray]:
        """``(template ids, SUBJECT_ID of each)`` of every template listed in the release's 1:N CSVs (both
        galleries and ``probe_mixed``; the 1:1 meta files carry no subject ids), sorted by template id. Read once."""
        if self._template_subjects is None:
            from harness.data.ijb1n import read_ijb_1n

            lists = read_ijb_1n(self.root, self.prefix, meta=self.meta)
            parts = [lists.probes, *lists.galleries.values()]
            t = np.concatenate([np.asarray(p[0], np.int64) for p in parts])
            sub = np.concatenate([np.asarray(p[1], np.int64) for p in parts])
            order = np.argsort(t, kind="stable")
            self._template_subjects = (t[order], sub[order])
        return self._template_subjects

    def _probe_subjects(self, tids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """SUBJECT_ID (int32) of each pair's probe template ``tid2`` (``rows[:, 1]`` indexes ``tids``)."""
        lt, ls = self.template_subjects()  # never empty: the 1:N reader rejects empty lists
        at = np.minimum(np.searchsorted(lt, tids), len(lt) - 1)
        by_row = np.where(lt[at] == tids, ls[at], -1)
        probe_subject = by_row[rows[:, 1]]
        bad = np.flatnonzero(probe_subject < 0)
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                self.pair_file,
                f"line {i + 1}",
                f"probe template {int(self.meta.pairs[i, 1])} (tid2) is in none of the 1:N CSVs: no SUBJECT_ID "
                "to group its pairs by",
            )
        return as_int32(probe_subject, "SUBJECT_ID")

    def evaluate_features(
        self,
        feats: np.ndarray,
        flip_concat: bool = False,
        *,
        features_path: str | os.PathLike | None = None,
        exact: bool = False,
        return_items: bool = False,
    ) -> dict | tuple[dict, dict[str, np.ndarray]]:
        """TAR@FAR from per-image features; ``feats`` is (N, D) flip-fused or, with ``flip_concat``, (N, 2D)
        ``[orig | flip]`` (summed if ``protocol.flip == "sum"``, first half if ``"none"``).

        Result: ``benchmark`` ("IJB-B"/"IJB-C"), ``protocol``, ``tar_at_far`` ({"1e-06": tar, ...}, keys ``str(far)``),
        ``auc``, ``knobs`` (:meth:`VerificationProtocol.knobs`), ``scoring``, ``input``, ``counts`` (rows,
        templates, pairs, genuine, impostor) and ``by_probe_media``: the same metrics on the pairs whose probe
        template holds only stills (every media one image row: ``stills_only``) and on those whose probe holds a
        media with several rows (video frames: ``with_video``), each with its counts (TARs None if a side is empty).
        Errors name ``features_path`` (or ``<features>``): row-count mismatch, NaN/inf rows.

        ``return_items=True`` returns ``(result, items)``, ``items`` the per-pair arrays of the subject-level
        bootstrap (:mod:`harness.bootstrap`), in pair-file order: ``scores`` float64 (the scores the ROC above is
        built from), ``labels`` uint8 (1 genuine) and ``probe_subject`` int32 (SUBJECT_ID of the probe template
        ``tid2``, from the 1:N CSVs, :meth:`template_subjects`), ``probe_video`` uint8 (1: the probe template holds
        video frames, the ``with_video`` split of ``by_probe_media``). ``TarAtFar(items["scores"], items["labels"],
        protocol.fars)`` gives ``tar_at_far`` exactly, and on the pairs of either ``probe_video`` value the split's.
        """
        m = self._meta
        res, scores, rows, tids, video_probe = _verification(
            feats,
            m.templates,
            m.medias,
            m.faceness,
            self._start_plan,
            None,
            self.protocol,
            flip_concat=flip_concat,
            features_path=features_path,
            pair_file=self.pair_file,
            benchmark=self.benchmark,
            exact=exact,
            faceness_file=meta_paths(m.root, m.prefix)["name_5pts_score"],
            need_scores=return_items,
        )
        if not return_items:
            return res
        items = {
            "scores": scores,
            "labels": m.labels.astype(np.uint8),
            "probe_subject": self._probe_subjects(tids, rows),
            "probe_video": video_probe.astype(np.uint8),
        }
        return res, items

    def extract_features(self, model, batch_size: int = 64, device="cpu") -> np.ndarray:
        """Per-image features (N, D) float32 in row order, streaming the loose crops in batches.

        Each crop is read (RGB), aligned with its 5 landmarks to ``protocol.align_size``, put in
        ``protocol.channel_order``, scaled ``(x/255-0.5)/0.5`` as float32 NCHW and fed to ``model`` (eval mode,
        ``torch.inference_mode``; inputs moved to ``device``, the model must already be there). With
        ``protocol.flip == "sum"`` the horizontally mirrored batch is fed too and the two outputs are added.
        """
        import torch

        from harness.data.align import align_faces
        from harness.data.images import read_image
        from harness.eval.features import embed_batches

        p = self.protocol

        def load(start: int, stop: int) -> torch.Tensor:
            imgs = [read_image(loose_crop_path(self.meta, i)) for i in range(start, stop)]
            return align_faces(imgs, self.meta.landmarks[start:stop], p.align_size)

        return embed_batches(model, len(self.meta), load, batch_size, device, p.channel_order, p.flip)

    def evaluate(self, model, batch_size: int = 64, device="cpu", exact: bool = False, return_items: bool = False):
        """:meth:`extract_features` then :meth:`evaluate_features`."""
        return self.evaluate_features(
            self.extract_features(model, batch_size=batch_size, device=device), exact=exact, return_items=return_items
        )
