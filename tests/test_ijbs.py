"""IJB-S: the SynthFace writer, the cs6 protocol reader (PFE template rules) and the PFE/AdaFace identification
metrics."""

from __future__ import annotations

import filecmp
import os

import numpy as np
import pytest
import torch

from harness.core.errors import DataFormatError
from harness.data.ijbs import read_ijbs
from harness.eval.ijbs import IJBSEvaluation, IJBSSettings, average_fuse, find_threshold_by_fpir, identification_metrics
from harness.synthface.generate import config_for
from harness.synthface.ijbs import TINY_IJBS, IJBSSpec, write_ijbs


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Rendering and the tiny model are several times faster on one thread on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def scores_as_features(s_g1, s_g2):
    """Features whose inner products are exactly the given score matrices: probe = identity rows, gallery = S.T."""
    s_g1 = np.asarray(s_g1, np.float32)
    s_g2 = np.asarray(s_g2, np.float32)
    p = s_g1.shape[0]
    return np.eye(p, dtype=np.float32), s_g1.T.copy(), s_g2.T.copy()


# ------------------------------------------------------------------------------------------- threshold rule


def test_threshold_rule_truncates_and_uses_eps_when_k_is_zero():
    s = [0.1, 0.6, 0.4]  # sorted descending: 0.6, 0.4, 0.1
    assert find_threshold_by_fpir(s, 0.1) == pytest.approx(0.6 + 1e-8, abs=0)  # k = int(0.3) = 0 -> s[0] + 1e-8
    assert find_threshold_by_fpir(s, 0.5) == 0.6  # k = int(1.5) = 1 -> s[0] (truncation, not rounding to 2)
    assert find_threshold_by_fpir(s, 0.7) == 0.4  # k = int(2.1) = 2 -> s[1]
    s20 = np.arange(20) / 20.0  # descending: 0.95, 0.90, ...
    assert find_threshold_by_fpir(s20, 0.1) == 0.90  # k = 2 exactly -> s[1]
    assert find_threshold_by_fpir(s20, 0.01) == 0.95 + 1e-8  # k = int(0.2) = 0
    with pytest.raises(ValueError):
        find_threshold_by_fpir([], 0.1)


# ------------------------------------------------------------------------------------------- metrics by hand


def test_closed_set_ranks_with_ties():
    # G1 subjects 1, 2, 3 (columns 0-2), G2 subjects 4, 5, 6 (columns 3-5) of hstack(G1, G2).
    # PFE DIR_FAR: np.argsort(row)[::-1], read as stable: among equal scores the higher column comes first.
    s1 = [
        [0.5, 0.5, 0.2],  # A, subject 1, mate col 0: col 1 ties and comes first -> rank 2
        [0.5, 0.5, 0.1],  # B, subject 2, mate col 1: ties col 0, higher column first -> rank 1
        [0.9, 0.8, 0.7],  # C, subject 4, mate col 3 (0.6) below 0.95, 0.9, 0.8, 0.7, 0.65 -> rank 6
        [0.3, 0.0, 0.0],  # D, subject 6, mate col 5 (0.3) ties col 0, G2 (higher columns) first -> rank 1
        [0.9, 0.9, 0.9],
    ]  # E, subject 9: no mate -> not in the closed set at all
    s2 = [[0.1, 0.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.95, 0.65], [0.0, 0.0, 0.3], [0.9, 0.9, 0.9]]
    p, g1, g2 = scores_as_features(s1, s2)
    out = identification_metrics(p, g1, g2, [1, 2, 4, 6, 9], [1, 2, 3], [4, 5, 6], ranks=(1, 2, 5, 10), fpirs=(0.1,))
    m = out["metrics"]
    # 4 mated probes (E excluded): ranks 2, 1, 6, 1
    assert m["rank1"] == 2 / 4
    assert m["rank2"] == 3 / 4
    assert m["rank5"] == 3 / 4
    assert m["rank10"] == 1.0
    assert out["counts"] == {"probes": 5, "mated": 4, "unmated": 1}


