"""ROC / TAR@FAR against scikit-learn (the oracle insightface uses) and against hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from harness.eval import roc
from harness.eval.roc import DEFAULT_FARS, far_key, roc_auc, roc_curve, tar_at_far, tar_at_far_from_roc


@pytest.fixture(params=["auto", "dense", "sparse"])
def path(request, monkeypatch):
    """Run a test with the automatic choice, and with each of the two vertex computations forced."""
    if request.param == "dense":
        monkeypatch.setattr(roc, "_SPARSE_FRACTION", -1.0)
    elif request.param == "sparse":
        monkeypatch.setattr(roc, "_SPARSE_FRACTION", 1e9)
    return request.param


def _assert_same_roc(labels, scores, drop_intermediate=True):
    got = roc_curve(labels, scores, drop_intermediate=drop_intermediate)
    ref = metrics.roc_curve(labels, scores, drop_intermediate=drop_intermediate)
    for name, g, r in zip(("fpr", "tpr", "thresholds"), got, ref):
        assert g.dtype == np.float64, name
        np.testing.assert_array_equal(g, r, err_msg=name)


def _datasets():
    rng = np.random.default_rng(12345)
    out = []
    for n, p in ((5000, 0.1), (3000, 0.5), (2000, 0.01)):  # continuous scores
        lab = (rng.uniform(size=n) < p).astype(np.int64)
        lab[:2] = (0, 1)
        out.append(("random", lab, rng.standard_normal(n) + 1.5 * lab))
    lab = (rng.uniform(size=4000) < 0.2).astype(np.int8)
    lab[:2] = (0, 1)
    out.append(("float32", lab, (rng.standard_normal(4000) + lab).astype(np.float32)))
    for n in (4000, 300):  # heavy ties: one decimal
        lab = (rng.uniform(size=n) < 0.3).astype(np.int64)
        lab[:2] = (0, 1)
        out.append(("ties", lab, np.round(rng.standard_normal(n) + lab, 1)))
    # some ties among continuous scores (duplicated values, some shared by a genuine and an impostor)
    s = rng.standard_normal(3000)
    s[rng.integers(0, 3000, 500)] = s[rng.integers(0, 3000, 500)]
    lab = (rng.uniform(size=3000) < 0.1).astype(np.int64)
    lab[:2] = (0, 1)
    out.append(("some_ties", lab, s))
    # collinear runs: long impostor-only and genuine-only runs, and runs of identical (genuine, impostor) groups
    runs_lab, runs_s, v = [], [], 1000.0
    for _ in range(30):
        kind, k = rng.integers(0, 3), int(rng.integers(1, 40))
        for _ in range(k):
            if kind == 0:
                runs_lab += [0]
                runs_s += [v]
            elif kind == 1:
                runs_lab += [1]
                runs_s += [v]
            else:  # a tie group holding one genuine and two impostors
                runs_lab += [1, 0, 0]
                runs_s += [v, v, v]
            v -= 1.0
    out.append(("collinear", np.array(runs_lab), np.array(runs_s)))
    # integer scores and bool labels
    out.append(("int_scores", rng.uniform(size=500) < 0.4, rng.integers(0, 20, 500)))
    return out


@pytest.mark.parametrize("name,labels,scores", _datasets(), ids=lambda x: x if isinstance(x, str) else "")
def test_roc_curve_equals_sklearn(name, labels, scores, path):
    _assert_same_roc(labels, scores)
    _assert_same_roc(labels, scores, drop_intermediate=False)
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    assert roc_auc(labels, scores) == metrics.auc(fpr, tpr)
    ours = tar_at_far(labels, scores, fars=(0.001, 0.01, 0.05, 0.1, 0.3))
    assert ours == tar_at_far_from_roc(fpr, tpr, (0.001, 0.01, 0.05, 0.1, 0.3))


@pytest.mark.parametrize(
    "labels,scores",
    [
        ([0, 1], [0.2, 0.7]),
        ([1, 0], [0.2, 0.7]),
        ([1, 0], [0.5, 0.5]),  # one distinct value: a single vertex plus (0, 0)
        ([0, 1, 1], [3.0, 3.0, 1.0]),  # two distinct values: nothing to drop
        ([0, 0, 1, 1, 0], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ([1, 1, 0, 0], [4.0, 3.0, 2.0, 1.0]),  # perfect separation
        ([0, 0, 1, 1], [4.0, 3.0, 2.0, 1.0]),  # perfectly wrong
        ([1, 0, 1, 0, 1, 0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]),
        ([0, 1, 0], [-0.0, 0.0, 1.0]),  # -0.0 and 0.0 are one value
    ],
)
def test_roc_curve_edge_cases(labels, scores, path):
    _assert_same_roc(np.array(labels), np.array(scores))
    _assert_same_roc(np.array(labels), np.array(scores), drop_intermediate=False)


def test_large_input_equals_sklearn():
    rng = np.random.default_rng(7)
    n = 300_000
    lab = np.zeros(n, np.int8)
    lab[rng.choice(n, 400, replace=False)] = 1
    s = rng.standard_normal(n) * 0.1 + 0.3 * lab
    s[:1000] = s[1000:2000]  # a few ties
    _assert_same_roc(lab, s)


def test_tar_tie_between_two_vertices_takes_the_larger_fpr():
    # Scores (desc): 0.9 G, 0.8 I, 0.7 I, 0.6 G, 0.5 I, 0.4 I  -> 2 genuine, 4 impostors.
    # Cumulative (tps, fps) per threshold: (1,0) (1,1) (1,2) (2,2) (2,3) (2,4).
    # drop_intermediate drops 0.8 (inside the impostor run) and 0.5; with (0,0) prepended the ROC is
    #   fpr = [0, 0, .5, .5, 1],  tpr = [0, .5, .5, 1, 1].
    # At x = 0.25, fpr 0 and 0.5 are both exactly 0.25 away. Reversed: fpr [1, .5, .5, 0, 0], tpr [1, 1, .5, .5, 0];
    # the first minimum is at index 1 (fpr .5, tpr 1.0): TAR = 1.0, not 0.5 (fpr .5 lower vertex) nor .5/0 (fpr 0).
    labels = np.array([1, 0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    fpr, tpr, thr = roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.7, 0.6, 0.4])
    assert tar_at_far(labels, scores, fars=(0.25,)) == {0.25: 1.0}
    # x = 0.1 is nearest to fpr 0 (distance .1 vs .4): first in reversed order is (fpr 0, tpr .5)
    assert tar_at_far(labels, scores, fars=(0.1,)) == {0.1: 0.5}
    # x = 0.6 is nearest to the two fpr .5 vertices (distance .1, below x); the first in reversed order (tpr 1) wins
    assert tar_at_far(labels, scores, fars=(0.6,)) == {0.6: 1.0}


def test_drop_intermediate_changes_the_answer():
    # Groups (desc): 10, 9, 8, 7 each hold one genuine and one impostor (tied scores), then 6 lone impostors 6..1.
    # 4 genuine, 10 impostors. Cumulative (fps, tps): (1,1) (2,2) (3,3) (4,4) (5,4) ... (10,4).
    # Without dropping: fpr = 0, .1, .2, ..., 1 and tpr = 0, .25, .5, .75, 1, 1, ...: at x = 0.2 the vertex
    #   (fpr .2, tpr .5) is exactly at x.
    # With drop_intermediate, the equal (2 scores, 1 genuine) steps are collinear: thresholds 9 and 8 are dropped,
    #   as is the inside of the impostor run; ROC = fpr [0, .1, .4, 1], tpr [0, .25, 1, 1].
    #   Nearest to 0.2: fpr .1 (distance .1) -> TAR = 0.25, not 0.5.
    labels = np.array([1, 0] * 4 + [0] * 6)
    scores = np.array([10.0, 10.0, 9.0, 9.0, 8.0, 8.0, 7.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    fpr, tpr, _ = roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, [0, 0.1, 0.4, 1])
    np.testing.assert_array_equal(tpr, [0, 0.25, 1, 1])
    assert tar_at_far(labels, scores, fars=(0.2,)) == {0.2: 0.25}
    sk_fpr, sk_tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert tar_at_far_from_roc(sk_fpr, sk_tpr, (0.2,)) == {0.2: 0.5}  # the answer without dropping differs
    no_drop = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(no_drop[0], sk_fpr)
    np.testing.assert_array_equal(no_drop[1], sk_tpr)


def test_default_fars_and_keys():
    assert DEFAULT_FARS == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert [far_key(x) for x in DEFAULT_FARS] == "1e-06 1e-05 0.0001 0.001 0.01 0.1".split()
    rng = np.random.default_rng(0)
    lab = rng.uniform(size=1000) < 0.2
    out = tar_at_far(lab, rng.standard_normal(1000) + lab)
    assert list(out) == list(DEFAULT_FARS)
    assert all(0.0 <= v <= 1.0 for v in out.values())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    scores = np.array([0.1, 0.5, bad, 0.3])
    with pytest.raises(ValueError, match="score 2"):
        roc_curve([0, 1, 0, 1], scores)
    with pytest.raises(ValueError, match="finite"):
        tar_at_far([0, 1, 0, 1], scores)


def test_missing_class_and_bad_labels_raise():
    with pytest.raises(ValueError, match="no genuine"):
        tar_at_far([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no impostor"):
        roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0 \\(impostor\\) or 1"):
        roc_curve([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        roc_curve([0, 1, 1], [0.1, 0.2])
