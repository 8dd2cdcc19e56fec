"""TinyFace closed-set identification (Rank-1/5/20), as AdaFace evaluates it.

Sources (facts re-implemented, no code copied): mk-minchul/AdaFace ``validation_lq/validate_tinyface.py``,
``validation_lq/tinyface_helper.py`` (``TinyFaceTest.test_identification``) and the PFE ``DIR_FAR`` it calls
(``docs/benchmark_formats.md`` section 3); dataset: Cheng, Zhu, Gong, "Low-Resolution Face Recognition",
ACCV 2018. The *official* TinyFace script (Euclidean distance, CMC at 1/5/10/20/50 and mAP) is a different metric
and is not what AdaFace and CFSM report.

Features (:meth:`TinyFaceEvaluation.extract_features`):

- the aligned copy's images, as stored (AdaFace does not re-align), scaled ``(x/255-0.5)/0.5``, in
  ``channel_order`` (AdaFace models take BGR; the harness default is RGB). With ``input_size`` set, images of
  another size are resized first (antialiased bilinear, rounded to uint8, as the harness's training loader does).
- flip test fused with AdaFace's ``pre_norm_vector_add``: ``emb * norm + emb_f * norm_f``. AdaFace's model returns
  (unit embedding, norm), so this is the sum of the *un-normalised* outputs for the image and its mirror; the
  harness's models return the un-normalised output, so the fusion is ``model(x) + model(flip(x))``.
  ``flip="none"`` keeps ``model(x)``. Each row is then L2-normalised in float32 (AdaFace's ``l2_norm``, applied in
  its ``infer`` before the features are saved; an all-zero row stays zero here and scores 0, where AdaFace would
  produce NaN).
- :meth:`~TinyFaceEvaluation.evaluate_features` scores the features **as given**, as AdaFace's
  ``TinyFaceTest.test_identification`` does with its already normalised features: no second normalisation, which
  would move scores by an ulp and split exact ties. For features that are not unit vectors (another framework's
  raw embeddings) the switch ``TinyFaceSettings(l2_normalize=True)`` (CLI ``--l2-normalize``) normalises each row
  first.

Metric (``DIR_FAR(score, label, ranks=[1, 5, 20])`` with its default FAR = 1.0, i.e. closed set):

- score = float32 inner product of the given features (AdaFace: ``np.dot`` of its float32 features), probes x
  gallery, the gallery being every Gallery_Match image followed by every Gallery_Distractor image (label -100);
  ``label[i, j]`` = same identity. Here each score is the float32 value nearest the exact inner product
  (:func:`harness.eval.identification.chunked_topk`); a float32 GEMM such as AdaFace's ``np.dot`` rounds in its
  BLAS kernel's own way, which changes the last bit from machine to machine.
- only *mated* probes count (a probe with no same-identity Gallery_Match image is dropped from the denominator, as
  ``DIR_FAR`` does; TinyFace has none).
- Rank-k = fraction of mated probes with *any* same-identity gallery image among the k highest scores.
- The k highest scores come from :func:`harness.eval.identification.chunked_topk` (blocks of bounded memory, never
  the dense probe x gallery matrix: 3,728 x 157,871 on the real set).
- **Ties.** AdaFace's ``DIR_FAR`` (``tinyface_helper.py``) sorts each score row with ``np.argsort`` and reverses
  it: read as a stable sort, among exactly equal scores the entry with the *higher* gallery column comes first.
  ``ties="high_index_first"`` (default) is that order; ``"low_index_first"`` the opposite. NumPy's default
  ``argsort`` (introsort, SIMD-sorted on recent x86 builds) is not guaranteed stable, so the reversed *stable* sort
  is the documented reading of AdaFace's rule. Bitwise identical gallery features (a distractor image identical to
  a Gallery_Match image) score exactly alike (:func:`harness.eval.identification.chunked_topk` scores each distinct
  row once), so they tie and the rule decides. The gallery order is the reader's: Gallery_Match then
  Gallery_Distractor, each folder sorted by path (AdaFace keeps the ``os.walk`` order, which depends on the file
  system: the one place its tie order cannot be reproduced).
- AdaFace stores each rank as a float32 mean; here it is ``hits / mated`` in float64 (differs by < 1e-7), with the
  hit counts alongside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError
from harness.data.tinyface import DEFAULT_ALIGNED, TinyFaceProtocol, read_tinyface
from harness.eval.identification import DEFAULT_BLOCK_BYTES, chunked_topk, l2_normalize

__all__ = ["TinyFaceSettings", "TinyFaceEvaluation", "closed_set_cmc", "BENCHMARK"]

BENCHMARK = "TinyFace"
NORMALIZATION = "(x/255-0.5)/0.5"
_FLIPS = ("sum", "none")
_CHANNEL_ORDERS = ("RGB", "BGR")
_TIES = ("high_index_first", "low_index_first")


@dataclass(frozen=True)
class TinyFaceSettings:
    """The knobs of the TinyFace protocol. Defaults = AdaFace ``validate_tinyface.py`` (flip test on, ranks 1/5/20),
    except ``channel_order`` (the harness trains RGB; AdaFace and CFSM models take BGR).

    - ``flip``: ``"sum"`` (``pre_norm_vector_add``: outputs of the image and its mirror added, then L2) or ``"none"``.
    - ``input_size``: side fed to the model; ``None`` feeds the aligned copy as stored (AdaFace: 112).
    - ``channel_order``: ``"RGB"`` or ``"BGR"``.
    - ``ties``: ``"high_index_first"`` (AdaFace's reversed argsort, read as stable) or ``"low_index_first"``.
    - ``ranks``: the CMC ranks reported.
    - ``l2_normalize``: L2-normalise the given features before scoring (for features that are not unit vectors);
      off = AdaFace: the features are scored as given (the harness's extractor already normalises them).
    """

    flip: str = "sum"
    input_size: int | None = None
    channel_order: str = "RGB"
    ties: str = "high_index_first"
    ranks: tuple = (1, 5, 20)
    normalization: str = NORMALIZATION
    l2_normalize: bool = False

    def __post_init__(self):
        if self.flip not in _FLIPS:
            raise ValueError(f"flip must be one of {_FLIPS}, got {self.flip!r}")
        if self.channel_order not in _CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {_CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.ties not in _TIES:
            raise ValueError(f"ties must be one of {_TIES}, got {self.ties!r}")
        if self.normalization != NORMALIZATION:
            raise ValueError(
                f"normalization must be {NORMALIZATION!r} (the only one supported), got {self.normalization!r}"
            )
        if self.input_size is not None:
            if (
                isinstance(self.input_size, bool)
                or not isinstance(self.input_size, (int, np.integer))
                or self.input_size <= 0
            ):
                raise ValueError(f"input_size must be a positive int or None, got {self.input_size!r}")
            object.__setattr__(self, "input_size", int(self.input_size))
        ranks = tuple(int(r) for r in self.ranks)
        if not ranks or any(r < 1 for r in ranks):
            raise ValueError(f"ranks must be a non-empty tuple of positive ints, got {self.ranks!r}")
        object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "l2_normalize", bool(self.l2_normalize))

    def knobs(self) -> dict:
        """Flat, JSON-ready dict of the protocol, stored in every result row."""
        return {
            "alignment": "given aligned crops (aligned_pad_0.1_pad_high, not re-aligned)",
            "input_size": self.input_size,
            "channel_order": self.channel_order,
            "normalization": self.normalization,
            "flip": self.flip,
            "flip_fusion": "pre_norm_vector_add" if self.flip == "sum" else "none",
            "feature_norm": "L2 per image in extraction (AdaFace l2_norm)",
            "faceness": False,
            "pooling": "none (one image per probe / gallery entry)",
            "score": "float32 inner product of the features as given"
            + (", each row L2-normalised first" if self.l2_normalize else ""),
            "score_dtype": "float32",
            "l2_normalize": self.l2_normalize,
            "ties": self.ties,
            "ranks": list(self.ranks),
        }


def closed_set_cmc(
    probe: np.ndarray,
    gallery: np.ndarray,
    probe_labels,
    gallery_labels,
    ranks=(1, 5, 20),
    ties: str = "high_index_first",
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    return_items: bool = False,
):
    """``DIR_FAR`` at FAR = 1 on features as given (no normalisation): ``{"rank<k>": float | None, "hits": {k: n},
    "mated_probes": n}``; Rank-k is None when no probe is mated. Scores are ``probe @ gallery.T``.

    ``return_items=True`` returns ``(result, items)``, ``items`` the per-probe arrays of the subject-level bootstrap
    (:mod:`harness.report.bootstrap`): ``probe_subject`` (the identity label) int32 and ``first_mate`` int16, the
    0-based position of the first same-identity gallery image in the top ``max(ranks)`` (``max(ranks)`` if none there,
    -1 for a probe with no same-identity gallery image at all, which ``DIR_FAR`` leaves out). ``RankK(first_mate,
    ranks)`` gives the rank-k above exactly."""
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    probe_labels = np.asarray(probe_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    n_g = gallery.shape[0]
    if probe.shape[0] != probe_labels.shape[0] or n_g != gallery_labels.shape[0]:
        raise ValueError(
            f"labels do not match features: {probe.shape[0]}/{probe_labels.shape[0]} probes, "
            f"{n_g}/{gallery_labels.shape[0]} gallery"
        )
    ranks = [int(r) for r in ranks]
    k = min(max(ranks), n_g)
    _, idx = chunked_topk(probe, gallery, k, max_bytes=max_bytes, ties=ties)
    hit = gallery_labels[idx] == probe_labels[:, None]  # (P, k)
    first = np.where(hit.any(1), hit.argmax(1), k)  # 0-based position of the first mate in the top k
    mated = np.isin(probe_labels, gallery_labels)
    n_m = int(mated.sum())
    hits = {r: int(np.count_nonzero(mated & (first < r))) for r in ranks}
    out = {f"rank{r}": (hits[r] / n_m if n_m else None) for r in ranks}
    out["hits"] = {str(r): hits[r] for r in ranks}
    out["mated_probes"] = n_m
    if not return_items:
        return out
    k_max = max(ranks)
    first_mate = np.where(mated, np.where(first < k, first, k_max), -1)
    if probe_labels.size and (
        probe_labels.min() < np.iinfo(np.int32).min or probe_labels.max() > np.iinfo(np.int32).max
    ):
        raise ValueError(f"identity labels do not fit int32 (range {probe_labels.min()} .. {probe_labels.max()})")
    rank_dtype = np.int16 if k_max <= np.iinfo(np.int16).max else np.int32
    return out, {"probe_subject": probe_labels.astype(np.int32), "first_mate": first_mate.astype(rank_dtype)}


def _check_feats(x, n: int, what: str, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataFormatError(where, what, f"features must be a 2-D (rows, dim) array, got shape {x.shape}")
    if x.dtype.kind != "f":
        raise DataFormatError(where, what, f"features must be floating point, got {x.dtype}")
    if x.shape[0] != n:
        raise DataFormatError(where, what, f"{x.shape[0]} feature rows but the protocol has {n}")
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        raise DataFormatError(where, what, f"row {int(np.flatnonzero(~ok)[0])} has NaN or inf")
    if x.size and not x.any():
        raise DataFormatError(where, what, f"all {x.shape[0]} feature rows are zero (no features were written)")
    return x


class TinyFaceEvaluation:
    """TinyFace identification on one dataset root (AdaFace's ``tinyface_root``; a SynthFace release folder)."""

    def __init__(
        self, root: str | os.PathLike, aligned: str = DEFAULT_ALIGNED, settings: TinyFaceSettings = TinyFaceSettings()
    ):
        self.protocol: TinyFaceProtocol = read_tinyface(root, aligned)
        self.root = self.protocol.root
        self.settings = settings

    def evaluate_features(
        self,
        probe: np.ndarray,
        gallery: np.ndarray,
        *,
        features_path: str | os.PathLike | None = None,
        return_items: bool = False,
    ):
        """Rank-k from flip-fused features, scored as given (``settings.l2_normalize``: each row L2-normalised
        first): ``probe`` (P, D) in the protocol's probe order, ``gallery`` (G, D) = Gallery_Match then
        Gallery_Distractor rows in the protocol's order.

        Result: ``{"benchmark": "TinyFace", "rank1", "rank5", "rank20" (one key per rank), "hits", "counts": {probes,
        mated_probes, gallery_match, distractors, identities}, "knobs": settings.knobs()}``.

        ``return_items=True`` returns ``(result, items)``: the per-probe ``probe_subject`` / ``first_mate`` arrays
        of :func:`closed_set_cmc`, in probe order.
        """
        where = os.fspath(features_path) if features_path is not None else "<features>"
        pr = self.protocol
        probe = _check_feats(probe, pr.num_probes, "probe", where)
        gallery = _check_feats(gallery, pr.num_gallery, "gallery", where)
        if probe.shape[1] != gallery.shape[1]:
            raise DataFormatError(where, "dim", f"probe width {probe.shape[1]} != gallery width {gallery.shape[1]}")
        if self.settings.l2_normalize:
            probe, gallery = l2_normalize(probe), l2_normalize(gallery)
        cmc = closed_set_cmc(
            probe.astype(np.float32, copy=False),
            gallery.astype(np.float32, copy=False),
            pr.probe_labels,
            pr.gallery_labels,
            self.settings.ranks,
            self.settings.ties,
            return_items=return_items,
        )
        if return_items:
            cmc, items = cmc
        counts = pr.counts()
        counts["mated_probes"] = cmc["mated_probes"]
        res = {"benchmark": BENCHMARK}
        res.update({f"rank{r}": cmc[f"rank{r}"] for r in self.settings.ranks})
        res["hits"] = cmc["hits"]
        res["counts"] = counts
        res["knobs"] = self.settings.knobs()
        return (res, items) if return_items else res

    def _load(self, paths: list[str]):
        import torch
        import torch.nn.functional as F

        from harness.data.images import read_image

        size = self.settings.input_size
        imgs = [read_image(p) for p in paths]
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault(im.shape[:2], []).append(i)
        if len(groups) > 1:  # one size per aligned folder, as the IJB-S and target-crop readers require
            first = imgs[0].shape[:2]
            odd = next(i for i, im in enumerate(imgs) if im.shape[:2] != first)
            raise DataFormatError(
                paths[odd],
                "size",
                f"aligned crop is {imgs[odd].shape[1]}x{imgs[odd].shape[0]}, "
                f"expected {first[1]}x{first[0]} like {paths[0]}",
            )
        h, w = (size, size) if size is not None else next(iter(groups))
        out = torch.empty((len(imgs), 3, h, w), dtype=torch.uint8)
        for (gh, gw), idx in groups.items():
            t = torch.from_numpy(np.stack([imgs[i] for i in idx])).permute(0, 3, 1, 2)
            if (gh, gw) != (h, w):
                t = F.interpolate(t.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                t = t.round_().clamp_(0, 255).to(torch.uint8)
            out[idx] = t
        return out

    def extract_features(self, model, batch_size: int = 64, device="cpu") -> tuple[np.ndarray, np.ndarray]:
        """``(probe (P, D), gallery (G, D))`` float32, flip-fused then L2-normalised per row (AdaFace ``l2_norm``;
        a zero row stays zero), in the protocol's order.

        Model in eval mode under ``torch.inference_mode`` (inputs moved to ``device``; the model must be there);
        the training mode is restored afterwards.
        """

        from harness.eval.features import embed_batches

        s = self.settings
        paths = self.protocol.probe_paths + self.protocol.gallery_paths
        out = embed_batches(
            model, len(paths), lambda a, e: self._load(paths[a:e]), batch_size, device, s.channel_order, s.flip
        )
        out = np.asarray(out, np.float32)
        norm = np.sqrt(np.sum(out * out, axis=1, keepdims=True, dtype=np.float32))
        out = out / np.where(norm == 0, np.float32(1), norm)
        p = self.protocol.num_probes
        return out[:p], out[p:]

    def evaluate(self, model, batch_size: int = 64, device="cpu", return_items: bool = False):
        """:meth:`extract_features` then :meth:`evaluate_features`."""
        probe, gallery = self.extract_features(model, batch_size=batch_size, device=device)
        return self.evaluate_features(probe, gallery, return_items=return_items)
