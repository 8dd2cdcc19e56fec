"""IJB-S 1:N identification (V2S, V2B, V2V) as AdaFace's ``validation_lq`` evaluates it with Yichun Shi's PFE code.

Sources (facts re-implemented, no code copied; ``docs/benchmark_formats.md`` sections 2.4-2.5):

- AdaFace ``validation_lq/validate_IJB_S.py``: no flip test; each frame feature is ``emb * norm`` (the model's
  *unnormalised* embedding, "pre_norm_vector_add_cos"); a template is the mean of its frame features, then
  L2-normalised with an eps of 1e-8 (``average_fuse``); a template with no surviving frames (all dropped by MTCNN)
  gets a zero vector, so it scores 0 against everything; score = inner product. Input: aligned crops scaled
  ``(x/255-0.5)/0.5`` (AdaFace-trained models take BGR; ``channel_order`` knob, default RGB as the rest of this
  harness).
- ``PFE/ijbs.py`` ``IJBSTest.identification`` and ``DIR_FAR``, with its ``find_thresholds_by_FAR``:
  - closed set: ``DIR_FAR(hstack(S_G1, S_G2), label, ranks=[1, 5, 10])``; only mated probes count (subject present
    in G1 or G2); a probe may have at most one mate (an assertion there; a :class:`DataFormatError` naming the
    gallery CSV and line here); Rank-r = fraction of mated probes whose mate is among the r highest scores.
  - open set, per gallery Gi: thresholds from the max scores of the probes without a mate in Gi, sorted descending:
    ``k = int(n_nonmated * fpir)`` (truncation: this is the copy in ``PFE/ijbs.py``; PFE's ``utils.py`` copy rounds),
    ``thr = s[k-1]``, or ``s[0] + 1e-8`` when ``k == 0``; TPIR = mean over Gi's mated probes of (mate score >= thr
    and the mate ranked first); reported = (TPIR_G1 + TPIR_G2) / 2.

Exact ties and score dtype, as the published code behaves (``tests/test_ties.py`` builds each case by hand):

- **Tie order.** ``DIR_FAR`` ranks a score row by ``np.argsort(score_mat, axis=1)[:, ::-1]``: read as a stable sort,
  among exactly equal scores the **highest** gallery column comes first; in the closed set the columns are
  ``hstack(G1, G2)``, so a tied G2 template precedes every tied G1 template. The open-set "mate at rank 1" test uses
  the same rule within one gallery. Exact ties are common: a template whose frames all failed alignment is a zero
  vector and scores exactly 0 against every gallery template, so its mate ranks last among the zeros' columns
  above it. (NumPy's default argsort is not guaranteed stable; the reversed stable sort is the documented reading.)
- **Gallery column order** (it decides the ties): single-image galleries in file order; booking galleries in
  PFE's ``list(set(subjects))`` order (deterministic for integer ids; :mod:`harness.data.ijbs`); video galleries in
  file order, because PFE's ``list(set(pairs))`` of string tuples follows Python's per-process hash seed and so has
  no reproducible order (documented choice).
- **Score dtype.** AdaFace's template features are float32 (``average_fuse`` of the float32 model outputs), but an
  empty template is ``np.zeros(512)``, float64: ``np.array`` of a template list holding one promotes the whole
  list, and ``np.dot`` then scores in float64. So a (probe list, gallery list) pair is scored in float64 when either
  list holds an empty template, else in float32 (the joined closed-set matrix in float64 if either half is).
- **Threshold comparison in the scores' dtype.** ``thr = s[k-1]`` or ``s[0] + 1e-8`` is computed in float64 (NumPy
  1.x, which AdaFace's code needs: ``np.bool``/``np.object``) and compared with float32 scores in float32 (NumPy's
  value-based casting demotes the float64 scalar), so with float32 scores ``s[0] + 1e-8`` rounds back to ``s[0]``
  for ``s[0] >= 0.25`` and a mate scoring exactly the largest non-mated maximum counts as detected. Here the
  threshold is rounded to the scores' dtype and every comparison made in it. Rates are float64 means (PFE: float32).
- Open-set TPIR of a gallery without non-mated (or without mated) probes is ``None`` (PFE asserts / returns NaN);
  the protocol's reported value is then ``None`` too.

Scores come from :func:`harness.eval.identification.chunked_topk` (bounded memory; no full score matrix).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError
from harness.data.ijbs import PROTOCOLS, IJBSProtocol, image_list, read_ijbs
from harness.eval.identification import DEFAULT_BLOCK_BYTES, chunked_topk
from harness.eval.roc import far_key

__all__ = [
    "IJBSSettings",
    "IJBSEvaluation",
    "find_threshold_by_fpir",
    "identification_metrics",
    "average_fuse",
    "BENCHMARK",
]

BENCHMARK = "IJB-S"
NORMALIZATION = "(x/255-0.5)/0.5"
FUSE_EPS = 1e-8
THRESHOLD_EPS = 1e-8
_CHANNEL_ORDERS = ("RGB", "BGR")


def rank_key(r: int) -> str:
    return f"rank{int(r)}"


def tpir_key(fpir: float) -> str:
    return f"tpir@fpir={far_key(fpir)}"


@dataclass(frozen=True)
class IJBSSettings:
    """The knobs of the IJB-S protocol. Defaults = AdaFace ``validate_IJB_S.py`` + PFE ``identification``.

    - ``channel_order``: "RGB" or "BGR" (AdaFace-trained models, CFSM) fed to the model.
    - ``input_size``: side fed to the model; ``None`` = the aligned crops' own size (112 for the real data), else
      crops are resized (bilinear, antialiased) to it.
    - ``frame_norm``: L2-normalise each frame feature before averaging (off in AdaFace: ``emb * norm`` is kept).
    - ``ranks`` / ``fpirs``: the closed-set ranks and open-set FPIRs reported. PFE's script reports 1, 5, 10; 20 is
      added so that the saved ``mate_rank`` arrays carry the CMC curve to rank 20 (``harness.plots``), as TinyFace's.
    """

    channel_order: str = "RGB"
    input_size: int | None = None
    frame_norm: bool = False
    ranks: tuple = (1, 5, 10, 20)
    fpirs: tuple = (0.01, 0.1)
    normalization: str = NORMALIZATION

    def __post_init__(self):
        if self.channel_order not in _CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {_CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.normalization != NORMALIZATION:
            raise ValueError(f"normalization must be {NORMALIZATION!r}, got {self.normalization!r}")
        if self.input_size is not None and (
            isinstance(self.input_size, bool) or int(self.input_size) != self.input_size or self.input_size <= 0
        ):
            raise ValueError(f"input_size must be None or a positive int, got {self.input_size!r}")
        ranks = tuple(int(r) for r in self.ranks)
        if not ranks or min(ranks) < 1:
            raise ValueError(f"ranks must be positive ints, got {self.ranks!r}")
        fpirs = tuple(float(x) for x in self.fpirs)
        if not fpirs or not all(0.0 < x < 1.0 for x in fpirs):
            raise ValueError(f"fpirs must be numbers in (0, 1), got {self.fpirs!r}")
        object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "fpirs", fpirs)
        object.__setattr__(self, "frame_norm", bool(self.frame_norm))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", int(self.input_size))

    def knobs(self) -> dict:
        """Flat, JSON-ready dict of every choice behind the numbers, stored in every result row: the only source of
        the IJB-S row's protocol knobs (``harness.run`` adds run-level facts only, never overwriting these)."""
        return {
            "alignment": "given aligned crops (<IJB-S>/aligned; frames the aligner dropped are missing)",
            "input_size": self.input_size,
            "channel_order": self.channel_order,
            "normalization": self.normalization,
            "flip": "none",
            "faceness": False,
            "feature": "unnormalised (emb * norm)",
            "image_norm": self.frame_norm,
            "image_norm_means": "L2-normalise each frame feature before fusion (frame_norm)",
            "pooling": f"mean of frame features, then L2 with eps {FUSE_EPS:g} (AdaFace average_fuse)",
            "empty_template": "zero vector (scores 0)",
            "score": "inner product",
            "score_dtype": "float32; float64 where the probe or gallery list holds an empty template "
            "(AdaFace's float64 zero vector)",
            "ranks": list(self.ranks),
            "fpirs": [far_key(x) for x in self.fpirs],
            "threshold_rule": "non-mated max scores descending; k = int(n * fpir); "
            f"thr = s[k-1], or s[0] + {THRESHOLD_EPS:g} if k == 0; compared in the scores' dtype",
            "open_set": "TPIR = mean over mated probes of (mate score >= thr and mate at rank 1); "
            "reported = (G1 + G2) / 2",
            "ties": "higher gallery column first (reversed stable argsort; hstack(G1, G2): G2 before G1)",
            "gallery_order": "single: file order; booking: list(set(subjects)); video: file order",
        }


