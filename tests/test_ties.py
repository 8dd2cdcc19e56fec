"""Exact ties, built by hand, ordered as the published evaluation code orders a score row.

Each test writes its rule out; the references below re-state the published procedures on dense score matrices
(facts, not code, of AdaFace ``validation_lq/PFE/ijbs.py`` ``DIR_FAR`` / ``find_thresholds_by_FAR``,
``validation_lq/tinyface_helper.py`` ``DIR_FAR`` and insightface ``recognition/_evaluation_/ijb/ijb_1n.py``
``evaluation`` / ``ijb_evals.py`` ``evaluation_1N``). A NumPy default ``argsort`` is not guaranteed stable; the
published tie order is read as that of a stable sort (``kind="stable"``), which the references use.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.eval.identification import chunked_topk
from harness.eval.ijb_identification import joined_identification, mate_rank_scan, open_set_identification
from harness.eval.ijbs import find_threshold_by_fpir, identification_metrics
from harness.eval.tinyface import closed_set_cmc

# ------------------------------------------------------------------------------------------- references


def _pfe_dir_far(score_mat: np.ndarray, label_mat: np.ndarray, ranks=(1,), fars=(1.0,)) -> np.ndarray:
    """PFE ``DIR_FAR`` (AdaFace ``validation_lq/PFE/ijbs.py``), dense: rows sorted by the reverse of a stable
    ascending argsort; thresholds from the non-mated probes' max scores (descending, ``k = int(n * far)``,
    ``s[k-1]`` or ``s[0] + 1e-8`` in float64), compared with the scores in the scores' dtype."""
    mated = label_mat.any(axis=1)
    s_m, l_m, s_nm = score_mat[mated], label_mat[mated], score_mat[~mated]
    if len(fars) == 1 and fars[0] >= 1.0:
        thresholds = [np.min(score_mat) - 1e-10]
    else:
        neg = np.sort(s_nm.max(axis=1))[::-1]
        ks = (len(neg) * np.asarray(fars)).astype(np.int32)
        thresholds = [np.float64(neg[0]) + 1e-8 if k == 0 else neg[k - 1] for k in ks]
    order = np.argsort(s_m, axis=1, kind="stable")[:, ::-1]
    sorted_labels = np.take_along_axis(l_m, order, axis=1)
    out = np.zeros((len(thresholds), len(ranks)))
    if len(fars) == 1 and fars[0] >= 1.0:  # closed set: no score condition (TinyFace probes may have several mates)
        for j, r in enumerate(ranks):
            out[0, j] = sorted_labels[:, :r].any(axis=1).mean()
        return out
    gt = s_m[l_m]
    for i, thr in enumerate(thresholds):
        thr = score_mat.dtype.type(
            thr
        )  # NumPy 1.x value-based casting: a float64 scalar meets float32 scores as float32
        for j, r in enumerate(ranks):
            out[i, j] = ((gt >= thr) & sorted_labels[:, :r].any(axis=1)).mean()
    return out


def _ijbs_reference(p, g1, g2, sp, s1, s2, ranks, fpirs):
    """PFE ``IJBSTest.identification``: closed set on ``hstack(S1, S2)``, open set per gallery averaged; each score
    matrix in the dtype ``np.dot`` gives (float64 if a template list holds AdaFace's float64 zero vector)."""

    def score(a, b):
        dt = np.float64 if (not a.any(axis=1).all() or not b.any(axis=1).all()) else np.float32
        return a.astype(dt) @ b.astype(dt).T

    sc1, sc2 = score(p, g1), score(p, g2)
    lab1 = np.asarray(sp)[:, None] == np.asarray(s1)[None, :]
    lab2 = np.asarray(sp)[:, None] == np.asarray(s2)[None, :]
    closed = _pfe_dir_far(np.hstack([sc1, sc2]), np.hstack([lab1, lab2]), ranks=ranks)[0]
    open_ = (_pfe_dir_far(sc1, lab1, fars=fpirs)[:, 0] + _pfe_dir_far(sc2, lab2, fars=fpirs)[:, 0]) / 2
    return closed, open_


def _evaluation_1n_ranks(sim: np.ndarray, mate) -> np.ndarray:
    """insightface ``evaluation_1N``: ``index_sorted = np.argsort(similarity[index])[::-1]``; 0-based mate rank."""
    order = np.argsort(sim, axis=1, kind="stable")[:, ::-1]
    return np.array([int(np.flatnonzero(order[i] == m)[0]) if m >= 0 else -1 for i, m in enumerate(mate)])


