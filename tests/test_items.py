"""Per-item arrays for the subject-level bootstrap: every evaluator returns them on request (its result unchanged),
``harness.run`` saves them atomically next to the result document, and fed to the :mod:`harness.report.bootstrap` metric
classes on the full index set they give back every headline number of the document exactly."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.eval.ijb_identification import RANKS, IJBIdentification
from harness.eval.ijb_verification import IJBVerification
from harness.eval.ijbs import IJBSEvaluation, identification_metrics
from harness.eval.tinyface import TinyFaceEvaluation
from harness.report.bootstrap import (
    Combined,
    IJBOpenSetTpir,
    IJBSTpirAtFpir,
    RankK,
    SubjectGroups,
    TarAtFar,
    bootstrap_ci,
)
from harness.run import compact_metrics, items_path, make_config, run, write_npz_atomic

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "data.input_size=32",
    "optim.batch_size=32",
    "optim.epochs=2",
]


@pytest.fixture(scope="module")
def tiny_run(tiny_release, tmp_path_factory):
    """One trained-and-evaluated tiny run: (result document, loaded items, result folder)."""
    folder = tmp_path_factory.mktemp("items_run")
    params = folder / "params.yaml"
    params.write_text("{}\n")
    result = folder / "source_only-s0.json"
    cfg = make_config(
        ["--params", str(params), "method=source_only", f"data.release={tiny_release}", *SMALL, f"result={result}"]
    )
    run(cfg)
    doc = json.loads(result.read_text())
    with np.load(folder / doc["items"]) as z:
        items = {k: z[k] for k in z.files}
    return doc, items, folder


def _same(got: dict, want: dict) -> None:
    """Metric values equal to the document's (None there = NaN here)."""
    assert got.keys() <= want.keys(), sorted(got.keys() - want.keys())
    for k, v in got.items():
        w = want[k]
        assert math.isnan(v) if w is None else v == w, (k, v, w)


def _estimate(groups: SubjectGroups, metric) -> dict:
    return {k: ci.estimate for k, ci in bootstrap_ci(groups, metric, n_boot=3, seed=0).items()}


def test_items_file_is_named_in_the_result_and_written_atomically(tiny_run):
    doc, items, folder = tiny_run
    assert doc["items"] == "source_only-s0.items.npz"
    assert sorted(os.listdir(folder)) == [
        "params.yaml",
        "source_only-s0.items.npz",
        "source_only-s0.json",
    ]  # no temp left
    assert items_path(str(folder / "source_only-s0.json")) == str(folder / "source_only-s0.items.npz")
    rows = {r["benchmark"]: r for r in doc["results"]}
    for b in ("IJB-B", "IJB-C"):
        n = rows[b]["counts"]["pairs"]
        assert (items[f"{b}/scores"].dtype, items[f"{b}/labels"].dtype, items[f"{b}/probe_subject"].dtype) == (
            np.float64,
            np.uint8,
            np.int32,
        )
        assert items[f"{b}/scores"].shape == items[f"{b}/labels"].shape == items[f"{b}/probe_subject"].shape == (n,)
        assert int(items[f"{b}/labels"].sum()) == rows[b]["counts"]["genuine"]
        one_n, gals = f"{b} 1:N", rows[f"{b} 1:N"]["open_set"]["per_gallery"]
        p = rows[one_n]["counts"]["probes"]
        assert items[f"{one_n}/probe_subject"].dtype == np.int32 and items[f"{one_n}/joined/rank"].dtype == np.int32
        assert items[f"{one_n}/joined/pos"].shape == (p,) and items[f"{one_n}/joined/pos"].dtype == np.float64
        for g, block in gals.items():
            assert int(items[f"{one_n}/{g}/mated"].sum()) == block["mated"]
            assert (
                items[f"{one_n}/{g}/rank"].dtype == np.int32 and items[f"{one_n}/{g}/nonmate_max"].dtype == np.float64
            )
    for proto in ("V2S", "V2B", "V2V"):
        c = rows["IJB-S"]["counts"][proto]
        assert (
            items[f"IJB-S/{proto}/mate_rank"].dtype == np.int16
            and items[f"IJB-S/{proto}/probe_subject"].dtype == np.int32
        )
        assert items[f"IJB-S/{proto}/mate_rank"].shape == (c["probes"],)
        assert int((items[f"IJB-S/{proto}/mate_rank"] >= 0).sum()) == c["mated"]
        for g in ("G1", "G2"):
            assert items[f"IJB-S/{proto}/{g}/top1_score"].dtype == np.float32
            assert int(items[f"IJB-S/{proto}/{g}/mated"].sum()) == c[g]["mated"]
    assert items["TinyFace/first_mate"].dtype == np.int16 and items["TinyFace/probe_subject"].dtype == np.int32
    assert items["TinyFace/first_mate"].shape == (rows["TinyFace"]["counts"]["probes"],)


