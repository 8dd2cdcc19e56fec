"""Subject-level bootstrap: coverage, exact zero self-differences, subjects kept whole, determinism, and every metric
equal to the evaluator's own number, on the full data and on resampled (duplicated) items."""

from __future__ import annotations

import numpy as np
import pytest

from harness.eval.identification import chunked_topk
from harness.eval.ijb_identification import joined_identification, mate_rank_scan, open_set_identification
from harness.eval.ijb_verification import VerificationProtocol, evaluate_verification, pair_scores, pool_image_features
from harness.eval.ijbs import identification_metrics
from harness.eval.roc import far_key, tar_at_far
from harness.eval.tinyface import closed_set_cmc
from harness.report.bootstrap import (
    Combined,
    IJBOpenSetTpir,
    IJBSTpirAtFpir,
    RankK,
    SubjectGroups,
    TarAtFar,
    bootstrap_ci,
    bootstrap_samples,
    ci_from_samples,
    paired_bootstrap_ci,
    paired_from_samples,
    subject_draws,
)


class Mean:
    """Mean of per-item outcomes, vectorised over item multiplicities."""

    def __init__(self, y):
        self.y = np.asarray(y, float)

    def on_counts(self, c):
        return float(c @ self.y / c.sum())


def _coverage(rng, n_exp, by_subject: bool, p=0.7, n_subj=40, per=4, n_boot=200):
    hits = 0
    for e in range(n_exp):
        ps = rng.beta(0.7 * 1.0, 0.3 * 1.0, n_subj)  # subject rates, mean p, intra-subject correlation 0.5
        y = (rng.random((n_subj, per)) < ps[:, None]).reshape(-1).astype(float)
        ids = np.repeat(np.arange(n_subj), per) if by_subject else np.arange(y.size)
        ci = bootstrap_ci(SubjectGroups.from_ids(ids), Mean(y), n_boot=n_boot, seed=e)
        hits += ci.low <= p <= ci.high
    return hits / n_exp


def test_subject_bootstrap_covers_the_true_mean_and_item_bootstrap_does_not():
    cov = _coverage(np.random.default_rng(0), 200, by_subject=True)
    assert 0.88 <= cov <= 0.99, cov
    # resampling items of correlated subjects gives too narrow intervals
    naive = _coverage(np.random.default_rng(0), 200, by_subject=False)
    assert naive < 0.88 and naive < cov - 0.05, (naive, cov)


def _pairs(rng, n_subj=30, per=60, ties=True):
    subj = np.repeat(np.arange(n_subj), per)
    labels = rng.random(subj.size) < 0.1
    scores = rng.normal(0, 1, subj.size) + 2.0 * labels
    if ties:
        scores = np.round(scores, 1)  # many tied scores: the ROC's tie handling matters
    return subj, labels.astype(np.int64), scores


def test_paired_difference_with_itself_is_exactly_zero():
    subj, labels, scores = _pairs(np.random.default_rng(1))
    groups = SubjectGroups.from_ids(subj)
    a, a2 = TarAtFar(scores, labels), TarAtFar(scores.copy(), labels.copy())
    for other in (a, a2):
        res = paired_bootstrap_ci(groups, a, other, n_boot=50, seed=3)
        for key, r in res.items():
            assert np.all(r.diff.samples == 0.0), key
            assert (r.diff.estimate, r.diff.low, r.diff.high) == (0.0, 0.0, 0.0)
    # a different method: the paired diff is the per-resample difference on the same draws
    b = TarAtFar(scores + np.random.default_rng(2).normal(0, 0.5, scores.size), labels)
    res = paired_bootstrap_ci(groups, a, b, n_boot=50, seed=3)["tar@0.01"]
    np.testing.assert_array_equal(res.diff.samples, res.a.samples - res.b.samples)
    np.testing.assert_array_equal(res.a.samples, bootstrap_ci(groups, a, n_boot=50, seed=3)["tar@0.01"].samples)
    s = bootstrap_samples(groups, {"a": a, "b": b}, n_boot=50, seed=3)
    assert paired_from_samples(s["a"], s["b"])["tar@0.01"] == res
    assert ci_from_samples(s["b"])["tar@0.01"] == res.b


