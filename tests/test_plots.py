"""ROC / CMC plots from result files alone (harness.plots): hand-computed ROC vertices and CMC rates, the plotted ROC
through the evaluator's TAR@FAR, every output of a small fake results folder, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.eval.roc import DEFAULT_FARS, far_key, tar_at_far
from harness.plots import (
    DVC_TEMPLATES,
    SYNTHFACE_LABEL,
    cmc,
    data_label,
    far_grid,
    load_runs,
    main,
    roc_points,
    tar_on_grid,
    write_plots,
)
from harness.report.bootstrap import RankK

pytestmark = pytest.mark.usefixtures("one_thread")

PNGS = ["roc_ijbb.png", "roc_ijbc.png", "cmc_tinyface.png", "cmc_ijbs.png"]
CSVS = {
    "roc_ijbb.csv": ["method", "far", "tar"],
    "roc_ijbc.csv": ["method", "far", "tar"],
    "cmc_tinyface.csv": ["method", "protocol", "rank", "rate"],
    "cmc_ijbs.csv": ["method", "protocol", "rank", "rate"],
}


# ---------------------------------------------------------------------------------------------------- fake results


def _ranks(rng, n: int, cap: int, skill: float) -> np.ndarray:
    """0-based mate ranks capped at ``cap`` (= not in the top ``cap``), about 10% unmated (-1)."""
    r = np.minimum(rng.geometric(skill, n) - 1, cap)
    r[rng.random(n) < 0.1] = -1
    return r


def _rank_rates(r: np.ndarray, ranks) -> dict:
    """The evaluator's Rank-k (harness.report.bootstrap.RankK on the full set, as tests/test_items.py checks it)."""
    got = RankK(r, ranks).on_counts(np.ones(r.shape[0], np.int64))
    return {k: (None if np.isnan(v) else v) for k, v in got.items()}


def make_result(
    folder,
    method: str,
    seed: int,
    *,
    release: str = "datasets/synthface/default",
    skill: float = 0.5,
    n_gen: int = 150,
    n_imp: int = 3000,
) -> dict:
    """A ``<method>-s<seed>.json`` + ``.items.npz`` pair shaped like harness.run's, its numbers from the real
    evaluator functions (harness.eval.roc.tar_at_far, harness.report.bootstrap.RankK). Returns the document."""
    rng = np.random.default_rng(1000 * seed + len(method) + int(100 * skill))
    items, rows = {}, []
    for bench in ("IJB-B", "IJB-C"):
        scores = np.concatenate([rng.normal(1.5 + skill, 1.0, n_gen), rng.normal(0.0, 1.0, n_imp)])
        scores = np.round(scores, 2)  # ties, as cosine scores of similar templates have
        labels = np.concatenate([np.ones(n_gen, np.uint8), np.zeros(n_imp, np.uint8)])
        items[f"{bench}/scores"], items[f"{bench}/labels"] = scores, labels
        rows.append(
            {
                "benchmark": bench,
                "tar_at_far": {far_key(x): t for x, t in tar_at_far(labels, scores).items()},
                "knobs": {"fars": [far_key(x) for x in DEFAULT_FARS]},
            }
        )
    ijbs = {"benchmark": "IJB-S", "knobs": {"ranks": [1, 5, 10]}}
    for proto in ("V2S", "V2B", "V2V"):
        r = _ranks(rng, 80, 10, skill).astype(np.int16)
        items[f"IJB-S/{proto}/mate_rank"] = r
        ijbs[proto] = _rank_rates(r, (1, 5, 10))
    rows.append(ijbs)
    tf = _ranks(rng, 90, 20, skill / 2)
    tf[tf < 0] = 0  # TinyFace: every probe mated
    items["TinyFace/first_mate"] = tf.astype(np.int16)
    rows.append({"benchmark": "TinyFace", "knobs": {"ranks": [1, 5, 20]}, **_rank_rates(tf, (1, 5, 20))})
    stem = f"{method}-s{seed}"
    np.savez_compressed(os.path.join(folder, f"{stem}.items.npz"), **items)
    doc = {
        "config": {"data": {"release": release}},
        "format": 1,
        "method": method,
        "seed": seed,
        "items": f"{stem}.items.npz",
        "results": rows,
    }
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
        json.dump(doc, f)
    return doc


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Two methods (one with two seeds) plotted once: (results folder, out folder, written paths, docs)."""
    res = tmp_path_factory.mktemp("results")
    docs = [
        make_result(res, "alpha", 0, skill=0.6),
        make_result(res, "alpha", 1, skill=0.4),
        make_result(res, "beta", 0, skill=0.3, n_imp=2500),
    ]
    out = tmp_path_factory.mktemp("plots")
    return res, out, write_plots(str(res), str(out)), docs


# ---------------------------------------------------------------------------------------------------- ROC


def test_roc_points_hand_computed():
    # descending: .9 G, .8 I, .7 G, .6 G, .5 I, .4 I -> tps 1,1,2,3,3,3 fps 0,1,1,1,2,3; sklearn keeps the corners
    # (second difference of fps or tps non-zero) and both ends, then prepends (0, 0)
    fpr, tpr = roc_points([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(fpr, [0, 0, 1 / 3, 1 / 3, 1])
    np.testing.assert_array_equal(tpr, [0, 1 / 3, 1 / 3, 1, 1])
    # a tie of a genuine and an impostor score is one diagonal step
    fpr, tpr = roc_points([0.5, 0.5, 0.2], [1, 0, 0])
    np.testing.assert_array_equal(fpr, [0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 1, 1])
    # the evaluator's TAR@FAR rule on that first ROC: nearest vertex FAR, the larger TPR among equally near ones
    fpr, tpr = roc_points([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(tar_on_grid(fpr, tpr, [0.1, 0.2, 1 / 3, 0.6, 0.7, 1.0]), [1 / 3, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="no impostor"):
        roc_points([0.3, 0.2], [1, 1])


def test_far_grid_spans_resolvable_fars_and_keeps_evaluator_fars():
    g = far_grid(2000, DEFAULT_FARS, 100)
    assert g[0] == 1e-6 and g[-1] == 1.0 and np.all(np.diff(g) > 0)
    assert set(DEFAULT_FARS) <= set(g.tolist()) and 1 / 2000 in g
    assert 100 <= g.size <= 106


def test_plotted_roc_passes_through_reported_tar_at_far(fake):
    res, out, _, docs = fake
    header, rows = read_csv(out / "data" / "roc_ijbb.csv")
    assert header == ["method", "far", "tar"]
    for method in ("alpha", "beta"):
        mine = [d for d in docs if d["method"] == method]
        curve = {float(r["far"]): float(r["tar"]) for r in rows if r["method"] == method}
        assert 100 <= len(curve) <= 110
        n_imp = 3000 if method == "alpha" else 2500
        assert min(f for f in curve if f not in DEFAULT_FARS) == pytest.approx(1 / n_imp, rel=1e-12)
        for key in mine[0]["results"][0]["tar_at_far"]:
            want = np.mean([d["results"][0]["tar_at_far"][key] for d in mine])  # mean over seeds
            assert curve[float(key)] == want, (method, key)
        tars = [curve[f] for f in sorted(curve)]
        assert all(a <= b for a, b in zip(tars, tars[1:]))  # a ROC never goes down


def test_roc_curve_is_evaluator_rule_between_reported_fars(tmp_path):
    """Also the one-seed curve: every plotted point is the evaluator's TAR@FAR at that FAR."""
    make_result(tmp_path, "solo", 3)
    with np.load(tmp_path / "solo-s3.items.npz") as z:
        labels, scores = z["IJB-C/labels"], z["IJB-C/scores"]
    write_plots(str(tmp_path), str(tmp_path / "out"))
    _, rows = read_csv(tmp_path / "out" / "data" / "roc_ijbc.csv")
    fars = [float(r["far"]) for r in rows]
    want = tar_at_far(labels, scores, fars)
    assert [float(r["tar"]) for r in rows] == [want[f] for f in fars]