def test_saved_items_reproduce_every_headline_number(tiny_run):
    doc, items, _ = tiny_run
    want = compact_metrics(doc)
    for b in ("IJB-B", "IJB-C"):
        groups = SubjectGroups.from_ids(items[f"{b}/probe_subject"])
        got = _estimate(groups, TarAtFar(items[f"{b}/scores"], items[f"{b}/labels"]))
        assert got.keys() == {f"tar@{far}" for far in doc["results"][0]["tar_at_far"]}
        _same(got, want[b])
        # the domain-gap split: the pairs of each probe_video value give by_probe_media's TAR@1e-3
        row = next(r for r in doc["results"] if r["benchmark"] == b)
        video = items[f"{b}/probe_video"].astype(bool)
        assert video.any() and (~video).any()
        for part, mask in (("stills_only", ~video), ("with_video", video)):
            split = TarAtFar(items[f"{b}/scores"][mask], items[f"{b}/labels"][mask], fars=(0.001,))
            assert split(np.arange(int(mask.sum())))["tar@0.001"] == row["by_probe_media"][part]["tar_at_far"]["0.001"]

        one_n = f"{b} 1:N"
        gals = list(next(r for r in doc["results"] if r["benchmark"] == one_n)["open_set"]["per_gallery"])
        views = [tuple(items[f"{one_n}/{g}/{a}"] for a in ("pos", "rank", "nonmate_max", "mated")) for g in gals]
        metric = Combined(
            RankK(items[f"{one_n}/joined/rank"], RANKS, prefix="joined."), IJBOpenSetTpir(views, prefix="open_set.")
        )
        got = _estimate(SubjectGroups.from_ids(items[f"{one_n}/probe_subject"]), metric)
        assert {"joined.rank1", "joined.rank5", "open_set.tpir@fpir=0.01"} <= got.keys()
        _same(got, want[one_n])

    ijbs = doc["results"][[r["benchmark"] for r in doc["results"]].index("IJB-S")]
    for proto in ("V2S", "V2B", "V2V"):
        it = {k.split("/", 2)[2]: v for k, v in items.items() if k.startswith(f"IJB-S/{proto}/")}
        gal = [tuple(it[f"{g}/{a}"] for a in ("mated", "top1_correct", "top1_score")) for g in ("G1", "G2")]
        metric = Combined(
            RankK(it["mate_rank"], ijbs["knobs"]["ranks"], prefix=f"{proto}."),
            IJBSTpirAtFpir(gal, [float(x) for x in ijbs["knobs"]["fpirs"]], prefix=f"{proto}."),
        )
        got = _estimate(SubjectGroups.from_ids(it["probe_subject"]), metric)
        assert got.keys() == {k for k in want["IJB-S"] if k.startswith(f"{proto}.")}
        _same(got, want["IJB-S"])

    got = _estimate(
        SubjectGroups.from_ids(items["TinyFace/probe_subject"]), RankK(items["TinyFace/first_mate"], (1, 5, 20))
    )
    assert got.keys() == {"rank1", "rank5", "rank20"}
    _same(got, want["TinyFace"])


def _strip(x):
    return json.loads(json.dumps(x, allow_nan=True))


