"""IJB-B/IJB-C 1:N identification: both definitions on hand-worked score matrices, the NIST CSV reader's errors,
the SynthFace CSV writer, and an end-to-end run on the tiny release's IJB-B meta with CSVs written here."""

from __future__ import annotations

import math
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.core.errors import DataFormatError
from harness.data.ijb import read_ijb
from harness.data.ijb1n import one_n_paths, read_1n_csv, read_ijb_1n
from harness.eval.identification import chunked_topk
from harness.eval.ijb_identification import (
    OPEN_SET_FPIRS,
    IJBIdentification,
    joined_identification,
    mate_rank_scan,
    open_set_identification,
)
from harness.eval.ijb_verification import VerificationProtocol
from harness.synthface.ijb1n import HEADER_V1, HEADER_V2, write_1n_csvs

V1 = HEADER_V1
V2 = HEADER_V2
ZEROS_V1 = ",0,0,0,0,0,0,0,0,0,0,0,0"  # FACE_X .. CS2_BOOL
ZEROS_V2 = ",0,0,0,0,0,0,0,0,0,0,0"  # FACE_X .. FRAME_NUM


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------- (a) joined


def test_joined_hand_worked_ties_and_strict_threshold():
    # gallery = identity, so the probe rows ARE the scores (exact in float64)
    s = np.array(
        [
            [0.9, 0.5, 0.9, 0.1],  # mate 0, tied with gallery 2 -> the lower index first: rank 0 (hit)
            [0.7, 0.7, 0.2, 0.3],  # mate 1, tied with gallery 0 which ranks first: rank 1
            [0.4, 0.8, 0.6, 0.6],  # mate 3: 0.8 above, 0.6 tied at lower index 2 -> rank 2
        ]
    )
    mate = [0, 1, 3]
    g = np.eye(4)
    pos, rank, nm_max, top = mate_rank_scan(s, g, mate, topk_nonmated=3)
    assert rank.tolist() == [0, 1, 2]
    assert pos.tolist() == [0.9, 0.7, 0.6]
    assert nm_max.tolist() == [0.9, 0.7, 0.8]
    assert top.tolist() == [0.9, 0.8, 0.7]  # non-mated scores, flattened, descending
    # P = 3: k = ceil(3 * 0.01) = ceil(3 * 0.1) = 1 -> threshold = largest non-mated = 0.9 (probe 0 vs gallery 2);
    # mate scores 0.9, 0.7, 0.6: none is strictly above 0.9 -> 0
    r = joined_identification(s, g, mate)
    assert r["rank1"] == pytest.approx(1 / 3) and r["rank5"] == 1.0 and r["rank10"] == 1.0
    assert r["tpir@far=0.01"] == 0.0 and r["tpir@far=0.1"] == 0.0
    assert r["thresholds"] == {"0.01": 0.9, "0.1": 0.9}
    # far 0.5: k = 2 -> 0.8 -> only 0.9 above: 1/3; far 3: k = 9 = all 3 x 3 non-mated -> 0.1 -> all: 1;
    # far 4: k = 12 > 9 non-mated scores -> None
    r = joined_identification(s, g, mate, fars=(0.5, 3.0, 4.0))
    assert r["tpir@far=0.5"] == pytest.approx(1 / 3)
    assert r["tpir@far=3.0"] == 1.0 and r["thresholds"]["3.0"] == 0.1
    assert r["tpir@far=4.0"] is None
    # blocks of one probe give the same answer (streamed top-k merge)
    assert joined_identification(s, g, mate, fars=(0.5, 3.0), block_bytes=8 * 4) == joined_identification(
        s, g, mate, fars=(0.5, 3.0)
    )
    with pytest.raises(ValueError):
        joined_identification(s, g, [0, -1, 3])


# ------------------------------------------------------------------------------------------- (b) open set