# ---------------------------------------------------------------------------------------------------- metrics


def find_threshold_by_fpir(nonmated_max_scores, fpir: float, eps: float = THRESHOLD_EPS):
    """PFE ``find_thresholds_by_FAR`` for one FPIR: sort descending, ``k = int(n * fpir)``; ``s[k-1]``, or
    ``s[0] + eps`` when ``k == 0``, that sum taken in float64 and rounded to the scores' dtype (float32 scores:
    ``s[0] + 1e-8`` is ``s[0]`` again for ``s[0] >= 0.25``). Returns a NumPy scalar of the scores' dtype (float32 or
    float64; other inputs are read as float64), so ``scores >= thr`` compares in that dtype, as PFE does."""
    s = np.asarray(nonmated_max_scores).reshape(-1)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    if s.size == 0:
        raise ValueError("no non-mated scores to set a threshold from")
    s = np.sort(s)[::-1]
    k = int(s.size * float(fpir))
    return s.dtype.type(np.float64(s[0]) + eps) if k == 0 else s[k - 1]


def _mate_columns(probe_subjects, gallery_subjects) -> list[list[int]]:
    cols: dict[int, list[int]] = {}
    for j, s in enumerate(np.asarray(gallery_subjects).tolist()):
        cols.setdefault(int(s), []).append(j)
    return [cols.get(int(s), []) for s in np.asarray(probe_subjects).tolist()]