# ---------------------------------------------------------------------------------------------------- CMC


def test_cmc_hand_computed():
    # 0-based ranks; -1 unmated (not counted); 20 = "not in the top 20" (the evaluator's cap)
    ranks = np.array([0, 2, -1, 5, 1, 0, 20, -1], np.int16)
    got = cmc(ranks, 6)
    np.testing.assert_array_equal(got, np.array([2, 3, 4, 4, 4, 5]) / 6)
    assert np.all(np.diff(got) >= 0)
    np.testing.assert_array_equal(cmc(np.array([3, 0]), 2), [0.5, 0.5])
    assert np.isnan(cmc(np.array([-1, -1]), 3)).all()
    with pytest.raises(ValueError, match="integers"):
        cmc(np.array([0.0, 1.0]), 3)


def test_cmc_matches_evaluator_rank_k():
    r = _ranks(np.random.default_rng(7), 500, 20, 0.2)
    rates = cmc(r, 20)
    assert np.all(np.diff(rates) >= 0)
    for k, v in _rank_rates(r, range(1, 21)).items():
        assert rates[int(k[4:]) - 1] == v


def test_cmc_csvs_reproduce_reported_ranks(fake):
    _, out, _, docs = fake
    header, rows = read_csv(out / "data" / "cmc_ijbs.csv")
    assert header == CSVS["cmc_ijbs.csv"]
    beta = next(d for d in docs if d["method"] == "beta")
    ijbs = next(r for r in beta["results"] if r["benchmark"] == "IJB-S")
    for proto in ("V2S", "V2B", "V2V"):
        mine = {int(r["rank"]): float(r["rate"]) for r in rows if r["method"] == "beta" and r["protocol"] == proto}
        assert sorted(mine) == list(range(1, 11))  # the evaluator saves ranks only to its largest reported rank
        assert [mine[k] for k in (1, 5, 10)] == [ijbs[proto][f"rank{k}"] for k in (1, 5, 10)]
    _, rows = read_csv(out / "data" / "cmc_tinyface.csv")
    tf = [r for r in rows if r["method"] == "alpha"]
    assert [int(r["rank"]) for r in tf] == list(range(1, 21))
    want = np.mean(
        [
            [next(r for r in d["results"] if r["benchmark"] == "TinyFace")["rank20"]]
            for d in docs
            if d["method"] == "alpha"
        ]
    )
    assert float(tf[-1]["rate"]) == want


