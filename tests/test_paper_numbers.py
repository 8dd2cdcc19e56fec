"""The published numbers under results/paper/ load, say what the READMEs they were transcribed from say, and use
our metric keys; malformed files fail with file:line."""

from __future__ import annotations

import csv
import json
import pathlib

import pytest

from harness.core.errors import DataFormatError
from harness.paper_numbers import main
from harness.report.paper_numbers import DEFAULT_DIR, REQUIRED_COLUMNS, load_paper_csv, load_paper_numbers, select

CFSM = "github:liufeng2915/CFSM GuidedFaceRecognition/README.md"
ADA = "github:mk-minchul/AdaFace README.md"
ARO = "github:msed-Ebrahimi/ARoFace README.md"
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def numbers():
    return load_paper_numbers()


def _one(numbers, **where):
    hits = select(numbers, **where)
    assert len(hits) == 1, (where, hits)
    return hits[0]


def test_shipped_files_load(numbers):
    files = sorted(pathlib.Path(DEFAULT_DIR).glob("*.csv"))
    assert [f.name for f in files] == ["adaface_readme.csv", "aroface_readme.csv", "cfsm_readme.csv"]
    by_source = {s: len(select(numbers, source=s)) for s in (CFSM, ADA, ARO)}
    # CFSM README: IJB-B 2x5, IJB-C 2x5, TinyFace 4x2, IJB-S 4x3x4
    assert by_source == {CFSM: 76, ADA: 51, ARO: 5}
    assert all(n.metric_definition and n.protocol for n in numbers)
    assert main([]) == 0


# (method, backbone, train_set, benchmark, metric, value) typed from CFSM's GuidedFaceRecognition/README.md
# (github.com/liufeng2915/CFSM)
CFSM_SPOT = [
    ("ArcFace", "R50", "MS1MV2", "IJB-B", "tar@1e-05", 87.26),  # column "0.001%" = 1e-5
    ("ArcFace", "R50", "MS1MV2", "IJB-B", "tar@0.0001", 94.01),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-B", "tar@1e-05", 90.95),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-B", "tar@0.001", 96.21),  # "0.1%" = 1e-3
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-B 1:N", "joined.rank1", 94.96),
    ("ArcFace", "R50", "MS1MV2", "IJB-C", "tar@1e-06", 87.24),  # IJB-C "0.0001%" = 1e-6
    ("ArcFace", "R50", "MS1MV2", "IJB-C", "tar@1e-05", 93.32),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-C", "tar@0.0001", 95.90),
    ("ArcFace", "R50", "MS1MV2", "IJB-C 1:N", "joined.rank5", 97.08),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-C 1:N", "joined.rank1", 96.31),
    ("ArcFace", "R50", "MS1MV2", "TinyFace", "rank1", 62.21),
    ("AdaFace+CFSM", "R100", "WebFace12M", "TinyFace", "rank5", 76.77),
    ("ArcFace", "R50", "MS1MV2", "IJB-S", "V2S.rank1", 58.78),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-S", "V2B.tpir@fpir=0.01", 47.28),
    ("ArcFace+CFSM", "R50", "MS1MV2", "IJB-S", "V2V.tpir@fpir=0.1", 7.41),
    ("AdaFace", "R100", "WebFace12M", "IJB-S", "V2S.tpir@fpir=0.01", 59.40),
    ("AdaFace", "R100", "WebFace12M", "IJB-S", "V2V.rank5", 50.03),
    ("AdaFace+CFSM", "R100", "WebFace12M", "IJB-S", "V2B.rank5", 78.18),
    ("AdaFace+CFSM", "R100", "WebFace12M", "IJB-S", "V2S.tpir@fpir=0.1", 66.02),
]


@pytest.mark.parametrize("method,backbone,train_set,benchmark,metric,value", CFSM_SPOT)
def test_cfsm_readme_numbers(numbers, method, backbone, train_set, benchmark, metric, value):
    n = _one(
        numbers, source=CFSM, method=method, backbone=backbone, train_set=train_set, benchmark=benchmark, metric=metric
    )
    assert n.value == value
    assert n.fraction == pytest.approx(value / 100)


