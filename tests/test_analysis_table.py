"""`python -m harness.analysis_table`: the analyses profile's summary from hand-written outputs of its stages."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from harness.analysis_table import main
from harness.report.analyses import collect


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _stage1(root, run, synth, source, cos=0.5):
    _write(
        root / "stage1" / run / "metrics.json",
        {
            "fd": {"synth_target": synth, "source_target": source, "synth_over_source": synth / source},
            "identity": {"cos_synth": cos},
        },
    )


def _down(path, v2s, tiny1):
    _write(
        path,
        {
            "IJB-S": {"V2S.rank1": v2s, "V2B.rank1": v2s + 0.1, "V2V.rank1": v2s - 0.1},
            "TinyFace": {"rank1": tiny1, "rank20": tiny1 + 0.3},
            "IJB-B": {"tar@0.0001": 0.5},
            "IJB-C": {"tar@0.0001": 0.6},
        },
    )


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "analyses"
    params = {
        "out": "results/analyses",
        "cameras": ["default", "tiny"],
        "target_counts": [100, 500],
        "style_dims": [5, 20],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    _stage1(out, "camera-default", 0.1, 0.2)
    _stage1(out, "camera-tiny", 0.3, 0.4)
    _stage1(out, "count-100", 0.15, 0.2)  # count-500 has no stage-1 output: its cells stay "-"
    _stage1(out, "q-5", 0.12, 0.2, cos=0.625)
    _stage1(out, "q-20", 0.08, 0.2)
    _write(
        out / "subspaces" / "subspace_similarity.json",
        {"names": ["default", "tiny"], "S": [[1.0, 0.25], [0.25, 1.0]]},
    )
    _write(
        out / "subspaces_count" / "subspace_similarity.json",
        {"names": ["n100", "n500", "n4000"], "S": [[1, 0.5, 0.7], [0.5, 1, 0.9], [0.7, 0.9, 1]]},
    )
    _write(
        out / "target_fd" / "target_fd.json",
        {
            "target": {"folder": "results/analyses/targets/reference", "crops": 1000},
            "generators": {
                "n100": {"fd_synth_over_source": 0.8},
                "n4000": {"fd_synth_over_source": 0.4},
                "q5": {"fd_synth_over_source": 0.45},
            },
        },
    )
    _down(out / "downstream" / "count-100" / "metrics.json", 0.40, 0.05)
    _down(out / "downstream" / "full" / "metrics.json", 0.50, 0.10)
    _down(out / "downstream" / "q-5" / "metrics.json", 0.45, 0.07)
    _down(out / "magface" / "metrics.json", 0.30, 0.02)
    seeds = {0: (0.48, 0.09), 1: (0.52, 0.11), 2: (0.47, 0.08)}
    for s, (v2s, tiny1) in seeds.items():
        _down(tmp_path / "results" / "metrics" / f"cfsm_guided-s{s}.json", v2s, tiny1)
    _down(tmp_path / "results" / "metrics" / "cfsm_guided-s0.items.json", 9.0, 9.0)  # not a metrics file name
    return tmp_path, params, seeds


def test_summary_rows_come_from_the_stage_outputs(profile):
    root, params, seeds = profile
    doc = collect(params, "results/metrics")
    cams = {r["camera"]: r for r in doc["cameras"]}
    assert cams["tiny"]["fd_ratio"] == pytest.approx(0.75) and cams["tiny"]["S_to_default"] == 0.25
    counts = {r["n"]: r for r in doc["target_count"]}
    assert sorted(counts) == [100, 500, 4000]
    assert counts[100]["S_to_all"] == 0.7 and counts[500]["S_to_all"] == 0.9 and counts[4000]["S_to_all"] == 1
    assert counts[100]["downstream"]["IJB-S V2S R1"] == 0.40 and counts[4000]["downstream"]["TinyFace R1"] == 0.10
    assert "fd_ratio" not in counts[500] and counts[500]["downstream"] is None  # missing, not invented
    assert counts[100]["fd_ratio_common"] == 0.8 and counts[4000]["fd_ratio_common"] == 0.4
    assert counts[500]["fd_ratio_common"] is None and doc["common_target"]["crops"] == 1000
    assert [r["q"] for r in doc["style_dim"]] == [5, 10, 20]
    assert doc["style_dim"][1]["fd_ratio"] == pytest.approx(0.5)  # q = 10 is the default camera's run
    assert doc["style_dim"][0]["identity_cos"] == 0.625
    ref = doc["reference"]["cfsm_guided"]
    v2s = [v for v, _ in seeds.values()]
    assert ref["seeds"] == 3
    assert ref["IJB-S V2S R1"]["mean"] == pytest.approx(statistics.fmean(v2s))
    assert ref["IJB-S V2S R1"]["std"] == pytest.approx(statistics.stdev(v2s))
    assert doc["reference"]["source_only"] is None


def test_cli_writes_markdown_and_json(profile, capsys):
    root, _, seeds = profile
    assert main(["--params", "params.yaml"]) == 0
    md = (root / "results" / "analyses" / "summary.md").read_text(encoding="utf-8")
    assert md == capsys.readouterr().out
    assert json.loads((root / "results" / "analyses" / "summary.json").read_text())["cameras"][0]["camera"] == "default"
    mean = statistics.fmean(v for v, _ in seeds.values())
    std = statistics.stdev(v for v, _ in seeds.values())
    assert "| 100 | 0.750 | 0.800 | 0.500 | 0.700 | 40.00 | 50.00 | 30.00 | 5.00 | 35.00 |" in md
    assert "| 500 | - | - | - | 0.900 | - | - | - | - | - |" in md
    assert "| 5 | 0.600 | 0.450 | 0.625 | 45.00 | 55.00 | 35.00 | 7.00 | 37.00 |" in md
    assert "| 10 | 0.500 | 0.400 |" in md  # q = 10 is the default camera's run, n4000 in the common sample
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in md
    assert "| magface (seed 0) | 50.00 | 60.00 | 30.00 |" in md
    png = (root / "results" / "analyses" / "summary.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert main(["--params", "params.yaml"]) == 0  # the same inputs give the same bytes
    assert (root / "results" / "analyses" / "summary.png").read_bytes() == png


def test_no_figure_without_a_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"out": "out", "cameras": ["default"], "target_counts": [100], "style_dims": [5]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert main(["--params", "params.yaml"]) == 0
    assert (tmp_path / "out" / "summary.md").exists() and not (tmp_path / "out" / "summary.png").exists()


def test_malformed_output_is_one_line(profile, capsys):
    root, _, _ = profile
    bad = root / "results" / "analyses" / "stage1" / "q-5" / "metrics.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "q-5/metrics.json" in err[0] and "line 1" in err[0]
    assert not (root / "results" / "analyses" / "summary.md").exists()
    assert not (root / "results" / "analyses" / "summary.png").exists()