def test_open_set_threshold_boundary_and_gallery_average():
    # G1 subjects 1, 2; G2 subject 3. Columns of S_G1: [subject 1, subject 2]; S_G2: [subject 3].
    s1 = [
        [0.8, 0.1],  # P0 subject 1: rank-1 correct, mate score 0.8
        [0.2, 0.6],  # P1 subject 2: rank-1 correct, mate score 0.6 == the highest non-mated max (boundary)
        [0.5, 0.7],  # P2 subject 1: mate 0.5 but 0.7 ranks first -> never a success
        [0.6, 0.3],  # N0 subject 9: non-mated in G1, max 0.6
        [0.2, 0.4],  # N1 subject 9: non-mated in G1, max 0.4
        [0.1, 0.05],
    ]  # N2 subject 3: non-mated in G1, max 0.1
    s2 = [[0.0], [0.0], [0.0], [0.25], [0.5], [0.9]]
    p, g1, g2 = scores_as_features(s1, s2)
    out = identification_metrics(p, g1, g2, [1, 2, 1, 9, 9, 3], [1, 2], [3], ranks=(1, 2), fpirs=(0.1, 0.5, 0.7))
    G1, G2, m = out["by_gallery"]["G1"], out["by_gallery"]["G2"], out["metrics"]
    # G1: non-mated maxima sorted 0.6, 0.4, 0.1 (n = 3).
    #   FPIR 0.1: k = int(0.3) = 0 -> thr = 0.6 + 1e-8, compared in the scores' float32 where it is 0.6 again:
    #   P0 passes and so does P1, whose mate equals the largest non-mated maximum -> 2/3
    #   FPIR 0.5: k = int(1.5) = 1 -> thr = 0.6: P0 and P1 pass (>=) -> 2/3
    #   FPIR 0.7: k = int(2.1) = 2 -> thr = 0.4: P0, P1 -> 2/3
    assert (G1["mated"], G1["non_mated"]) == (3, 3)
    assert G1["tpir@fpir=0.1"] == pytest.approx(2 / 3)
    assert G1["tpir@fpir=0.5"] == pytest.approx(2 / 3)
    assert G1["tpir@fpir=0.7"] == pytest.approx(2 / 3)
    assert G1["threshold@fpir=0.5"] == pytest.approx(0.6, abs=1e-7)
    assert G1["achieved_fpir@fpir=0.1"] == pytest.approx(1 / 3) and G1["achieved_fpir@fpir=0.5"] == pytest.approx(1 / 3)
    # G2: mated N2 (0.9, only column); non-mated maxima 0.5, 0.25, 0, 0, 0 (n = 5); every threshold <= 0.5 + 1e-8
    assert (G2["mated"], G2["non_mated"]) == (1, 5)
    assert G2["tpir@fpir=0.1"] == 1.0 and G2["threshold@fpir=0.1"] == pytest.approx(0.5 + 1e-8, abs=1e-7)
    assert G2["threshold@fpir=0.5"] == pytest.approx(0.25)  # k = int(2.5) = 2 -> s[1]
    # reported = (G1 + G2) / 2
    assert m["tpir@fpir=0.1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["tpir@fpir=0.5"] == pytest.approx((2 / 3 + 1) / 2)
    # closed set over hstack: P0, P1, N2 rank 1; P2 rank 2; N0, N1 (subject 9) excluded
    assert m["rank1"] == 3 / 4 and m["rank2"] == 1.0
    assert out["counts"] == {"probes": 6, "mated": 4, "unmated": 2}


def test_open_set_without_non_mated_probes_is_none():
    p, g1, g2 = scores_as_features([[0.9], [0.1]], [[0.1], [0.8]])
    out = identification_metrics(p, g1, g2, [1, 2], [1], [2], fpirs=(0.01,))
    # every probe is mated in the joined gallery; G1 has non-mated P1, G2 has non-mated P0, so both defined here
    assert out["metrics"]["rank1"] == 1.0 and out["metrics"]["tpir@fpir=0.01"] == 1.0
    out = identification_metrics(p, g1, g2, [1, 1], [1], [2], fpirs=(0.01,))
    assert out["by_gallery"]["G1"]["non_mated"] == 0 and out["by_gallery"]["G1"]["tpir@fpir=0.01"] is None
    assert out["metrics"]["tpir@fpir=0.01"] is None


def test_two_mates_name_the_gallery_file_and_line():
    p, g1, g2 = scores_as_features([[0.5, 0.1]], [[0.2]])
    with pytest.raises(
        DataFormatError, match=r"^g2\.csv:line 7: subject 1 has a second template .*first: g1\.csv:line 2"
    ):
        identification_metrics(p, g1, g2, [1], [1, 5], [1], g1_where=("g1.csv", [2, 3]), g2_where=("g2.csv", [7]))


def test_average_fuse_by_hand():
    f = np.array([[3, 4], [1, 0], [0, 2]], np.float32)
    t, empty = average_fuse(f, [[0, 2], [1], []])
    # mean of [3, 4] and [0, 2] = [1.5, 3], norm sqrt(11.25) = 3.3541; [1, 0] / (1 + 1e-8); empty -> zeros
    np.testing.assert_allclose(t[0], np.array([1.5, 3]) / (np.sqrt(11.25) + 1e-8), rtol=1e-6)
    np.testing.assert_allclose(t[1], [1 / (1 + 1e-8), 0], rtol=1e-7)
    assert (t[2] == 0).all() and empty.tolist() == [False, False, True]


# ------------------------------------------------------------------------------------------- protocol reader

META = """SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT,FRAME
1,img/100.jpg,0,0,10,10,
1,img/101.jpg,0,0,10,10,
2,img/200.jpg,0,0,10,10,
3,img/300.jpg,0,0,10,10,
1,videos/5004.mp4,5,5,9,9,10
2,videos/5004.mp4,50,5,9,9,10
1,videos/5004.mp4,6,5,9,9,20
2,videos/5004.mp4,51,5,9,9,30
3,videos/5005.mp4,7,7,9,9,7
1,videos/5006.mp4,7,7,9,9,1
3,videos/5007.mp4,7,7,9,9,2
"""
FILES = {
    "cs6_metadata.csv": META,
    "cs6_surveillance_to_single-booking_probe.csv": "FILENAME\nvideos/5004.mp4\nvideos/5005.mp4\n",
    "cs6_surveillance_to_surveillance_probe.csv": "FILENAME\nvideos/5004.mp4\n",
    "galleries/cs6_surveillance_to_single_g1.csv": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,1,img/100.jpg\n",
    "galleries/cs6_surveillance_to_single_g2.csv": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n2,3,img/300.jpg\n",
    "galleries/cs6_surveillance_to_booking_g1.csv": (
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,1,img/100.jpg\n5,1,img/101.jpg\n"
    ),
    "galleries/cs6_surveillance_to_booking_g2.csv": (
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n6,3,img/300.jpg\n7,2,img/200.jpg\n"
    ),
    "galleries/cs6_surveillance_to_surveillance_g1.csv": (
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n8,1,videos/5006.mp4\n8,1,videos/5006.mp4\n"
    ),
    "galleries/cs6_surveillance_to_surveillance_g2.csv": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n9,3,videos/5007.mp4\n",
}


def write_protocol(root, **overrides) -> str:
    for name, text in {**FILES, **overrides}.items():
        path = os.path.join(root, "protocols", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
    return str(root)


def test_templates_rebuilt_by_the_published_rules(tmp_path):
    proto = read_ijbs(write_protocol(tmp_path))
    t = proto.templates
    video = [(x.subject, x.source, x.images) for x in t if x.kind == "video"]
    # one template per (subject, video) pair; video 5004 holds two subjects -> two templates
    assert video == [
        (1, "videos/5004.mp4", ("1/videos_5004_10.jpg", "1/videos_5004_20.jpg")),
        (2, "videos/5004.mp4", ("2/videos_5004_10.jpg", "2/videos_5004_30.jpg")),
        (3, "videos/5005.mp4", ("3/videos_5005_7.jpg",)),
        (1, "videos/5006.mp4", ("1/videos_5006_1.jpg",)),
        (3, "videos/5007.mp4", ("3/videos_5007_2.jpg",)),
    ]
    assert proto.probes["single-booking"] == [0, 1, 2] and proto.probes["surveillance"] == [0, 1]
    probes, g1, g2, f1, f2 = proto.protocol("V2B")
    assert probes == [0, 1, 2] and f1.endswith("cs6_surveillance_to_booking_g1.csv")
    # booking: one template per subject holding all its listed images
    assert [(t[i].subject, t[i].images) for i in g1] == [(1, ("1/img_100.jpg", "1/img_101.jpg"))]
    # booking template order = PFE's list(set(subjects)): the file lists 3 then 2, the set iterates 2, 3
    assert list(set([3, 2])) == [2, 3]
    assert [(t[i].subject, t[i].images) for i in g2] == [(2, ("2/img_200.jpg",)), (3, ("3/img_300.jpg",))]
    _, s1, s2, _, _ = proto.protocol("V2S")
    assert [t[i].images for i in s1 + s2] == [("1/img_100.jpg",), ("3/img_300.jpg",)]
    v_probes, v1, v2, _, _ = proto.protocol("V2V")
    assert v_probes == [0, 1] and v1 == [3] and v2 == [4]  # the repeated V2V gallery row is one template
    assert proto.metadata_rows == 11 and proto.metadata_video_rows == 7 and proto.metadata_still_rows == 4
    assert len(proto.images()) == 11
    # the protocol folder itself is accepted as root too
    assert len(read_ijbs(os.path.join(tmp_path, "protocols")).templates) == len(t)


def test_evaluate_features_fuses_and_counts_missing_frames(tmp_path):
    root = write_protocol(tmp_path)
    ev = IJBSEvaluation(root)
    feats = {p: np.array([1.0, 0.0, 0.0]) for p in ev.protocol.images()}
    for p in feats:  # subject k's images point along axis k - 1
        feats[p] = np.eye(3)[int(p.split("/")[0]) - 1] * (2.0 + len(p))  # norms differ: fusion normalises
    del feats["3/videos_5005_7.jpg"]  # an alignment failure: subject 3's only frame in 5005 -> empty probe template
    feats["9/videos_1_1.jpg"] = np.ones(3)  # not in the protocol: ignored, counted
    res = ev.evaluate_features(feats)
    c = res["counts"]
    assert (c["frames_listed"], c["frames_missing"], c["stills_listed"], c["stills_missing"]) == (7, 1, 4, 0)
    assert c["features_unused"] == 1 and c["empty_templates"] == 1
    assert c["V2S"]["empty_probe_templates"] == 1 and c["V2V"]["empty_probe_templates"] == 0
    # V2S: probes (1,5004), (2,5004), (3,5005 empty); G1 = {1}, G2 = {3}; subject 2 unmated.
    assert (c["V2S"]["mated"], c["V2S"]["unmated"]) == (2, 1)
    # subject 1 scores 1 with its mate; the empty probe scores 0 everywhere, ties -> the higher column (1, its
    # mate subject 3 in G2) first (PFE's reversed argsort): rank 1
    assert res["V2S"]["rank1"] == 1.0 and res["V2S"]["rank5"] == 1.0
    # V2B: G2 = list(set([3, 2])) = [2, 3]: subject 2 is mated now, and its probe scores 1 with its booking
    # template; the empty probe's mate (subject 3) is the highest column of hstack(G1, G2): first among the zeros
    assert res["V2B"]["rank1"] == 1.0
    assert set(res["V2S"]) == {"rank1", "rank5", "rank10", "rank20", "tpir@fpir=0.01", "tpir@fpir=0.1"}
    assert res["benchmark"] == "IJB-S" and res["knobs"]["pooling"].startswith("mean")


def test_two_mates_in_a_gallery_csv_is_an_error(tmp_path):
    root = write_protocol(
        tmp_path,
        **{
            "galleries/cs6_surveillance_to_single_g1.csv": (
                "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,1,img/100.jpg\n2,1,img/101.jpg\n"
            )
        },
    )
    ev = IJBSEvaluation(root)
    feats = {p: np.ones(4) for p in ev.protocol.images()}
    with pytest.raises(
        DataFormatError, match=r"cs6_surveillance_to_single_g1\.csv:line 3: subject 1 has a second template"
    ):
        ev.evaluate_features(feats)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"cs6_metadata.csv": META.replace(",FRAME\n", "\n", 1)}, r"cs6_metadata\.csv:field FRAME: "),
        ({"cs6_metadata.csv": META.replace("SUBJECT_ID", "SUBJECT", 1)}, r"cs6_metadata\.csv:field SUBJECT_ID: "),
        (
            {"cs6_metadata.csv": META.replace("3,videos/5005", "x,videos/5005")},
            r"cs6_metadata\.csv:line 10: SUBJECT_ID 'x'",
        ),
        ({"cs6_metadata.csv": META.replace("img/300.jpg", "pics/300.jpg")}, r"cs6_metadata\.csv:line 5: FILENAME"),
        ({"cs6_metadata.csv": META.replace("7,7,9,9,7\n", "7,7,9,9,\n")}, r"cs6_metadata\.csv:line 10: empty FRAME"),
        (
            {"galleries/cs6_surveillance_to_booking_g2.csv": "TEMPLATE_ID,SUBJECT,FILENAME\n6,3,img/300.jpg\n"},
            r"cs6_surveillance_to_booking_g2\.csv:field SUBJECT_ID: ",
        ),
        (
            {
                "galleries/cs6_surveillance_to_booking_g2.csv": (
                    "TEMPLATE_ID,SUBJECT_ID,FILENAME\n6,3,img/300.jpg\n6,3,img/999.jpg\n"
                )
            },
            r"cs6_surveillance_to_booking_g2\.csv:line 3: image 'img/999\.jpg' of subject 3 "
            r"is not in cs6_metadata\.csv",
        ),
        (
            {"galleries/cs6_surveillance_to_single_g1.csv": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,2,img/100.jpg\n"},
            r"cs6_surveillance_to_single_g1\.csv:line 2: image 'img/100\.jpg' of subject 2",
        ),
        (
            {
                "galleries/cs6_surveillance_to_surveillance_g2.csv": (
                    "TEMPLATE_ID,SUBJECT_ID,FILENAME\n9,1,videos/5007.mp4\n"
                )
            },
            r"cs6_surveillance_to_surveillance_g2\.csv:line 2: subject 1 in 'videos/5007\.mp4' has no rows",
        ),
        (
            {"cs6_surveillance_to_surveillance_probe.csv": "FILENAME\nvideos/5004.mp4\nvideos/9999.mp4\n"},
            r"cs6_surveillance_to_surveillance_probe\.csv:line 3: probe video 'videos/9999\.mp4' has no rows",
        ),
        (
            {"cs6_surveillance_to_surveillance_probe.csv": "FILENAME\nvideos/5004.mp4\n\nvideos/5005.mp4\n"},
            r"cs6_surveillance_to_surveillance_probe\.csv:line 3: blank line",
        ),
    ],
)
def test_bad_protocol_files_give_one_line_errors(tmp_path, override, pattern):
    root = write_protocol(tmp_path, **override)
    with pytest.raises(DataFormatError, match=pattern) as e:
        read_ijbs(root)
    assert "\n" not in str(e.value)