def identification_metrics(
    probe: np.ndarray,
    g1: np.ndarray,
    g2: np.ndarray,
    probe_subjects,
    g1_subjects,
    g2_subjects,
    *,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] = (0.01, 0.1),
    g1_where: tuple[str, Sequence[int] | None] = ("<G1>", None),
    g2_where: tuple[str, Sequence[int] | None] = ("<G2>", None),
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    return_items: bool = False,
    empty: tuple | None = None,
) -> dict:
    """PFE ``identification`` on template features (rows already fused and normalised; scores = inner products).

    ``empty = (probe mask, G1 mask, G2 mask)`` marks the empty (zero) templates: a probe/gallery pair of lists is
    scored in float64 when either holds one, else in float32 (AdaFace's dtype promotion, module docstring). Ties:
    higher column first.

    ``g*_where = (csv path, 1-based line of each gallery template)`` only name the culprit when a probe has two
    mates in ``hstack(G1, G2)``. Returns ``{"metrics": {rank<r>, tpir@fpir=<x>}, "by_gallery": {"G1": ..., "G2":
    ...}, "counts": {...}}``; a rate with nothing to average is ``None``.

    ``return_items=True`` adds ``"items"``: the per-probe arrays of the subject-level bootstrap
    (:mod:`harness.report.bootstrap`), one entry per probe (mated or not): ``probe_subject`` int32; ``mate_rank`` int16,
    the 0-based position of the mate in the top ``max(ranks)`` of ``hstack(G1, G2)`` (``max(ranks)`` if not
    there, -1 if the probe has no mate); per gallery ``G1/mated``, ``G1/top1_correct`` (bool: the top-1 gallery
    index is the mate), ``G1/top1_score`` (the top-1 score in the scores' dtype, float32 or float64; NaN for an
    empty gallery),
    and the same for G2. ``RankK(mate_rank, ranks)`` and ``IJBSTpirAtFpir`` on the galleries' ``(mated,
    top1_correct, top1_score)`` give ``metrics`` exactly.
    """
    probe = np.asarray(probe, np.float32)
    g1 = np.asarray(g1, np.float32)
    g2 = np.asarray(g2, np.float32)
    if empty is None:
        empty = tuple(~m.any(axis=1) for m in (probe, g1, g2))  # a zero row is what an empty template fuses to
    e_p, e_1, e_2 = (bool(np.asarray(m, bool).any()) for m in empty)
    dt_g = {"G1": np.float64 if (e_p or e_1) else np.float32, "G2": np.float64 if (e_p or e_2) else np.float32}
    dt_joined = np.float64 if np.float64 in dt_g.values() else np.float32
    ranks = [int(r) for r in ranks]
    fpirs = [float(x) for x in fpirs]
    n_p, n_1 = len(probe), len(g1)
    joined_subjects = np.concatenate(
        [np.asarray(g1_subjects, np.int64).reshape(-1), np.asarray(g2_subjects, np.int64).reshape(-1)]
    )
    mates = _mate_columns(probe_subjects, joined_subjects)

    def locate(c: int) -> tuple[str, int | None]:
        path, lines = g1_where if c < n_1 else g2_where
        return path, (int(lines[c if c < n_1 else c - n_1]) if lines is not None else None)

    for i, cols in enumerate(mates):
        if len(cols) > 1:
            (fa, la), (fb, lb) = locate(cols[0]), locate(cols[1])
            first = f"{fa}:line {la}" if la is not None else fa
            raise DataFormatError(
                fb,
                f"line {lb}" if lb is not None else None,
                f"subject {int(joined_subjects[cols[1]])} has a second template in G1+G2 (first: {first}); "
                f"probe {i} would have two mates (PFE DIR_FAR allows at most one)",
            )
    mated = np.array([len(c) == 1 for c in mates], bool)
    mate_col = np.array([c[0] if c else -1 for c in mates], np.int64)

    metrics: dict = {}
    items: dict = {"probe_subject": _as_int32(probe_subjects), "mate_rank": np.full(n_p, -1, _rank_dtype(max(ranks)))}
    # ---- closed set over hstack(G1, G2): mated probes only
    joined = np.concatenate([g1, g2], 0) if n_1 + len(g2) else np.zeros((0, probe.shape[1]), np.float32)
    m_idx = np.flatnonzero(mated)
    if len(m_idx):
        _, top = chunked_topk(probe[m_idx], joined, max(ranks), max_bytes, ties="high_index_first", dtype=dt_joined)
        hit = top == mate_col[m_idx][:, None]
        for r in ranks:
            metrics[rank_key(r)] = float(hit[:, :r].any(axis=1).mean())
        items["mate_rank"][m_idx] = np.where(hit.any(axis=1), hit.argmax(axis=1), max(ranks))
    else:
        for r in ranks:
            metrics[rank_key(r)] = None

    # ---- open set, per gallery
    by_gallery: dict = {}
    per_fpir: dict[float, list] = {x: [] for x in fpirs}
    for name, g, lo in (("G1", g1, 0), ("G2", g2, n_1)):
        in_g = (mate_col >= lo) & (mate_col < lo + len(g))
        col = np.where(in_g, mate_col - lo, -1)
        gm, gn = np.flatnonzero(in_g), np.flatnonzero(~in_g)
        block: dict = {"templates": int(len(g)), "mated": int(len(gm)), "non_mated": int(len(gn))}
        dt = dt_g[name]
        topk = lambda q, g=g, dt=dt: chunked_topk(q, g, 1, max_bytes, ties="high_index_first", dtype=dt)  # noqa: E731
        top1_correct = np.zeros(n_p, bool)
        top1_score = np.full(n_p, np.nan, dt)
        items.update({f"{name}/mated": in_g, f"{name}/top1_correct": top1_correct, f"{name}/top1_score": top1_score})
        if return_items and len(g) and not (len(gm) and len(gn)):  # no metric here, but the arrays are filled in
            for idx in (gm, gn):
                if len(idx):
                    s1, i1 = topk(probe[idx])
                    top1_score[idx], top1_correct[idx] = s1[:, 0], i1[:, 0] == col[idx]
        if len(g) and len(gm) and len(gn):
            s_nm, _ = topk(probe[gn])
            s_m, i_m = topk(probe[gm])
            top1_ok = i_m[:, 0] == col[gm]
            top1_correct[gm], top1_score[gm], top1_score[gn] = top1_ok, s_m[:, 0], s_nm[:, 0]
            s_m, s_nm = s_m[:, 0], s_nm[:, 0]  # in the scores' dtype: thresholds are compared in it
            for x in fpirs:
                thr = find_threshold_by_fpir(s_nm, x)
                # success needs the mate at rank 1, so the mate score is the top-1 score there
                tpir = float((top1_ok & (s_m >= thr)).mean())
                block[tpir_key(x)] = tpir
                block[f"threshold@fpir={far_key(x)}"] = float(thr)
                block[f"achieved_fpir@fpir={far_key(x)}"] = float((s_nm >= thr).mean())
                per_fpir[x].append(tpir)
        else:
            for x in fpirs:
                block[tpir_key(x)] = None
                block[f"threshold@fpir={far_key(x)}"] = None
                block[f"achieved_fpir@fpir={far_key(x)}"] = None
                per_fpir[x].append(None)
        by_gallery[name] = block
    for x in fpirs:
        vals = per_fpir[x]
        metrics[tpir_key(x)] = None if any(v is None for v in vals) else (vals[0] + vals[1]) / 2.0
    counts = {"probes": int(n_p), "mated": int(mated.sum()), "unmated": int(n_p - mated.sum())}
    out = {"metrics": metrics, "by_gallery": by_gallery, "counts": counts}
    if return_items:
        out["items"] = items
    return out


