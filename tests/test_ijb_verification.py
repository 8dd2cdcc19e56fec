"""IJB-B/IJB-C 1:1 verification: template pooling (bit-exact vs. insightface's loop), pair scores, errors, the
result dict, feature extraction on the tiny SynthFace release, and the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from sklearn.preprocessing import normalize

from harness.core.errors import DataFormatError
from harness.data.ijb import read_ijb
from harness.eval import ijb_verification as iv
from harness.eval.ijb_verification import (
    IJBVerification,
    VerificationProtocol,
    evaluate_verification,
    image_to_template_features,
    pair_scores,
)
from harness.eval.roc import roc_curve, tar_at_far_from_roc
from harness.evaluate import main as cli_main

ALIGN = 64  # the tiny release's aligned size


# ------------------------------------------------------------------------------------------- references


def reference_templates(img_feats, templates, medias):
    """insightface ``image2template_feature`` written from its description: per template (np.unique order), rows
    in file order grouped by media ascending; a 1-image media contributes the row, a k-image media np.mean(axis=0);
    template = np.sum over media vectors; float64 matrix; sklearn.preprocessing.normalize."""
    unique_t = np.unique(templates)
    out = np.zeros((len(unique_t), img_feats.shape[1]), dtype=np.float64)
    for k, t in enumerate(unique_t):
        rows = np.where(templates == t)[0]
        f, m = img_feats[rows], medias[rows]
        media_vecs = []
        for u, count in zip(*np.unique(m, return_counts=True)):
            sel = np.where(m == u)[0]
            media_vecs.append(f[sel] if count == 1 else np.mean(f[sel], axis=0, keepdims=True))
        out[k] = np.sum(np.array(media_vecs), axis=0)
    return unique_t, normalize(out)


def reference_image_feats(feats, faceness, flip_concat, flip, image_norm, use_faceness):
    """insightface's per-image steps (ijb_11.py order): split/sum the halves, optional L2 norm, times faceness."""
    x = feats
    if flip_concat:
        d = feats.shape[1] // 2
        x = feats[:, :d] + feats[:, d:] if flip == "sum" else feats[:, :d]
    if image_norm:
        x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if use_faceness:
        x = x * faceness[:, np.newaxis]
    return x


def random_meta(rng, n_templates=60, max_media=6, max_frames=40, dim=512):
    """Random rows: templates with 1..max_media media, media of 1 image or 2..max_frames frames, shuffled rows,
    media ids shared between some templates (as in IJB)."""
    tids, mids = [], []
    for t in rng.choice(np.arange(1, 10_000), n_templates, replace=False):
        for _ in range(int(rng.integers(1, max_media + 1))):
            m = int(rng.integers(0, 80))
            k = 1 if rng.uniform() < 0.5 else int(rng.integers(2, max_frames + 1))
            tids += [t] * k
            mids += [m] * k
    perm = rng.permutation(len(tids))
    templates, medias = np.array(tids, np.int64)[perm], np.array(mids, np.int64)[perm]
    feats = (rng.standard_normal((len(tids), dim)) * rng.uniform(0.1, 20, (len(tids), 1))).astype(np.float32)
    return feats, templates, medias


def tiny_model(dim=16):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, dim),
    )


