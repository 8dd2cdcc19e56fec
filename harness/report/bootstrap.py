"""Subject-level bootstrap confidence intervals and paired method differences for every benchmark metric.

Why subjects: the items a benchmark averages over (IJB template pairs, probes) are not independent; all pairs of one
probe subject share that person's appearance, capture conditions and the model's errors on them. Resampling items
would make the intervals too narrow. Here the unit is the subject: each resample draws the subjects with replacement
(as many as there are) and keeps *all* items of every drawn subject, once per draw.

API
---

- ``groups``: ``{subject: item indices}`` (a :class:`SubjectGroups` built once can be passed instead; build it from a
  per-item subject array with :meth:`SubjectGroups.from_ids`). Subjects are put in sorted order (insertion order if
  they do not sort), so the draws depend only on the seed and the subject set, never on dict order.
- ``metric_fn(indices) -> float | {key: float}``: the metric on a multiset of item indices (order unspecified, an
  index repeated once per draw of its subject). ``None`` or NaN marks "undefined on this resample" (e.g. no genuine
  pair); such resamples are left out and counted (``n_boot - n_valid``). A metric object may also define
  ``on_counts(counts)`` (``counts[i]`` = multiplicity of item i); it is then used instead, with the same result and
  no index gather; or ``bind(groups)`` returning ``f(subject_counts)`` (``TarAtFar`` does, to read the counts of
  its pre-sorted pairs from the small subject table). The metric classes below do all three.
- :func:`bootstrap_ci` ``(groups, metric_fn, n_boot=1000, seed=0, alpha=0.05)`` -> :class:`BootstrapCI` (or a
  ``{key: BootstrapCI}`` dict for dict-valued metrics): ``estimate`` (the metric on the full data: every subject once,
  i.e. exactly the evaluator's number when the groups cover every item once), the percentile interval
  ``[low, high]`` (``np.quantile`` at ``alpha/2`` and ``1 - alpha/2`` of the valid resamples), the samples.
- :func:`paired_bootstrap_ci` ``(groups, metric_a, metric_b, ...)`` -> :class:`PairedBootstrap` (``a``, ``b``,
  ``diff``): both metrics on the *same* subject draws; ``diff`` is the interval of ``metric_a - metric_b``. A metric
  against itself gives exactly 0 on every resample.
- :func:`bootstrap_samples` computes several metrics (methods) on one set of draws, for a table that compares many
  methods with one baseline; :func:`ci_from_samples` / :func:`paired_from_samples` summarise them.
- :func:`subject_draws` ``(n_subjects, n_boot, seed)``: the ``(n_boot, n_subjects)`` subject multiplicities; resample
  ``b`` depends only on ``seed`` and ``b`` (resamples can be split across processes).
- Two levels, for several training seeds: :func:`two_level_samples` ``(per-seed Samples, seed numbers)`` resamples
  the seeds with replacement (:func:`seed_draws`, keyed by ``seed`` and the seed numbers) on top of the shared
  subject draws, so the interval of the seed mean covers training randomness and the test subjects;
  :func:`two_level_bootstrap` ``(groups, {name: {training seed: metric_fn}}, n_boot, seed)`` does both steps.
  Methods with the same seed numbers get the same seed draws (paired seed by seed). With one seed it is the plain
  subject bootstrap; with no within-seed variance, the plain bootstrap of the seed means (tested against the closed
  form in ``tests/test_two_level_bootstrap.py``).

Metrics, computed with the evaluators' own functions on the resampled multiset:

- :class:`TarAtFar` (IJB-B/C 1:1): ``harness.eval.roc`` ROC (sklearn ``roc_curve``, ``drop_intermediate=True``) and
  ``tar_at_far_from_roc`` (insightface's nearest vertex). ``on_counts`` hoists the sort out of the loop: the scores
  are sorted once and each resample's sorted multiset is ``np.repeat(sorted, counts)``, fed to the very function
  ``roc_curve`` calls after its ``np.sort`` (bit-identical to ``roc_curve(labels[idx], scores[idx])``; tested).
  Keys ``tar@1e-05`` ... (``harness.run.compact_metrics`` names).
- :class:`RankK` (IJB-B/C 1:N joined, IJB-S closed set, TinyFace): share of (mated) probes whose mate's 0-based rank
  is below k. Keys ``rank1``, ``rank5``, ...
- :class:`IJBSTpirAtFpir` (IJB-S open set, PFE ``DIR_FAR``): per gallery ``harness.eval.ijbs.find_threshold_by_fpir``
  on the resampled non-mated probes' top-1 scores; TPIR = share of mated probes with the mate at rank 1 and its score
  ``>=`` the threshold; reported (G1 + G2) / 2. Keys ``tpir@fpir=0.01``, ``tpir@fpir=0.1``.
- :class:`IJBOpenSetTpir` (IJB-B/C 1:N open set, definition (b)): ``harness.eval.ijb_identification.open_set_result``
  per gallery, mean of the galleries. Keys ``tpir@fpir=0.0001`` ... ``tpir@fpir=1.0``.
- every metric takes ``prefix`` (``"V2S."``, ``"joined."``, ``"open_set."``) so keys equal ``compact_metrics`` keys
  and the ``metric`` column of ``results/paper/*.csv``; :class:`Combined` merges several metrics over the same items.

Not supported: IJB 1:N ``joined.tpir@far`` (definition (a)) thresholds on the k-th largest of *all* non-mated scores
(k = ceil(P * far), 1,960 for IJB-C at 0.1), so each probe would have to save its top k non-mated scores; CFSM does
not report it.

What each evaluator must save (per model, per seed, per benchmark; arrays in the evaluator's item order)
----------------------------------------------------------------------------------------------------------

- **IJB-B/C 1:1** (:mod:`harness.eval.ijb_verification`), one entry per template pair, in pair-file order:
  ``scores`` float64 (the evaluator's own scores; float32 would merge distinct scores into ties and change the ROC
  vertices), ``labels`` uint8 (1 genuine), ``probe_subject`` int32 (SUBJECT_ID of the probe template ``tid2``, from
  the 1:N ``probe_mixed`` CSV: the 1:1 meta files have no subject ids). Groups: pairs by ``probe_subject``.
  Size: 13 B/pair: IJB-C 15,658,489 pairs = 204 MB, IJB-B 8,010,270 pairs = 104 MB (uncompressed; scores do not
  compress). ``labels`` and ``probe_subject`` depend only on the release: saved once per benchmark, the per-model
  file is the scores alone, 125 MB (IJB-C) / 64 MB (IJB-B). SynthFace default: 480,000 pairs = 3.8 MB.
- **IJB-B/C 1:N** (:mod:`harness.eval.ijb_identification`), one entry per probe template: ``probe_subject`` int32;
  joined gallery: ``rank`` int32 (0-based mate rank from ``mate_rank_scan``, ties as the evaluator) and ``pos``
  float64 (mate score); per gallery (S1/S2, G1/G2) for the open set: ``pos`` float64 (NaN if not mated there),
  ``rank`` int32 (-1 if not mated there), ``nonmate_max`` float64, ``mated`` bool. IJB-C: 19,593 probes x ~50 B
  = 1 MB.
- **IJB-S** (:mod:`harness.eval.ijbs`), per protocol V2S/V2B/V2V, one entry per probe template (mated or not):
  ``probe_subject`` int32; ``mate_rank`` int16: 0-based position of the mate in the top ``max(ranks)`` of
  ``hstack(G1, G2)``, ``max(ranks)`` if not there, -1 if the probe has no mate; per gallery G1/G2: ``mated`` bool,
  ``top1_correct`` bool (top-1 index is the mate), ``top1_score`` float32 or float64 (the top-1 score in the dtype IJB-S
  scored in: the mate score where ``top1_correct``, the non-mated max where not mated). Thousands of probes: well under
  1 MB.
- **TinyFace** (:mod:`harness.eval.tinyface`), one entry per probe: ``probe_subject`` (the identity label) int32 and
  ``first_mate`` int16, the 0-based position of the first same-identity gallery image in the top ``max(ranks)``
  (``first`` inside ``closed_set_cmc``; ``max(ranks)`` if not in the top, -1 for a probe with no same-identity
  gallery image, which ``RankK``'s default ``mated`` then leaves out of the denominator as the evaluator does). 3,728
  probes = 22 KB.

Cost (measured on this 2-core machine under a load average of ~4, one thread, 1,000 resamples)
-----------------------------------------------------------------------------------------------

- drawing 5,000 subjects x 1,000 resamples: 0.08 s; RankK on 19,593 probes / 5,000 subjects: 0.2 s; IJB-S
  RankK + TPIR on 3,000 probes: 0.2 s; IJB 1:N open-set TPIR on 19,593 probes (two galleries): 1.6 s.
- TarAtFar is linear in the pairs: ~50 ms per resample per million pairs (3,500 subjects; 1 M and 4 M pairs
  measured), dominated by the evaluator's ROC (``roc_sorted`` takes its dense path: a bootstrap multiset has ~37 %
  tied entries) and the ``np.repeat``. Extrapolated: IJB-C (15.66 M pairs) ~0.8 s per resample, ~13 min per
  model for 1,000 resamples (peak memory ~1.5-2 GB); IJB-B (8.01 M) ~7 min; SynthFace default (480 k / 188 k pairs)
  ~25 s / ~10 s. Resamples are independent (:func:`subject_draws` rows) and can be split across processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.eval.ijb_identification import OPEN_SET_FPIRS, open_set_result
from harness.eval.ijbs import find_threshold_by_fpir
from harness.eval.metric_keys import rank_key, tar_key, tpir_key
from harness.eval.roc import DEFAULT_FARS, check_roc_inputs, roc_curve, roc_sorted, tar_at_far_from_roc, vertices_dense

__all__ = [
    "SubjectGroups",
    "BootstrapCI",
    "PairedBootstrap",
    "Samples",
    "subject_draws",
    "bootstrap_samples",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "ci_from_samples",
    "paired_from_samples",
    "seed_draws",
    "two_level_samples",
    "two_level_bootstrap",
    "TarAtFar",
    "RankK",
    "IJBSTpirAtFpir",
    "IJBOpenSetTpir",
    "Combined",
]

_SCALAR = "__value__"  # internal key of a float-valued metric


# ---------------------------------------------------------------------------------------------------- groups


class SubjectGroups:
    """Subjects and their items in CSR form: ``subjects`` (sorted), ``items`` (concatenated item indices, subject by
    subject), ``sizes`` (items per subject), ``n_items`` (item index range)."""

    def __init__(self, groups: Mapping[Any, Any], n_items: int | None = None):
        if isinstance(groups, SubjectGroups):
            raise TypeError("already a SubjectGroups")
        if not isinstance(groups, Mapping) or len(groups) == 0:
            raise ValueError("groups must be a non-empty {subject: item indices} mapping")
        try:
            keys = sorted(groups)
        except TypeError:
            keys = list(groups)
        arrays = []
        for k in keys:
            a = np.asarray(groups[k]).reshape(-1)
            if a.size == 0:
                raise ValueError(f"subject {k!r} has no items")
            if a.dtype.kind not in "iu":
                raise ValueError(f"subject {k!r}: item indices must be integers, got {a.dtype}")
            arrays.append(a.astype(np.int64, copy=False))
        self._init(keys, np.concatenate(arrays), np.array([a.size for a in arrays], np.int64), n_items)

    @classmethod
    def from_ids(cls, subject_of_item) -> SubjectGroups:
        """Groups from a per-item subject id array: item i belongs to ``subject_of_item[i]``."""
        ids = np.asarray(subject_of_item).reshape(-1)
        if ids.size == 0:
            raise ValueError("no items")
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        new = np.empty(s.size, bool)
        new[0] = True
        np.not_equal(s[1:], s[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        obj = cls.__new__(cls)
        obj._init(list(s[starts].tolist()), order.astype(np.int64), np.diff(np.append(starts, s.size)), ids.size)
        return obj

    def _init(self, keys: list, items: np.ndarray, sizes: np.ndarray, n_items: int | None) -> None:
        if items.min() < 0:
            raise ValueError(f"item indices must be >= 0, got {int(items.min())}")
        hi = int(items.max()) + 1
        if n_items is None:
            n_items = hi
        elif hi > n_items:
            raise ValueError(f"item index {hi - 1} >= n_items = {n_items}")
        self.subjects = keys
        self.items = items
        self.sizes = sizes
        self.n_items = int(n_items)
        self.partition = bool(np.bincount(items, minlength=self.n_items).max() <= 1)  # every item in one group at most
        self._item_subject = None

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def item_subject(self) -> np.ndarray:
        """Subject position (0 .. n_subjects - 1) of every item, ``n_subjects`` for an item in no group (int32).
        Only for a partition (an item in two groups has no single subject)."""
        if not self.partition:
            raise ValueError("items belong to several groups: no single subject per item")
        if getattr(self, "_item_subject", None) is None:
            out = np.full(self.n_items, self.n_subjects, np.int32)
            out[self.items] = np.repeat(np.arange(self.n_subjects, dtype=np.int32), self.sizes)
            self._item_subject = out
        return self._item_subject

    def item_counts(self, subject_counts: np.ndarray) -> np.ndarray:
        """Multiplicity of every item (int64, length ``n_items``) when subject j is drawn ``subject_counts[j]``
        times."""
        per_item = np.repeat(np.asarray(subject_counts, np.int64), self.sizes)
        if self.partition:
            out = np.zeros(self.n_items, np.int64)
            out[self.items] = per_item
            return out
        return np.bincount(self.items, weights=per_item, minlength=self.n_items).astype(np.int64)

    def indices(self, subject_counts: np.ndarray) -> np.ndarray:
        """The resampled multiset of item indices: every item of subject j, ``subject_counts[j]`` times."""
        return np.repeat(self.items, np.repeat(np.asarray(subject_counts, np.int64), self.sizes))


def _as_groups(groups) -> SubjectGroups:
    return groups if isinstance(groups, SubjectGroups) else SubjectGroups(groups)


def subject_draws(n_subjects: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_subjects)`` int32: how often each subject is drawn in each resample (each row sums to
    ``n_subjects``). Row b is the b-th draw of ``np.random.default_rng(seed)`` (``integers(0, S, S)``)."""
    if n_subjects < 1 or n_boot < 1:
        raise ValueError(f"need n_subjects >= 1 and n_boot >= 1, got {n_subjects} and {n_boot}")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n_subjects), np.int32)
    for b in range(n_boot):
        out[b] = np.bincount(rng.integers(0, n_subjects, n_subjects), minlength=n_subjects)
    return out


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile interval of a metric: ``estimate`` on the full data, ``[low, high]`` at level ``1 - alpha``."""

    estimate: float
    low: float
    high: float
    alpha: float
    n_boot: int
    n_valid: int
    seed: int
    n_subjects: int
    samples: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict:
        """JSON-ready (no samples)."""
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": 1 - self.alpha,
            "method": "percentile, subject-level bootstrap",
            "n_boot": self.n_boot,
            "n_valid": self.n_valid,
            "seed": self.seed,
            "n_subjects": self.n_subjects,
        }


@dataclass(frozen=True)
class PairedBootstrap:
    """``a`` and ``b`` on the same subject draws, and ``diff`` = the interval of ``a - b`` (paired per resample)."""

    a: BootstrapCI
    b: BootstrapCI
    diff: BootstrapCI

    def as_dict(self) -> dict:
        return {"a": self.a.as_dict(), "b": self.b.as_dict(), "diff": self.diff.as_dict()}


@dataclass(frozen=True)
class Samples:
    """Raw output of :func:`bootstrap_samples` for one metric: ``estimate`` and ``samples`` (n_boot,) per key."""

    estimate: dict
    samples: dict
    seed: int
    n_subjects: int
    scalar: bool


# ---------------------------------------------------------------------------------------------------- core


def _as_dict(value) -> dict:
    if isinstance(value, Mapping):
        return {str(k): _float(v) for k, v in value.items()}
    return {_SCALAR: _float(value)}


def _float(v) -> float:
    if v is None:
        return float("nan")
    return float(v)


def _bind(metric_fn, groups: SubjectGroups) -> Callable[[np.ndarray], dict]:
    """``f(subject_counts) -> {key: float}`` for ``metric_fn``: its ``bind(groups)`` hook if it has one, else
    ``on_counts(item counts)``, else ``metric_fn(indices)``."""
    bind = getattr(metric_fn, "bind", None)
    if bind is not None:
        f = bind(groups)
        return lambda sc: _as_dict(f(sc))
    on_counts = getattr(metric_fn, "on_counts", None)
    if on_counts is not None:
        return lambda sc: _as_dict(on_counts(groups.item_counts(sc)))
    return lambda sc: _as_dict(metric_fn(groups.indices(sc)))


def bootstrap_samples(groups, metrics: Mapping[str, Callable], n_boot: int = 1000, seed: int = 0) -> dict[str, Samples]:
    """Every metric of ``metrics`` (``{name: metric_fn}``, e.g. one per method) on the full data and on the same
    ``n_boot`` subject resamples. Returns ``{name: Samples}``."""
    g = _as_groups(groups)
    if not metrics:
        raise ValueError("no metrics")
    fns = {name: _bind(fn, g) for name, fn in metrics.items()}
    draws = subject_draws(g.n_subjects, int(n_boot), seed)
    ones = np.ones(g.n_subjects, np.int64)
    est = {name: f(ones) for name, f in fns.items()}
    out = {name: {k: np.empty(int(n_boot)) for k in e} for name, e in est.items()}
    for b in range(int(n_boot)):
        for name, f in fns.items():
            v = f(draws[b])
            if v.keys() != est[name].keys():
                raise ValueError(
                    f"metric {name!r} returned keys {sorted(v)} on resample {b}, {sorted(est[name])} on the full data"
                )
            for k, x in v.items():
                out[name][k][b] = x
    return {name: Samples(est[name], out[name], seed, g.n_subjects, _SCALAR in est[name]) for name in metrics}


def seed_draws(seeds: Sequence[int], n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, K)`` int32: how often each of the K training seeds ``seeds`` (seed numbers, in the caller's order)
    is drawn in each resample (rows sum to K), for the two-level bootstrap (:func:`two_level_samples`).

    The draws come from a stream of their own, keyed by ``seed`` and the *set* of seed numbers (never the subject
    stream of :func:`subject_draws`), and column j belongs to seed number ``seeds[j]`` whatever the order: two
    methods trained with the same seeds get the same seed draws, so their difference pairs seed ``s`` with seed
    ``s`` (the same initialisation and data order) on every resample. One seed: all ones."""
    seeds = [int(s) for s in seeds]
    if not seeds or n_boot < 1:
        raise ValueError(f"need at least one seed and n_boot >= 1, got {len(seeds)} and {n_boot}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"training seeds repeat: {seeds}")
    k = len(seeds)
    if k == 1:
        return np.ones((int(n_boot), 1), np.int32)
    order = sorted(range(k), key=lambda j: seeds[j])
    entropy = [int(seed) % 2**63, 0x5EED, k] + [seeds[j] % 2**63 for j in order]  # SeedSequence wants non-negative ints
    draws = np.random.default_rng(np.random.SeedSequence(entropy)).integers(0, k, (int(n_boot), k))  # row b: draw b
    out = np.empty((int(n_boot), k), np.int32)
    out[:, order] = (draws[:, :, None] == np.arange(k)).sum(axis=1)
    return out


def two_level_samples(per_seed: Sequence[Samples], seeds: Sequence[int]) -> Samples:
    """The two-level bootstrap of the mean over training seeds, from each seed's subject-bootstrap ``Samples``
    (one :func:`bootstrap_samples` call, so every seed is on the same subject draws).

    Resample b draws the training seeds with replacement (:func:`seed_draws`, keyed by the Samples' ``seed``) and
    averages the metric of every drawn seed on subject resample b: ``T_b = sum_j c_bj * X_j[b] / K``. The test
    subjects are one sample shared by every training run (a crossed design), so one subject draw per resample is
    applied to all drawn seeds; drawing them independently per seed would shrink the subjects' share of the
    variance by 1/K. The interval then covers both the sampling of test subjects and training randomness (seed to
    seed). With zero within-seed variance (every subject draw gives seed j the same value m_j) it is exactly the
    plain bootstrap of the seed means ``sum_j c_bj * m_j / K``; with one seed it is that seed's subject bootstrap.
    A resample where a drawn seed's metric is undefined (NaN) is undefined; seeds not drawn do not count.
    ``estimate``: the plain mean of the seeds' estimates."""
    if len(per_seed) != len(seeds) or not per_seed:
        raise ValueError(f"{len(per_seed)} Samples for {len(seeds)} seeds")
    first = per_seed[0]
    for s in per_seed[1:]:
        if s.seed != first.seed or s.n_subjects != first.n_subjects or s.estimate.keys() != first.estimate.keys():
            raise ValueError("the seeds' samples come from different subject draws or metrics")
    n_boot = next(iter(first.samples.values())).size if first.samples else 0
    counts = seed_draws(seeds, max(n_boot, 1), first.seed)
    k = len(seeds)
    est, out = {}, {}
    for key in first.estimate:
        est[key] = float(np.mean([s.estimate[key] for s in per_seed]))
        x = np.stack([s.samples[key] for s in per_seed], axis=1)  # (n_boot, K)
        out[key] = np.where(counts > 0, counts * x, 0.0).sum(axis=1) / k
    return Samples(est, out, first.seed, first.n_subjects, first.scalar)


def two_level_bootstrap(
    groups, metrics: Mapping[str, Mapping[int, Callable]], n_boot: int = 1000, seed: int = 0
) -> dict[str, Samples]:
    """:func:`two_level_samples` of every ``{name: {training seed: metric_fn}}`` (e.g. one entry per method, one
    metric per seed's model) on one set of subject draws. Returns ``{name: Samples}`` of the seed mean; methods with
    the same seed numbers share the seed draws, so :func:`paired_from_samples` pairs them seed by seed."""
    flat = {(name, s): fn for name, per in metrics.items() for s, fn in per.items()}
    if not flat:
        raise ValueError("no metrics")
    res = bootstrap_samples(groups, flat, n_boot, seed)
    return {name: two_level_samples([res[(name, s)] for s in per], list(per)) for name, per in metrics.items()}


def _ci(estimate: float, samples: np.ndarray, alpha: float, seed: int, n_subjects: int) -> BootstrapCI:
    valid = samples[np.isfinite(samples)]
    if valid.size:
        low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    else:
        low = high = float("nan")
    return BootstrapCI(
        float(estimate),
        float(low),
        float(high),
        float(alpha),
        int(samples.size),
        int(valid.size),
        seed,
        n_subjects,
        samples,
    )


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


def ci_from_samples(s: Samples, alpha: float = 0.05):
    """:class:`BootstrapCI` (float metric) or ``{key: BootstrapCI}`` from :func:`bootstrap_samples` output."""
    alpha = _check_alpha(alpha)
    out = {k: _ci(s.estimate[k], s.samples[k], alpha, s.seed, s.n_subjects) for k in s.estimate}
    return out[_SCALAR] if s.scalar else out


def paired_from_samples(a: Samples, b: Samples, alpha: float = 0.05):
    """:class:`PairedBootstrap` (or ``{key: PairedBootstrap}``) of ``a - b``; both from one :func:`bootstrap_samples`
    call (the same draws). A resample where either side is undefined is left out of ``diff``."""
    alpha = _check_alpha(alpha)
    if a.estimate.keys() != b.estimate.keys():
        raise ValueError(f"metrics have different keys: {sorted(a.estimate)} vs {sorted(b.estimate)}")
    if a.seed != b.seed or a.n_subjects != b.n_subjects:
        raise ValueError("samples come from different draws (seed or subjects differ)")
    out = {}
    for k in a.estimate:
        d = a.samples[k] - b.samples[k]
        out[k] = PairedBootstrap(
            _ci(a.estimate[k], a.samples[k], alpha, a.seed, a.n_subjects),
            _ci(b.estimate[k], b.samples[k], alpha, b.seed, b.n_subjects),
            _ci(a.estimate[k] - b.estimate[k], d, alpha, a.seed, a.n_subjects),
        )
    return out[_SCALAR] if a.scalar else out


def bootstrap_ci(groups, metric_fn: Callable, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Subject-level percentile bootstrap of ``metric_fn`` (see the module docstring).

    ``groups``: ``{subject: item indices}`` or a :class:`SubjectGroups`. Returns a :class:`BootstrapCI`, or
    ``{key: BootstrapCI}`` when ``metric_fn`` returns a dict.
    """
    alpha = _check_alpha(alpha)
    return ci_from_samples(bootstrap_samples(groups, {"m": metric_fn}, n_boot, seed)["m"], alpha)


def paired_bootstrap_ci(
    groups, metric_a: Callable, metric_b: Callable, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
):
    """Paired bootstrap of ``metric_a - metric_b`` (e.g. a method and the baseline on the same benchmark items) on
    the same subject draws. Returns a :class:`PairedBootstrap` (or ``{key: PairedBootstrap}``)."""
    alpha = _check_alpha(alpha)
    s = bootstrap_samples(groups, {"a": metric_a, "b": metric_b}, n_boot, seed)
    return paired_from_samples(s["a"], s["b"], alpha)


# ---------------------------------------------------------------------------------------------------- metrics


def _counts_arg(counts, n: int) -> np.ndarray:
    c = np.asarray(counts)
    if c.shape != (n,):
        raise ValueError(f"counts must have shape ({n},), got {c.shape}")
    return c.astype(np.int64, copy=False)


class _Metric:
    """Base: ``__call__(indices)`` = ``on_counts(bincount(indices))`` unless a subclass evaluates gathered arrays."""

    n: int

    def __call__(self, indices) -> dict:
        idx = np.asarray(indices, np.int64).reshape(-1)
        return self.on_counts(np.bincount(idx, minlength=self.n))

    def on_counts(self, counts) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class TarAtFar(_Metric):
    """IJB 1:1 TAR@FAR of pair ``scores`` / ``labels`` (1 genuine), exactly as :func:`harness.eval.roc.tar_at_far`.

    ``__call__(indices)`` runs ``roc_curve(labels[idx], scores[idx])`` + ``tar_at_far_from_roc`` (the evaluator's
    functions on the gathered multiset); ``on_counts`` gives the same numbers from the scores sorted once. Keys
    ``{prefix}tar@{far_key(far)}``; NaN where a resample has no genuine or no impostor pair.
    """

    def __init__(self, scores, labels, fars: Sequence[float] = DEFAULT_FARS, prefix: str = ""):
        genuine, scores = check_roc_inputs(labels, scores)
        self.scores = scores
        self.genuine = genuine
        self.n = scores.shape[0]
        self.fars = tuple(float(x) for x in fars)
        self.keys = [prefix + tar_key(x) for x in self.fars]
        order = np.argsort(scores, kind="stable")
        self._order = order
        self._asc = scores[order]
        g = genuine[order]
        self._gen_order = order[g]
        self._gen_asc = self._asc[g]

    def _result(self, fpr, tpr) -> dict:
        tars = tar_at_far_from_roc(fpr, tpr, self.fars)
        return {k: tars[x] for k, x in zip(self.keys, self.fars)}

    def _undefined(self) -> dict:
        return {k: float("nan") for k in self.keys}

    def __call__(self, indices) -> dict:
        idx = np.asarray(indices, np.int64).reshape(-1)
        g = self.genuine[idx]
        n_gen = int(np.count_nonzero(g))
        if n_gen == 0 or n_gen == idx.size:
            return self._undefined()
        fpr, tpr, _ = roc_curve(g, self.scores[idx])
        return self._result(fpr, tpr)

    def _from_sorted_counts(self, c_asc: np.ndarray, c_gen: np.ndarray) -> dict:
        asc = np.repeat(self._asc, c_asc)  # sorted: a sorted array with each entry repeated
        gen = np.repeat(self._gen_asc, c_gen)
        if gen.size == 0 or gen.size == asc.size:
            return self._undefined()
        fpr, tpr, _ = roc_sorted(asc, gen)  # what roc_curve runs after np.sort(scores), np.sort(scores[genuine])
        return self._result(fpr, tpr)

    def on_counts(self, counts) -> dict:
        c = _counts_arg(counts, self.n)
        return self._from_sorted_counts(c[self._order], c[self._gen_order])

    def bind(self, groups: SubjectGroups) -> Callable[[np.ndarray], dict]:
        """Per-resample function of the subject counts: the item multiplicities in sorted-score order are read
        from a per-sorted-item subject table (a gather from the small subject-count array, not from n items)."""
        if not groups.partition or groups.n_items != self.n:
            return lambda sc: self.on_counts(groups.item_counts(sc))
        subj = groups.item_subject
        s_asc, s_gen = subj[self._order], subj[self._gen_order]

        def f(subject_counts: np.ndarray) -> dict:
            ext = np.append(np.asarray(subject_counts, np.int64), 0)  # position n_subjects: items in no group
            return self._from_sorted_counts(ext[s_asc], ext[s_gen])

        return f


class RankK(_Metric):
    """Rank-k identification rate from each probe's 0-based mate rank.

    ``mate_rank[i]``: 0-based position of probe i's (first) mate in its ranked gallery list, as the evaluator ranks
    ties; any value >= k counts as a miss at k (so a rank capped at ``max(ranks)`` is fine). ``mated``: which probes
    have a mate (default ``mate_rank >= 0``). ``denominator="mated"`` (IJB-S, TinyFace, IJB 1:N joined where every
    probe is mated) divides by the mated probes; ``"all"`` by all probes (IJB 1:N open-set "Mean" rank-k). Keys
    ``{prefix}rank{k}``; NaN where the denominator is 0.
    """

    def __init__(
        self, mate_rank, ranks: Sequence[int] = (1, 5), mated=None, denominator: str = "mated", prefix: str = ""
    ):
        r = np.asarray(mate_rank).reshape(-1)
        if r.dtype.kind not in "iu":
            raise ValueError(f"mate_rank must be integers, got {r.dtype}")
        self.n = r.shape[0]
        m = (r >= 0) if mated is None else np.asarray(mated, bool).reshape(-1)
        if m.shape != r.shape:
            raise ValueError(f"mated has shape {m.shape}, mate_rank {r.shape}")
        if denominator not in ("mated", "all"):
            raise ValueError(f"denominator must be 'mated' or 'all', got {denominator!r}")
        self.ranks = tuple(int(k) for k in ranks)
        self.keys = [prefix + rank_key(k) for k in self.ranks]
        self.hits = np.stack([(m & (r >= 0) & (r < k)).astype(np.int64) for k in self.ranks])  # (K, n)
        self.den = m.astype(np.int64) if denominator == "mated" else np.ones(self.n, np.int64)

    def on_counts(self, counts) -> dict:
        c = _counts_arg(counts, self.n)
        den = int(c @ self.den)
        if den == 0:
            return {k: float("nan") for k in self.keys}
        num = self.hits @ c
        return {k: int(x) / den for k, x in zip(self.keys, num)}


class IJBSTpirAtFpir(_Metric):
    """IJB-S open-set TPIR at FPIR (PFE ``DIR_FAR`` as :func:`harness.eval.ijbs.identification_metrics`).

    ``galleries``: per gallery (G1, G2) a tuple ``(mated, top1_correct, top1_score)`` of per-probe arrays: the probe
    has a mate in this gallery; its top-1 gallery index is the mate; its top-1 score (float32 or float64, the dtype the
    evaluator scored in). Per gallery: ``thr = find_threshold_by_fpir(top-1 scores of the non-mated probes, fpir)``;
    TPIR = share of mated probes with ``top1_correct and top1_score >= thr`` (in the scores' dtype); reported = mean of
    the galleries (NaN if a gallery has no mated or no non-mated probe in the resample: the evaluator's None). Keys
    ``{prefix}tpir@fpir={far_key}``.
    """

    def __init__(self, galleries: Sequence[tuple], fpirs: Sequence[float] = (0.01, 0.1), prefix: str = ""):
        if not galleries:
            raise ValueError("no galleries")
        self._g = []
        n = None
        for mated, ok, score in galleries:
            mated = np.asarray(mated, bool).reshape(-1)
            ok = np.asarray(ok, bool).reshape(-1)
            score = np.asarray(score).reshape(-1)
            if not (mated.shape == ok.shape == score.shape) or (n is not None and mated.shape[0] != n):
                raise ValueError("every gallery needs mated, top1_correct and top1_score arrays of one length (probes)")
            n = mated.shape[0]
            s = (
                score if score.dtype in (np.float32, np.float64) else score.astype(np.float64)
            )  # thresholds compare in the scores' dtype
            self._g.append((np.flatnonzero(mated), (ok & mated)[mated], s[mated], np.flatnonzero(~mated), s[~mated]))
        self.n = int(n)
        self.fpirs = tuple(float(x) for x in fpirs)
        self.keys = [prefix + tpir_key(x) for x in self.fpirs]

    def on_counts(self, counts) -> dict:
        c = _counts_arg(counts, self.n)
        per = {x: [] for x in self.fpirs}
        for m_idx, ok_m, s_m, n_idx, s_n in self._g:
            cm = c[m_idx]
            n_m = int(cm.sum())
            s_nm = np.repeat(s_n, c[n_idx])
            for x in self.fpirs:
                if n_m == 0 or s_nm.size == 0:
                    per[x].append(None)
                    continue
                thr = find_threshold_by_fpir(s_nm, x)
                per[x].append(int(cm @ (ok_m & (s_m >= thr)).astype(np.int64)) / n_m)
        out = {}
        for k, x in zip(self.keys, self.fpirs):
            vals = per[x]
            out[k] = (
                float("nan")
                if any(v is None for v in vals)
                else (vals[0] + vals[1]) / 2.0
                if len(vals) == 2
                else float(np.mean(vals))
            )
        return out


class IJBOpenSetTpir(_Metric):
    """IJB-B/C 1:N open-set TPIR at FPIR, definition (b), by the evaluator's ``open_set_result`` per gallery on the
    resampled probes; reported = mean of the galleries (NaN where a gallery's TPIR is undefined).

    ``galleries``: per gallery a tuple ``(pos, rank, nonmate_max, mated)`` of per-probe arrays (the ``_View.finish``
    outputs of :mod:`harness.eval.ijb_identification` and ``mate >= 0``). ``fpirs``: ``{name: value}`` (default the
    evaluator's grid values). Keys ``{prefix}tpir@fpir={name}``.
    """

    def __init__(self, galleries: Sequence[tuple], fpirs: Mapping[str, float] | None = None, prefix: str = ""):
        if not galleries:
            raise ValueError("no galleries")
        self.fpirs = dict(OPEN_SET_FPIRS if fpirs is None else fpirs)
        self._g = []
        n = None
        for pos, rank, nonmate_max, mated in galleries:
            arrs = (
                np.asarray(pos, np.float64).reshape(-1),
                np.asarray(rank, np.int64).reshape(-1),
                np.asarray(nonmate_max, np.float64).reshape(-1),
                np.where(np.asarray(mated, bool).reshape(-1), 0, -1),
            )
            if len({a.shape for a in arrs}) != 1 or (n is not None and arrs[0].shape[0] != n):
                raise ValueError("every gallery needs pos, rank, nonmate_max and mated arrays of one length (probes)")
            n = arrs[0].shape[0]
            self._g.append(arrs)
        self.n = int(n)
        self.keys = {name: prefix + tpir_key(name) for name in self.fpirs}

    def __call__(self, indices) -> dict:
        idx = np.asarray(indices, np.int64).reshape(-1)
        tpirs: dict[str, list] = {name: [] for name in self.fpirs}
        for pos, rank, nonmate_max, mate in self._g:
            r = open_set_result(pos[idx], rank[idx], nonmate_max[idx], mate[idx], self.fpirs, ())
            for name in self.fpirs:
                tpirs[name].append(r["tpir"][name])
        return {
            self.keys[name]: (float("nan") if any(v is None for v in vals) else float(np.mean(vals)))
            for name, vals in tpirs.items()
        }

    def on_counts(self, counts) -> dict:
        c = _counts_arg(counts, self.n)
        return self(np.repeat(np.arange(self.n), c))


class Combined(_Metric):
    """Several metrics over the same items as one dict-valued metric (keys must not collide)."""

    def __init__(self, *metrics):
        if not metrics:
            raise ValueError("no metrics")
        ns = {m.n for m in metrics}
        if len(ns) != 1:
            raise ValueError(f"metrics cover different numbers of items: {sorted(ns)}")
        self.n = ns.pop()
        self.metrics = metrics

    def on_counts(self, counts) -> dict:
        out: dict = {}
        for m in self.metrics:
            v = m.on_counts(counts)
            clash = out.keys() & v.keys()
            if clash:
                raise ValueError(f"metric keys collide: {sorted(clash)}")
            out.update(v)
        return out


class TopTarAtFar:
    """:class:`harness.report.bootstrap.TarAtFar` for small FARs, computed on a resample from the top of the score list.

    The ``K`` highest scores hold at least ``margin * max(fars) * impostors + extra`` impostor pairs (cut between two
    distinct scores). On a resample (subject counts), the prefix's multiset goes through the evaluator's own vertex
    computation (``harness.eval.roc.vertices_dense``, sklearn's ``roc_curve`` with ``drop_intermediate``); the
    totals of genuine and impostor pairs come from per-subject counts, so ``fpr = fps / total`` is the very division
    ``roc_curve`` does. Every vertex but the last one of the prefix is a vertex of the full ROC (its keep decision
    depends on its neighbours only); insightface's nearest-vertex rule is taken on those, and the resample is handed
    to the full :class:`~harness.report.bootstrap.TarAtFar` whenever a vertex beyond them could be as near to some FAR
    (``fallbacks`` counts them). Bit-identical to ``TarAtFar`` (tested). Keys ``tar@{far_key}``.
    """

    def __init__(self, scores, labels, fars: Sequence[float], margin: float = 4.0, extra: int = 100):
        genuine, scores = check_roc_inputs(labels, scores)
        self.n = scores.shape[0]
        self.fars = tuple(float(x) for x in fars)
        self.keys = [tar_key(x) for x in self.fars]
        self._scores, self._labels = scores, genuine
        self._full: TarAtFar | None = None
        self.fallbacks = 0
        order = np.argsort(scores, kind="stable")
        asc = scores[order]
        imp_from_top = np.cumsum(~genuine[order][::-1])
        need = int(math.ceil(margin * max(self.fars) * int(imp_from_top[-1]))) + int(extra)
        k = int(np.searchsorted(imp_from_top, need)) + 1  # smallest top-k holding `need` impostors
        start = max(self.n - k, 0)
        start = int(np.searchsorted(asc, asc[start], side="left"))  # never split a group of equal scores
        self.complete = start == 0
        self._top = order[start:]
        self._top_asc = asc[start:]
        self._top_gen = genuine[self._top]

    def _undefined(self) -> dict:
        return {k: float("nan") for k in self.keys}

    def _full_metric(self) -> TarAtFar:
        if self._full is None:
            self._full = TarAtFar(self._scores, self._labels, self.fars)
        return self._full

    def on_counts(self, counts) -> dict:
        return self._full_metric().on_counts(counts)

    def __call__(self, indices) -> dict:
        return self._full_metric()(indices)

    def bind(self, groups: SubjectGroups):
        if not groups.partition or groups.n_items != self.n:
            return lambda sc: self.on_counts(groups.item_counts(sc))
        subj = groups.item_subject
        s_top = subj[self._top]
        imp_ps = np.bincount(subj[~self._labels], minlength=groups.n_subjects + 1).astype(np.int64)
        gen_ps = np.bincount(subj[self._labels], minlength=groups.n_subjects + 1).astype(np.int64)
        top_asc, top_gen = self._top_asc, self._top_gen
        gen_asc = top_asc[top_gen]
        full = None

        def f(subject_counts: np.ndarray) -> dict:
            nonlocal full
            ext = np.append(np.asarray(subject_counts, np.int64), 0)
            n_imp, n_gen = int(ext @ imp_ps), int(ext @ gen_ps)
            if n_imp == 0 or n_gen == 0:
                return self._undefined()
            c = ext[s_top]
            out = self._from_top(np.repeat(top_asc, c), np.repeat(gen_asc, c[top_gen]), n_imp, n_gen)
            if out is None:
                self.fallbacks += 1
                if full is None:
                    full = self._full_metric().bind(groups)
                out = full(subject_counts)
            return out

        return f

    def _from_top(self, asc: np.ndarray, gen: np.ndarray, n_imp: int, n_gen: int) -> dict | None:
        if asc.size == 0:
            return None
        tie_pos = np.flatnonzero(asc[1:] == asc[:-1])
        fps, tps, _ = vertices_dense(asc, gen, tie_pos, True)
        boundary = math.inf
        if not self.complete:  # the prefix's last vertex is forced; only the ones before it are vertices for sure
            boundary = float(fps[-1]) / float(n_imp)
            fps, tps = fps[:-1], tps[:-1]
        fpr = np.concatenate(([0.0], fps)) / float(n_imp)
        tpr = np.concatenate(([0.0], tps)) / float(n_gen)
        for x in self.fars:
            if not boundary - x > float(np.min(np.abs(fpr - x))):
                return None
        tars = tar_at_far_from_roc(fpr, tpr, self.fars)
        return {k: tars[x] for k, x in zip(self.keys, self.fars)}