def test_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: IJB-S root folder not found"):
        read_ijbs(tmp_path / "nowhere")
    root = write_protocol(tmp_path)
    os.remove(os.path.join(root, "protocols", "galleries", "cs6_surveillance_to_booking_g1.csv"))
    with pytest.raises(
        FileNotFoundError, match=r"cs6_surveillance_to_booking_g1\.csv: IJB-S protocol file not found"
    ) as e:
        read_ijbs(root)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"cs6_metadata\.csv: IJB-S protocol file not found"):
        read_ijbs(tmp_path / "protocols" / "galleries")


def test_bad_features_name_the_source(tmp_path):
    ev = IJBSEvaluation(write_protocol(tmp_path))
    paths = ev.protocol.images()
    mat = np.ones((len(paths), 4), np.float32)
    mat[3, 1] = np.nan
    with pytest.raises(DataFormatError, match=r"^feats\.npy:row 3: feature of .* is not finite"):
        ev.evaluate_features((paths, mat), features_path="feats.npy")
    with pytest.raises(DataFormatError, match=r"^<features>:rows: "):
        ev.evaluate_features((paths[:-1], np.ones((len(paths), 4), np.float32)))
    with pytest.raises(DataFormatError, match=r"row 1: image .* repeats row 0"):
        ev.evaluate_features(([paths[0], paths[0]], np.ones((2, 4), np.float32)))