def test_third_party_numbers_and_the_discrepancy_note(numbers):
    ada = _one(numbers, source=ADA, method="AdaFace", train_set="WebFace12M", metric="V2S.tpir@fpir=0.01")
    cfsm = _one(numbers, source=CFSM, method="AdaFace", train_set="WebFace12M", metric="V2S.tpir@fpir=0.01")
    assert (ada.value, cfsm.value) == (59.39, 59.40)
    assert "59.39" in cfsm.notes and "59.40" in ada.notes
    assert _one(numbers, source=ADA, method="PFE", metric="V2V.tpir@fpir=0.01").value == 0.84
    assert (
        _one(numbers, source=ADA, method="AdaFace", train_set="MS1MV2", benchmark="TinyFace", metric="rank1").value
        == 68.21
    )
    assert _one(numbers, source=ADA, method="AdaFace", train_set="WebFace4M", metric="V2S.rank5").value == 75.29
    assert _one(numbers, source=ARO, method="ArcFace+CFSM", metric="rank1").value == 64.69
    assert _one(numbers, source=ARO, method="URL", metric="V2S.tpir@fpir=0.01").value == 41.06
    # the README's FAR columns are percentages: the definition names both
    n = _one(numbers, source=CFSM, method="ArcFace", benchmark="IJB-C", metric="tar@1e-06")
    assert "FAR=1e-06" in n.metric_definition and '"0.0001%"' in n.metric_definition


def test_metric_keys_are_the_ones_our_evaluators_report(numbers):
    path = ROOT / "results" / "metrics" / "source_only-s0.json"
    if not path.is_file():
        pytest.skip("no pipeline metrics file")
    ours = json.loads(path.read_text())
    for n in select(numbers, source=CFSM):
        assert n.benchmark in ours, n.where
        assert n.metric in ours[n.benchmark], (n.where, n.metric)


def _write(path, rows, header=REQUIRED_COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _row(**kw):
    base = dict(
        source="github:a/b README.md",
        source_version="",
        method="M",
        backbone="R50",
        train_set="T",
        benchmark="IJB-B",
        protocol="p",
        metric="tar@1e-05",
        value="87.26",
        metric_definition="d",
        notes="",
    )
    base.update(kw)
    return [base[c] for c in REQUIRED_COLUMNS]


@pytest.mark.parametrize(
    "rows,line,needle",
    [
        ([_row(), _row(metric="tar@0.0001", value="abc")], 3, "not a plain decimal"),
        ([_row(value="101.5")], 2, "outside [0, 100]"),
        ([_row(value="nan")], 2, "not a plain decimal"),
        ([_row(), _row(value="1.00")], 3, "duplicate of"),
        ([_row(metric="tar@1e-5")], 2, "not a key harness.run.compact_metrics gives for IJB-B"),
        ([_row(benchmark="LFW")], 2, "benchmark 'LFW'"),
        ([_row(method="")], 2, "empty method"),
        ([_row()[:-1]], 2, "10 fields"),
    ],
)
def test_malformed_csv_fails_with_file_and_line(tmp_path, rows, line, needle):
    path = _write(tmp_path / "bad.csv", rows)
    with pytest.raises(DataFormatError) as exc:
        load_paper_csv(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:line {line}: ") and needle in msg and "\n" not in msg


def test_missing_column_and_cross_file_duplicates(tmp_path, capsys):
    path = _write(tmp_path / "a.csv", [_row()[:-1]], header=REQUIRED_COLUMNS[:-1])
    with pytest.raises(DataFormatError, match=r"a\.csv:line 1: header lacks column\(s\) notes"):
        load_paper_csv(path)
    d = tmp_path / "dir"
    d.mkdir()
    _write(d / "x.csv", [_row()])
    second = _write(d / "y.csv", [_row(metric="tar@0.001"), _row(value="12.00")])
    with pytest.raises(DataFormatError, match=rf"{second}:line 3: duplicate of .*x\.csv:line 2"):
        load_paper_numbers(d)
    assert main([str(d)]) == 2 and "duplicate" in capsys.readouterr().err


def test_published_model_names_only_the_same_model():
    from harness.report.paper_numbers import matching, published_model

    assert published_model("source_only", "arcface", "r50", "MS1MV2") == ("ArcFace", "R50", "MS1MV2")
    assert published_model("cfsm_guided", "adaface", "r100", "WebFace12M") == ("AdaFace+CFSM", "R100", "WebFace12M")
    for args in (
        ("cfsm_random", "arcface", "r50", "MS1MV2"),
        ("source_only", "arcface", "small", "MS1MV2"),
        ("source_only", "arcface", "r50", "SynthFace"),
        ("source_only", "arcface", "r50", None),
        ("source_only", None, "r50", "MS1MV2"),
    ):
        assert published_model(*args) is None, args
    numbers = load_paper_numbers()
    got = matching(numbers, published_model("source_only", "arcface", "r50", "MS1MV2"), "TinyFace", "rank1")
    assert [(n.method, n.backbone, n.value_text) for n in got] == [("ArcFace", "R50", "62.21")]
    # ARoFace's ArcFace+CFSM states no backbone: never matched, even with the CFSM README's R50
    got = matching(numbers, published_model("cfsm_guided", "arcface", "r50", "MS1MV2"), "TinyFace", "rank1")
    assert [(n.source.split()[0], n.value_text) for n in got] == [("github:liufeng2915/CFSM", "63.01")]
    assert matching(numbers, None, "TinyFace", "rank1") == []
