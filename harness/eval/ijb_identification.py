"""IJB-B / IJB-C 1:N identification, under both published definitions (``docs/benchmark_formats.md`` section 1.6).

Template features are those of the 1:1 protocol (:mod:`harness.eval.ijb_verification`: flip fusion, optional
per-image L2 norm, faceness weighting, insightface ``image2template_feature`` pooling, L2-normalised float64
template vectors; the same :class:`VerificationProtocol` knobs). Scores are float64 cosines ``probe @ gallery.T``,
as ``np.dot`` of the float64 template matrices in the originals, computed by blocks of probes (bounded memory:
one (block, G) score block, ``block_bytes``). :meth:`IJBIdentification.evaluate_features` scores the joined gallery
once and reads each gallery as a column subset of it (both in template-id order), so both definitions cost one
matrix product (IJB-C scale, 19,593 x 3,531 x 512: a few seconds on 2 cores).
Galleries and probes are the sorted unique template ids of the NIST CSVs (``np.unique`` order, as in the originals).

**"joined"**: definition (a), insightface ``recognition/_evaluation_/ijb/ijb_1n.py`` (``evaluation``,
``gen_mask``) = AdaFace ``validation_mixed/eval_helper_identification.py``; what CFSM and AdaFace report as IJB-B/C
Rank-1/5.

- The two galleries are concatenated (``np.unique`` of S1+S2 tids) so every probe is mated; ``gen_mask`` raises
  unless exactly one gallery template has the probe's subject (here: DataFormatError naming the probe CSV line).
- rank-k = share of probes whose mate is among the k highest scores.
- ``tpir@far`` for far in {0.01, 0.1}, **not** the NIST FPIR: k = ceil(num_probes * far); threshold = the k-th
  largest of all P x (G - 1) non-mated scores, flattened (``heapq.nlargest``); TPIR = share of probes whose mate
  score is > threshold, with no rank condition. Computed by streaming the top k of each block (never the whole
  flattened array); None if there are fewer than k non-mated scores.

**"open_set"**: definition (b), insightface ``ijb_evals.py`` ``evaluation_1N`` / ``run_model_test_1N`` (PR #1739),
the standard open-set DIR. AdaFace issue #169 discusses how (a) and (b) differ.

- Each gallery separately: for gallery G1 the probes whose subject has no template in G1 (they are in G2) are
  non-mated, and vice versa.
- Mated probe: pos = mate score; correct = pos > max of its non-mate gallery scores (strict; -inf if none).
- Non-mated probe: m = max score over the gallery.
- threshold(f) = ``sorted(m, desc)[max(int(len(m) * f) - 1, 0)]``; TPIR(f) = mean over the mated probes of
  (correct and pos > threshold), both strict. f are insightface's grid values ``[10 ** i for i in
  np.arange(-4, 0, 4 / 100)] + [1]`` at indices 0, 25, 50, 75, 100 (0.0001, 0.001000000000000002, ... , 1),
  reported under the nominal names ``tpir@fpir=0.0001`` ... ``tpir@fpir=1.0``; the grid value matters only where
  ``len(m) * f`` lands on an integer.
- Reported TPIR = mean of the two galleries' TPIRs; rank-k "Mean" = (hits on G1 + hits on G2) / number of probes,
  as ``run_model_test_1N`` prints it (the per-gallery rank-k in ``per_gallery`` is hits / mated probes).
- TPIR is None where a gallery has no non-mated or no mated probes (the original would crash).

Tie order for rank-k, each definition as its published code sorts a score row (scores are float64 there and here):

- "joined" (``ijb_1n.py`` ``evaluation``: ``top_inds = np.argsort(-similarity)``): read as a stable sort, among
  equal scores the gallery template with the **lower** index (smaller template id) ranks first.
- "open_set" (``ijb_evals.py`` ``evaluation_1N``: ``index_sorted = np.argsort(similarity[index])[::-1]``): the
  reverse of a stable ascending sort, so among equal scores the **higher** index (larger template id) ranks first.

NumPy's default argsort (introsort) is not guaranteed stable; the stable reading is the documented rule. The rank is
computed exactly in float64 (rank of the mate = #scores above it + #equal scores on the winning side of it) rather
than by :func:`chunked_topk`, which works in float32 and would create ties the float64 original does not have;
``tests/test_ijb_identification.py`` checks both agree where there are no near-ties. A mate tied with a non-mate at
the top may count as a rank-1 hit, but never as "correct" in the open-set TPIR (strict ``>``), as in the originals.
"""

