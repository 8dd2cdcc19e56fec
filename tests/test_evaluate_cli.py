"""``python -m harness.evaluate`` on every benchmark: --write-order, features built in that order, one bad input each.

Features are "perfect" where the identity can be read from the path or the protocol (one-hot of the subject), so
the expected Rank-1 is exactly 1.0; otherwise random, and only finiteness and ranges are checked.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from harness.data.ijb import read_ijb
from harness.data.ijb1n import read_ijb_1n
from harness.evaluate import main as cli_main


@pytest.fixture(scope="module")
def ijbb_root(tiny_release):
    return os.path.join(tiny_release, "IJB_release", "IJBB")


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n") and "\n\n" not in text and "#" not in text
    return text.splitlines()


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = cli_main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _one_hot(labels, dim: int) -> np.ndarray:
    out = np.zeros((len(labels), dim), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _in_unit(v) -> bool:
    return v is None or (math.isfinite(v) and 0.0 <= v <= 1.0)


# ------------------------------------------------------------------------------------------------ ijb11


def test_ijb11_write_order_and_evaluate(ijbb_root, tmp_path, capsys):
    order = str(tmp_path / "order.txt")
    rc, out, _ = _run(["--release", ijbb_root, "--write-order", order], capsys)
    assert rc == 0 and order in out
    lines = _lines(order)
    meta = read_ijb(ijbb_root, with_pairs=False)
    assert lines == [os.path.abspath(os.path.join(ijbb_root, "loose_crop", n)) for n in meta.image_names]
    assert all(os.path.isfile(p) for p in lines)

    feats = np.random.default_rng(0).standard_normal((len(lines), 16)).astype(np.float32)
    fpath, res_path = str(tmp_path / "f.npy"), str(tmp_path / "res" / "r.json")
    os.makedirs(os.path.dirname(res_path))
    np.save(fpath, feats)
    rc, out, err = _run(
        ["--benchmark", "ijb11", "--release", ijbb_root, "--features", fpath, "--out", res_path], capsys
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["cli_benchmark"] == "ijb11" and res["benchmark"] == "IJB-B" and res["features"] == os.path.abspath(fpath)
    assert res["knobs"]["faceness"] is True and all(_in_unit(v) for v in res["tar_at_far"].values())
    assert os.listdir(os.path.dirname(res_path)) == ["r.json"]
    # an argument ijb11 does not take, and --write-order with --features
    rc, _, err = _run(
        ["--release", ijbb_root, "--features", fpath, "--out", res_path, "--ties", "low_index_first"], capsys
    )
    _one_line_error(rc, err, "--ties", "ijb11")
    rc, _, err = _run(["--release", ijbb_root, "--features", fpath, "--write-order", order], capsys)
    _one_line_error(rc, err, "--features", "--write-order")


# ------------------------------------------------------------------------------------------------ ijb1n


def test_ijb1n_perfect_features(ijbb_root, tmp_path, capsys):
    order = str(tmp_path / "order.txt")
    rc, _, err = _run(["--benchmark", "ijb1n", "--release", ijbb_root, "--write-order", order], capsys)
    assert rc == 0, err
    lines = _lines(order)
    meta = read_ijb(ijbb_root, with_pairs=False)
    lists = read_ijb_1n(ijbb_root, meta.prefix, meta=meta)
    subject_of = {}
    for tids, subs in list(lists.galleries.values()) + [lists.probes]:
        subject_of.update(zip(tids.tolist(), subs.tolist()))
    tid_of = dict(zip(meta.image_names, meta.templates.tolist()))
    subs = sorted(set(subject_of.values()))
    col = {s: i for i, s in enumerate(subs)}
    rng = np.random.default_rng(1)
    feats = np.empty((len(lines), len(subs)), np.float32)
    for i, path in enumerate(lines):  # the order file, not the reader, decides the row order
        s = subject_of.get(tid_of[os.path.basename(path)])
        feats[i] = _one_hot([col[s]], len(subs))[0] if s is not None else np.abs(rng.standard_normal(len(subs)))
    fpath, res_path = str(tmp_path / "f.npy"), str(tmp_path / "r.json")
    np.save(fpath, feats)
    rc, out, err = _run(
        ["--benchmark", "ijb1n", "--release", ijbb_root, "--features", fpath, "--out", res_path], capsys
    )
    assert rc == 0, err
    res = _load(res_path)
    assert (
        res["cli_benchmark"] == "ijb1n"
        and res["benchmark"] == "IJB-B 1:N"
        and res["features"] == os.path.abspath(fpath)
    )
    assert res["knobs"]["faceness"] is True and res["input"] == {"flip_concat": False, "dim": len(subs)}
    j, o = res["joined"], res["open_set"]
    assert j["rank1"] == j["rank5"] == j["rank10"] == 1.0 and j["tpir@far=0.01"] == j["tpir@far=0.1"] == 1.0
    assert o["tpir@fpir=0.01"] == o["tpir@fpir=0.1"] == 1.0
    assert "Rank-1 100.00" in out and "TPIR@FPIR=0.01 100.00" in out and "TPIR@FAR=0.1 100.00" in out

    # random [orig | flip] features with the knobs: finite, in [0, 1]
    np.save(fpath, rng.standard_normal((len(lines), 16)).astype(np.float32))
    rc, _, err = _run(
        [
            "--benchmark",
            "ijb1n",
            "--release",
            ijbb_root,
            "--features",
            fpath,
            "--flip-concat",
            "--flip",
            "none",
            "--no-faceness",
            "--image-norm",
            "--out",
            res_path,
        ],
        capsys,
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["knobs"]["faceness"] is False and res["knobs"]["image_norm"] is True and res["knobs"]["flip"] == "none"
    assert all(_in_unit(res["joined"][k]) for k in ("rank1", "rank5", "rank10", "tpir@far=0.01", "tpir@far=0.1"))
    assert all(_in_unit(v) for k, v in res["open_set"].items() if k != "per_gallery")

    # wrong row count; --exact is ijb11 only
    np.save(fpath, feats[:-3])
    rc, _, err = _run(["--benchmark", "ijb1n", "--release", ijbb_root, "--features", fpath, "--out", res_path], capsys)
    _one_line_error(rc, err, f"{fpath}:rows", f"{len(lines) - 3} feature rows")
    rc, _, err = _run(
        ["--benchmark", "ijb1n", "--release", ijbb_root, "--features", fpath, "--exact", "--out", res_path], capsys
    )
    _one_line_error(rc, err, "--exact")


# ------------------------------------------------------------------------------------------------ ijbs


def test_ijbs_perfect_features(tiny_release, tmp_path, capsys):
    order = str(tmp_path / "images.txt")
    rc, _, err = _run(["--benchmark", "ijbs", "--release", tiny_release, "--write-order", order], capsys)
    assert rc == 0, err
    lines = _lines(order)
    aligned = os.path.join(tiny_release, "IJB-S", "aligned")
    assert lines and all(not os.path.isabs(p) and os.path.isfile(os.path.join(aligned, p)) for p in lines)
    subjects = [int(p.split("/")[0]) for p in lines]
    feats = _one_hot(subjects, max(subjects) + 1)
    fpath, res_path = str(tmp_path / "f.npy"), str(tmp_path / "r.json")
    np.save(fpath, feats)
    release_ijbs = os.path.join(tiny_release, "IJB-S")  # the IJB-S folder itself is accepted too
    rc, out, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            release_ijbs,
            "--features",
            fpath,
            "--image-list",
            order,
            "--out",
            res_path,
        ],
        capsys,
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["cli_benchmark"] == "ijbs" and res["benchmark"] == "IJB-S" and res["features"] == os.path.abspath(fpath)
    assert res["image_list"] == os.path.abspath(order) and res["knobs"]["image_norm"] is False
    for name in ("V2S", "V2B", "V2V"):
        assert res[name]["rank1"] == res[name]["rank5"] == 1.0, (name, res[name])
        assert res[name]["tpir@fpir=0.01"] == res[name]["tpir@fpir=0.1"] == 1.0
    c = res["counts"]
    assert c["features_given"] == len(lines) and c["features_unused"] == 0
    assert c["images_listed"] == len(lines) + c["frames_missing"] + c["stills_missing"]
    assert "V2S" in out and "100.00" in out

    # random features, --image-norm (frame_norm)
    np.save(fpath, np.random.default_rng(2).standard_normal((len(lines), 8)).astype(np.float32))
    rc, _, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--image-list",
            order,
            "--image-norm",
            "--out",
            res_path,
        ],
        capsys,
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["knobs"]["image_norm"] is True
    assert all(_in_unit(v) for name in ("V2S", "V2B", "V2V") for v in res[name].values())

    # missing --image-list; wrong row count; NaN; paths that are not protocol images; an ijb-only argument
    rc, _, err = _run(
        ["--benchmark", "ijbs", "--release", tiny_release, "--features", fpath, "--out", res_path], capsys
    )
    _one_line_error(rc, err, "--image-list")
    np.save(fpath, feats[:-1])
    rc, _, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--image-list",
            order,
            "--out",
            res_path,
        ],
        capsys,
    )
    _one_line_error(rc, err, f"{fpath}:rows", order)
    bad = feats.copy()
    bad[3, 0] = np.nan
    np.save(fpath, bad)
    rc, _, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--image-list",
            order,
            "--out",
            res_path,
        ],
        capsys,
    )
    _one_line_error(rc, err, f"{fpath}:row 3", "NaN")
    wrong = str(tmp_path / "wrong.txt")
    with open(wrong, "w") as f:
        f.write("".join(f"x/{p}\n" for p in lines))
    np.save(fpath, feats)
    rc, _, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--image-list",
            wrong,
            "--out",
            res_path,
        ],
        capsys,
    )
    _one_line_error(rc, err, wrong)
    rc, _, err = _run(
        [
            "--benchmark",
            "ijbs",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--image-list",
            order,
            "--prefix",
            "ijbb",
            "--out",
            res_path,
        ],
        capsys,
    )
    _one_line_error(rc, err, "--prefix")


# ------------------------------------------------------------------------------------------------ tinyface


def test_tinyface_perfect_features(tiny_release, tmp_path, capsys):
    order = str(tmp_path / "order")
    rc, out, err = _run(["--benchmark", "tinyface", "--release", tiny_release, "--write-order", order], capsys)
    assert rc == 0, err
    probes, gallery = _lines(order + ".probe.txt"), _lines(order + ".gallery.txt")
    assert sorted(os.listdir(tmp_path)) == ["order.gallery.txt", "order.probe.txt"]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in probes + gallery)
    assert all(os.sep + "Probe" + os.sep in p for p in probes)
    kinds = [os.path.basename(os.path.dirname(p)) for p in gallery]
    n_match = kinds.count("Gallery_Match")
    assert kinds == ["Gallery_Match"] * n_match + ["Gallery_Distractor"] * (len(gallery) - n_match) and n_match

    ident = lambda p: int(os.path.basename(p).split("_")[0])  # noqa: E731  <id>_<n>.jpg
    dim = max(ident(p) for p in probes + gallery[:n_match]) + 1
    rng = np.random.default_rng(3)
    probe = _one_hot([ident(p) for p in probes], dim)
    distractors = rng.standard_normal((len(gallery) - n_match, dim)).astype(np.float32)
    gal = np.concatenate(
        [
            _one_hot([ident(p) for p in gallery[:n_match]], dim),
            distractors / np.linalg.norm(distractors, axis=1, keepdims=True),
        ]
    )
    fpath, res_path = str(tmp_path / "f.npz"), str(tmp_path / "r.json")
    np.savez(fpath, probe=probe, gallery=gal)
    rc, out, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--features", fpath, "--out", res_path], capsys
    )
    assert rc == 0, err
    res = _load(res_path)
    assert (
        res["cli_benchmark"] == "tinyface"
        and res["benchmark"] == "TinyFace"
        and res["features"] == os.path.abspath(fpath)
    )
    assert res["rank1"] == res["rank5"] == res["rank20"] == 1.0
    assert res["counts"]["probes"] == len(probes) and res["counts"]["gallery_match"] == n_match
    assert res["knobs"]["ties"] == "high_index_first" and res["input"]["dim"] == dim
    assert "Rank-1 100.00" in out and "Rank-20 100.00" in out
    assert res["knobs"]["l2_normalize"] is False

    # features are scored as given: un-normalised distractors (norms ~ sqrt(dim) > 1) outscore the unit mates,
    # unless --l2-normalize normalises each row first
    np.savez(fpath, probe=probe, gallery=np.concatenate([gal[:n_match], distractors * 4]))
    rc, _, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--features", fpath, "--out", res_path], capsys
    )
    assert rc == 0, err
    assert _load(res_path)["rank1"] < 1.0
    rc, _, err = _run(
        [
            "--benchmark",
            "tinyface",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--l2-normalize",
            "--out",
            res_path,
        ],
        capsys,
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["rank1"] == 1.0 and res["knobs"]["l2_normalize"] is True

    # random features, the other tie order
    np.savez(fpath, probe=rng.standard_normal(probe.shape), gallery=rng.standard_normal(gal.shape))
    rc, _, err = _run(
        [
            "--benchmark",
            "tinyface",
            "--release",
            tiny_release,
            "--features",
            fpath,
            "--ties",
            "low_index_first",
            "--out",
            res_path,
        ],
        capsys,
    )
    assert rc == 0, err
    res = _load(res_path)
    assert res["knobs"]["ties"] == "low_index_first" and all(_in_unit(res[k]) for k in ("rank1", "rank5", "rank20"))

    # npz without gallery; a .npy instead of an .npz; wrong probe rows
    np.savez(fpath, probe=probe)
    rc, _, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--features", fpath, "--out", res_path], capsys
    )
    _one_line_error(rc, err, f"{fpath}:gallery", "missing")
    npy = str(tmp_path / "f.npy")
    np.save(npy, probe)
    rc, _, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--features", npy, "--out", res_path], capsys
    )
    _one_line_error(rc, err, npy, ".npz")
    np.savez(fpath, probe=probe[:-2], gallery=gal)
    rc, _, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--features", fpath, "--out", res_path], capsys
    )
    _one_line_error(rc, err, f"{fpath}:probe", f"{len(probes) - 2} feature rows")


# ------------------------------------------------------------------------------------------------ command line


def test_usage_errors_are_one_line(tiny_release, tmp_path, capsys):
    out = str(tmp_path / "r.json")
    rc, _, err = _run(["--benchmark", "ijbx", "--release", tiny_release, "--features", "f.npy", "--out", out], capsys)
    _one_line_error(rc, err, "ijbx")
    rc, _, err = _run(["--benchmark", "tinyface", "--release", tiny_release, "--out", out], capsys)
    _one_line_error(rc, err, "--features")
    rc, _, err = _run(
        [
            "--benchmark",
            "tinyface",
            "--release",
            tiny_release,
            "--image-list",
            "x.txt",
            "--features",
            "f.npz",
            "--out",
            out,
        ],
        capsys,
    )
    _one_line_error(rc, err, "--image-list")
    rc, _, err = _run(
        ["--benchmark", "ijbs", "--release", str(tmp_path), "--write-order", str(tmp_path / "o.txt")], capsys
    )
    _one_line_error(rc, err, str(tmp_path), "IJB-S")
    rc, _, err = _run(
        ["--benchmark", "tinyface", "--release", tiny_release, "--write-order", str(tmp_path / "no" / "o")], capsys
    )
    _one_line_error(rc, err, str(tmp_path / "no"))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------- silently accepted before


def test_inputs_once_silently_scored_are_one_line_errors(tiny_release, tmp_path, capsys):
    """Each of these used to be scored with exit 0: an empty TinyFace Gallery_Distractor (a far easier gallery), an
    IJB-S probe CSV holding only its header (all-null metrics), a NaN or negative faceness score, an all-zero
    feature matrix (nothing was extracted). Now: one line naming the file, exit 2, for --write-order too."""
    import shutil

    rel = str(tmp_path / "rel")
    shutil.copytree(tiny_release, rel)
    out = str(tmp_path / "r.json")

    # TinyFace: an empty Gallery_Distractor
    distractors = os.path.join(rel, "tinyface", "Testing_Set", "Gallery_Distractor")
    kept = str(tmp_path / "kept_distractors")
    shutil.move(distractors, kept)
    os.makedirs(distractors)
    for extra in (["--write-order", str(tmp_path / "order")], ["--features", str(tmp_path / "none.npz"), "--out", out]):
        rc, _, err = _run(["--benchmark", "tinyface", "--release", rel, *extra], capsys)
        _one_line_error(rc, err, distractors, "no images")
    shutil.rmtree(distractors)
    shutil.move(kept, distractors)

    # TinyFace: all-zero features
    order = str(tmp_path / "tf")
    assert _run(["--benchmark", "tinyface", "--release", rel, "--write-order", order], capsys)[0] == 0
    n_p, n_g = len(_lines(order + ".probe.txt")), len(_lines(order + ".gallery.txt"))
    fpath = str(tmp_path / "zero.npz")
    np.savez(fpath, probe=np.zeros((n_p, 8), np.float32), gallery=np.zeros((n_g, 8), np.float32))
    rc, _, err = _run(["--benchmark", "tinyface", "--release", rel, "--features", fpath, "--out", out], capsys)
    _one_line_error(rc, err, f"{fpath}:probe", "all", "zero")

    # IJB-S: all-zero features, then a probe CSV with only its header
    ijbs_order = str(tmp_path / "ijbs.txt")
    assert _run(["--benchmark", "ijbs", "--release", rel, "--write-order", ijbs_order], capsys)[0] == 0
    npy = str(tmp_path / "zero.npy")
    np.save(npy, np.zeros((len(_lines(ijbs_order)), 8), np.float32))
    rc, _, err = _run(
        ["--benchmark", "ijbs", "--release", rel, "--features", npy, "--image-list", ijbs_order, "--out", out], capsys
    )
    _one_line_error(rc, err, npy, "zero")
    probe_csv = os.path.join(rel, "IJB-S", "protocols", "cs6_surveillance_to_surveillance_probe.csv")
    with open(probe_csv, "w") as f:
        f.write("FILENAME\n")
    rc, _, err = _run(["--benchmark", "ijbs", "--release", rel, "--write-order", ijbs_order], capsys)
    _one_line_error(rc, err, f"{probe_csv}:line 1", "no probe videos")

    # IJB-B: a negative, then a NaN faceness score; all-zero features
    ijbb = os.path.join(rel, "IJB_release", "IJBB")
    scores = os.path.join(ijbb, "meta", "ijbb_name_5pts_score.txt")
    with open(scores) as f:
        lines = f.read().splitlines()
    n = len(lines)
    feats = str(tmp_path / "ijbb.npy")
    np.save(feats, np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32))

    def edit(value: str) -> None:
        with open(scores, "w") as f:
            f.write("\n".join(lines[:2] + [" ".join(lines[2].split()[:-1] + [value])] + lines[3:]) + "\n")

    edit("-0.5")
    for bench in ("ijb11", "ijb1n"):
        rc, _, err = _run(["--benchmark", bench, "--release", ijbb, "--features", feats, "--out", out], capsys)
        _one_line_error(rc, err, f"{scores}:line 3", "negative")
    # AdaFace's protocol does not weight by faceness: the score is not used, so not an error
    rc, _, err = _run(["--release", ijbb, "--features", feats, "--no-faceness", "--out", out], capsys)
    assert rc == 0, err
    edit("nan")  # refused by the reader already, whatever the protocol
    rc, _, err = _run(["--release", ijbb, "--features", feats, "--no-faceness", "--out", out], capsys)
    _one_line_error(rc, err, f"{scores}:line 3", "not a finite number")
    edit(lines[2].split()[-1])
    np.save(feats, np.zeros((n, 8), np.float32))
    rc, _, err = _run(["--release", ijbb, "--features", feats, "--no-faceness", "--out", out], capsys)
    _one_line_error(rc, err, feats, "zero")


def test_faceness_scores_in_memory_are_checked():
    from harness.core.errors import DataFormatError
    from harness.eval.ijb_verification import check_faceness

    assert check_faceness([0.0, 1.5], "f.txt").dtype == np.float32
    with pytest.raises(DataFormatError, match=r"f\.txt:line 2: faceness score nan is NaN"):
        check_faceness([1.0, np.nan], "f.txt")
    with pytest.raises(DataFormatError, match=r"f\.txt:line 3: faceness score -0\.25 is negative"):
        check_faceness([1.0, 0.5, -0.25], "f.txt")