def test_open_set_hand_worked():
    s = np.array(
        [
            [0.8, 0.3, 0.2],  # mate 0: pos 0.8 > non-mate max 0.3 -> correct; rank 0
            # mate 1: pos 0.6 == non-mate max 0.6 -> NOT correct (strict); rank 0 (tie: argsort(s)[::-1], higher index
            # first)
            [0.6, 0.6, 0.1],
            [0.1, 0.2, 0.5],  # mate 2: pos 0.5 > 0.2 -> correct; rank 0
            [0.45, 0.1, 0.0],  # non-mated: m = 0.45
            [0.2, 0.55, 0.3],  # non-mated: m = 0.55
        ]
    )
    mate = [0, 1, 2, -1, -1]
    # m sorted desc = [0.55, 0.45], n = 2.
    # f = 1e-4: int(2e-4) - 1 = -1 -> max(.., 0) = 0 -> thr 0.55 -> correct & pos > 0.55: probe 0 only -> 1/3
    # f = 0.5:  int(1.0) - 1 = 0 -> thr 0.55 -> 1/3;  f = 1: int(2) - 1 = 1 -> thr 0.45 -> probes 0 and 2 -> 2/3
    r = open_set_identification(s, np.eye(3), mate, fpirs={"a": 1e-4, "b": 0.5, "c": 1.0})
    assert (r["mated"], r["non_mated"]) == (3, 2)
    assert r["threshold"] == {"a": 0.55, "b": 0.55, "c": 0.45}
    assert r["tpir"]["a"] == pytest.approx(1 / 3) and r["tpir"]["b"] == pytest.approx(1 / 3)
    assert r["tpir"]["c"] == pytest.approx(2 / 3)
    assert r["hits"] == {1: 3, 5: 3, 10: 3}
    # strict pos > thr: lower probe 2's mate score to exactly the f = 1 threshold 0.45 -> it no longer counts
    s2 = s.copy()
    s2[2, 2] = 0.45
    assert open_set_identification(s2, np.eye(3), mate, fpirs={"c": 1.0})["tpir"]["c"] == pytest.approx(1 / 3)
    # default FPIRs: insightface's grid values; with 2 non-mated probes all but f = 1 take index 0
    r = open_set_identification(s, np.eye(3), mate)
    assert list(r["tpir"]) == ["0.0001", "0.001", "0.01", "0.1", "1.0"]
    assert [r["threshold"][k] for k in r["threshold"]] == [0.55, 0.55, 0.55, 0.55, 0.45]
    # no non-mated probes: thresholds undefined -> None
    assert open_set_identification(s[:3], np.eye(3), mate[:3])["tpir"]["0.01"] is None


def test_open_set_fpir_values_are_insightface_grid():
    grid = [10**ii for ii in np.arange(-4, 0, 4 / 100)] + [1]
    assert list(OPEN_SET_FPIRS.values()) == [float(grid[i]) for i in (0, 25, 50, 75, 100)]
    assert OPEN_SET_FPIRS["0.0001"] == 1e-4 and OPEN_SET_FPIRS["1.0"] == 1.0
    assert abs(OPEN_SET_FPIRS["0.001"] - 1e-3) < 1e-17


# ------------------------------------------------------------------------------------------- references


def ref_joined(q, g, mask, fars=(0.01, 0.1)):
    """ijb_1n.py ``evaluation`` written from its description: argsort(-sim) top-k; threshold = the
    ceil(P*far)-th largest of all non-mated similarities; TPIR = share of mate similarities above it."""
    sim = q @ g.T
    top = np.argsort(-sim, axis=1)
    out = {f"rank{k}": np.mean([mask[i] in top[i, :k] for i in range(len(q))]) for k in (1, 5, 10)}
    pos = sim[np.arange(len(q)), mask].copy()
    sim[np.arange(len(q)), mask] = -2.0
    neg = np.sort(sim[sim > -2.0])[::-1]
    for far in fars:
        out[f"tpir@far={far}"] = np.sum(pos > neg[math.ceil(len(q) * far) - 1]) / len(q)
    return out