from __future__ import annotations

import math
import os

import numpy as np

from harness.core.errors import DataFormatError
from harness.data.ijb import IJBMeta, meta_paths, read_ijb
from harness.data.ijb1n import PROBE, IJB1NProtocol, read_ijb_1n
from harness.eval.ijb_verification import (
    BENCHMARK_NAMES,
    IJBVerification,
    VerificationProtocol,
    as_int32,
    pool_image_features,
)
from harness.eval.roc import far_key

__all__ = [
    "IJBIdentification",
    "joined_identification",
    "open_set_identification",
    "identification_knobs",
    "mate_rank_scan",
    "RANKS",
    "JOINED_FARS",
    "OPEN_SET_FPIRS",
]

RANKS = (1, 5, 10)
JOINED_FARS = (0.01, 0.1)  # ijb_1n.py ``Fars``
_FPIR_GRID = [10**ii for ii in np.arange(-4, 0, 4 / 100)] + [1]  # ijb_evals.py run_model_test_1N, npoints=100
# nominal name -> the grid value insightface actually uses (indices 0, 25, 50, 75, 100)
OPEN_SET_FPIRS = {
    far_key(nominal): float(_FPIR_GRID[i]) for nominal, i in zip((1e-4, 1e-3, 1e-2, 1e-1, 1.0), range(0, 101, 25))
}
DEFAULT_BLOCK_BYTES = 64 << 20

DEFINITIONS = {
    "joined": (
        "(a) insightface _evaluation_/ijb/ijb_1n.py = AdaFace eval_helper_identification.py (CFSM's IJB Rank-1/5): "
        "galleries joined, every probe mated; rank-k = mate in top k; tpir@far = share of probes whose mate score > "
        "the ceil(P*far)-th largest of all non-mated scores (not the NIST FPIR)"
    ),
    "open_set": (
        "(b) insightface ijb_evals.py evaluation_1N (PR #1739), open-set DIR: each gallery alone, probes of the other "
        "gallery's subjects non-mated; thr(f) = sorted(max non-mated score, desc)[max(int(n*f)-1, 0)]; TPIR = mated "
        "probes with mate > every non-mate and > thr; mean of the two galleries; rank-k = (hits G1 + hits G2) / probes"
    ),
}


# ---------------------------------------------------------------------------------------------- core