# ---------------------------------------------------------------------------------------------------- outputs


def test_write_plots_writes_every_png_and_csv(fake):
    _, out, written, _ = fake
    assert sorted(written) == sorted([str(out / p) for p in PNGS] + [str(out / "data" / c) for c in CSVS])
    for p in PNGS:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 1000 < len(data) < 150_000, p
    for name, columns in CSVS.items():
        header, rows = read_csv(out / "data" / name)
        assert header == columns and rows and {r["method"] for r in rows} == {"alpha", "beta"}
        assert (out / "data" / name).stat().st_size < 50_000
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_data_label_names_release():
    runs = [type("R", (), {"release": rel})() for rel in ("datasets/synthface/default", "/data/synthface/tiny")]
    assert data_label(runs) == SYNTHFACE_LABEL
    assert data_label([type("R", (), {"release": "/data/IJB_release"})()]) == "data: /data/IJB_release"
    assert "mixed" in data_label(runs + [type("R", (), {"release": "/data/IJB_release"})()])


def test_dvc_templates_are_vega_lite_with_data_anchor(tmp_path):
    assert main(["--dvc-templates", str(tmp_path)]) == 0
    for name in DVC_TEMPLATES:
        t = json.loads((tmp_path / f"{name}.json").read_text())
        assert t["data"]["values"] == "<DVC_METRIC_DATA>" and t["encoding"]["color"]["field"] == "method"


# ---------------------------------------------------------------------------------------------------- errors


def _copy(fake, tmp_path):
    res = tmp_path / "res"
    shutil.copytree(fake[0], res)
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "roc_ijbb.png").write_bytes(b"old")
    return res, out


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "missing", "no_key", "mismatch"])
def test_bad_items_one_line_error_exit_2_nothing_written(fake, tmp_path, capsys, damage):
    res, out = _copy(fake, tmp_path)
    bad = res / "beta-s0.items.npz"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    elif damage == "corrupt":  # zip structure intact, compressed bytes of an array garbled
        data = bytearray(bad.read_bytes())
        data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
        bad.write_bytes(bytes(data))
    elif damage == "missing":
        bad.unlink()
    else:
        with np.load(bad) as z:
            items = {k: z[k] for k in z.files}
        if damage == "no_key":
            del items["TinyFace/first_mate"]
        else:
            items["IJB-C/scores"] = items["IJB-C/scores"][::-1].copy()
        np.savez_compressed(bad, **items)
    assert main([str(res), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and err.startswith("harness.plots: "), err
    assert sorted(os.listdir(out)) == ["data", "roc_ijbb.png"] and not os.listdir(out / "data")
    assert (out / "roc_ijbb.png").read_bytes() == b"old"


def test_bad_result_json_and_empty_folder(tmp_path, capsys):
    (tmp_path / "m-s0.json").write_text('{"method": "m", "seed": 0, "results": [')
    with pytest.raises(DataFormatError, match="m-s0.json:line 1"):
        load_runs(str(tmp_path))
    (tmp_path / "m-s0.json").unlink()
    assert main([str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 2
    assert "no <method>-s<seed>.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_params_selects_the_configured_results(tmp_path, capsys):
    """harness.plots --params plots only methods x seeds of the params file, so a stale result whose items file is
    gone does not stop the stage; a configured result that is missing is a one-line error."""
    import shutil

    from harness.plots import main

    results = pathlib.Path(__file__).resolve().parent / "golden" / "tables" / "results"
    folder = tmp_path / "r"
    shutil.copytree(results, folder)
    (folder / "kornia_degrade-s0.items.npz").unlink()
    params = tmp_path / "params.yaml"
    params.write_text(
        "methods: [source_only]\ncfsm_methods: [cfsm_guided, cfsm_random]\nseeds: [0, 1]\n", encoding="utf-8"
    )
    assert main([str(folder), "--out-dir", str(tmp_path / "all")]) == 2  # without --params the stale file breaks it
    assert "kornia_degrade-s0.items.npz" in capsys.readouterr().err
    params.write_text(
        "methods: [source_only]\ncfsm_methods: [cfsm_guided, cfsm_random]\nseeds: [0]\n", encoding="utf-8"
    )
    assert main([str(folder), "--params", str(params), "--out-dir", str(tmp_path / "p")]) == 0
    csv_text = (tmp_path / "p" / "data" / "roc_ijbb.csv").read_text()
    assert "cfsm_guided" in csv_text and "kornia_degrade" not in csv_text
    params.write_text("methods: [source_only]\nseeds: [0, 1, 2]\n", encoding="utf-8")
    assert main([str(folder), "--params", str(params), "--out-dir", str(tmp_path / "q")]) == 2
    assert "source_only-s2.json" in capsys.readouterr().err
