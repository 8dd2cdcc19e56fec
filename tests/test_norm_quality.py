"""``python -m harness.norm_quality`` on the tiny SynthFace release and two tiny random FR models (ArcFace and MagFace
heads, different seeds): the norms are those of features this test computes itself from its own aligned crops
through the evaluators' embedding loop, the Spearman value and the bins are recomputed here from those norms, the
crops are the IJB evaluator's (the crop cache file ``harness.run``'s evaluation reads is the one written), and the
three bad inputs are one line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from harness.core.atomic import save_torch_atomic
from harness.core.config import RunConfig, apply_overrides
from harness.data.align import align_faces
from harness.data.ijb import loose_crop_path, read_ijb
from harness.data.images import read_image
from harness.eval.features import embed_batches
from harness.eval.norm_quality import faceness_bins, main
from harness.models.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"model.widths": "8,16,16,32", "model.embedding_size": "32", "data.input_size": "32"}
MODELS = {"arc": ("arcface", 0, "RGB"), "mag": ("magface", 1, "BGR")}  # name: head, seed, channel order
BINS = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (backbone, config, checkpoint path), saved as harness.run saves a final checkpoint."""
    tmp = tmp_path_factory.mktemp("norm_quality_models")
    out = {}
    for name, (head, seed, order) in MODELS.items():
        cfg = apply_overrides(RunConfig(), {**SMALL, "model.head": head, "data.channel_order": order})
        torch.manual_seed(seed)
        backbone, _ = build_model(cfg, 4)
        with torch.no_grad():  # BN statistics away from (0, 1), so the norms vary with the image
            for m in backbone.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
        path = str(tmp / f"{name}.pt")
        state = {"format": "cfsm-checkpoint/1", "config": cfg.to_dict(), "num_classes": 4}
        save_torch_atomic({**state, "backbone": backbone.state_dict()}, path)
        out[name] = (backbone.eval(), cfg, path)
    return out


