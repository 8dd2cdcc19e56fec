"""TinyFace: the closed-set CMC (hand-worked cases, AdaFace's DIR_FAR as reference), the reader's errors, the .mat
files, and an end-to-end run on a tiny SynthFace TinyFace release."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import scipy.io

from harness.core.errors import DataFormatError
from harness.data.tinyface import DISTRACTOR_LABEL, read_tinyface
from harness.eval.tinyface import TinyFaceEvaluation, TinyFaceSettings, closed_set_cmc
from harness.synthface.tinyface import ALIGNED_DIR, TESTING_SET, TINY_TINYFACE, _save_mat, write_tinyface

D = DISTRACTOR_LABEL


def _as_features(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probe and gallery features whose inner products are exactly ``scores`` (P x G): probe = I, gallery = S^T."""
    s = np.asarray(scores, dtype=np.float32)
    return np.eye(s.shape[0], dtype=np.float32), np.ascontiguousarray(s.T)


# ------------------------------------------------------------------------------------------------- metric
GALLERY_LABELS = np.array([1, 2, D, 1, D])  # idx 0..4: two images of identity 1, one of 2, two distractors
SCORES = np.array(
    [
        # A (id 1): its mate idx 0 ties with distractor idx 2 at 0.5.
        #   high_index_first: 2, 0, 3, 1, 4 -> first mate at position 1 (rank 2)
        #   low_index_first:  0, 2, 3, 1, 4 -> first mate at position 0 (rank 1)
        [0.5, 0.1, 0.5, 0.2, 0.0],
        # B (id 2): the identity-1 image and both distractors outrank the mate: order 0, 2, 4, 1, 3 -> rank 4
        [0.9, 0.3, 0.8, 0.1, 0.7],
        # C (id 1): two mates at different ranks: order 4(d), 2(d), 1(id 2), 3(mate), 0(mate) -> first mate rank 4
        [0.1, 0.6, 0.7, 0.5, 0.9],
        # E (id 7): no mate in the gallery -> left out of the denominator (DIR_FAR keeps mated probes only)
        [0.3, 0.2, 0.1, 0.4, 0.5],
    ]
)
PROBE_LABELS = np.array([1, 2, 1, 7])


def test_cmc_hand_worked_ties_distractors_and_several_mates():
    p, g = _as_features(SCORES)
    hi = closed_set_cmc(p, g, PROBE_LABELS, GALLERY_LABELS, ranks=(1, 2, 3, 4, 5, 20))
    # first-mate positions (0-based): A 1, B 3, C 3; three mated probes
    assert hi["mated_probes"] == 3
    assert [hi[f"rank{r}"] for r in (1, 2, 3, 4, 5, 20)] == [0.0, 1 / 3, 1 / 3, 1.0, 1.0, 1.0]
    assert hi["hits"] == {"1": 0, "2": 1, "3": 1, "4": 3, "5": 3, "20": 3}
    lo = closed_set_cmc(p, g, PROBE_LABELS, GALLERY_LABELS, ranks=(1, 2, 3, 4), ties="low_index_first")
    # A now first at position 0; B and C unchanged
    assert [lo[f"rank{r}"] for r in (1, 2, 3, 4)] == [1 / 3, 1 / 3, 1 / 3, 1.0]


def test_cmc_no_mated_probe_gives_none():
    p, g = _as_features(SCORES[3:])
    r = closed_set_cmc(p, g, [7], GALLERY_LABELS, ranks=(1,))
    assert r["rank1"] is None and r["mated_probes"] == 0


def _dir_far_reference(scores, probe_labels, gallery_labels, ranks, stable_reversed: bool):
    """PFE/AdaFace DIR_FAR at FAR=1 on a dense matrix: argsort each row, reverse, any mate in the first r."""
    label = probe_labels[:, None] == gallery_labels[None, :]
    m = label.any(1)
    if stable_reversed:
        order = np.argsort(scores, axis=1, kind="stable")[:, ::-1]
    else:  # score descending, lower index first
        order = np.argsort(-scores, axis=1, kind="stable")
    sorted_label = np.take_along_axis(label, order, 1)[m]
    return [float(sorted_label[:, :r].any(1).mean()) for r in ranks]


@pytest.mark.parametrize("ties", ["high_index_first", "low_index_first"])
def test_cmc_matches_dense_dir_far_with_many_ties_and_small_blocks(ties):
    rng = np.random.default_rng(1)
    n_p, n_g = 40, 300
    scores = rng.integers(0, 6, (n_p, n_g)).astype(np.float32)  # integer scores: exact products, many ties
    gallery_labels = np.where(rng.uniform(size=n_g) < 0.5, D, rng.integers(0, 25, n_g))
    probe_labels = rng.integers(0, 30, n_p)  # some unmated
    p, g = _as_features(scores)
    ranks = (1, 5, 20)
    got = closed_set_cmc(p, g, probe_labels, gallery_labels, ranks, ties=ties, max_bytes=4 * 7 * 13)
    want = _dir_far_reference(scores, probe_labels, gallery_labels, ranks, stable_reversed=ties == "high_index_first")
    assert [got[f"rank{r}"] for r in ranks] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("ties", ["high_index_first", "low_index_first"])