def _ijb_1n_ranks(sim: np.ndarray, mate) -> np.ndarray:
    """insightface ``ijb_1n.py`` ``evaluation``: ``top_inds = np.argsort(-similarity)``; 0-based mate rank."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(order[i] == m)[0]) for i, m in enumerate(mate)])


# ------------------------------------------------------------------------------------------- the shared search


def test_chunked_topk_orders_ties_both_ways_and_ties_identical_rows_exactly():
    """``ties="high_index_first"`` is the reverse of a stable ascending argsort (AdaFace/PFE ``DIR_FAR``, insightface
    ``evaluation_1N``); ``"low_index_first"`` a stable descending argsort (insightface ``ijb_1n.py``). Bitwise
    identical gallery rows get bitwise identical scores, in small blocks too."""
    rng = np.random.default_rng(0)
    probe = rng.integers(-2, 3, (9, 6)).astype(np.float32)
    gallery = rng.integers(-2, 3, (40, 6)).astype(np.float32)  # small integers: exact products, many ties
    gallery[[5, 17, 33]] = gallery[11]
    s = probe @ gallery.T
    for ties, want in (
        ("high_index_first", np.argsort(s, axis=1, kind="stable")[:, ::-1]),
        ("low_index_first", np.argsort(-s, axis=1, kind="stable")),
    ):
        for max_bytes in (4 * 7, 4 * 9 * 40, 1 << 20):
            got_s, got_i = chunked_topk(probe, gallery, 12, max_bytes=max_bytes, seed_cols=3, ties=ties)
            np.testing.assert_array_equal(got_i, want[:, :12], err_msg=f"{ties} {max_bytes}")
            np.testing.assert_array_equal(got_s, np.take_along_axis(s, want[:, :12], axis=1))
    # non-integer features: the duplicates of row 11 score exactly as row 11 does
    probe = rng.standard_normal((5, 64)).astype(np.float32)
    gallery = rng.standard_normal((300, 64)).astype(np.float32)
    gallery[[40, 290]] = gallery[11]
    gallery[7] = -0.0 * gallery[7]  # -0.0 and 0.0 are one value
    gallery[8] = 0.0
    s_all, i_all = chunked_topk(probe, gallery, 300, max_bytes=4 * 5 * 64, ties="high_index_first")
    score_of = np.empty_like(s_all)
    np.put_along_axis(score_of, i_all, s_all, axis=1)
    assert (score_of[:, 40] == score_of[:, 11]).all() and (score_of[:, 290] == score_of[:, 11]).all()
    assert (score_of[:, 7] == 0).all() and (score_of[:, 8] == 0).all()
    # among the three, the highest column first
    pos = {c: np.flatnonzero(i_all[0] == c)[0] for c in (11, 40, 290)}
    assert pos[290] < pos[40] < pos[11] and pos[11] - pos[290] == 2


# ------------------------------------------------------------------------------------------- IJB-S


def test_ijbs_empty_templates_tie_at_zero_and_the_highest_column_wins():
    """Rule (AdaFace ``validation_lq``, PFE ``DIR_FAR``): ``sort_idx = np.argsort(score_mat, axis=1)[:, ::-1]`` on
    ``hstack(S_G1, S_G2)``: among equal scores the HIGHEST column comes first. A probe template whose frames all
    failed alignment is a zero vector (AdaFace: ``np.zeros(512)``) and scores exactly 0 against every gallery
    template, so its mate's rank is the number of gallery columns after the mate's column."""
    d = 4
    g1 = np.eye(d, dtype=np.float32)[:3]  # G1: subjects 10, 11, 12 -> columns 0, 1, 2
    g2 = np.eye(d, dtype=np.float32)[[3, 0, 1]] * np.float32(0.5)  # G2: subjects 20, 21, 22 -> columns 3, 4, 5
    probe = np.zeros((4, d), np.float32)  # four empty probe templates
    probe_subjects = [10, 12, 20, 22]  # mates at columns 0, 2, 3, 5
    out = identification_metrics(
        probe,
        g1,
        g2,
        probe_subjects,
        [10, 11, 12],
        [20, 21, 22],
        ranks=(1, 2, 3, 4, 5, 6),
        fpirs=(0.5,),
        return_items=True,
    )
    # 6 tied columns, highest first: column c ranks 5 - c (0-based)
    np.testing.assert_array_equal(out["items"]["mate_rank"], [5, 3, 2, 0])
    assert [out["metrics"][f"rank{r}"] for r in (1, 2, 3, 4)] == [0.25, 0.25, 0.5, 0.75]
    # the old rule (lowest column first) would have given ranks 0, 2, 3, 5
    closed, _ = _ijbs_reference(probe, g1, g2, probe_subjects, [10, 11, 12], [20, 21, 22], (1, 2, 3, 4, 5, 6), (0.5,))
    assert [out["metrics"][f"rank{r}"] for r in (1, 2, 3, 4, 5, 6)] == pytest.approx(closed.tolist())


def test_ijbs_threshold_compares_in_the_scores_dtype():
    """Rule (PFE ``find_thresholds_by_FAR`` + ``DIR_FAR``): ``thr = s[0] + 1e-8`` when ``k = int(n * fpir) == 0``,
    computed in float64 but compared with float32 scores in float32, where it rounds back to ``s[0]`` for
    ``s[0] >= 0.25``: a mate scoring exactly the largest non-mated maximum counts. When a template list holds an
    empty template (AdaFace's float64 ``np.zeros(512)``), ``np.dot`` scores in float64 and the eps keeps it out."""
    g1 = np.array([[1, 0, 0], [0, 1, 0]], np.float32)  # subjects 1, 2
    g2 = np.array([[0, 0, 1]], np.float32)  # subject 3
    a = np.float32(0.6)
    probe = np.array(
        [[1, 0, 0], [a, 0, 0], [0, a, 0], [0, 0, 1]], np.float32
    )  # mate 1 (1.0), mate 1 (0.6), non-mated, mate 3
    subjects = [1, 1, 9, 3]
    assert find_threshold_by_fpir(np.array([a], np.float32), 0.1) == a  # float32: 0.6 + 1e-8 == 0.6
    assert find_threshold_by_fpir(np.array([a], np.float64), 0.1) > a
    out = identification_metrics(probe, g1, g2, subjects, [1, 2], [3], ranks=(1,), fpirs=(0.1,))
    # G1: non-mated probes 2 (max 0.6) and 3 (max 0): k = int(2 * 0.1) = 0 -> thr = 0.6 + 1e-8 -> 0.6 in float32
    g1_block = out["by_gallery"]["G1"]
    assert g1_block["non_mated"] == 2 and g1_block["threshold@fpir=0.1"] == float(a)
    assert g1_block["tpir@fpir=0.1"] == 1.0  # both G1 mates (1.0 and exactly 0.6) pass
    closed, open_ = _ijbs_reference(probe, g1, g2, subjects, [1, 2], [3], (1,), (0.1,))
    assert out["metrics"]["tpir@fpir=0.1"] == pytest.approx(open_[0]) and out["metrics"]["rank1"] == pytest.approx(
        closed[0]
    )
    # the same with an empty (zero) probe template added: scores are float64 now and the equal mate fails
    probe_e = np.vstack([probe, np.zeros((1, 3), np.float32)])
    out_e = identification_metrics(
        probe_e,
        g1,
        g2,
        subjects + [9],
        [1, 2],
        [3],
        ranks=(1,),
        fpirs=(0.1,),
        empty=(np.array([0, 0, 0, 0, 1], bool), np.zeros(2, bool), np.zeros(1, bool)),
    )
    assert out_e["by_gallery"]["G1"]["tpir@fpir=0.1"] == 0.5
    closed, open_ = _ijbs_reference(probe_e, g1, g2, subjects + [9], [1, 2], [3], (1,), (0.1,))
    assert out_e["metrics"]["tpir@fpir=0.1"] == pytest.approx(open_[0])


def test_ijbs_matches_the_dense_pfe_reference_with_many_ties():
    """Random small-integer features (exact products, many exact ties, some empty templates): closed-set ranks and
    open-set TPIR equal the dense PFE ``DIR_FAR`` (reversed stable argsort, thresholds in the scores' dtype)."""
    rng = np.random.default_rng(7)
    for trial in range(6):
        n_p, n1, n2, d = 30, 7, 6, 5
        g1 = rng.integers(0, 3, (n1, d)).astype(np.float32)
        g2 = rng.integers(0, 3, (n2, d)).astype(np.float32)
        p = rng.integers(0, 3, (n_p, d)).astype(np.float32)
        if trial % 2:
            p[rng.choice(n_p, 4, replace=False)] = 0  # empty probe templates -> float64 scores
        g1[g1.sum(1) == 0, 0] = 1  # keep galleries non-empty unless wanted
        g2[g2.sum(1) == 0, 0] = 1
        if trial == 5:
            g2[2] = 0
        s1, s2 = list(range(100, 100 + n1)), list(range(200, 200 + n2))
        sp = rng.choice(s1 + s2 + [999], n_p).tolist()
        out = identification_metrics(p, g1, g2, sp, s1, s2, ranks=(1, 2, 5), fpirs=(0.01, 0.1, 0.3), max_bytes=64)
        closed, open_ = _ijbs_reference(p, g1, g2, sp, s1, s2, (1, 2, 5), (0.01, 0.1, 0.3))
        assert [out["metrics"][f"rank{r}"] for r in (1, 2, 5)] == pytest.approx(closed.tolist()), trial
        assert [out["metrics"][f"tpir@fpir={x}"] for x in ("0.01", "0.1", "0.3")] == pytest.approx(open_.tolist()), (
            trial
        )


def test_ijbs_booking_gallery_columns_in_pfe_set_order(tmp_path):
    """Rule (PFE ``init_proto``): booking templates are built for ``list(set(subject_list))`` with ``subject_list``
    the integer SUBJECT_ID of every gallery line in file order: a CPython set of ints, whose iteration order is
    deterministic (ints hash to themselves) but not the file order. That order decides the column of a tie."""
    from harness.data.ijbs import read_ijbs

    subjects = [9, 1, 17, 3, 2]  # file order; collisions in the 8-slot table: 9, 1 and 17 share slot 1
    proto = tmp_path / "protocols"
    (proto / "galleries").mkdir(parents=True)
    meta = (
        ["SUBJECT_ID,FILENAME,FRAME"]
        + [f"{s},img/{s}00.jpg," for s in subjects]
        + [f"{s},videos/1.mp4,{i}" for i, s in enumerate(subjects)]
    )
    (proto / "cs6_metadata.csv").write_text("\n".join(meta) + "\n")
    for name in ("cs6_surveillance_to_single-booking_probe.csv", "cs6_surveillance_to_surveillance_probe.csv"):
        (proto / name).write_text("FILENAME\nvideos/1.mp4\n")
    for kind in ("single", "booking", "surveillance"):
        for g in (1, 2):
            if kind == "surveillance":
                rows = [f"{g},{subjects[g - 1]},videos/1.mp4,0,0,1,1"]
            elif kind == "booking" and g == 1:
                rows = [f"{i},{s},img/{s}00.jpg,0,0,1,1" for i, s in enumerate(subjects)]
            else:
                rows = [f"1,{subjects[g - 1]},img/{subjects[g - 1]}00.jpg,0,0,1,1"]
            (proto / "galleries" / f"cs6_surveillance_to_{kind}_g{g}.csv").write_text(
                "TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT\n" + "\n".join(rows) + "\n"
            )
    pr = read_ijbs(tmp_path)
    order = [pr.templates[t].subject for t in pr.galleries["booking"][0]]
    assert order == list(set(subjects)) and order != subjects


# ------------------------------------------------------------------------------------------- TinyFace


def test_tinyface_identical_gallery_images_tie_exactly_and_the_higher_column_wins():
    """Rule (AdaFace ``tinyface_helper.py`` ``DIR_FAR``): ``sort_idx = np.argsort(score_mat[row])[::-1]`` on the
    inner products of the features as given (already L2-normalised by ``l2_norm`` in extraction; no second
    normalisation). A Gallery_Distractor image identical to a Gallery_Match image has the identical feature, scores
    exactly the same, and, sitting at a higher column (distractors follow the matches), ranks first."""
    rng = np.random.default_rng(3)
    d = 32
    match = rng.standard_normal((4, d)).astype(np.float32)
    match /= np.linalg.norm(match, axis=1, keepdims=True)
    distractors = rng.standard_normal((20, d)).astype(np.float32)
    distractors /= np.linalg.norm(distractors, axis=1, keepdims=True)
    distractors[13] = match[2]  # the same image among the distractors
    gallery = np.vstack([match, distractors])
    labels = np.r_[[1, 2, 3, 4], np.full(20, -100)]
    probe = (match[2] + 0.05 * rng.standard_normal(d)).astype(np.float32)[None]
    probe /= np.linalg.norm(probe)
    s = np.array([[np.dot(p, g) for g in gallery] for p in probe])  # one dot per pair: identical rows, identical scores
    assert s[0, 2] == s[0, 4 + 13] == s.max()  # an exact tie at the top
    res, items = closed_set_cmc(probe, gallery, [3], labels, ranks=(1, 2), return_items=True)
    assert items["first_mate"].tolist() == [1] and res["rank1"] == 0.0 and res["rank2"] == 1.0
    want = _pfe_dir_far(s, labels[None, :] == 3, ranks=(1, 2))[0]
    assert [res["rank1"], res["rank2"]] == want.tolist()
    lo = closed_set_cmc(probe, gallery, [3], labels, ranks=(1,), ties="low_index_first")
    assert lo["rank1"] == 1.0


def test_tinyface_matches_the_dense_reference_with_many_ties():
    """Small-integer features (exact products, many ties): Rank-k equals AdaFace's ``DIR_FAR`` at FAR = 1 with the
    reversed stable argsort, whatever the block size."""
    rng = np.random.default_rng(11)
    probe = rng.integers(0, 3, (25, 4)).astype(np.float32)
    gallery = rng.integers(0, 3, (60, 4)).astype(np.float32)
    pl = rng.integers(0, 8, 25)
    gl = np.r_[rng.integers(0, 8, 30), np.full(30, -100)]
    s = probe @ gallery.T
    want = _pfe_dir_far(s, pl[:, None] == gl[None, :], ranks=(1, 5, 20))[0]
    for max_bytes in (4 * 3 * 7, 1 << 20):
        got = closed_set_cmc(probe, gallery, pl, gl, (1, 5, 20), max_bytes=max_bytes)
        assert [got["rank1"], got["rank5"], got["rank20"]] == pytest.approx(want.tolist())


# ------------------------------------------------------------------------------------------- IJB-B/C 1:N


def test_ijb_open_set_rank_ties_higher_index_first_joined_lower_first():
    """Rules (insightface ``recognition/_evaluation_/ijb``): the open-set 1:N (``ijb_evals.py`` ``evaluation_1N``)
    ranks a probe's row by ``np.argsort(similarity[index])[::-1]``: among equal scores the HIGHER gallery index
    (larger template id) first. The joined-gallery 1:N (``ijb_1n.py`` ``evaluation``) ranks by
    ``np.argsort(-similarity)``: the LOWER index first. The open-set TPIR needs ``pos > max non-mate`` (strict), so
    a mate tied with a non-mate is never "correct" there, whatever its rank."""
    sim = np.array(
        [
            [0.5, 0.5, 0.5, 0.1],  # mate 1, tied with 0 and 2
            [0.3, 0.9, 0.9, 0.9],  # mate 3, tied with 1 and 2
            [0.7, 0.7, 0.2, 0.0],  # mate 0, tied with 1
            [0.0, 0.0, 0.0, 0.0],
        ]
    )  # mate 2: an all-zero row, every column tied
    mate = np.array([1, 3, 0, 2])
    # features whose inner products are sim exactly: probe = identity, gallery = sim.T
    probe, gallery = np.eye(4), sim.T.copy()
    _, rank_hi, _, _ = mate_rank_scan(probe, gallery, mate, high_first=True)
    _, rank_lo, _, _ = mate_rank_scan(probe, gallery, mate)
    np.testing.assert_array_equal(rank_hi, _evaluation_1n_ranks(sim, mate))
    np.testing.assert_array_equal(rank_lo, _ijb_1n_ranks(sim, mate))
    assert rank_hi.tolist() == [1, 0, 1, 1] and rank_lo.tolist() == [1, 2, 0, 2]
    r = open_set_identification(probe, gallery, np.r_[mate, -1][:4], fpirs={"x": 1.0})
    assert r["hits"][1] == 1  # only probe 1 (mate 3, highest of the tied columns) at rank 1
    j = joined_identification(probe, gallery, mate, ranks=(1,), fars=())
    assert j["rank1"] == 0.25  # only probe 2 (mate 0, lowest of its tie)


def test_ijb_ranks_match_both_references_on_random_ties():
    rng = np.random.default_rng(5)
    sim = rng.integers(0, 4, (40, 12)).astype(np.float64) / 4
    mate = rng.integers(0, 12, 40)
    probe, gallery = np.eye(40), sim.T.copy()
    np.testing.assert_array_equal(
        mate_rank_scan(probe, gallery, mate, high_first=True, block_bytes=8 * 12 * 3)[1],
        _evaluation_1n_ranks(sim, mate),
    )
    np.testing.assert_array_equal(
        mate_rank_scan(probe, gallery, mate, block_bytes=8 * 12 * 3)[1], _ijb_1n_ranks(sim, mate)
    )