class _View:
    """One ranking problem inside a scan: gallery columns ``cols`` (None: all), ``mate`` rows within them (-1: none),
    and how many of the largest non-mated scores to keep (flattened over all probes)."""

    def __init__(self, n_p: int, n_g: int, cols, mate, topk: int, high_first: bool = False):
        self.high_first = bool(high_first)  # tie order: higher gallery index first (evaluation_1N) or lower (ijb_1n)
        self.cols = None if cols is None else np.asarray(cols, dtype=np.int64)
        self.n_g = n_g if self.cols is None else len(self.cols)
        self.mate = np.asarray(mate, dtype=np.int64)
        if self.mate.shape != (n_p,) or (self.mate >= self.n_g).any() or (self.mate < -1).any():
            raise ValueError(
                f"mate must be (P,) = ({n_p},) gallery rows in [-1, {self.n_g}), got shape {self.mate.shape}"
            )
        self.k = int(topk)
        self.pos = np.full(n_p, np.nan)
        self.rank = np.full(n_p, -1, dtype=np.int64)
        self.nonmate_max = np.full(n_p, -np.inf)
        self.top = np.empty(0)

    def update(self, p0: int, s: np.ndarray) -> None:
        """Fold in the scores ``s`` (b, G) of probes ``p0 .. p0 + b``; ``s`` may be modified (it is a copy or a
        block that no other view reads after this one)."""
        if self.cols is not None:
            s = s[:, self.cols]
        p1 = p0 + s.shape[0]
        m = self.mate[p0:p1]
        has = np.flatnonzero(m >= 0)
        if has.size:
            sh, mh = s[has], m[has]
            ps = sh[np.arange(has.size), mh][:, None]
            above = np.count_nonzero(sh > ps, axis=1)
            ties = np.count_nonzero(sh == ps, axis=1)  # >= 1: the mate itself
            rare = np.flatnonzero(ties > 1)
            if rare.size:  # equal scores on the winning side of the mate (lower or higher gallery index) rank first
                cols = np.arange(sh.shape[1])
                ahead = cols[None, :] > mh[rare, None] if self.high_first else cols[None, :] < mh[rare, None]
                above[rare] += np.count_nonzero((sh[rare] == ps[rare]) & ahead, axis=1)
            self.pos[p0 + has] = ps[:, 0]
            self.rank[p0 + has] = above
            s[has, mh] = -np.inf  # from here on, s holds non-mated scores only
        if s.shape[1]:
            self.nonmate_max[p0:p1] = s.max(1)
        if self.k > 0 and s.size:
            flat = s.reshape(-1)
            if self.top.size >= self.k:  # only values above the current k-th largest can enter the top k
                flat = flat[flat > self.top.min()]
            if flat.size > self.k:
                flat = np.partition(flat, flat.size - self.k)[flat.size - self.k :]
            top = np.concatenate([self.top, flat])
            self.top = top if top.size <= self.k else np.partition(top, top.size - self.k)[top.size - self.k :]

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        top = np.sort(self.top)[::-1]
        return self.pos, self.rank, self.nonmate_max, top[np.isfinite(top)]  # drop the -inf placeholders of mates


