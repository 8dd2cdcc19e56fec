"""ROC curve and TAR@FAR exactly as insightface's IJB-B/IJB-C 1:1 verification computes them.

Sources:

- scikit-learn ``sklearn/metrics/_ranking.py``: ``roc_curve`` (default ``drop_intermediate=True``) on top of
  ``confusion_matrix_at_thresholds`` / ``_binary_clf_curve`` (scores sorted in decreasing order; one threshold per
  distinct score value; ``tps`` = cumulative genuine count, ``fps = 1 + index - tps``; a vertex is kept only where
  the second difference of ``fps`` or of ``tps`` is non-zero, plus both ends; then ``(0, 0)`` is prepended with
  threshold ``+inf``; ``fpr = fps / fps[-1]``, ``tpr = tps / tps[-1]``) and ``auc`` (trapezoid rule).
- insightface ``recognition/_evaluation_/ijb/ijb_11.py`` and ``recognition/arcface_torch/eval_ijbc.py``: the ROC
  arrays are reversed and, for each target FAR ``x``, the vertex with the smallest ``|fpr - x|`` is taken, the
  *first* one in the reversed arrays on ties (``min(zip(abs(fpr - x), range(n)))``; ``ijb_evals.py`` uses
  ``np.argmin``, same rule): TAR(x) = ``tpr`` at that vertex. No interpolation; the vertex may lie on either side
  of ``x``. Among equally near vertices the one with the larger FPR (and TPR) wins.

The implementation here does not call scikit-learn (it is a test oracle only). It is bit-identical to
``sklearn.metrics.roc_curve(labels, scores)`` but faster: instead of an ``argsort`` of all scores it sorts the
scores alone (``np.sort``) and counts genuine scores per distinct value with a ``searchsorted`` of the (few)
genuine scores. The order of tied scores inside a group never affects sklearn's output (only the cumulative counts
at the last element of each group of equal scores are used), so a stable sort is not needed for exactness.
Counts are exact integers held in float64, exactly as sklearn's float64 ``cumsum``; the divisions are the same.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "DEFAULT_FARS",
    "roc_curve",
    "roc_auc",
    "auc_from_roc",
    "tar_at_far",
    "tar_at_far_from_roc",
    "far_key",
    "check_labels",
    "check_roc_inputs",
    "roc_sorted",
    "vertices_dense",
]

#: The six FARs insightface prints for IJB-B/IJB-C.
DEFAULT_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def far_key(x: float) -> str:
    """Column name of a FAR as insightface prints it: ``str(x)`` ("1e-06", "1e-05", "0.0001", ... "0.1")."""
    return str(float(x))


def check_labels(labels) -> np.ndarray:
    """1-D 0/1 (or bool) labels -> the bool genuine mask; ValueError for any other label."""
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return labels
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"labels must be 0/1 (or bool), got dtype {labels.dtype}")
    genuine = labels == 1
    if not (genuine | (labels == 0)).all():
        bad = labels[~(genuine | (labels == 0))][0]
        raise ValueError(f"labels must be 0 (impostor) or 1 (genuine), found {bad!r}")
    return genuine


def check_roc_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {labels.shape} and {scores.shape}")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels ({labels.shape[0]}) and scores ({scores.shape[0]}) differ in length")
    if scores.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    genuine = check_labels(labels)
    finite = np.isfinite(scores)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"scores must be finite: score {i} is {scores[i]!r}")
    n_gen = int(np.count_nonzero(genuine))
    if n_gen == 0:
        raise ValueError("no genuine pairs (label 1): TAR is undefined")
    if n_gen == genuine.shape[0]:
        raise ValueError("no impostor pairs (label 0): FAR is undefined")
    return genuine, scores


def roc_curve(labels, scores, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` identical to ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=...)``.

    ``labels``: 1 genuine / 0 impostor (or bool); ``scores``: finite, higher = more similar. Thresholds are float64,
    decreasing, starting with ``+inf``. Raises ``ValueError`` when there are no genuine or no impostor pairs (sklearn
    would only warn and return NaNs) or a score is NaN/inf. 15.6 M scores take about 0.5 s on one core.
    """
    genuine, scores = check_roc_inputs(labels, scores)
    return roc_sorted(np.sort(scores), np.sort(scores[genuine]), drop_intermediate)