def test_resampling_keeps_each_subjects_items_together():
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 6, 25)
    perm = rng.permutation(int(sizes.sum()))  # items of a subject are scattered over the index range
    groups = {f"s{j:02d}": perm[sizes[:j].sum() : sizes[: j + 1].sum()] for j in range(25)}
    seen = []

    def intact(idx):
        counts = np.bincount(idx, minlength=perm.size)
        per_subject = [set(counts[items].tolist()) for items in groups.values()]
        seen.append(sum(next(iter(c)) for c in per_subject))
        return float(all(len(c) == 1 for c in per_subject))  # every item of a subject drawn equally often

    ci = bootstrap_ci(groups, intact, n_boot=100, seed=0)
    assert np.all(ci.samples == 1.0) and ci.estimate == 1.0
    assert set(seen) == {25}  # each resample draws as many subjects as there are
    big = next(items for items in groups.values() if len(items) > 1)
    assert intact(np.concatenate([perm, big[:1]])) == 0.0  # the check does see a split subject
    # the item-count path too
    g = SubjectGroups(groups)
    for sc in subject_draws(25, 20, 1):
        c = g.item_counts(sc)
        assert all(len(set(c[items].tolist())) == 1 for items in groups.values())
        np.testing.assert_array_equal(c, np.bincount(g.indices(sc), minlength=perm.size))


def test_determinism_and_subject_order():
    subj, labels, scores = _pairs(np.random.default_rng(5), ties=False)
    m = TarAtFar(scores, labels)
    g = {int(s): np.flatnonzero(subj == s) for s in np.unique(subj)}
    g_rev = dict(reversed(list(g.items())))
    r1 = bootstrap_ci(g, m, n_boot=30, seed=7)["tar@0.1"]
    r2 = bootstrap_ci(g_rev, m, n_boot=30, seed=7)["tar@0.1"]
    r3 = bootstrap_ci(SubjectGroups.from_ids(subj), m, n_boot=30, seed=7)["tar@0.1"]
    np.testing.assert_array_equal(r1.samples, r2.samples)
    np.testing.assert_array_equal(r1.samples, r3.samples)
    assert r1 == r2
    assert not np.array_equal(r1.samples, bootstrap_ci(g, m, n_boot=30, seed=8)["tar@0.1"].samples)
    d = subject_draws(30, 5, 7)
    assert (d.sum(1) == 30).all()
    np.testing.assert_array_equal(d, subject_draws(30, 5, 7))
    assert r1.low <= r1.estimate <= r1.high and r1.n_valid == 30


def test_tar_at_far_full_data_equals_the_ijb_evaluator():
    rng = np.random.default_rng(6)
    n_t, per_t = 40, 3
    templates = np.repeat(np.arange(100, 100 + n_t), per_t)
    medias = rng.integers(0, 2, templates.size)
    subject = np.arange(n_t) // 2  # two templates per subject
    feats = (rng.normal(0, 1, (n_t, 16))[templates - 100] + rng.normal(0, 1.5, (templates.size, 16))).astype(np.float32)
    faceness = rng.uniform(0.5, 1, templates.size)
    pairs = np.array([(100 + i, 100 + j) for i in range(n_t) for j in range(n_t) if i != j], np.int64)
    labels = (subject[pairs[:, 0] - 100] == subject[pairs[:, 1] - 100]).astype(np.int64)
    proto = VerificationProtocol(fars=(1e-3, 1e-2, 1e-1))
    ref = evaluate_verification(feats, templates, medias, faceness, pairs, labels, proto)["tar_at_far"]
    tids, tf, _ = pool_image_features(feats, templates, medias, faceness, proto, False, "<t>")
    scores = pair_scores(tids, tf, pairs)
    m = TarAtFar(scores, labels, fars=proto.fars)
    groups = SubjectGroups.from_ids(subject[pairs[:, 1] - 100])  # by the probe template's subject
    ci = bootstrap_ci(groups, m, n_boot=20, seed=0)
    assert {k[4:]: v.estimate for k, v in ci.items()} == ref
    # each resample: the fast path equals the evaluator's function on the duplicated pairs
    f = m.bind(groups)
    for b, sc in enumerate(subject_draws(groups.n_subjects, 20, 0)):
        idx = groups.indices(sc)
        want = {f"tar@{far_key(x)}": v for x, v in tar_at_far(labels[idx], scores[idx], proto.fars).items()}
        assert f(sc) == want == m(idx) == m.on_counts(groups.item_counts(sc))
        assert {k: v.samples[b] for k, v in ci.items()} == want