def test_settings_validation_and_knobs():
    with pytest.raises(ValueError):
        IJBSSettings(channel_order="RBG")
    with pytest.raises(ValueError):
        IJBSSettings(fpirs=(0.0,))
    k = IJBSSettings(channel_order="BGR", input_size=112).knobs()
    assert (
        k["channel_order"] == "BGR" and k["input_size"] == 112 and k["flip"] == "none" and k["fpirs"] == ["0.01", "0.1"]
    )


# ------------------------------------------------------------------------------------------- SynthFace release


def tiny_model(dim=16):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, dim),
    )


@pytest.fixture(scope="module")
def tiny_ijbs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ijbs"))
    counts = write_ijbs(config_for("tiny"), out, TINY_IJBS)
    return os.path.join(out, "IJB-S"), counts


def test_tiny_release_layout_and_counts(tiny_ijbs):
    root, counts = tiny_ijbs
    proto = read_ijbs(root)
    videos = [t for t in proto.templates if t.kind == "video"]
    assert len(videos) == counts["video_templates"]
    assert counts["two_subject_videos"] >= 1
    assert len({t.source for t in videos}) == counts["probe_videos"] + counts["gallery_videos"]
    assert proto.metadata_rows == counts["metadata_rows"] == counts["stills"] + counts["frames"]
    # galleries: G1 and G2 disjoint in subjects, one single template per subject, V2V videos never probes
    for kind in ("single", "booking", "video"):
        s1 = [proto.templates[i].subject for i in proto.galleries[kind][0]]
        s2 = [proto.templates[i].subject for i in proto.galleries[kind][1]]
        assert (
            len(set(s1)) == len(s1) == counts["gallery_g1_subjects"]
            and len(set(s2)) == len(s2) == counts["gallery_g2_subjects"]
        )
        assert not set(s1) & set(s2)
    probe_videos = {proto.templates[i].source for i in proto.probes["surveillance"]}
    assert not probe_videos & {proto.templates[i].source for g in proto.galleries["video"] for i in g}
    # alignment failures: in the metadata, absent from aligned/
    present, missing = IJBSEvaluation(root).image_list()
    assert len(missing) == counts["frames_failed_alignment"] and all("/videos_" in p for p in missing)
    assert len(present) == counts["frames_aligned"] + counts["stills"]
    n_files = sum(len(files) for _, _, files in os.walk(os.path.join(root, "aligned")))
    assert n_files == len(present)