@pytest.fixture(scope="module")
def result(tiny_release, models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("norm_quality")
    out, cache = tmp / "out", tmp / "crops"
    argv = [a for name, (_, _, path) in models.items() for a in ("--model", f"{name}={path}")]
    argv += ["--release", tiny_release, "--bins", str(BINS), "--device", "cpu", "--batch-size", "16"]
    rc = main([*argv, "--crop-cache", str(cache), "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "norm_quality.json").read_text())
    with np.load(out / "norm_quality.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return doc, arrays, out, str(cache)


@pytest.fixture(scope="module")
def own(tiny_release, models):
    """What the test computes itself: the faceness scores, the aligned crops per input size, and per model the norms
    of the features ``embed_batches`` gives on them (no flip)."""
    meta = read_ijb(os.path.join(tiny_release, "IJB_release", "IJBC"), with_pairs=False)
    images = [read_image(loose_crop_path(meta, i)) for i in range(len(meta))]
    norms, crops = {}, {}
    for name, (backbone, cfg, _) in models.items():
        size = cfg.data.input_size
        if size not in crops:
            crops[size] = align_faces(images, meta.landmarks, size)
        x = crops[size]
        feats = embed_batches(backbone, len(meta), lambda a, b, x=x: x[a:b], 16, "cpu", cfg.data.channel_order, "none")
        norms[name] = np.linalg.norm(feats, axis=1)
    return meta.faceness, crops, norms


def test_norms_are_those_of_the_evaluators_embedding_of_the_aligned_crops(result, own):
    doc, arrays, _, _ = result
    faceness, _, norms = own
    assert doc["rows"] == len(faceness) and doc["flip"] == "none" and doc["benchmark"] == "IJB-C"
    np.testing.assert_array_equal(arrays["faceness"], faceness)
    for name in MODELS:
        got = arrays[f"norm/{name}"]
        assert got.shape == norms[name].shape and np.ptp(got) > 0
        np.testing.assert_allclose(got, norms[name], rtol=1e-6, atol=0)
    assert not np.allclose(arrays["norm/arc"], arrays["norm/mag"])  # two different models, two sets of norms


def test_crops_are_the_ijb_evaluators_and_shared_with_its_crop_cache(result, own, models, tiny_release):
    """The first model's pass wrote the evaluator's crops, the second read them; ``harness.run``'s IJB-C evaluation
    with the same cache folder reads that very file (a ``hit``)."""
    from harness.eval.registry import get_benchmark

    doc, _, _, cache = result
    _, crops, _ = own
    assert doc["models"]["arc"]["crop_cache"]["passes"] == ["written"]
    assert doc["models"]["mag"]["crop_cache"]["passes"] == ["hit"]
    (npy,) = [f for f in os.listdir(cache) if f.endswith(".npy")]
    np.testing.assert_array_equal(np.load(os.path.join(cache, npy)), crops[32].numpy())
    backbone, cfg, _ = models["arc"]
    cfg = apply_overrides(cfg, {"data.release": tiny_release, "data.crop_cache": cache})
    rows = get_benchmark("IJBC").evaluate(cfg, backbone, "cpu", False)
    assert rows[0][0]["crop_cache"]["passes"] == ["hit"]


def test_spearman_and_bins_recomputed_from_the_norms(result, own):
    doc, _, _, _ = result
    faceness, _, norms = own
    f = faceness.astype(np.float64)
    assert 1 < doc["bins"] <= BINS and len(doc["bin_edges"]) == doc["bins"] + 1
    assert set(doc["bin_edges"]) <= set(f.tolist())  # every edge is a score that occurs
    for name, (head, _, _) in MODELS.items():
        m = doc["models"][name]
        assert m["head"] == head and m["checkpoint"].endswith(f"{name}.pt")
        rho, p = spearmanr(norms[name], faceness)
        assert m["spearman"]["rho"] == pytest.approx(rho, abs=1e-9)
        assert m["spearman"]["p_value"] == pytest.approx(p, rel=1e-6)
        n = norms[name].astype(np.float64)
        overall = np.median(n)
        assert m["median_norm"] == pytest.approx(overall, rel=1e-6)
        bins = m["bins"]
        assert sum(b["count"] for b in bins) == doc["rows"] == len(f)
        assert [b["faceness_median"] for b in bins] == sorted(b["faceness_median"] for b in bins)
        for i, b in enumerate(bins):
            last = i == len(bins) - 1
            inside = (f >= b["faceness_lo"]) & ((f <= b["faceness_hi"]) if last else (f < b["faceness_hi"]))
            assert b["count"] == inside.sum() > 0
            assert b["faceness_median"] == pytest.approx(np.median(f[inside]))
            q25, med, q75 = np.quantile(n[inside], [0.25, 0.5, 0.75])
            assert (b["norm_q25"], b["norm_median"], b["norm_q75"]) == pytest.approx((q25, med, q75), rel=1e-6)
            assert b["relative_median"] == pytest.approx(med / overall, rel=1e-6)


def test_bins_never_split_tied_scores():
    """Lower sample quantiles of 10 scores at 0, 1/4, ..., 1 are the sorted scores 0, 2, 4, 6, 9 (0-based):
    0.2, 0.2, 0.2, 0.5, 0.9; merged, two bins: the six tied 0.2 in one, the rest (top edge included) in the other."""
    f = np.array([0.9, 0.2, 0.2, 0.5, 0.2, 0.2, 0.6, 0.2, 0.9, 0.2])
    edges, index = faceness_bins(f, 4)
    assert edges.tolist() == [0.2, 0.5, 0.9]
    assert index.tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 1, 0]
    edges, index = faceness_bins(np.full(5, 0.7), 10)  # one score: one bin
    assert edges.tolist() == [0.7] and index.tolist() == [0] * 5


def test_figure_written(result):
    _, _, out, _ = result
    png = (out / "norm_quality.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file left


def _errors(tmp_path, models):
    ckpt = models["arc"][2]
    missing = str(tmp_path / "nothing.pt")
    no_ijb = tmp_path / "release"
    no_ijb.mkdir()
    return [
        (["--model", ckpt], ckpt),
        (["--model", f"x={missing}"], missing),
        (["--model", f"x={ckpt}", "--release", str(no_ijb)], os.path.join(str(no_ijb), "IJB_release", "IJBC")),
    ]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, models, tiny_release, capsys):
    for argv, named in _errors(tmp_path, models):
        if "--release" not in argv:
            argv = [*argv, "--release", tiny_release]
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"harness.norm_quality: {named}:"), err
    assert not (tmp_path / "out").exists()


def test_command_line_error_has_no_traceback(tmp_path, models):
    argv, named = _errors(tmp_path, models)[2]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    env.pop("CFSM_TRACEBACK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.norm_quality", *argv, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and named in proc.stderr and "Traceback" not in proc.stderr