def test_tar_at_far_fast_path_with_ties_and_undefined_resamples():
    subj, labels, scores = _pairs(np.random.default_rng(7), n_subj=8, per=10)
    labels[:] = 0
    labels[:10] = 1  # only subject 0 has genuine pairs: resamples without it are undefined
    m = TarAtFar(scores, labels)
    groups = SubjectGroups.from_ids(subj)
    f = m.bind(groups)
    for sc in subject_draws(8, 30, 1):
        idx = groups.indices(sc)
        got = f(sc)
        if sc[0] == 0:
            assert all(np.isnan(v) for v in got.values())
        else:
            assert got == {f"tar@{far_key(x)}": v for x, v in tar_at_far(labels[idx], scores[idx]).items()}
    ci = bootstrap_ci(groups, m, n_boot=30, seed=1)["tar@0.1"]
    assert ci.n_valid == int((subject_draws(8, 30, 1)[:, 0] > 0).sum()) < 30


# ---------------------------------------------------------------------------------------------- identification


def _ijbs_case(rng, n_subj=30, dim=8):
    centers = rng.normal(0, 1, (n_subj, dim)).astype(np.float32)
    g1_s, g2_s = np.arange(0, 15), np.arange(15, 25)  # subjects 25..29 have no gallery template (unmated probes)
    probe_s = rng.integers(0, n_subj, 90)
    noisy = lambda s, k: centers[s] + rng.normal(0, k, (len(s), dim)).astype(np.float32)  # noqa: E731
    return noisy(probe_s, 1.2), noisy(g1_s, 0.5), noisy(g2_s, 0.5), probe_s, g1_s, g2_s


def _ijbs_records(probe, g1, g2, ps, s1, s2, kmax=10):
    """Per-probe arrays the IJB-S evaluator would save (module docstring of harness.report.bootstrap)."""
    joined_s = np.concatenate([s1, s2])
    mate = np.array([np.flatnonzero(joined_s == s)[0] if s in joined_s else -1 for s in ps])
    _, top = chunked_topk(probe, np.concatenate([g1, g2]), kmax)
    hit = top == mate[:, None]
    rank = np.where(mate < 0, -1, np.where(hit.any(1), hit.argmax(1), kmax))
    gal = []
    for g, s in ((g1, s1), (g2, s2)):
        mated = np.isin(ps, s)
        sc, ix = chunked_topk(probe, g, 1)
        col = np.array([np.flatnonzero(s == p)[0] if m else -1 for p, m in zip(ps, mated)])
        gal.append((mated, ix[:, 0] == col, sc[:, 0]))
    return rank, gal


def test_ijbs_rank_and_tpir_equal_the_evaluator_on_full_and_duplicated_probes():
    rng = np.random.default_rng(8)
    probe, g1, g2, ps, s1, s2 = _ijbs_case(rng)
    rank, gal = _ijbs_records(probe, g1, g2, ps, s1, s2)
    metric = Combined(
        RankK(rank, ranks=(1, 5, 10), prefix="V2S."), IJBSTpirAtFpir(gal, fpirs=(0.01, 0.1, 0.3), prefix="V2S.")
    )
    groups = SubjectGroups.from_ids(ps)
    for sc in [np.ones(groups.n_subjects, np.int64), *subject_draws(groups.n_subjects, 8, 2)]:
        idx = groups.indices(sc)
        ref = identification_metrics(probe[idx], g1, g2, ps[idx], s1, s2, fpirs=(0.01, 0.1, 0.3))["metrics"]
        got = metric.on_counts(groups.item_counts(sc))
        assert got.keys() == {f"V2S.{k}" for k in ref}
        for k, v in ref.items():
            assert np.isnan(got[f"V2S.{k}"]) if v is None else got[f"V2S.{k}"] == v, (k, v, got[f"V2S.{k}"])
    ci = bootstrap_ci(groups, metric, n_boot=50, seed=0)
    assert ci["V2S.rank1"].low <= ci["V2S.rank1"].estimate <= ci["V2S.rank1"].high