def test_synthface_csvs_parse_with_adafaces_own_rules(tiny_ijbs, tmp_path):
    """PFE ``IJBSTest.init_proto`` (AdaFace ``validation_lq/PFE/ijbs.py``) reads each line with ``readlines`` and
    ``x.split(',')``, newline kept: metadata col0 SUBJECT_ID, col1 FILENAME; galleries col1 SUBJECT_ID, col2
    FILENAME; the V2V gallery pairs must be found by ``video_meta_list.index((col1, col2))``; probe lists are
    ``x.split('\\n')[0]``. SynthFace writes FILENAME before further columns (the NIST order), so nothing keeps a
    newline. The project's reader reads that layout and the three-column one (FILENAME last) alike."""
    import shutil

    root, _ = tiny_ijbs
    pdir = os.path.join(root, "protocols")

    def lines(rel):
        with open(os.path.join(pdir, rel)) as f:
            return f.readlines()[1:]

    meta = lines("cs6_metadata.csv")
    video_meta_list = list({(x.split(",")[0], x.split(",")[1]) for x in meta if x.split(",")[1].startswith("videos")})
    for g in (1, 2):
        for x in lines(f"galleries/cs6_surveillance_to_surveillance_g{g}.csv"):
            video_meta_list.index((x.split(",")[1], x.split(",")[2]))  # raises ValueError if not found
        for kind in ("single", "booking"):
            for x in lines(f"galleries/cs6_surveillance_to_{kind}_g{g}.csv"):
                assert x.split(",")[2].startswith("img/") and "\n" not in x.split(",")[2]
    videos = {v for _, v in video_meta_list}
    for name in ("cs6_surveillance_to_single-booking_probe.csv", "cs6_surveillance_to_surveillance_probe.csv"):
        assert all(x.split("\n")[0] in videos for x in lines(name))
    # the same protocol from a copy whose galleries keep only TEMPLATE_ID,SUBJECT_ID,FILENAME (FILENAME last)
    old = str(tmp_path / "old")
    shutil.copytree(pdir, os.path.join(old, "protocols"))
    for f in os.listdir(os.path.join(old, "protocols", "galleries")):
        path = os.path.join(old, "protocols", "galleries", f)
        with open(path) as fh:
            rows = fh.read().splitlines()
        with open(path, "w") as fh:
            fh.write("".join(",".join(r.split(",")[:3]) + "\n" for r in rows))
    new_p, old_p = read_ijbs(root), read_ijbs(old)
    assert [(t.subject, t.kind, t.source, t.images) for t in new_p.templates] == [
        (t.subject, t.kind, t.source, t.images) for t in old_p.templates
    ]
    assert new_p.galleries == old_p.galleries and new_p.probes == old_p.probes