def test_cmc_ties_straddling_k_inside_one_block(ties):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (40, 3000)).astype(np.float32)  # 3 levels: every top-20 boundary is a big tie
    gallery_labels = np.where(rng.uniform(size=3000) < 0.9, D, rng.integers(0, 25, 3000))
    probe_labels = rng.integers(0, 25, 40)
    p, g = _as_features(scores)
    got = closed_set_cmc(p, g, probe_labels, gallery_labels, (1, 5, 20), ties=ties)  # one block: argpartition path
    want = _dir_far_reference(
        scores, probe_labels, gallery_labels, (1, 5, 20), stable_reversed=ties == "high_index_first"
    )
    assert [got[f"rank{r}"] for r in (1, 5, 20)] == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------------------------------------- reader
def _layout(
    root,
    probe=("1_1.jpg", "2_1.jpg"),
    match=("1_2.jpg", "2_2.jpg", "2_3.jpg"),
    dis=("1.jpg", "2.jpg"),
    aligned_skip=(),
    mats=True,
):
    for folder, names in (("Probe", probe), ("Gallery_Match", match), ("Gallery_Distractor", dis)):
        o = root / TESTING_SET / folder
        a = root / ALIGNED_DIR / folder
        o.mkdir(parents=True, exist_ok=True)
        a.mkdir(parents=True, exist_ok=True)
        for n in names:
            (o / n).write_bytes(b"x")
            if n not in aligned_skip:
                (a / (os.path.splitext(n)[0] + ".jpg")).write_bytes(b"x")
    if mats:
        t = root / TESTING_SET
        _save_mat(
            str(t / "probe_img_ID_pairs.mat"),
            list(probe),
            np.array([int(n.split("_")[0]) for n in probe]),
            "probe_set",
            "probe_ids",
        )
        _save_mat(
            str(t / "gallery_match_img_ID_pairs.mat"),
            list(match),
            np.array([int(n.split("_")[0]) for n in match]),
            "gallery_set",
            "gallery_ids",
        )
    return root


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_reader_good_layout(tmp_path):
    pr = read_tinyface(_layout(tmp_path))
    assert [os.path.basename(p) for p in pr.probe_paths] == ["1_1.jpg", "2_1.jpg"]
    assert all(p.startswith(str(tmp_path / ALIGNED_DIR)) for p in pr.probe_paths + pr.gallery_paths)
    assert pr.probe_labels.tolist() == [1, 2]
    assert pr.gallery_labels.tolist() == [1, 2, 2, D, D]
    assert [os.path.basename(p) for p in pr.gallery_originals] == ["1_2.jpg", "2_2.jpg", "2_3.jpg", "1.jpg", "2.jpg"]
    assert pr.counts() == {"probes": 2, "gallery_match": 3, "distractors": 2, "identities": 2}
    assert len(pr.mat_checked) == 2


def test_reader_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_tinyface(tmp_path / "nope")
    msg = _one_line(e)
    assert str(tmp_path / "nope") in msg and "TinyFace" in msg


def test_reader_duplicate_basename_names_both(tmp_path):
    _layout(tmp_path, dis=("1.jpg", "1_1.png"), mats=False)  # distractor key "1_1" collides with Probe/1_1.jpg
    with pytest.raises(DataFormatError) as e:
        read_tinyface(tmp_path)
    msg = _one_line(e)
    assert os.path.join("Probe", "1_1.jpg") in msg and os.path.join("Gallery_Distractor", "1_1.png") in msg


def test_reader_missing_aligned_copy(tmp_path):
    _layout(tmp_path, aligned_skip=("2_3.jpg",))
    with pytest.raises(DataFormatError) as e:
        read_tinyface(tmp_path)
    msg = _one_line(e)
    assert os.path.join(TESTING_SET, "Gallery_Match", "2_3.jpg") in msg and "aligned" in msg


def test_reader_unparsable_probe_name(tmp_path):
    _layout(tmp_path, probe=("1_1.jpg", "abc.jpg"), mats=False)
    with pytest.raises(DataFormatError) as e:
        read_tinyface(tmp_path)
    msg = _one_line(e)
    assert os.path.join("Probe", "abc.jpg") in msg and "identity" in msg