def test_tinyface_rank_equals_closed_set_cmc():
    rng = np.random.default_rng(9)
    centers = rng.normal(0, 1, (20, 8)).astype(np.float32)
    gal_l = np.concatenate([np.repeat(np.arange(20), 2), np.full(60, -100)])
    gallery = np.concatenate([centers[np.repeat(np.arange(20), 2)], rng.normal(0, 1, (60, 8)).astype(np.float32)])
    gallery += rng.normal(0, 0.7, gallery.shape).astype(np.float32)
    pl = rng.integers(0, 20, 70)
    probe = centers[pl] + rng.normal(0, 0.9, (70, 8)).astype(np.float32)
    # the evaluator's "first" (high_index_first tie order), as it would save it
    _, idx = chunked_topk(probe, gallery[::-1], 20)
    hit = gal_l[(len(gallery) - 1) - idx] == pl[:, None]
    first = np.where(hit.any(1), hit.argmax(1), 20)
    m = RankK(first, ranks=(1, 5, 20))
    groups = SubjectGroups.from_ids(pl)
    for sc in [np.ones(groups.n_subjects, np.int64), *subject_draws(groups.n_subjects, 5, 3)]:
        i = groups.indices(sc)
        ref = closed_set_cmc(probe[i], gallery, pl[i], gal_l, ranks=(1, 5, 20))
        assert m(i) == {k: ref[k] for k in ("rank1", "rank5", "rank20")}


def test_ijb_1n_joined_rank_and_open_set_tpir_equal_the_evaluator():
    rng = np.random.default_rng(10)
    gallery = rng.normal(0, 1, (24, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    ps = rng.integers(0, 24, 80)
    probe = gallery[ps] + rng.normal(0, 0.6, (80, 8))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    _, rank, _, _ = mate_rank_scan(probe, gallery, ps)
    joined = RankK(rank, ranks=(1, 5, 10), prefix="joined.")
    halves = (np.arange(12), np.arange(12, 24))
    views = []
    for cols in halves:
        mate = np.where(np.isin(ps, cols), ps - cols[0], -1)
        pos, r, nm, _ = mate_rank_scan(probe, gallery[cols], mate)
        views.append((pos, r, nm, mate >= 0))
    open_set = IJBOpenSetTpir(views, prefix="open_set.")
    groups = SubjectGroups.from_ids(ps)
    for sc in [np.ones(groups.n_subjects, np.int64), *subject_draws(groups.n_subjects, 5, 4)]:
        i = groups.indices(sc)
        ref = joined_identification(probe[i], gallery, ps[i])
        assert joined(i) == {f"joined.rank{k}": ref[f"rank{k}"] for k in (1, 5, 10)}
        tp = [
            open_set_identification(probe[i], gallery[c], np.where(np.isin(ps[i], c), ps[i] - c[0], -1))["tpir"]
            for c in halves
        ]
        got = open_set.on_counts(groups.item_counts(sc))
        for name in tp[0]:
            assert got[f"open_set.tpir@fpir={name}"] == float(np.mean([tp[0][name], tp[1][name]]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="no items"):
        SubjectGroups({"a": [0], "b": []})
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci({"a": [0]}, lambda i: 1.0, n_boot=2, alpha=1.5)
    with pytest.raises(ValueError, match="different numbers of items"):
        Combined(RankK([0, 1]), RankK([0]))