class _Wrap(torch.nn.Module):
    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.model(self.fn(x))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(tiny_release):
    """The tiny models here run much faster on one thread (no OpenMP barriers on a shared 2-core box). The shared
    release is generated first, with the default thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ijbb_root(tiny_release):
    return os.path.join(tiny_release, "IJB_release", "IJBB")


@pytest.fixture(scope="module")
def tiny_feats(ijbb_root):
    """Features of the tiny IJB-B release from the random-init conv model (flip-summed, align 64)."""
    ev = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN))
    return ev.extract_features(tiny_model(), batch_size=32)


# ------------------------------------------------------------------------------------------- pooling


def test_pooling_hand_checked():
    # template 5: media 100 = one image (1, 2); media 101 = three images (3,0) (0,3) (3,3) -> mean (2, 2)
    #   sum = (3, 4) -> normalised (0.6, 0.8)
    # template 9: media 7 = one image (0, -2) -> (0, -1)
    # rows deliberately interleaved in the file
    feats = np.array([[0, -2], [3, 0], [1, 2], [0, 3], [3, 3]], dtype=np.float32)
    templates = np.array([9, 5, 5, 5, 5])
    medias = np.array([7, 101, 100, 101, 101])
    tids, tf = image_to_template_features(feats, templates, medias)
    np.testing.assert_array_equal(tids, [5, 9])
    assert tids.dtype == np.int64 and tf.dtype == np.float64
    np.testing.assert_allclose(tf, [[0.6, 0.8], [0.0, -1.0]], rtol=0, atol=1e-15)
    s = pair_scores(tids, tf, np.array([[5, 9], [9, 9]]), exact=True)
    np.testing.assert_allclose(s, [-0.8, 1.0], atol=1e-15)


@pytest.mark.parametrize("dim,chunk_groups", [(512, 1 << 13), (7, 1 << 13), (7, 5), (7, 1)])
def test_pooling_bit_exact_vs_loop_reference(dim, chunk_groups, monkeypatch):
    # chunk_groups: templates pooled a few media groups at a time (one template per chunk with 1) in reused buffers
    monkeypatch.setattr(iv, "_POOL_CHUNK_GROUPS", chunk_groups)
    rng = np.random.default_rng(dim)
    feats, templates, medias = random_meta(rng, dim=dim)
    tids, tf = image_to_template_features(feats, templates, medias)
    ref_t, ref_f = reference_templates(feats, templates, medias)
    np.testing.assert_array_equal(tids, ref_t)
    np.testing.assert_array_equal(tf, ref_f)  # bit for bit


@pytest.mark.parametrize(
    "flip_concat,flip,image_norm,use_faceness",
    [
        (False, "sum", False, True),  # insightface default on fused features
        (True, "sum", False, True),  # insightface default on [orig | flip]
        (True, "none", True, False),
        (True, "sum", True, True),
        (False, "sum", True, False),
    ],
)
def test_per_image_steps_bit_exact(flip_concat, flip, image_norm, use_faceness):
    rng = np.random.default_rng(3)
    feats, templates, medias = random_meta(rng, n_templates=30, dim=64 if flip_concat else 32)
    faceness = rng.uniform(0.05, 1.0, len(templates)).astype(np.float32)
    protocol = VerificationProtocol(flip=flip, image_norm=image_norm, faceness=use_faceness)
    w = faceness if use_faceness else None
    get_rows = iv._image_row_fn(feats, w, protocol, flip_concat)
    tids, tf, _ = iv._pool(get_rows, templates, medias, 32)
    ref = reference_image_feats(feats, faceness, flip_concat, flip, image_norm, use_faceness)
    ref_t, ref_f = reference_templates(ref, templates, medias)
    np.testing.assert_array_equal(tids, ref_t)
    np.testing.assert_array_equal(tf, ref_f)


# ------------------------------------------------------------------------------------------- pair scores


def _realistic(rng, subjects=150, dim=128):
    """Clustered features: templates of a subject share a centre; pairs = every gallery x probe template."""
    centres = rng.standard_normal((subjects, dim))
    gallery = np.arange(1, subjects + 1)
    probes = np.arange(1001, 1001 + 3 * subjects)
    probe_subject = np.repeat(np.arange(subjects), 3)
    tids = np.concatenate([gallery, probes])
    subj = np.concatenate([np.arange(subjects), probe_subject])
    tf = centres[subj] + rng.standard_normal((len(tids), dim)) * rng.uniform(0.5, 2.0, (len(tids), 1))
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    g, p = np.meshgrid(gallery, probes, indexing="ij")
    pairs = np.stack([g.ravel(), p.ravel()], axis=1)
    labels = (subj[pairs[:, 0] - 1] == probe_subject[pairs[:, 1] - 1001]).astype(np.int8)
    return tids, tf, pairs, labels


def test_pair_scores_exact_and_fast_paths():
    rng = np.random.default_rng(5)
    tids, tf, pairs, labels = _realistic(rng)
    pairs = pairs[rng.permutation(len(pairs))]
    exact = pair_scores(tids, tf, pairs, batch=7_001, exact=True)
    rows = np.searchsorted(tids, pairs)
    direct = np.array([np.sum(tf[a] * tf[b]) for a, b in rows[:500]])
    np.testing.assert_array_equal(exact[:500], direct)  # the same arithmetic, pair by pair
    np.testing.assert_array_equal(exact, np.sum(tf[rows[:, 0]] * tf[rows[:, 1]], -1))
    for block_bytes in (768 << 20, 8 * 150 * 37, 1):  # one product; blocks of 37 probe templates; 1 row a block
        fast = pair_scores(tids, tf, pairs, block_bytes=block_bytes)
        assert np.abs(fast - exact).max() < 1e-12
    swapped = pair_scores(tids, tf, pairs[:, ::-1])  # gallery on the right: the small side is found per pair column
    assert np.abs(swapped - exact).max() < 1e-12


def test_fast_path_gives_identical_tars():
    rng = np.random.default_rng(11)
    tids, tf, pairs, labels = _realistic(rng, subjects=300)
    exact = pair_scores(tids, tf, pairs, exact=True)
    fast = pair_scores(tids, tf, pairs)
    assert np.abs(fast - exact).max() < 1e-12
    fars = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.3)
    a = tar_at_far_from_roc(*roc_curve(labels, exact)[:2], fars)
    b = tar_at_far_from_roc(*roc_curve(labels, fast)[:2], fars)
    assert a == b
    assert 0.0 < a[1e-3] < 1.0  # a non-trivial operating point


def test_fast_path_identical_on_tiny_release(ijbb_root, tiny_feats):
    ev = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN))
    fast = ev.evaluate_features(tiny_feats)
    exact = ev.evaluate_features(tiny_feats, exact=True)
    assert fast["scoring"] == "matmul" and exact["scoring"] == "exact"
    assert fast["tar_at_far"] == exact["tar_at_far"]
    assert fast["by_probe_media"] == exact["by_probe_media"]
    assert fast["auc"] == pytest.approx(exact["auc"], abs=1e-12)


def test_unknown_template_names_pair_file_and_line():
    tids = np.array([1, 2, 5])
    tf = np.eye(3)
    pairs = np.array([[1, 5], [2, 5], [1, 77], [1, 2]])
    for exact in (True, False):
        with pytest.raises(DataFormatError) as ei:
            pair_scores(tids, tf, pairs, pair_file="/x/ijbb_template_pair_label.txt", exact=exact)
        assert str(ei.value) == (
            "/x/ijbb_template_pair_label.txt:line 3: tid2 77 is not a template of face_tid_mid (unknown template id 77)"
        )
    for bad in (-4, 10**15):  # outside any lookup table
        with pytest.raises(DataFormatError, match=f"line 2: tid1 {bad} is not a template of face_tid_mid"):
            pair_scores(tids, tf, np.array([[1, 2], [bad, 2]]), pair_file="p.txt")


# ------------------------------------------------------------------------------------------- result / errors


def test_perfect_features_give_tar_one():
    # 4 subjects; gallery template s+1 (2 stills), probe templates 10+s and 20+s (a still and a 5-frame video),
    # every image feature = one-hot of its subject -> genuine cosine 1, impostor 0.
    rows = []
    media = 100
    for s in range(4):
        for t, kinds in ((s + 1, [1, 1]), (10 + s, [1]), (20 + s, [5, 1])):
            for k in kinds:
                rows += [(t, media, s)] * k
                media += 1
    templates, medias, subj = (np.array(c) for c in zip(*rows))
    feats = np.eye(4, dtype=np.float32)[subj]
    faceness = np.linspace(0.2, 1.0, len(rows)).astype(np.float32)
    pairs = np.array([[g + 1, p + off] for g in range(4) for p in range(4) for off in (10, 20)])
    labels = (pairs[:, 0] - 1 == pairs[:, 1] % 10).astype(np.int8)
    res = evaluate_verification(feats, templates, medias, faceness, pairs, labels, benchmark="IJB-B")
    assert res["tar_at_far"] == {k: 1.0 for k in ("1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1")}
    assert res["auc"] == 1.0
    assert res["counts"] == {"rows": len(rows), "templates": 12, "pairs": 32, "genuine": 8, "impostor": 24}
    stills, video = res["by_probe_media"]["stills_only"], res["by_probe_media"]["with_video"]
    assert stills["counts"] == {"pairs": 16, "genuine": 4, "impostor": 12, "probe_templates": 4}
    assert video["counts"] == {"pairs": 16, "genuine": 4, "impostor": 12, "probe_templates": 4}
    assert set(stills["tar_at_far"].values()) == {1.0} and set(video["tar_at_far"].values()) == {1.0}
    # probes given the next subject's one-hot: every genuine cosine is 0, one impostor per probe scores 1
    wrong = np.eye(4, dtype=np.float32)[(subj + (templates >= 10)) % 4]
    bad = evaluate_verification(wrong, templates, medias, faceness, pairs, labels)
    assert bad["tar_at_far"]["0.1"] == 0.0 and bad["auc"] < 0.5


def test_result_on_tiny_release(ijbb_root, tiny_feats):
    meta = read_ijb(ijbb_root)
    protocol = VerificationProtocol(align_size=ALIGN, faceness=False, image_norm=True, channel_order="BGR")
    ev = IJBVerification(ijbb_root, protocol=protocol)
    res = ev.evaluate_features(tiny_feats)
    json.dumps(res, allow_nan=False)  # JSON-ready
    assert res["benchmark"] == "IJB-B" and res["protocol"] == "1:1 verification"
    assert res["knobs"] == protocol.knobs()
    assert res["knobs"]["faceness"] is False and res["knobs"]["image_norm"] is True
    assert res["knobs"]["channel_order"] == "BGR" and res["knobs"]["normalization"] == "(x/255-0.5)/0.5"
    assert list(res["tar_at_far"]) == ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"]
    n_gen = int(meta.labels.sum())
    assert res["counts"] == {
        "rows": len(meta),
        "templates": len(np.unique(meta.templates)),
        "pairs": len(meta.pairs),
        "genuine": n_gen,
        "impostor": len(meta.pairs) - n_gen,
    }
    split = res["by_probe_media"]
    assert split["stills_only"]["counts"]["pairs"] > 0 and split["with_video"]["counts"]["pairs"] > 0
    for key in ("pairs", "genuine", "impostor"):
        assert split["stills_only"]["counts"][key] + split["with_video"]["counts"][key] == res["counts"][key]
    # the split follows the media: a probe is "with_video" iff one of its media has several rows
    video_probes = {
        t
        for t in np.unique(meta.pairs[:, 1])
        if max(np.unique(meta.medias[meta.templates == t], return_counts=True)[1]) > 1
    }
    assert split["with_video"]["counts"]["probe_templates"] == len(video_probes)
    # the knobs change the numbers: faceness weighting on vs off
    default = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN)).evaluate_features(tiny_feats)
    assert default["auc"] != res["auc"]


def test_evaluate_end_to_end_with_model(ijbb_root):
    ev = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN))
    model = tiny_model()
    model.train()
    res = ev.evaluate(model, batch_size=16)
    assert model.training  # mode restored
    tars = list(res["tar_at_far"].values())
    assert all(np.isfinite(t) and 0.0 <= t <= 1.0 for t in tars)
    assert tars == sorted(tars)  # TAR grows with FAR
    assert 0.0 <= res["auc"] <= 1.0
    assert res["counts"]["rows"] == len(ev.meta) and res["input"]["dim"] == 16


def test_extract_features_flip_channels_and_scaling(ijbb_root, tiny_feats):
    model = tiny_model()
    base = VerificationProtocol(align_size=ALIGN, flip="none")
    f0 = IJBVerification(ijbb_root, protocol=base).extract_features(model, batch_size=32)
    f1 = IJBVerification(ijbb_root, protocol=base).extract_features(
        _Wrap(model, lambda x: torch.flip(x, (3,))), batch_size=32
    )
    assert f0.shape == (76, 16) and f0.dtype == np.float32
    np.testing.assert_array_equal(tiny_feats, f0 + f1)  # flip="sum": f(x) + f(mirror x)
    bgr = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN, flip="none", channel_order="BGR"))
    fb = bgr.extract_features(model, batch_size=32)
    np.testing.assert_array_equal(
        fb, IJBVerification(ijbb_root, protocol=base).extract_features(_Wrap(model, lambda x: x.flip(1)), batch_size=32)
    )
    assert not np.array_equal(fb, f0)
    seen = []

    def spy(x):
        seen.append((x.dtype, tuple(x.shape), float(x.min()), float(x.max())))
        return x.mean(dim=(2, 3))

    out = IJBVerification(ijbb_root, protocol=base).extract_features(_Wrap(torch.nn.Identity(), spy), batch_size=50)
    assert [s[1] for s in seen] == [(50, 3, ALIGN, ALIGN), (26, 3, ALIGN, ALIGN)]  # streamed in batches
    assert all(s[0] == torch.float32 and -1.0 <= s[2] and s[3] <= 1.0 for s in seen)
    assert out.shape == (76, 3)


def test_feature_errors_name_the_file(ijbb_root, tiny_feats):
    ev = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN))
    with pytest.raises(DataFormatError) as ei:
        ev.evaluate_features(tiny_feats[:-1], features_path="/data/feats.npy")
    assert str(ei.value) == "/data/feats.npy:rows: 75 feature rows but face_tid_mid has 76"
    with pytest.raises(DataFormatError, match="^<features>:rows: 77 feature rows"):
        ev.evaluate_features(np.vstack([tiny_feats, tiny_feats[:1]]))
    bad = tiny_feats.copy()
    bad[5, 3] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(DataFormatError, match=r"^/data/feats.npy:row 5: feature row 5 .*not finite"):
        ev.evaluate_features(bad, features_path="/data/feats.npy")
    with pytest.raises(DataFormatError, match="even feature width"):
        ev.evaluate_features(tiny_feats[:, :15], flip_concat=True, features_path="/data/feats.npy")
    zero = tiny_feats.copy()
    zero[4] = 0
    with pytest.raises(DataFormatError, match="row 4: all-zero"):
        IJBVerification(ijbb_root, protocol=VerificationProtocol(image_norm=True)).evaluate_features(zero)


def test_flip_concat_split(ijbb_root, tiny_feats):
    rng = np.random.default_rng(2)
    a = tiny_feats
    b = (rng.standard_normal(a.shape) * a.std()).astype(np.float32)
    both = np.hstack([a, b])
    ev = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN))

    def drop(r):
        return {k: v for k, v in r.items() if k != "input"}

    concat = ev.evaluate_features(both, flip_concat=True)
    assert concat["input"] == {"flip_concat": True, "dim": 32}
    assert drop(concat) == drop(ev.evaluate_features(a + b))
    assert drop(concat) != drop(ev.evaluate_features(a))
    ev_none = IJBVerification(ijbb_root, protocol=VerificationProtocol(align_size=ALIGN, flip="none"))
    assert drop(ev_none.evaluate_features(both, flip_concat=True)) == drop(ev_none.evaluate_features(a))


def test_protocol_validation_and_knobs():
    p = VerificationProtocol()
    assert p.knobs() == {
        "flip": "sum",
        "faceness": True,
        "image_norm": False,
        "align_size": 112,
        "channel_order": "RGB",
        "normalization": "(x/255-0.5)/0.5",
        "fars": ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"],
        "alignment": "arcface-5pt-umeyama-similarity",
        "input_size": 112,
        "pooling": "media-mean-then-sum-l2",
        "score": "cosine (inner product of L2-normalised template features)",
        "score_dtype": "float64",
    }
    for bad in (
        dict(flip="concat"),
        dict(channel_order="rgb"),
        dict(normalization="(x-127.5)/128"),
        dict(align_size=0),
        dict(fars=(0.0,)),
        dict(fars=()),
    ):
        with pytest.raises(ValueError):
            VerificationProtocol(**bad)


# ------------------------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tiny_release, ijbb_root, tiny_feats, tmp_path, capsys):
    feats_path = str(tmp_path / "feats.npy")
    np.save(feats_path, tiny_feats)
    out = str(tmp_path / "res" / "result.json")
    os.makedirs(os.path.dirname(out))
    rc = cli_main(["--release", tiny_release, "--prefix", "ijbb", "--features", feats_path, "--out", out])
    assert rc == 0
    printed = capsys.readouterr().out
    with open(out) as f:
        res = json.load(f)
    expected = IJBVerification(ijbb_root).evaluate_features(tiny_feats)
    assert res["tar_at_far"] == expected["tar_at_far"] and res["counts"] == expected["counts"]
    assert res["knobs"] == VerificationProtocol().knobs()
    for key, tar in expected["tar_at_far"].items():
        line = next(ln for ln in printed.splitlines() if ln.split()[:1] == [key])
        assert line.split()[1] == "%.2f" % (tar * 100)
    assert os.listdir(os.path.dirname(out)) == ["result.json"]  # no temporary file left behind
    # knobs from the command line, [orig | flip] input
    np.save(feats_path, np.hstack([tiny_feats, tiny_feats]))
    rc = cli_main(
        [
            "--release",
            ijbb_root,
            "--features",
            feats_path,
            "--flip-concat",
            "--no-faceness",
            "--image-norm",
            "--out",
            out,
        ]
    )
    assert rc == 0
    with open(out) as f:
        res2 = json.load(f)
    assert res2["knobs"]["faceness"] is False and res2["knobs"]["image_norm"] is True
    assert res2["input"] == {"flip_concat": True, "dim": 32}


def test_cli_errors(tiny_release, ijbb_root, tiny_feats, tmp_path, capsys):
    out = str(tmp_path / "r.json")
    missing = str(tmp_path / "nope.npy")
    assert cli_main(["--release", ijbb_root, "--features", missing, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and missing in err and "Traceback" not in err
    short = str(tmp_path / "short.npy")
    np.save(short, tiny_feats[:10])
    assert cli_main(["--release", ijbb_root, "--features", short, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {short}:rows: 10 feature rows but face_tid_mid has 76"
    junk = str(tmp_path / "junk.npy")
    with open(junk, "wb") as f:
        f.write(b"not numpy")
    assert cli_main(["--release", ijbb_root, "--features", junk, "--out", out]) == 2
    assert junk in capsys.readouterr().err
    np.save(short, tiny_feats)
    assert cli_main(["--release", tiny_release, "--features", short, "--out", out]) == 2  # IJBB and IJBC: which?
    assert "--prefix" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_scores_by_part_give_the_result_of_the_pair_order_scores():
    """``evaluate_verification`` scores by product blocks and sorts part by part (``scores_by_kind``, pair order
    never built); ``need_scores=True`` scores every pair in pair order. Same result dict, key for key, with both
    media kinds, tid1 on either side, blocks of a few rows; a pair listed twice falls back to pair order."""
    from harness.eval.ijb_verification import _verification, pair_layout, scores_by_kind

    rng = np.random.default_rng(11)
    n_t, d = 60, 16
    sizes = rng.integers(1, 4, n_t)  # media of 1-3 rows: some templates hold video
    templates = np.repeat(np.arange(100, 100 + n_t), sizes)
    medias = np.arange(templates.shape[0]) // 2 + 1000
    feats = rng.standard_normal((templates.shape[0], d)).astype(np.float32)
    faceness = rng.uniform(0.2, 1.0, templates.shape[0]).astype(np.float32)
    a, b = np.meshgrid(np.arange(100, 120), np.arange(120, 100 + n_t), indexing="ij")
    pairs = np.stack([a.reshape(-1), b.reshape(-1)], axis=1)
    pairs = pairs[rng.permutation(pairs.shape[0])[:500]]
    pairs[::7] = pairs[::7, ::-1]  # tid1 from the larger side for some pairs
    labels = (rng.random(pairs.shape[0]) < 0.2).astype(np.int8)
    proto = iv.VerificationProtocol()
    kw = dict(flip_concat=False, features_path=None, pair_file="<pairs>", benchmark="IJB-B", exact=False)
    for p, lab in ((pairs, labels), (np.concatenate([pairs, pairs[:3]]), np.concatenate([labels, labels[:3]]))):
        fast = iv.evaluate_verification(feats, templates, medias, faceness, p, lab, proto, benchmark="IJB-B")
        ref, scores, rows, tids, video = _verification(
            feats, templates, medias, faceness, p, lab, proto, need_scores=True, **kw
        )
        assert scores is not None and fast == ref
    # the two parts hold exactly the pair-order scores of each media kind (all, genuine)
    ref, scores, rows, tids, video = _verification(
        feats, templates, medias, faceness, pairs, labels, proto, need_scores=True, **kw
    )
    from harness.eval.ijb_verification import pool_image_features

    _, tf, max_media = pool_image_features(feats, templates, medias, faceness, proto, False, "<f>")
    video_template = max_media > 1
    groups = iv.media_groups(templates, medias)
    for block_bytes in (8 * 40, 1 << 20):
        for r in (rows, rows[:, ::-1]):  # probe side = product rows, and (more probes than galleries) = columns
            layout = pair_layout(tids[r], labels == 1, groups)
            parts = scores_by_kind(tf, layout, block_bytes=block_bytes)
            kind = video_template[r[:, 1]]  # reversed pairs: the same cosines, the kind of the other template
            assert 0 < np.count_nonzero(kind) < kind.shape[0]
            assert layout.probe_cols == (r is not rows)
            np.testing.assert_array_equal(layout.probe_used, np.isin(np.arange(tids.shape[0]), r[:, 1]))
            below = [part.buf[: part.n_lo] for part in parts]
            above = [part.buf[part.n_lo :] for part in parts]
            pivot = min(np.concatenate(above))  # one pivot for both kinds, both sides used
            assert max(np.concatenate(below)) < pivot and all(b.size for b in below) and all(a.size for a in above)
            for part, v in zip(parts, (False, True)):
                # another block shape, another operand order: a few ulps
                np.testing.assert_allclose(np.sort(part.buf), np.sort(scores[kind == v]), rtol=0, atol=1e-12)
                want_gen = np.sort(scores[(kind == v) & (labels == 1)])
                np.testing.assert_allclose(np.sort(part.gen), want_gen, rtol=0, atol=1e-12)
    twice = tids[np.concatenate([rows, rows[:1]])]
    assert pair_layout(twice, np.concatenate([labels, labels[:1]]) == 1, groups) is None
    unknown = tids[rows].copy()
    unknown[5, 1] = tids.max() + 1
    assert pair_layout(unknown, labels == 1, groups) is None  # left to the row mapping, which names the line