def test_tiny_release_is_deterministic(tiny_ijbs, tmp_path):
    root, counts = tiny_ijbs
    assert write_ijbs(config_for("tiny"), str(tmp_path), TINY_IJBS) == counts
    cmp = filecmp.dircmp(os.path.join(root, "protocols"), str(tmp_path / "IJB-S" / "protocols"))
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    one = sorted(os.listdir(os.path.join(root, "aligned")))[0]
    a, b = os.path.join(root, "aligned", one), str(tmp_path / "IJB-S" / "aligned" / one)
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    assert all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in os.listdir(a))


def test_end_to_end_with_a_tiny_model(tiny_ijbs):
    root, counts = tiny_ijbs
    ev = IJBSEvaluation(root)
    res = ev.evaluate(tiny_model(), batch_size=32)
    for name in ("V2S", "V2B", "V2V"):
        assert set(res[name]) == {"rank1", "rank5", "rank10", "rank20", "tpir@fpir=0.01", "tpir@fpir=0.1"}
        for v in res[name].values():
            assert v is not None and np.isfinite(v) and 0.0 <= v <= 1.0
        assert res[name]["rank1"] <= res[name]["rank5"] <= res[name]["rank10"] <= res[name]["rank20"]
        c = res["counts"][name]
        assert c["mated"] + c["unmated"] == c["probes"] > 0
        assert c["G1"]["mated"] + c["G1"]["non_mated"] == c["probes"]
    c = res["counts"]
    assert c["frames_missing"] == counts["frames_failed_alignment"] > 0
    assert c["frames_listed"] == counts["frames"] and c["stills_missing"] == 0
    assert res["input"]["dim"] == 16 and res["knobs"]["input_size"] is None