def _rank_dtype(k: int):
    return np.int16 if k <= np.iinfo(np.int16).max else np.int32


def _as_int32(ids) -> np.ndarray:
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
        raise ValueError(f"subject ids do not fit int32 (range {ids.min()} .. {ids.max()})")
    return ids.astype(np.int32)


# ---------------------------------------------------------------------------------------------------- fusion


def average_fuse(
    features: np.ndarray, groups: Sequence[Sequence[int]], eps: float = FUSE_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """AdaFace ``average_fuse``: per group, the mean of its rows (float64), divided by (L2 norm + ``eps``); an
    empty group gives a zero vector. Returns ``(templates (T, D) float32, empty mask (T,))``."""
    features = np.asarray(features)
    d = features.shape[1]
    out = np.zeros((len(groups), d), np.float64)
    empty = np.array([len(g) == 0 for g in groups], bool)
    for t, rows in enumerate(groups):
        if len(rows):
            out[t] = features[np.asarray(rows, np.int64)].astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    out /= norm + eps
    return out.astype(np.float32), empty


# ---------------------------------------------------------------------------------------------------- evaluator


class IJBSEvaluation:
    """IJB-S V2S / V2B / V2V on one IJB-S folder (``<root>/protocols`` CSVs, aligned crops in ``<root>/aligned``
    unless ``aligned_root`` says otherwise)."""

    def __init__(
        self,
        root: str | os.PathLike,
        settings: IJBSSettings = IJBSSettings(),
        aligned_root: str | os.PathLike | None = None,
    ):
        self.root = os.fspath(root)
        self.protocol: IJBSProtocol = read_ijbs(self.root)
        self.settings = settings
        self.aligned_root = os.fspath(aligned_root) if aligned_root is not None else os.path.join(self.root, "aligned")

    def image_list(self) -> tuple[list[str], list[str]]:
        """``(present, missing)`` image paths relative to the aligned root (missing = alignment failures)."""
        return image_list(self.protocol, self.aligned_root)

    # ---------------------------------------------------------------- features from a model
    def extract_features(self, model, batch_size: int = 64, device="cpu") -> tuple[list[str], np.ndarray]:
        """Features of every aligned crop present on disk: ``(paths, (N, D) float32)``, paths relative to the
        aligned root. Each crop is read (RGB), resized to ``settings.input_size`` if that is set and differs, put in
        ``settings.channel_order``, scaled ``(x/255-0.5)/0.5`` and fed to ``model`` (eval mode, inference mode, no
        flip). A model returning ``(emb, norm)`` (AdaFace) gives ``emb * norm``; a tensor output is used as is."""
        import torch
        import torch.nn.functional as F

        from harness.data.images import read_image
        from harness.eval.features import embed_batches

        paths, _ = self.image_list()
        s = self.settings
        if not paths:
            raise ValueError(f"{self.aligned_root}: no aligned crops of the {BENCHMARK} protocol found")
        crop_hw: list = []

        def load(start: int, stop: int) -> torch.Tensor:
            imgs = []
            for p in paths[start:stop]:
                full = os.path.join(self.aligned_root, p)
                im = read_image(full)
                if not crop_hw:
                    crop_hw.append(im.shape[:2])
                elif im.shape[:2] != crop_hw[0]:
                    h, w = crop_hw[0]
                    raise DataFormatError(
                        full, "shape", f"aligned crop is {im.shape[1]}x{im.shape[0]}, others are {w}x{h}"
                    )
                imgs.append(im)
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
            if s.input_size is not None and tuple(x.shape[-2:]) != (s.input_size, s.input_size):
                x = F.interpolate(
                    x.float(), size=(s.input_size, s.input_size), mode="bilinear", align_corners=False, antialias=True
                )
                x = x.round_().clamp_(0, 255).to(torch.uint8)
            return x

        out = embed_batches(model, len(paths), load, batch_size, device, s.channel_order, "none")
        return paths, out

    # ---------------------------------------------------------------- metrics from features
    def _feature_table(self, features, where: str) -> tuple[dict[str, int], np.ndarray]:
        if isinstance(features, Mapping):
            paths = list(features.keys())
            mat = np.stack([np.asarray(v).reshape(-1) for v in features.values()]) if paths else np.zeros((0, 0))
        else:
            try:
                paths, mat = features
            except (TypeError, ValueError):
                raise TypeError("features must be a {path: vector} dict or a (paths, matrix) pair") from None
            paths = [os.fspath(p) for p in paths]
            mat = np.asarray(mat)
        if mat.ndim != 2 or mat.shape[1] == 0:
            raise DataFormatError(where, "shape", f"features must be a 2-D (images, dim) array, got shape {mat.shape}")
        if mat.dtype.kind != "f":
            raise DataFormatError(where, "dtype", f"features must be floating point, got {mat.dtype}")
        if len(paths) != mat.shape[0]:
            raise DataFormatError(where, "rows", f"{mat.shape[0]} feature rows but {len(paths)} paths")
        index: dict[str, int] = {}
        for i, p in enumerate(paths):
            p = p.replace(os.sep, "/")
            if p in index:
                raise DataFormatError(where, f"row {i}", f"image {p!r} repeats row {index[p]}")
            index[p] = i
        ok = np.isfinite(mat).all(axis=1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataFormatError(where, f"row {i}", f"feature of {paths[i]!r} is not finite (NaN/inf)")
        if mat.size and not mat.any():
            raise DataFormatError(where, "rows", f"all {mat.shape[0]} feature rows are zero (no features were written)")
        mat = mat.astype(np.float32, copy=False)
        if self.settings.frame_norm:
            norms = np.linalg.norm(mat, axis=1, keepdims=True)
            if (norms == 0).any():
                i = int(np.flatnonzero(norms[:, 0] == 0)[0])
                raise DataFormatError(
                    where, f"row {i}", f"all-zero feature of {paths[i]!r} cannot be L2-normalised (frame_norm)"
                )
            mat = mat / norms
        return index, mat

    def evaluate_features(
        self, features, *, features_path: str | os.PathLike | None = None, return_items: bool = False
    ):
        """Metrics from per-image features: a ``{path: vector}`` dict or ``(paths, (N, D) matrix)``, paths relative
        to the aligned root (``<subject>/videos_<vid>_<frame>.jpg``, ``<subject>/img_<id>.jpg``). Protocol images
        without a feature are alignment failures (counted); features of other images are ignored (counted).

        Result: ``benchmark`` ("IJB-S"), ``protocol``, ``V2S`` / ``V2B`` / ``V2V`` (each ``rank1``, ``rank5``,
        ``rank10``, ``tpir@fpir=0.01``, ``tpir@fpir=0.1``: fractions in [0, 1] or None), ``by_gallery`` (per protocol,
        G1 and G2: TPIR, threshold and achieved FPIR per FPIR, template / mated / non-mated counts), ``counts`` and
        ``knobs`` (:meth:`IJBSSettings.knobs`).

        ``return_items=True`` returns ``(result, items)``, ``items`` the per-probe arrays of the subject-level
        bootstrap for every protocol, keyed ``<protocol>/<array>`` (``V2S/probe_subject``, ``V2S/mate_rank``,
        ``V2S/G1/top1_score``, ...; see :func:`identification_metrics`), probes in the protocol's probe order.
        """
        where = os.fspath(features_path) if features_path is not None else "<features>"
        index, mat = self._feature_table(features, where)
        proto = self.protocol
        listed = proto.images()
        listed_set = set(listed)
        missing = [p for p in listed if p not in index]
        is_frame = lambda p: "/videos_" in p  # noqa: E731
        used = proto.used_templates()
        groups = [[index[p] for p in proto.templates[t].images if p in index] for t in used]
        fused, empty = average_fuse(mat, groups)
        row_of = {t: i for i, t in enumerate(used)}

        result: dict = {"benchmark": BENCHMARK, "protocol": "1:N identification (PFE DIR_FAR)"}
        by_gallery: dict = {}
        per_protocol_counts: dict = {}
        items: dict[str, np.ndarray] = {}
        for name in PROTOCOLS:
            probes, g1, g2, f1, f2 = proto.protocol(name)
            rows_p = [row_of[t] for t in probes]
            rows_1 = [row_of[t] for t in g1]
            rows_2 = [row_of[t] for t in g2]
            subj = lambda ts: np.array([proto.templates[t].subject for t in ts], np.int64)  # noqa: E731
            out = identification_metrics(
                fused[rows_p],
                fused[rows_1],
                fused[rows_2],
                subj(probes),
                subj(g1),
                subj(g2),
                ranks=self.settings.ranks,
                fpirs=self.settings.fpirs,
                g1_where=(f1, [proto.templates[t].line for t in g1]),
                g2_where=(f2, [proto.templates[t].line for t in g2]),
                return_items=return_items,
                empty=(empty[rows_p], empty[rows_1], empty[rows_2]),
            )
            for key, arr in out.pop("items", {}).items():
                items[f"{name}/{key}"] = arr
            result[name] = out["metrics"]
            by_gallery[name] = out["by_gallery"]
            c = out["counts"]
            c["empty_probe_templates"] = int(empty[rows_p].sum()) if rows_p else 0
            for gname, rows in (("G1", rows_1), ("G2", rows_2)):
                b = out["by_gallery"][gname]
                c[gname] = {
                    "templates": b["templates"],
                    "empty_templates": int(empty[rows].sum()) if rows else 0,
                    "mated": b["mated"],
                    "non_mated": b["non_mated"],
                }
            per_protocol_counts[name] = c
        result["by_gallery"] = by_gallery
        n_frames = sum(map(is_frame, listed))
        n_missing_frames = sum(map(is_frame, missing))
        result["counts"] = {
            "images_listed": len(listed),
            "frames_listed": n_frames,
            "frames_missing": n_missing_frames,
            "stills_listed": len(listed) - n_frames,
            "stills_missing": len(missing) - n_missing_frames,
            "features_given": len(index),
            "features_unused": sum(1 for p in index if p not in listed_set),
            "templates": len(used),
            "empty_templates": int(empty.sum()),
            "metadata_rows": proto.metadata_rows,
            **per_protocol_counts,
        }
        result["knobs"] = self.settings.knobs()
        result["input"] = {"dim": int(mat.shape[1]), "features": where}
        return (result, items) if return_items else result

    def evaluate(self, model, batch_size: int = 64, device="cpu", return_items: bool = False):
        """:meth:`extract_features` then :meth:`evaluate_features` (missing crops counted as alignment failures)."""
        out = self.evaluate_features(
            self.extract_features(model, batch_size=batch_size, device=device), return_items=return_items
        )
        res = out[0] if return_items else out
        res["input"]["features"] = f"model on {self.aligned_root}"
        return out
