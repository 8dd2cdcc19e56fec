"""insightface's verification ``.bin`` sets: the restricted reader, the 10-fold accuracy protocol against a
straightforward re-statement of insightface's ``calculate_roc`` (loops, sklearn's KFold), and the round trip
SynthFace writer -> reader -> evaluator (in-process and through ``python -m harness.evaluate --benchmark bin``)."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from harness.core.errors import DataFormatError
from harness.data.images import encode_jpeg
from harness.data.verification_bin import SafeUnpickler, bin_bytes, read_bin
from harness.eval.verification_bin import (
    THRESHOLDS,
    BinSettings,
    VerificationBinEvaluation,
    fold_slices,
    fuse_embeddings,
    ten_fold_accuracy,
)
from harness.evaluate import main as evaluate_main

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- the protocol


def naive_ten_fold(dist, issame, thresholds=THRESHOLDS):
    """insightface's calculate_roc / calculate_accuracy, written as plainly as possible: sklearn's KFold, a loop
    over thresholds, the first maximum (np.argmax), ``dist < threshold`` means "same"."""
    accs = []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(dist))):
        train_acc = []
        for t in thresholds:
            pred = dist[train] < t
            train_acc.append(np.sum(pred == issame[train]) / len(train))
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.sum((dist[test] < best) == issame[test]) / len(test))
    return float(np.mean(accs)), float(np.std(accs)), accs


@pytest.mark.parametrize("n", [10, 37, 200, 603])
def test_fold_slices_are_sklearns_kfold(n):
    ours = [np.arange(n)[s] for s in fold_slices(n)]
    theirs = [test for _, test in KFold(n_splits=10, shuffle=False).split(np.arange(n))]
    assert len(ours) == 10 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("seed,n", [(0, 60), (1, 203), (2, 600)])
def test_ten_fold_matches_naive_on_random_embeddings(seed, n):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2 * n, 16))
    issame = rng.random(n) < 0.5
    feats[1::2][issame] = feats[0::2][issame] + rng.normal(scale=0.9, size=(int(issame.sum()), 16))  # genuine closer
    emb = fuse_embeddings(feats)
    dist = np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1)
    got = ten_fold_accuracy(dist, issame)
    mean, std, accs = naive_ten_fold(dist, issame)
    assert got["fold_accuracy"] == pytest.approx(accs, abs=1e-12)
    assert got["accuracy"] == pytest.approx(mean, abs=1e-12) and got["accuracy_std"] == pytest.approx(std, abs=1e-12)
    assert 0.6 < got["accuracy"] < 1.0  # informative but not perfect embeddings: the thresholds matter


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ten_fold_exact_threshold_ties(seed):
    """Distances equal to grid thresholds (``dist < t`` is strict), many equal distances, and many equally good
    thresholds (the first one wins)."""
    rng = np.random.default_rng(seed)
    n = 120
    dist = THRESHOLDS[rng.integers(0, 400, n)]  # every distance is exactly a threshold
    dist[: n // 3] = THRESHOLDS[150]  # a block of equal distances
    issame = rng.random(n) < 0.5
    got = ten_fold_accuracy(dist, issame)
    mean, std, accs = naive_ten_fold(dist, issame)
    assert got["fold_accuracy"] == pytest.approx(accs, abs=1e-12)
    assert (got["accuracy"], got["accuracy_std"]) == pytest.approx((mean, std), abs=1e-12)


def test_ten_fold_first_best_threshold_and_strict_decision():
    # genuine pairs at distance 1.0, impostors at 2.0: every threshold in (1.0, 2.0] is perfect; the first is 1.01
    dist = np.where(np.arange(40) % 2 == 0, 1.0, 2.0)
    issame = np.arange(40) % 2 == 0
    got = ten_fold_accuracy(dist, issame)
    assert got["accuracy"] == 1.0 and got["accuracy_std"] == 0.0
    assert got["fold_threshold"] == [pytest.approx(1.01)] * 10
    assert list(got["fold"]) == [k for k in range(10) for _ in range(4)]


def test_flip_fusion_is_sum_then_normalise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    fused = fuse_embeddings(np.concatenate([a, b], axis=1), flip_concat=True, flip="sum")
    want = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(fused, want, atol=1e-15)
    np.testing.assert_allclose(
        fuse_embeddings(np.concatenate([a, b], axis=1), True, "none"),
        a / np.linalg.norm(a, axis=1, keepdims=True),
        atol=1e-15,
    )


# ---------------------------------------------------------------------------------------------- the reader


def _jpeg(seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # unpickling would call exec(code): writes the marker file
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), _Evil(str(marker))], [True]), protocol=2))
    with pytest.raises(DataFormatError, match=r"evil\.bin.*(__builtin__|builtins)\.exec is not allowed"):
        read_bin(path)
    assert not marker.exists()
    # also through os.system, and directly through the unpickler
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(DataFormatError, match="os.system is not allowed"):
        read_bin(path)
    with pytest.raises(pickle.UnpicklingError):
        SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    assert not marker.exists()


def test_reads_insightface_numpy_layout(tmp_path):
    """As insightface's files: images as cv2.imencode's (N, 1) uint8 arrays, numpy bools, pickled by numpy."""
    imgs = [_jpeg(i) for i in range(4)]
    path = tmp_path / "lfw.bin"
    path.write_bytes(
        pickle.dumps(
            ([np.frombuffer(b, np.uint8).reshape(-1, 1) for b in imgs], [np.bool_(True), np.bool_(False)]), protocol=2
        )
    )
    b = read_bin(path)
    assert b.name == "lfw" and b.images == tuple(imgs) and b.issame.tolist() == [True, False]
    assert b.decode().shape == (4, 3, 112, 112) and b.decode(64, 1, 3).shape == (2, 3, 64, 64)
    path.write_bytes(bin_bytes(imgs, [True, False]))  # our writer: bytes and Python bools
    assert read_bin(path).images == tuple(imgs)


@pytest.mark.parametrize(
    "obj,match",
    [
        (([b"x"], [True]), "holds 1 images for 1 pairs"),
        (([b"x", b"y"], "yes"), "issame_list: is a str"),
        (([b"x", 3], [True]), "image 1: is a int"),
        (([b"x", b"y"], [2]), r"issame_list\[0\]: is 2"),
        ({"a": 1}, "expected the pair"),
    ],
)
def test_malformed_bins_are_one_line_errors(tmp_path, obj, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=match):
        read_bin(path)


# ---------------------------------------------------------------------------------------------- round trip


class _Pixels(torch.nn.Module):
    """A fixed random projection of the pixels: a deterministic 'model' whose flip fusion is easy to check."""

    def __init__(self, size: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, 24, generator=g) / size)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_synthface_writer_reader_evaluator_round_trip(tiny_release, tmp_path):
    path = os.path.join(tiny_release, "faces_synthface", "synth_lfw.bin")
    data = read_bin(path)
    assert len(data) == 40 and data.issame.sum() == 20
    assert data.issame.tolist() == ([True] * 2 + [False] * 2) * 10  # LFW's fold layout: genuine then impostor
    size = data.decode(None, 0, 1).shape[-1]
    ev = VerificationBinEvaluation(path, BinSettings(flip="sum", input_size=size))
    model = _Pixels(size)
    row, items = ev.evaluate(model, batch_size=16, return_items=True)
    # the same from the features by hand: embeddings of image + mirror, normalised, squared L2, naive 10-fold
    x = torch.from_numpy(data.decode(size)).float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        f = (model(x) + model(torch.flip(x, dims=(3,)))).double().numpy()
    e = f / np.linalg.norm(f, axis=1, keepdims=True)
    dist = np.sum((e[0::2] - e[1::2]) ** 2, axis=1)
    np.testing.assert_allclose(items["dist"], dist, rtol=1e-5, atol=1e-6)
    mean, std, accs = naive_ten_fold(items["dist"], data.issame)
    assert (
        row["benchmark"] == "synth_lfw"
        and row["accuracy"] == pytest.approx(mean)
        and row["accuracy_std"] == pytest.approx(std)
    )
    assert row["fold_accuracy"] == pytest.approx(accs) and row["counts"] == {"pairs": 40, "genuine": 20, "images": 80}
    assert row["knobs"]["flip"] == "sum" and row["knobs"]["folds"] == 10
    assert items["issame"].tolist() == data.issame.tolist() and items["fold"].tolist() == [k // 4 for k in range(40)]

    # the command line on precomputed [orig | flip] features gives the same numbers
    with torch.no_grad():
        both = torch.cat([model(x), model(torch.flip(x, dims=(3,)))], 1).numpy()
    feats, out, order = tmp_path / "f.npy", tmp_path / "r.json", tmp_path / "order.txt"
    np.save(feats, both)
    argv = ["--benchmark", "bin", "--release", tiny_release, "--bin-set", "synth_lfw"]
    assert evaluate_main([*argv, "--features", str(feats), "--flip-concat", "--out", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert cli["accuracy"] == pytest.approx(row["accuracy"], abs=1e-6) and cli["cli_benchmark"] == "bin"
    assert evaluate_main([*argv, "--write-order", str(order)]) == 0
    lines = order.read_text().splitlines()
    assert len(lines) == 80 and lines[3] == f"{os.path.abspath(path)}:3"
    assert evaluate_main([*argv[:4], "--features", str(feats), "--out", str(out)]) == 2  # no --bin-set
    assert (
        evaluate_main(
            ["--benchmark", "tinyface", "--release", tiny_release, "--bin-set", "lfw", "--write-order", str(order)]
        )
        == 2
    )  # not an argument of tinyface


def test_importing_the_bin_evaluator_first_keeps_the_registry_order():
    """The registry's order is :data:`harness.eval.registry.MODULES`' whichever module is imported first (this file
    imports the .bin evaluator before anything loads the registry; in a fresh interpreter, so that no other test
    module has loaded it already)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    show = (
        "from harness.eval.registry import config_names, row_names\n"
        "print(','.join(config_names())); print(row_names()[0])"
    )

    def order(first: str) -> list[str]:
        return subprocess.run(
            [sys.executable, "-c", first + show],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        ).stdout.split("\n")[:2]

    bin_first, registry_first = order("import harness.eval.verification_bin\n"), order("")
    assert bin_first == registry_first
    names = bin_first[0].split(",")
    assert names[:4] == ["IJBB", "IJBC", "IJBS", "TinyFace"] and "VerificationBins" in names and bin_first[1] == "IJB-B"