def _scan(probe: np.ndarray, gallery: np.ndarray, views: list[_View], block_bytes: int) -> None:
    """Compute ``probe @ gallery.T`` (float64) once, by blocks of probes, and feed every view."""
    n_g = gallery.shape[0]
    pb = max(1, min(probe.shape[0], block_bytes // (8 * max(n_g, 1))))
    gt = np.ascontiguousarray(gallery.T)
    for p0 in range(0, probe.shape[0], pb):
        s = probe[p0 : p0 + pb] @ gt
        for i, v in enumerate(views):
            v.update(p0, s if (i == len(views) - 1 or v.cols is not None) else s.copy())


def _check_feats(probe, gallery) -> tuple[np.ndarray, np.ndarray]:
    probe = np.ascontiguousarray(probe, dtype=np.float64)
    gallery = np.ascontiguousarray(gallery, dtype=np.float64)
    if probe.ndim != 2 or gallery.ndim != 2 or probe.shape[1] != gallery.shape[1]:
        raise ValueError(f"probe and gallery must be (P, D) and (G, D), got {probe.shape} and {gallery.shape}")
    return probe, gallery


def mate_rank_scan(
    probe: np.ndarray,
    gallery: np.ndarray,
    mate,
    topk_nonmated: int = 0,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    high_first: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the float64 scores ``probe @ gallery.T`` by blocks of probes.

    ``mate[i]``: gallery row of probe i's mate, or -1 (non-mated). Returns ``(pos, rank, nonmate_max, top)``:
    ``pos`` the mate score (NaN if none); ``rank`` the 0-based rank of the mate (#scores above it + #equal scores
    at a lower gallery index, or at a higher one with ``high_first``; -1 if none); ``nonmate_max`` the max over the
    gallery without the mate (-inf if the gallery has nothing else); ``top`` the ``topk_nonmated`` largest non-mated
    scores of all probes, flattened, descending (fewer if there are fewer). Memory: one (block, G) float64 score block
    (``block_bytes``).
    """
    probe, gallery = _check_feats(probe, gallery)
    view = _View(probe.shape[0], gallery.shape[0], None, mate, topk_nonmated, high_first)
    _scan(probe, gallery, [view], block_bytes)
    return view.finish()


def _joined_tpir_need(n_p: int, fars) -> dict[float, int]:
    return {float(f): math.ceil(n_p * float(f)) for f in fars}


def _joined_result(pos, rank, top, n_g: int, need: dict[float, int], ranks) -> dict:
    n_p = pos.shape[0]
    out: dict = {f"rank{k}": float(np.mean(rank < k)) for k in ranks}
    thresholds = {}
    for f, k in need.items():
        if k < 1 or k > n_p * (n_g - 1):  # fewer non-mated scores than k: undefined (the original would crash)
            out[f"tpir@far={far_key(f)}"], thresholds[far_key(f)] = None, None
            continue
        th = float(top[k - 1])
        thresholds[far_key(f)] = th
        out[f"tpir@far={far_key(f)}"] = float(np.sum(pos > th) / n_p)
    out["thresholds"] = thresholds
    return out


def joined_identification(
    probe: np.ndarray, gallery: np.ndarray, mate, ranks=RANKS, fars=JOINED_FARS, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> dict:
    """Definition (a) (``ijb_1n.py`` ``evaluation``) on template features; every probe must have a mate row.

    Returns ``{"rank<k>": share, "tpir@far=<far>": share or None, "thresholds": {"<far>": threshold or None}}``.
    """
    mate = np.asarray(mate, dtype=np.int64)
    if (mate < 0).any():
        raise ValueError("joined identification needs a mate for every probe (mate >= 0)")
    if len(probe) == 0:
        raise ValueError("no probes")
    need = _joined_tpir_need(len(probe), fars)
    pos, rank, _, top = mate_rank_scan(probe, gallery, mate, max(need.values(), default=0), block_bytes)
    return _joined_result(pos, rank, top, len(gallery), need, ranks)


def open_set_result(pos, rank, nonmate_max, mate, fpirs: dict, ranks) -> dict:
    mated = np.asarray(mate) >= 0
    n_mated, n_non = int(mated.sum()), int((~mated).sum())
    m = np.sort(nonmate_max[~mated])[::-1]  # non-mated probes: max over the whole gallery
    pos_m = pos[mated]
    correct = pos_m > nonmate_max[mated]
    tpir, threshold = {}, {}
    for name, f in fpirs.items():
        if n_non == 0:
            tpir[name], threshold[name] = None, None
            continue
        th = float(m[max(int(n_non * f) - 1, 0)])
        threshold[name] = th
        tpir[name] = float(np.sum(correct & (pos_m > th)) / n_mated) if n_mated else None
    hits = {k: int(np.sum(rank[mated] < k)) for k in ranks}
    return {"mated": n_mated, "non_mated": n_non, "hits": hits, "tpir": tpir, "threshold": threshold}


def open_set_identification(
    probe: np.ndarray,
    gallery: np.ndarray,
    mate,
    fpirs: dict | None = None,
    ranks=RANKS,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> dict:
    """Definition (b) (``ijb_evals.py`` ``evaluation_1N``) on one gallery; ``mate[i] = -1`` marks a non-mated probe.

    Rank ties: the higher gallery index first (``np.argsort(s)[::-1]``).
    ``fpirs``: ``{name: value}`` (default :data:`OPEN_SET_FPIRS`). Returns ``mated``, ``non_mated``, ``hits``
    (``{k: count}`` of mated probes with the mate in the top k), ``tpir`` and ``threshold`` (``{name: value or
    None}``).
    """
    pos, rank, nonmate_max, _ = mate_rank_scan(probe, gallery, mate, 0, block_bytes, high_first=True)
    return open_set_result(pos, rank, nonmate_max, mate, OPEN_SET_FPIRS if fpirs is None else fpirs, ranks)


# ---------------------------------------------------------------------------------------------- evaluator


def identification_knobs(protocol: VerificationProtocol) -> dict:
    """The knobs of an IJB-B/C 1:N result row: the 1:1 protocol's (template features are built the same way; no
    FARs) plus the 1:N scoring, tie and threshold rules."""
    knobs = {k: v for k, v in protocol.knobs().items() if k != "fars"}
    knobs.update(
        {
            "score": "cosine (inner product of L2-normalised template features)",
            "score_dtype": "float64",
            "ties": "joined: lower gallery index first (ijb_1n.py argsort(-s)); open_set: higher gallery index first "
            "(evaluation_1N argsort(s)[::-1]); gallery templates in template-id order",
            "joined_fars": [far_key(f) for f in JOINED_FARS],
            "open_set_fpirs": dict(OPEN_SET_FPIRS),
        }
    )
    return knobs


def _rows_of(template_ids: np.ndarray, tids: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(template_ids, tids)
    assert (rows < len(template_ids)).all() and (template_ids[np.minimum(rows, len(template_ids) - 1)] == tids).all()
    return rows


def _first_row_of(gallery_subjects: np.ndarray, probe_subjects: np.ndarray) -> np.ndarray:
    """Per probe, the first gallery row with its subject (``np.argwhere(reg_ids == query_id)[0, 0]``), or -1."""
    order = np.argsort(gallery_subjects, kind="stable")
    sorted_subs = gallery_subjects[order]
    at = np.minimum(np.searchsorted(sorted_subs, probe_subjects), len(sorted_subs) - 1)
    return np.where(sorted_subs[at] == probe_subjects, order[at], -1).astype(np.int64)


class IJBIdentification:
    """IJB-B / IJB-C 1:N identification on one release folder (``IJB_release/IJBB`` or ``IJB_release/IJBC``).

    Reads face_tid_mid and name_5pts_score (:func:`harness.data.ijb.read_ijb`, without the 1:1 pair file) and the
    three NIST 1:N CSVs (:func:`harness.data.ijb1n.read_ijb_1n`). The constructor already checks ``gen_mask``'s
    rule: every probe's subject has exactly one template in the joined gallery (DataFormatError naming the probe
    CSV and the probe template's first line otherwise).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        prefix: str | None = None,
        protocol: VerificationProtocol = VerificationProtocol(),  # noqa: B008 (frozen dataclass, safe to share)
    ):
        self.meta: IJBMeta = read_ijb(root, prefix, with_pairs=False)
        self.root = self.meta.root
        self.prefix = self.meta.prefix
        self.protocol = protocol
        self.lists: IJB1NProtocol = read_ijb_1n(self.root, self.prefix, meta=self.meta)
        self.benchmark = f"{BENCHMARK_NAMES[self.prefix]} 1:N"
        self.gallery_names = list(self.lists.galleries)
        # joined gallery: np.unique of the concatenated gallery tids (ijb_1n.py), sorted
        tids = np.concatenate([t for t, _ in self.lists.galleries.values()])
        subs = np.concatenate([s for _, s in self.lists.galleries.values()])
        order = np.argsort(tids, kind="stable")
        self.joined_tids, self.joined_subjects = tids[order], subs[order]
        self.joined_mate = self._joined_mates()

    def __len__(self) -> int:
        return len(self.meta)

    def _joined_mates(self) -> np.ndarray:
        """``gen_mask``: row of each probe's unique mate in the joined gallery."""
        p_tids, p_subs = self.lists.probes
        subs = self.joined_subjects
        uniq, counts = np.unique(subs, return_counts=True)
        at = np.minimum(np.searchsorted(uniq, p_subs), len(uniq) - 1)  # galleries are never empty (reader)
        n = np.where(uniq[at] == p_subs, counts[at], 0)
        bad = np.flatnonzero(n != 1)
        if bad.size:
            i = int(bad[0])
            names = " + ".join(self.gallery_names)
            raise DataFormatError(
                self.lists.paths[PROBE],
                f"line {int(self.lists.first_lines[PROBE][i])}",
                f"probe template {int(p_tids[i])} (SUBJECT_ID {int(p_subs[i])}) "
                f"has {int(n[i])} gallery templates of its "
                f"subject in {names}; the 1:N protocol needs exactly one (ijb_1n.py gen_mask)",
            )
        return _first_row_of(subs, p_subs)

    # ------------------------------------------------------------------------------------------ features

    def template_features(
        self, feats: np.ndarray, flip_concat: bool = False, features_path: str | os.PathLike | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(template ids, L2-normalised float64 template features) of every template of face_tid_mid, from
        per-image features exactly as the 1:1 protocol builds them (same checks and errors)."""
        where = os.fspath(features_path) if features_path is not None else "<features>"
        tids, tf, _ = pool_image_features(
            feats,
            self.meta.templates,
            self.meta.medias,
            self.meta.faceness,
            self.protocol,
            flip_concat,
            where,
            meta_paths(self.meta.root, self.meta.prefix)["name_5pts_score"],
        )
        return tids, tf

    def evaluate_features(
        self,
        feats: np.ndarray,
        flip_concat: bool = False,
        *,
        features_path: str | os.PathLike | None = None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        return_items: bool = False,
    ) -> dict | tuple[dict, dict[str, np.ndarray]]:
        """Both 1:N definitions from per-image features (N, D) flip-fused, or (N, 2D) ``[orig | flip]`` with
        ``flip_concat``; row i is image row i of face_tid_mid.

        Result: ``benchmark`` ("IJB-B 1:N"/"IJB-C 1:N"), ``protocol``, ``definitions`` (one line each),
        ``joined`` (``rank1``, ``rank5``, ``rank10``, ``tpir@far=0.01``, ``tpir@far=0.1``, ``thresholds``),
        ``open_set`` (``tpir@fpir=0.0001`` ... ``tpir@fpir=1.0`` (mean of the two galleries), ``rank1``, ``rank5``,
        ``rank10`` ((hits G1 + hits G2) / probes), ``per_gallery`` {name: mated, non_mated, rank-k over its mated
        probes, tpir@fpir=..., threshold@fpir=...}), ``counts``, ``knobs`` and ``input``.

        ``return_items=True`` returns ``(result, items)``, ``items`` the per-probe arrays of the subject-level
        bootstrap (:mod:`harness.report.bootstrap`), in probe order (sorted probe template ids): ``probe_subject``
        int32; ``joined/rank`` int32 (0-based mate rank, ties as above) and ``joined/pos`` float64 (mate score); per
        gallery ``<name>/pos`` float64 (NaN if not mated there), ``<name>/rank`` int32 (-1 if not mated there),
        ``<name>/nonmate_max`` float64 and ``<name>/mated`` bool (``<name>``: S1/S2 or G1/G2, ``gallery_names``).
        ``RankK(items["joined/rank"], RANKS, prefix="joined.")`` and ``IJBOpenSetTpir`` on the galleries'
        ``(pos, rank, nonmate_max, mated)`` give ``joined`` rank-k and ``open_set`` TPIR exactly.
        """
        tids, tf = self.template_features(feats, flip_concat, features_path)
        p_tids, p_subs = self.lists.probes
        n_p = len(p_tids)
        probe = tf[_rows_of(tids, p_tids)]
        gallery = tf[_rows_of(tids, self.joined_tids)]
        # One score matrix probe x joined gallery; each gallery is a column subset of it (both in tid order).
        need = _joined_tpir_need(n_p, JOINED_FARS)
        views = {}
        for name, (g_tids, g_subs) in self.lists.galleries.items():
            cols = np.searchsorted(self.joined_tids, g_tids)
            # first gallery row of each probe's subject (ijb_evals.py: argwhere(reg_ids == query_id)[0, 0]), or -1
            views[name] = _View(n_p, len(self.joined_tids), cols, _first_row_of(g_subs, p_subs), 0, high_first=True)
        views["joined"] = _View(n_p, len(self.joined_tids), None, self.joined_mate, max(need.values()))
        _scan(probe, gallery, list(views.values()), block_bytes)

        pos, rank, _, top = views.pop("joined").finish()
        joined = _joined_result(pos, rank, top, len(self.joined_tids), need, RANKS)
        items: dict[str, np.ndarray] = {
            "probe_subject": as_int32(p_subs, "SUBJECT_ID"),
            "joined/rank": rank.astype(np.int32),
            "joined/pos": pos.astype(np.float64),
        }
        per_gallery = {}
        hits_total = {k: 0 for k in RANKS}
        tpirs: dict[str, list] = {name: [] for name in OPEN_SET_FPIRS}
        for name, v in views.items():
            pos, rank, nonmate_max, _ = v.finish()
            r = open_set_result(pos, rank, nonmate_max, v.mate, OPEN_SET_FPIRS, RANKS)
            items.update(
                {
                    f"{name}/pos": pos.astype(np.float64),
                    f"{name}/rank": rank.astype(np.int32),
                    f"{name}/nonmate_max": nonmate_max.astype(np.float64),
                    f"{name}/mated": v.mate >= 0,
                }
            )
            block = {"mated": r["mated"], "non_mated": r["non_mated"], "templates": int(v.n_g)}
            for k in RANKS:
                hits_total[k] += r["hits"][k]
                block[f"rank{k}"] = r["hits"][k] / r["mated"] if r["mated"] else None
            for f in OPEN_SET_FPIRS:
                block[f"tpir@fpir={f}"] = r["tpir"][f]
                block[f"threshold@fpir={f}"] = r["threshold"][f]
                tpirs[f].append(r["tpir"][f])
            per_gallery[name] = block
        open_set: dict = {
            f"tpir@fpir={f}": (None if any(v is None for v in vals) else float(np.mean(vals)))
            for f, vals in tpirs.items()
        }
        open_set.update({f"rank{k}": hits_total[k] / n_p for k in RANKS})
        open_set["per_gallery"] = per_gallery

        knobs = identification_knobs(self.protocol)
        result = {
            "benchmark": self.benchmark,
            "protocol": "1:N identification",
            "definitions": dict(DEFINITIONS),
            "joined": joined,
            "open_set": open_set,
            "counts": {
                "rows": int(len(self.meta)),
                "templates": int(len(tids)),
                "probes": int(n_p),
                "gallery_templates": {n: int(len(t)) for n, (t, _) in self.lists.galleries.items()},
                "joined_gallery": int(len(self.joined_tids)),
            },
            "knobs": knobs,
            "input": {"flip_concat": bool(flip_concat), "dim": int(feats.shape[1])},
        }
        return (result, items) if return_items else result

    def extract_features(self, model, batch_size: int = 64, device="cpu") -> np.ndarray:
        """Per-image features (N, D), exactly :meth:`IJBVerification.extract_features` (which uses only ``meta``
        and ``protocol``) on this release: aligned loose crops, channel order, ``(x/255-0.5)/0.5``, flip sum."""
        return IJBVerification.extract_features(self, model, batch_size=batch_size, device=device)

    def evaluate(self, model, batch_size: int = 64, device="cpu", return_items: bool = False):
        """:meth:`extract_features` then :meth:`evaluate_features`."""
        return self.evaluate_features(
            self.extract_features(model, batch_size=batch_size, device=device), return_items=return_items
        )