#: the sparse path is used while (tied scores + genuine scores) <= n * _SPARSE_FRACTION
_SPARSE_FRACTION = 0.25


def roc_sorted(asc: np.ndarray, gen_asc: np.ndarray, drop_intermediate: bool = True, sparse: bool | None = None):
    """ROC from all scores sorted ascending (``asc``) and the genuine scores sorted ascending (``gen_asc``)."""
    n = asc.shape[0]
    tie_pos = np.flatnonzero(asc[1:] == asc[:-1])  # i with asc[i + 1] == asc[i]
    if sparse is None:
        sparse = drop_intermediate and tie_pos.shape[0] + gen_asc.shape[0] <= n * _SPARSE_FRACTION
    if sparse and drop_intermediate:
        fps, tps, thresholds = _vertices_sparse(asc, gen_asc, tie_pos)
    else:
        fps, tps, thresholds = vertices_dense(asc, gen_asc, tie_pos, drop_intermediate)
    fps = np.concatenate(([0.0], fps))
    tps = np.concatenate(([0.0], tps))
    thresholds = np.concatenate(([np.inf], thresholds))
    return fps / fps[-1], tps / tps[-1], thresholds


def vertices_dense(asc, gen_asc, tie_pos, drop_intermediate):
    """sklearn's vertices over every distinct score: (fps, tps, thresholds), decreasing thresholds."""
    n = asc.shape[0]
    new = np.ones(n, dtype=bool)
    new[tie_pos + 1] = False
    first = np.flatnonzero(new)  # first index of each group of equal values in the ascending array
    del new
    values = asc[first]
    # sklearn's threshold index (descending order) of a group is its last element there: count(score >= v) - 1
    cnt = (n - first)[::-1].astype(np.float64)  # = 1 + threshold_idx, increasing
    del first
    per_group = np.bincount(np.searchsorted(values, gen_asc), minlength=values.shape[0])
    tps = np.cumsum(per_group[::-1], dtype=np.float64)  # decreasing-threshold order
    del per_group
    fps = cnt - tps  # sklearn: 1 + threshold_idxs - tps (exact small integers in float64)
    del cnt
    thresholds = values[::-1].astype(np.float64)
    if drop_intermediate and fps.shape[0] > 2:
        keep = np.empty(fps.shape[0], dtype=bool)
        keep[0] = keep[-1] = True
        np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0, out=keep[1:-1])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    return fps, tps, thresholds