def test_reader_mat_mismatches(tmp_path):
    _layout(tmp_path)
    t = tmp_path / TESTING_SET
    probe_mat = str(t / "probe_img_ID_pairs.mat")
    _save_mat(probe_mat, ["1_1.jpg", "2_1.jpg"], np.array([1, 3]), "probe_set", "probe_ids")  # wrong id
    with pytest.raises(DataFormatError) as e:
        read_tinyface(tmp_path)
    msg = _one_line(e)
    assert probe_mat in msg and "field probe_ids" in msg
    _save_mat(probe_mat, ["1_1.jpg"], np.array([1]), "probe_set", "probe_ids")  # a walked file not listed
    with pytest.raises(DataFormatError, match="field probe_set"):
        read_tinyface(tmp_path)
    assert read_tinyface(tmp_path, check_mat_files=False).num_probes == 2
    gal_mat = str(t / "gallery_match_img_ID_pairs.mat")
    _save_mat(probe_mat, ["1_1.jpg", "2_1.jpg"], np.array([1, 2]), "probe_set", "probe_ids")
    scipy.io.savemat(gal_mat, {"gallery_set": np.array([["1_2.jpg"]], dtype=object)})  # no gallery_ids
    with pytest.raises(DataFormatError) as e:
        read_tinyface(tmp_path)
    msg = _one_line(e)
    assert gal_mat in msg and "field gallery_ids" in msg


def test_mat_round_trip_loads_like_the_real_files(tmp_path):
    path = str(tmp_path / "probe_img_ID_pairs.mat")
    _save_mat(path, ["10_3.jpg", "2_1.jpg", "2_15.jpg"], np.array([10, 2, 2]), "probe_set", "probe_ids")
    m = scipy.io.loadmat(path)
    assert m["probe_set"].shape == (3, 1) and m["probe_ids"].shape == (3, 1)
    assert [p[0].item() for p in m["probe_set"]] == ["10_3.jpg", "2_1.jpg", "2_15.jpg"]  # AdaFace's access
    assert m["probe_ids"].ravel().tolist() == [10, 2, 2]


# ------------------------------------------------------------------------------------------------- end to end
@contextlib.contextmanager
def _one_torch_thread():
    """Small batches on a shared 2-core machine: one intra-op thread is 5-10x faster than two under contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_tinyface(tmp_path_factory):
    from harness.synthface.generate import config_for

    out = tmp_path_factory.mktemp("tinyface")
    cfg = config_for("tiny")
    with _one_torch_thread():
        counts = write_tinyface(cfg, str(out), TINY_TINYFACE)
    return str(out), counts, cfg


def test_release_layout_and_images(tiny_tinyface):
    from PIL import Image

    root, counts, cfg = tiny_tinyface
    assert counts["identities"] == 10 and counts["distractors"] == 40
    assert counts["probes"] >= 10 and counts["gallery_match"] >= 10
    pr = read_tinyface(root)
    assert pr.counts() == {k: counts[k] for k in ("probes", "gallery_match", "distractors", "identities")}
    assert len(pr.mat_checked) == 2
    assert pr.probe_labels.min() == 1 and pr.probe_labels.max() == 10
    with Image.open(pr.probe_paths[0]) as im:
        assert im.size == (cfg.aligned_size, cfg.aligned_size)
    widths = [Image.open(p).size[0] for p in pr.probe_originals]
    assert max(widths) < cfg.loose_size  # native low resolution


def test_end_to_end_random_model(tiny_tinyface):
    import torch

    root, counts, _ = tiny_tinyface
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
    )
    ev = TinyFaceEvaluation(root, settings=TinyFaceSettings(input_size=32))
    with _one_torch_thread():
        res = ev.evaluate(model, batch_size=32)
    assert res["benchmark"] == "TinyFace"
    r = [res["rank1"], res["rank5"], res["rank20"]]
    assert all(np.isfinite(x) and 0 <= x <= 1 for x in r) and r[0] <= r[1] <= r[2]
    assert res["counts"] == {
        "probes": counts["probes"],
        "mated_probes": counts["probes"],
        "gallery_match": counts["gallery_match"],
        "distractors": 40,
        "identities": 10,
    }
    assert res["knobs"]["flip"] == "sum" and res["knobs"]["input_size"] == 32
    # flip "sum" is the sum of the un-normalised outputs of the image and its mirror, then L2-normalised (AdaFace
    # pre_norm_vector_add + l2_norm); the scorer takes these unit features as given
    with _one_torch_thread():
        p_sum, g_sum = ev.extract_features(model, batch_size=64)
        p_none, _ = TinyFaceEvaluation(root, settings=TinyFaceSettings(input_size=32, flip="none")).extract_features(
            model
        )
    x = ev._load(ev.protocol.probe_paths[:3]).float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        want = (model(x) + model(torch.flip(x, dims=(3,)))).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(p_sum[:3], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(p_sum, p_none)
    # feature checks name the problem in one line
    with pytest.raises(DataFormatError, match="feature rows"):
        ev.evaluate_features(p_sum[:-1], g_sum)
    bad = g_sum.copy()
    bad[2, 0] = np.nan
    with pytest.raises(DataFormatError, match="row 2"):
        ev.evaluate_features(p_sum, bad, features_path="feats.npy")