def test_oracle_features_on_the_tiny_release(tiny_ijbs):
    """Features = one-hot subject of the folder an aligned crop sits in: every non-empty mated probe is found at
    rank 1 with score 1, non-mated maxima are 0, so TPIR(Gi) = share of Gi's mated probes whose template (and mate
    template) kept a frame."""
    root, _ = tiny_ijbs
    ev = IJBSEvaluation(root)
    present, _ = ev.image_list()
    n_sub = 1 + max(int(p.split("/")[0]) for p in present)
    feats = {p: np.eye(n_sub)[int(p.split("/")[0])] * 5.0 for p in present}
    res = ev.evaluate_features(feats)
    proto, have = ev.protocol, set(present)
    nonempty = lambda t: any(p in have for p in proto.templates[t].images)  # noqa: E731
    for name in ("V2S", "V2B", "V2V"):
        probes, g1, g2, _, _ = proto.protocol(name)
        tp = []
        for g in (g1, g2):
            by_subject = {proto.templates[t].subject: t for t in g}
            mated = [t for t in probes if proto.templates[t].subject in by_subject]
            ok = [nonempty(t) and nonempty(by_subject[proto.templates[t].subject]) for t in mated]
            tp.append(sum(ok) / len(ok))
        for x in ("0.01", "0.1"):
            assert res[name][f"tpir@fpir={x}"] == pytest.approx(sum(tp) / 2)


def test_extract_features_channels_size_and_emb_norm_output(tiny_ijbs):
    root, _ = tiny_ijbs
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            seen.setdefault(self.tag, x.clone())
            emb = torch.nn.functional.normalize(x.mean((2, 3)), dim=1)
            return emb, torch.full((x.shape[0], 1), 3.0)  # AdaFace-style (unit embedding, norm)

    paths, f_rgb = IJBSEvaluation(root).extract_features(Spy("rgb"), batch_size=8)
    _, f_bgr = IJBSEvaluation(root, IJBSSettings(channel_order="BGR", input_size=32)).extract_features(
        Spy("bgr"), batch_size=8
    )
    x = seen["rgb"]
    assert x.shape[-1] == config_for("tiny").aligned_size and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert seen["bgr"].shape[-2:] == (32, 32)
    np.testing.assert_allclose(np.linalg.norm(f_rgb, axis=1), 3.0, rtol=1e-5)  # emb * norm
    np.testing.assert_allclose(
        f_bgr[:, ::-1] / 3.0, f_rgb / 3.0, atol=0.02
    )  # channels reversed (resize shifts means slightly)
    assert len(paths) == len(f_rgb)


def test_default_spec_is_sane():
    spec = IJBSSpec()
    assert spec.subjects == 100 and spec.probe_strength == (0.5, 1.0) and 0 < spec.unenrolled_fraction < 1