def _vertices_sparse(asc, gen_asc, tie_pos):
    """The same vertices as :func:`vertices_dense` with ``drop_intermediate=True``, touching only the groups near
    genuine or tied scores.

    Descending group j has size n_j and genuine count c_j. sklearn keeps an inner vertex j iff the second difference
    of fps or tps is non-zero there, i.e. iff (n_{j+1}, c_{j+1}) != (n_j, c_j) (because tps_j - tps_{j-1} = c_j and
    fps_j - fps_{j-1} = n_j - c_j). A run of single impostor scores, (1, 0) groups, is therefore never kept, so only
    the "special" groups (n > 1 or c > 0), the group just above each of them and both ends need to be looked at.
    """
    n = asc.shape[0]
    ng = gen_asc.shape[0]
    if ng == 0:
        raise ValueError("no genuine scores")
    k = n - tie_pos.shape[0]  # number of distinct values (groups)
    # ascending group id of an ascending position i: i minus the merges before it
    tie_group = tie_pos - np.arange(tie_pos.shape[0])  # group of asc[i] for each tie position i (sorted)
    gen_group = np.searchsorted(asc, gen_asc)  # first asc position of each genuine value...
    gen_group -= np.searchsorted(tie_pos, gen_group)  # ...as a group id (sorted)
    # size and genuine count of the special groups (ascending ids)
    t_ids, t_cnt = _runs(tie_group)
    g_ids, g_cnt = _runs(gen_group)
    special = _sorted_unique(np.concatenate((t_ids, g_ids)))
    n_sp = np.ones(special.shape[0], dtype=np.int64)
    n_sp[np.searchsorted(special, t_ids)] += t_cnt
    c_sp = np.zeros(special.shape[0], dtype=np.int64)
    c_sp[np.searchsorted(special, g_ids)] = g_cnt
    # candidates in descending index j = k - 1 - a: special groups, the group above each (j - 1), both ends
    j_sp = k - 1 - special
    cand = _sorted_unique(np.concatenate((j_sp, j_sp - 1, [0, k - 1])))
    cand = cand[(cand >= 0) & (cand < k)]

    def n_c(j):  # (n_j, c_j) of descending groups j (j == k: beyond the end, reads as a normal group)
        a = k - 1 - j
        i = np.minimum(np.searchsorted(special, a), special.shape[0] - 1)
        hit = special[i] == a
        return np.where(hit, n_sp[i], 1), np.where(hit, c_sp[i], 0)

    if k > 2:
        n0, c0 = n_c(cand)
        n1, c1 = n_c(cand + 1)
        keep = (n0 != n1) | (c0 != c1)
        keep[0] = True
        keep[-1] = True  # cand[-1] == k - 1
        cand = cand[keep]
    a = k - 1 - cand  # ascending group ids of the kept vertices
    first_pos = a + np.searchsorted(tie_group, a)  # first asc position of group a
    thresholds = asc[first_pos].astype(np.float64)
    cnt = (n - first_pos).astype(np.float64)
    tps = (ng - np.searchsorted(gen_group, a)).astype(np.float64)
    return cnt - tps, tps, thresholds


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (NumPy 2's hash-based ``unique`` is several times slower on millions of ints)."""
    a = np.sort(a)
    if a.shape[0] < 2:
        return a
    keep = np.empty(a.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _runs(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted int array and how often each occurs."""
    if sorted_ids.shape[0] == 0:
        return sorted_ids.astype(np.int64), np.zeros(0, dtype=np.int64)
    new = np.empty(sorted_ids.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return sorted_ids[starts].astype(np.int64), np.diff(np.append(starts, sorted_ids.shape[0]))


def auc_from_roc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under an ROC curve by the trapezoid rule, as ``sklearn.metrics.auc(fpr, tpr)`` (``fpr`` increasing)."""
    return float(np.trapezoid(tpr, fpr))


def roc_auc(labels, scores) -> float:
    """AUC of :func:`roc_curve` (``drop_intermediate=True``), as insightface's ``sklearn.metrics.auc(fpr, tpr)``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return auc_from_roc(fpr, tpr)


def tar_at_far_from_roc(fpr: np.ndarray, tpr: np.ndarray, fars: Iterable[float] = DEFAULT_FARS) -> dict[float, float]:
    """insightface's nearest-vertex rule on a given ROC: reverse, first ``argmin |fpr - x|``, TAR = ``tpr`` there."""
    fpr_r = np.asarray(fpr)[::-1]
    tpr_r = np.asarray(tpr)[::-1]
    out: dict[float, float] = {}
    for x in fars:
        i = int(np.argmin(np.abs(fpr_r - x)))  # argmin returns the first minimum
        out[float(x)] = float(tpr_r[i])
    return out


def tar_at_far(labels, scores, fars: Iterable[float] = DEFAULT_FARS) -> dict[float, float]:
    """TAR at each FAR in ``fars`` exactly as insightface (sklearn ROC with ``drop_intermediate=True``, reversed,
    first nearest vertex, no interpolation). Keys are the FARs as floats; see :func:`far_key` for the printed names.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    return tar_at_far_from_roc(fpr, tpr, fars)