def ref_open_set(q, g, q_ids, g_ids, fars):
    """ijb_evals.py ``evaluation_1N`` written from its description."""
    sim = q @ g.T
    hits = {1: 0, 5: 0, 10: 0}
    pos, neg_max, non = [], [], []
    for i, qid in enumerate(q_ids):
        if qid in g_ids:
            j = np.flatnonzero(g_ids == qid)[0]
            order = np.argsort(sim[i])[::-1]
            for k in hits:
                hits[k] += j in order[:k]
            pos.append(sim[i, j])
            neg_max.append(sim[i][g_ids != qid].max())
        else:
            non.append(sim[i].max())
    pos, neg_max, non = np.array(pos), np.array(neg_max), np.sort(np.array(non))[::-1]
    correct = pos > neg_max
    tpir = [np.logical_and(correct, pos > non[max(int(len(non) * f) - 1, 0)]).sum() / len(pos) for f in fars]
    return hits, tpir


def random_templates(rng, n, dim):
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_matches_reference_loops_and_chunked_topk():
    rng = np.random.default_rng(3)
    n_sub, dim = 40, 8
    g = random_templates(rng, n_sub, dim)
    subj = rng.permutation(n_sub)
    q_sub = rng.integers(0, n_sub, 300)
    mate = np.argsort(subj)[q_sub]  # gallery row holding subject q_sub
    q = g[mate] + 0.9 * rng.standard_normal((300, dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ours = joined_identification(q, g, mate, block_bytes=8 * n_sub * 7)  # 7 probes per block
    ref = ref_joined(q, g, mate)
    for key in ("rank1", "rank5", "rank10", "tpir@far=0.01", "tpir@far=0.1"):
        assert ours[key] == pytest.approx(ref[key], abs=0), key
    # ranks agree with chunked_topk's float32 top-k where no near-ties exist
    _, rank, _, _ = mate_rank_scan(q, g, mate)
    _, idx = chunked_topk(q.astype(np.float32), g.astype(np.float32), 5)
    for k in (1, 5):
        assert np.array_equal(rank < k, (idx[:, :k] == mate[:, None]).any(1))
    # open set on the first half of the gallery: probes of the other half are non-mated
    half = n_sub // 2
    g_ids = subj[:half]
    m = np.where(np.isin(q_sub, g_ids), mate, -1)
    fars = list(OPEN_SET_FPIRS.values())
    r = open_set_identification(q, g[:half], m, block_bytes=8 * half * 11)
    hits, tpir = ref_open_set(q, g[:half], q_sub, g_ids, fars)
    assert r["hits"] == hits
    assert list(r["tpir"].values()) == pytest.approx(tpir, abs=0)


# ------------------------------------------------------------------------------------------- CSV reader


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)
    return str(path)


def test_read_csv_both_schemas(tmp_path):
    p = write(
        tmp_path / "b.csv",
        f"{V1}\n5,2,img/1.jpg,70{ZEROS_V1}\n3,1,img/2.jpg,71{ZEROS_V1}\n5,2,frame/3.png,72{ZEROS_V1}\n",
    )
    tids, subs, rows = read_1n_csv(p)
    assert tids.tolist() == [3, 5] and subs.tolist() == [1, 2] and tids.dtype == np.int64
    assert rows["FILE"].tolist() == ["img/1.jpg", "img/2.jpg", "frame/3.png"]
    assert rows["SIGHTING_ID"].tolist() == [70, 71, 72] and rows["line"].tolist() == [2, 3, 4]
    p = write(tmp_path / "c.csv", f"{V2}\r\n9,4,img/9.jpg,8{ZEROS_V2}\r\n\r\n")  # CRLF, trailing blank line
    tids, subs, rows = read_1n_csv(p)
    assert tids.tolist() == [9] and subs.tolist() == [4] and rows["FILENAME"].tolist() == ["img/9.jpg"]


@pytest.mark.parametrize(
    "text, where, what",
    [
        ("TEMPLATE_ID,SUBJECT_ID,FILE\n1,1,a.jpg\n", "field SIGHTING_ID", "SIGHTING_ID"),
        ("TEMPLATE_ID,SUBJECT_ID,NAME,SIGHTING_ID\n1,1,a.jpg,3\n", "field FILE", "FILENAME"),
        ("SUBJECT_ID,FILE,SIGHTING_ID\n1,a.jpg,3\n", "field TEMPLATE_ID", "TEMPLATE_ID"),
        (f"{V1}\n1,1,a.jpg,3{ZEROS_V1}\n2,x,b.jpg,4{ZEROS_V1}\n", "line 3", "SUBJECT_ID 'x'"),
        (f"{V1}\n1,1,a.jpg,3{ZEROS_V1}\n2.0,1,b.jpg,4{ZEROS_V1}\n", "line 3", "TEMPLATE_ID '2.0'"),
        (
            f"{V1}\n1,1,a.jpg,3{ZEROS_V1}\n2,2,b.jpg,4{ZEROS_V1}\n1,7,c.jpg,5{ZEROS_V1}\n",
            "line 4",
            "SUBJECT_ID 7 here but 1 on line 2",
        ),
        (f"{V1}\n1,1,a.jpg,3{ZEROS_V1}\n\n2,2,b.jpg,4{ZEROS_V1}\n", "line 3", "blank line"),
        (f"{V1}\n1,1,a.jpg,3{ZEROS_V1}\n2,2,b.jpg,4\n", "line 3", "expected 16"),
        (f"{V1}\n", None, "no data rows"),
    ],
)
def test_read_csv_errors(tmp_path, text, where, what):
    p = write(tmp_path / "x.csv", text)
    with pytest.raises(DataFormatError) as e:
        read_1n_csv(p)
    msg = one_line(e)
    assert msg.startswith(p + (f":{where}:" if where else ":")) and what in msg, msg


def fake_release(tmp_path, prefix="ijbb", gallery=None, probes=None, feats_rows=None):
    """A hand-built IJB folder: one image row per template (tid, subject) listed; CSVs from ``gallery`` (two lists)
    and ``probes``. Returns the root."""
    root = tmp_path / prefix.upper()
    os.makedirs(root / "loose_crop", exist_ok=True)
    g1, g2 = gallery
    all_t = g1 + g2 + probes
    write(
        root / "meta" / f"{prefix}_face_tid_mid.txt",
        "".join(f"{i + 1}.jpg {t} {100 + i}\n" for i, (t, _) in enumerate(all_t)),
    )
    write(
        root / "meta" / f"{prefix}_name_5pts_score.txt",
        "".join(f"{i + 1}.jpg 30 40 60 40 45 55 33 70 57 70 1.0\n" for i in range(len(all_t))),
    )
    header, zeros = (V1, ZEROS_V1) if prefix == "ijbb" else (V2, ZEROS_V2)
    paths = one_n_paths(root, prefix)
    names = list(paths)
    for name, lst in zip(names, (g1, g2, probes)):
        write(paths[name], header + "\n" + "".join(f"{t},{s},img/{t}.jpg,{100 + t}{zeros}\n" for t, s in lst))
    return str(root)


def test_read_ijb_1n_errors(tmp_path):
    root = fake_release(tmp_path, gallery=([(1, 1)], [(2, 2)]), probes=[(11, 1), (12, 2)])
    meta = read_ijb(root, with_pairs=False)
    lists = read_ijb_1n(root, meta=meta)
    assert list(lists.galleries) == ["S1", "S2"]
    assert lists.galleries["S2"][0].tolist() == [2] and lists.probes[1].tolist() == [1, 2]
    paths = one_n_paths(root, "ijbb")
    # a template unknown to face_tid_mid
    write(paths["probe_mixed"], f"{V1}\n11,1,a.jpg,3{ZEROS_V1}\n99,2,b.jpg,4{ZEROS_V1}\n")
    with pytest.raises(DataFormatError) as e:
        read_ijb_1n(root, meta=meta)
    assert one_line(e).startswith(paths["probe_mixed"] + ":line 3:") and "99" in str(e.value)
    read_ijb_1n(root)  # without meta there is nothing to check it against
    # a template in two lists
    write(paths["probe_mixed"], f"{V1}\n11,1,a.jpg,3{ZEROS_V1}\n2,2,b.jpg,4{ZEROS_V1}\n")
    with pytest.raises(DataFormatError) as e:
        read_ijb_1n(root, meta=meta)
    assert one_line(e).startswith(paths["probe_mixed"] + ":line 3:") and "ijbb_1N_gallery_S2.csv" in str(e.value)
    # a missing CSV
    os.remove(paths["S1"])
    with pytest.raises(FileNotFoundError) as e:
        read_ijb_1n(root, meta=meta)
    assert paths["S1"] in one_line(e) and "IJB 1:N protocol" in str(e.value)


# ------------------------------------------------------------------------------------------- evaluator, hand-built


def test_evaluator_hand_built_two_galleries(tmp_path):
    # S1 = subjects 1, 2 (tids 1, 2); S2 = subjects 3, 4 (tids 3, 4); probes 11..14 of subjects 1..4.
    root = fake_release(
        tmp_path, gallery=([(1, 1), (2, 2)], [(3, 3), (4, 4)]), probes=[(11, 1), (12, 2), (13, 3), (14, 4)]
    )
    ev = IJBIdentification(root, protocol=VerificationProtocol(faceness=False))
    feats = np.array(
        [
            [1, 0, 0, 0],  # tid 1
            [0, 1, 0, 0],  # tid 2
            [0, 0, 1, 0],  # tid 3
            [0, 0, 0, 1],  # tid 4
            [1, 0, 0, 0],  # 11 (subject 1): S1 scores [1, 0]
            [1, 1, 0, 0],  # 12 (subject 2): S1 scores [a, a], a = 1/sqrt(2): tie, mate 2nd; not "correct"
            [0, 0, 1, 0],  # 13 (subject 3, mate only in S2): S2 scores [1, 0]; S1 scores [0, 0]
            [0, 0.6, 0, 0.8],  # 14 (subject 4, mate only in S2): S2 scores [0, 0.8]; S1 scores [0, 0.6]
        ],
        np.float32,
    )
    r = ev.evaluate_features(feats)
    assert r["benchmark"] == "IJB-B 1:N"
    # joined gallery [1, 2, 3, 4]: ranks 0, 1 (tie with tid 1 first), 0, 0 -> rank1 3/4.
    # P = 4: k = ceil(0.04) = ceil(0.4) = 1 -> threshold = largest non-mated = a (probe 12 vs tid 1);
    # mates 1, a, 1, 0.8: strictly above a: 3 -> 3/4
    j = r["joined"]
    assert (j["rank1"], j["rank5"], j["rank10"]) == (0.75, 1.0, 1.0)
    assert j["tpir@far=0.01"] == 0.75 and j["tpir@far=0.1"] == 0.75
    assert j["thresholds"]["0.01"] == pytest.approx(2**-0.5)
    # S1: mated 11 (pos 1, correct), 12 (pos a = non-mate max a: not correct); non-mated 13 (m 0), 14 (m 0.6).
    #   m = [0.6, 0]: f < 1 -> index max(int(2 f) - 1, 0) = 0 -> thr 0.6; f = 1 -> index 1 -> thr 0. Either way only
    #   probe 11 -> TPIR 1/2. hits: rank1 {11, 12} (12's mate ties tid 1 at a: evaluation_1N's
    #   argsort(s)[::-1] puts the higher index, its mate, first), rank5 {11, 12}.
    # S2: mated 13 (pos 1), 14 (pos 0.8), both correct; non-mated 11, 12 with m = 0 -> thr 0 -> TPIR 1.
    # mean TPIR = 0.75 at every FPIR; top-k Mean = (hits S1 + hits S2) / 4: rank1 (2 + 2) / 4, rank5 (2 + 2) / 4.
    o = r["open_set"]
    assert [o[f"tpir@fpir={f}"] for f in OPEN_SET_FPIRS] == [0.75] * 5
    assert (o["rank1"], o["rank5"], o["rank10"]) == (1.0, 1.0, 1.0)
    s1, s2 = o["per_gallery"]["S1"], o["per_gallery"]["S2"]
    assert (s1["mated"], s1["non_mated"], s2["mated"], s2["non_mated"]) == (2, 2, 2, 2)
    assert s1["threshold@fpir=0.0001"] == pytest.approx(0.6) and s1["threshold@fpir=1.0"] == 0.0
    assert s1["tpir@fpir=0.01"] == 0.5 and s2["tpir@fpir=0.01"] == 1.0
    assert (s1["rank1"], s1["rank5"], s2["rank1"]) == (1.0, 1.0, 1.0)
    assert r["counts"] == {
        "rows": 8,
        "templates": 8,
        "probes": 4,
        "gallery_templates": {"S1": 2, "S2": 2},
        "joined_gallery": 4,
    }
    assert r["knobs"]["faceness"] is False and "fars" not in r["knobs"]
    assert set(r["definitions"]) == {"joined", "open_set"}
    # [f | f] with flip_concat sums to 2f: same template directions, same result
    r2 = ev.evaluate_features(np.concatenate([feats, feats], 1), flip_concat=True)
    assert r2["joined"] == r["joined"] and r2["open_set"] == r["open_set"]
    # feature errors name the features
    bad = feats.copy()
    bad[5, 0] = np.nan
    with pytest.raises(DataFormatError) as e:
        ev.evaluate_features(bad, features_path="f.npy")
    assert one_line(e).startswith("f.npy:row 5:")
    with pytest.raises(DataFormatError, match="7 feature rows"):
        ev.evaluate_features(feats[:7])


def test_evaluator_gen_mask_errors(tmp_path):
    # probe 13's subject 9 has no gallery template -> probe CSV line 4 (header + 2 rows before it)
    root = fake_release(tmp_path / "a", gallery=([(1, 1)], [(2, 2)]), probes=[(11, 1), (12, 2), (13, 9)])
    with pytest.raises(DataFormatError) as e:
        IJBIdentification(root)
    msg = one_line(e)
    assert (
        msg.startswith(one_n_paths(root, "ijbb")["probe_mixed"] + ":line 4:")
        and "probe template 13" in msg
        and "0 gallery" in msg
    )
    # subject 2 has a gallery template in both S1 and S2 (IJB-C names: G1 / G2)
    root = fake_release(tmp_path / "b", "ijbc", gallery=([(1, 1), (5, 2)], [(2, 2)]), probes=[(11, 1), (12, 2)])
    with pytest.raises(DataFormatError) as e:
        IJBIdentification(root)
    msg = one_line(e)
    assert (
        msg.startswith(one_n_paths(root, "ijbc")["probe_mixed"] + ":line 3:")
        and "2 gallery templates" in msg
        and "G1 + G2" in msg
    )


# ------------------------------------------------------------------------------------------- writer


def fake_plan(rng, n_subjects=7, probes_per_subject=3):
    rows, template_subject, gallery, probes = [], {}, [], []
    media = 500
    for s in range(n_subjects):
        template_subject[1 + s] = s
        gallery.append(1 + s)
        for _ in range(2):
            rows.append(SimpleNamespace(subject=s, template=1 + s, media=media, kind="still"))
            media += 1
    tid = 100
    for s in range(n_subjects):
        for _ in range(probes_per_subject):
            tid += int(rng.integers(1, 4))
            template_subject[tid] = s
            probes.append(tid)
            rows.append(SimpleNamespace(subject=s, template=tid, media=media, kind="still"))
            for _ in range(int(rng.integers(0, 4))):
                rows.append(SimpleNamespace(subject=s, template=tid, media=media + 1, kind="frame"))
            media += 2
    return rows, template_subject, gallery, probes


@pytest.mark.parametrize("prefix", ["ijbb", "ijbc"])
def test_writer_round_trip(tmp_path, prefix):
    rows, ts, gallery, probes = fake_plan(np.random.default_rng(0))
    meta_dir = str(tmp_path / "meta")
    os.makedirs(meta_dir)
    counts = write_1n_csvs(meta_dir, prefix, rows, ts, gallery, probes, np.random.default_rng(5))
    paths = one_n_paths(tmp_path, prefix)
    g1, g2 = ("S1", "S2") if prefix == "ijbb" else ("G1", "G2")
    with open(paths[g1]) as f:
        assert f.readline().rstrip("\n") == (V1 if prefix == "ijbb" else V2)
    read = {name: read_1n_csv(p) for name, p in paths.items()}
    subj = {name: set(r[1].tolist()) for name, r in read.items()}
    # galleries partition the subjects (ids = index + 1), half / half
    assert subj[g1] | subj[g2] == set(range(1, 8)) and not subj[g1] & subj[g2]
    assert sorted([len(subj[g1]), len(subj[g2])]) == [3, 4]
    assert sorted(read[g1][0].tolist() + read[g2][0].tolist()) == gallery
    # every probe template, each probe's subject in exactly one gallery, subjects as planned
    p_tids, p_subs, p_rows = read["probe_mixed"]
    assert p_tids.tolist() == sorted(probes)
    assert all((s in subj[g1]) != (s in subj[g2]) for s in p_subs.tolist())
    assert [ts[t] + 1 for t in p_tids.tolist()] == p_subs.tolist()
    # one row per image: FILE = loose_crop/<row + 1>.jpg, SIGHTING_ID = media
    file_key = "FILE" if prefix == "ijbb" else "FILENAME"
    for f, t, m in zip(p_rows[file_key], p_rows["TEMPLATE_ID"], p_rows["SIGHTING_ID"]):
        i = int(f[len("loose_crop/") : -len(".jpg")]) - 1
        assert rows[i].template == t and rows[i].media == m
    assert len(p_rows["line"]) == sum(1 for r in rows if r.template in set(probes))
    assert counts[f"gallery_{g1}_templates"] + counts[f"gallery_{g2}_templates"] == 7
    assert counts["probe_mixed_templates"] == 21 and counts["probe_mixed_rows"] == len(p_rows["line"])
    # deterministic for the same rng seed
    before = {n: open(p, "rb").read() for n, p in paths.items()}
    write_1n_csvs(meta_dir, prefix, rows, ts, gallery, probes, np.random.default_rng(5))
    assert before == {n: open(p, "rb").read() for n, p in paths.items()}


def test_writer_rejects_bad_plans(tmp_path):
    rows, ts, gallery, probes = fake_plan(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two gallery templates"):
        write_1n_csvs(str(tmp_path), "ijbb", rows, ts, gallery + [probes[0]], probes[1:], rng)
    with pytest.raises(ValueError, match="no gallery template"):
        write_1n_csvs(str(tmp_path), "ijbb", rows, ts, gallery[1:], probes, rng)
    with pytest.raises(ValueError, match="prefix"):
        write_1n_csvs(str(tmp_path), "ijbs", rows, ts, gallery, probes, rng)


# ------------------------------------------------------------------------------------------- tiny release


@pytest.fixture(scope="module")
def tiny_1n(tiny_release, tmp_path_factory):
    """A copy of the tiny release's IJBB folder with 1:N CSVs written by ``write_1n_csvs``; subjects derived from
    the genuine pairs (gallery tids = the pair file's first column)."""
    src = os.path.join(tiny_release, "IJB_release", "IJBB")
    root = str(tmp_path_factory.mktemp("ijb1n") / "IJBB")
    shutil.copytree(src, root)
    meta = read_ijb(root)
    gallery = np.unique(meta.pairs[:, 0]).tolist()
    subject = {g: s for s, g in enumerate(gallery)}
    genuine = meta.pairs[meta.labels == 1]
    subject.update({int(p): subject[int(g)] for g, p in genuine})
    probes = sorted(int(p) for p in np.unique(genuine[:, 1]))
    n_rows_of = {}
    for t, m in zip(meta.templates.tolist(), meta.medias.tolist()):
        n_rows_of[(t, m)] = n_rows_of.get((t, m), 0) + 1
    rows = [
        SimpleNamespace(template=t, media=m, subject=subject[t], kind="frame" if n_rows_of[(t, m)] > 1 else "still")
        for t, m in zip(meta.templates.tolist(), meta.medias.tolist())
    ]
    counts = write_1n_csvs(
        os.path.join(root, "meta"),
        "ijbb",
        rows,
        subject,
        gallery,
        probes,
        np.random.default_rng(0),
        landmarks=meta.landmarks,
    )
    row_subject = np.array([r.subject for r in rows])
    return root, counts, row_subject, len(gallery), len(probes)


def test_tiny_release_end_to_end(tiny_1n):
    root, counts, row_subject, n_sub, n_probe = tiny_1n
    ev = IJBIdentification(root, protocol=VerificationProtocol(align_size=64))
    assert ev.benchmark == "IJB-B 1:N" and counts["probe_mixed_templates"] == n_probe == 12
    # perfect features: one-hot of each image row's subject -> every mate scores 1, every non-mate 0
    perfect = np.eye(n_sub, dtype=np.float32)[row_subject]
    r = ev.evaluate_features(perfect)
    assert r["joined"]["rank1"] == 1.0 and r["joined"]["tpir@far=0.01"] == 1.0 and r["joined"]["tpir@far=0.1"] == 1.0
    assert r["open_set"]["rank1"] == 1.0 and all(r["open_set"][f"tpir@fpir={f}"] == 1.0 for f in OPEN_SET_FPIRS)
    per = r["open_set"]["per_gallery"]
    assert per["S1"]["mated"] + per["S2"]["mated"] == n_probe  # each probe mated in exactly one gallery
    assert per["S1"]["non_mated"] == per["S2"]["mated"] and per["S2"]["non_mated"] == per["S1"]["mated"]
    assert r["counts"]["gallery_templates"]["S1"] + r["counts"]["gallery_templates"]["S2"] == n_sub
    # random features: every number a share in [0, 1], rank-k growing with k
    feats = np.random.default_rng(0).standard_normal((len(row_subject), 16)).astype(np.float32)
    r = ev.evaluate_features(feats)
    for block in (r["joined"], r["open_set"]):
        ranks = [block["rank1"], block["rank5"], block["rank10"]]
        assert ranks == sorted(ranks) and all(0.0 <= x <= 1.0 for x in ranks)
    assert all(0.0 <= r["open_set"][f"tpir@fpir={f}"] <= 1.0 for f in OPEN_SET_FPIRS)
    assert r["open_set"]["tpir@fpir=0.0001"] <= r["open_set"]["tpir@fpir=1.0"]
    # the evaluator scores the joined gallery once and takes each gallery as a column subset: same numbers as the
    # stand-alone functions on separate gallery matrices
    tids, tf = ev.template_features(feats)
    p_tids, p_subs = ev.lists.probes
    probe = tf[np.searchsorted(tids, p_tids)]
    joined = joined_identification(probe, tf[np.searchsorted(tids, ev.joined_tids)], ev.joined_mate)
    assert joined == r["joined"]
    for name, (g_tids, g_subs) in ev.lists.galleries.items():
        mate = np.array([np.flatnonzero(g_subs == s)[0] if s in g_subs else -1 for s in p_subs])
        o = open_set_identification(probe, tf[np.searchsorted(tids, g_tids)], mate)
        per = r["open_set"]["per_gallery"][name]
        assert [per[f"tpir@fpir={f}"] for f in OPEN_SET_FPIRS] == list(o["tpir"].values())
        assert per["rank1"] == o["hits"][1] / o["mated"]


def test_tiny_release_evaluate_with_model(tiny_1n):
    root = tiny_1n[0]
    ev = IJBIdentification(root, protocol=VerificationProtocol(align_size=32, flip="none"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 8))
    model.train()
    r = ev.evaluate(model, batch_size=64)
    assert model.training  # mode restored by the shared extractor
    assert r["input"]["dim"] == 8 and 0.0 <= r["joined"]["rank1"] <= 1.0