def test_return_items_leaves_each_result_unchanged(tiny_release):
    rng = np.random.default_rng(0)
    root = os.path.join(tiny_release, "IJB_release", "IJBB")
    v = IJBVerification(root)
    feats = rng.normal(size=(len(v), 16)).astype(np.float32)
    res, items = v.evaluate_features(feats, return_items=True)
    assert _strip(res) == _strip(v.evaluate_features(feats))
    # probe_subject: the subject of tid2 in the 1:N probe CSV
    tids, subs = v.template_subjects()
    np.testing.assert_array_equal(items["probe_subject"], subs[np.searchsorted(tids, v.meta.pairs[:, 1])])
    ident = IJBIdentification(root)
    res, items = ident.evaluate_features(feats, return_items=True)
    assert _strip(res) == _strip(ident.evaluate_features(feats))
    np.testing.assert_array_equal(items["probe_subject"], ident.lists.probes[1])

    s = IJBSEvaluation(os.path.join(tiny_release, "IJB-S"))
    paths, _ = s.image_list()
    fs = (paths, rng.normal(size=(len(paths), 8)).astype(np.float32))
    res, items = s.evaluate_features(fs, return_items=True)
    assert _strip(res) == _strip(s.evaluate_features(fs))
    assert {k.split("/")[0] for k in items} == {"V2S", "V2B", "V2V"}

    t = TinyFaceEvaluation(tiny_release)
    p = rng.normal(size=(t.protocol.num_probes, 8)).astype(np.float32)
    g = rng.normal(size=(t.protocol.num_gallery, 8)).astype(np.float32)
    res, items = t.evaluate_features(p, g, return_items=True)
    assert _strip(res) == _strip(t.evaluate_features(p, g))
    np.testing.assert_array_equal(items["probe_subject"], t.protocol.probe_labels)


def test_a_probe_template_without_subject_is_an_error(tiny_release, tmp_path):
    src = os.path.join(tiny_release, "IJB_release", "IJBB")
    root = tmp_path / "IJBB"
    shutil.copytree(os.path.join(src, "meta"), root / "meta")
    (root / "loose_crop").mkdir()
    probe_csv = root / "meta" / "ijbb_1N_probe_mixed.csv"
    lines = probe_csv.read_text().splitlines(keepends=True)
    v = IJBVerification(root)
    first_pair = v.meta.pairs[0]
    dropped = [ln for ln in lines[1:] if ln.split(",")[0] == str(first_pair[1])]
    assert dropped
    probe_csv.write_text("".join(ln for ln in lines if ln not in dropped))
    feats = np.random.default_rng(1).normal(size=(len(v), 8)).astype(np.float32)
    v.evaluate_features(feats)  # without items the 1:N CSVs are not read
    with pytest.raises(DataFormatError, match=rf"ijbb_template_pair_label.txt.*line 1.*probe template {first_pair[1]}"):
        v.evaluate_features(feats, return_items=True)


def test_write_npz_atomic_replaces_or_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "r.items.npz")
    write_npz_atomic({"A/x": np.arange(3, dtype=np.int32)}, path)
    write_npz_atomic({"A/x": np.arange(4, dtype=np.int32), "A 1:N/y": np.ones(2)}, path)
    with np.load(path) as z:
        assert sorted(z.files) == ["A 1:N/y", "A/x"] and z["A/x"].tolist() == [0, 1, 2, 3]

    def broken(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)  # write_npz_atomic imports numpy when it runs
    with pytest.raises(OSError, match="disk full"):
        write_npz_atomic({"A/x": np.zeros(5)}, path)
    assert os.listdir(tmp_path) == ["r.items.npz"]
    with np.load(path) as z:
        assert z["A/x"].tolist() == [0, 1, 2, 3]


def test_ijbs_items_where_a_gallery_has_no_non_mated_probe():
    """Every probe mated in G1: G1's TPIR is undefined (None), the arrays are still filled in and give NaN."""
    rng = np.random.default_rng(2)
    g1, g2 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    ps = np.array([0, 1, 2, 3, 0, 1])
    probe = g1[ps] + rng.normal(0, 0.8, (6, 8)).astype(np.float32)
    out = identification_metrics(probe, g1, g2, ps, [0, 1, 2, 3], [10, 11, 12], return_items=True)
    it = out["items"]
    assert np.isfinite(it["G1/top1_score"]).all() and it["G1/mated"].all() and not it["G2/mated"].any()
    assert it["G1/top1_correct"].sum() == int(round(out["metrics"]["rank1"] * 6))
    metric = Combined(
        RankK(it["mate_rank"], (1, 5, 10)),
        IJBSTpirAtFpir([tuple(it[f"{g}/{a}"] for a in ("mated", "top1_correct", "top1_score")) for g in ("G1", "G2")]),
    )
    got = metric.on_counts(np.ones(6, np.int64))
    assert got.keys() == out["metrics"].keys() and out["metrics"]["tpir@fpir=0.1"] is None
    _same(got, out["metrics"])
