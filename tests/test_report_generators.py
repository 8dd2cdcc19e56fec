"""The CFSM generator's quality beside the CFSM rows (harness.report.generators): the targets block of a stage-1
``metrics.json`` or, for an older file, the targets derived from its FD ratio and identity gap; the generator found
from the result document's ``hparams.generator``; the tables and the report say plainly when it missed them, and
the numbers of the cells do not change."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest

from harness.core.errors import DataFormatError
from harness.report.generators import (
    FD_RATIO_MAX,
    IDENTITY_GAP_MIN,
    metrics_path_of,
    quality_text,
    read_targets,
    targets_of,
)
from harness.tables import main

GOLDEN = pathlib.Path(__file__).parent / "golden" / "tables"
OLD_MET = {
    "fd": {"synth_over_source": 0.59514},
    "identity": {"gap": -0.02952},
    "targets": {"fd_ratio_le_0.6": True, "identity_gap_le_0.05": True},
}  # the shape written before the block
OLD_MISSED = {"fd": {"synth_over_source": 1.03}, "identity": {"gap": -0.087}}


def test_thresholds_are_the_stage1_targets():
    assert (FD_RATIO_MAX, IDENTITY_GAP_MIN) == (0.6, -0.05)


@pytest.mark.parametrize(
    "metrics, met, misses",
    [
        (OLD_MET, True, []),
        (OLD_MISSED, False, ["FD ratio 1.030 > 0.6", "identity gap −0.087 < −0.05"]),
        ({"fd": {"synth_over_source": 0.505}, "identity": {"gap": -0.057}}, False, ["identity gap −0.057 < −0.05"]),
        ({"fd": {"synth_over_source": 0.644}, "identity": {"gap": -0.043}}, False, ["FD ratio 0.644 > 0.6"]),
        ({"fd": {"synth_over_source": 0.6}, "identity": {"gap": -0.05}}, True, []),  # both at the bound: met
        ({"fd": {"synth_over_source": 0.4}}, None, []),  # no identity pairs (real data): not assessed
    ],
)
def test_targets_derived_from_an_older_metrics_file(metrics, met, misses):
    t = targets_of(metrics)
    assert t.derived and t.met is met and t.misses() == misses
    assert t.fd_ratio == metrics["fd"]["synth_over_source"]


def test_the_targets_block_wins_when_present():
    block = {"fd_ratio": 0.7, "fd_ratio_max": 0.6, "identity_gap": -0.01, "identity_gap_min": -0.05, "met": False}
    t = targets_of({"fd": {"synth_over_source": 0.1}, "identity": {"gap": 0.0}, "targets": block})
    assert not t.derived and t.met is False and t.fd_ratio == 0.7 and t.misses() == ["FD ratio 0.700 > 0.6"]
    with pytest.raises(DataFormatError, match="targets.met"):
        targets_of({"targets": dict(block, met="yes")}, "m.json")
    with pytest.raises(DataFormatError, match="fd.synth_over_source"):
        targets_of({"identity": {"gap": 0.0}}, "m.json")


def test_targets_not_assessed_on_real_data_are_said_so():
    """Stage 1 on data without clean/degraded pairs writes ``met: null`` (harness.cfsm.quality): read, not refused,
    and the text says why, with the FD ratio."""
    block = {"fd_ratio": 0.42, "fd_ratio_max": 0.6, "identity_gap": None, "identity_gap_min": -0.05, "met": None}
    t = targets_of({"fd": {"synth_over_source": 0.42}, "targets": block})
    assert t.met is None and t.fd_ratio == 0.42 and t.misses() == []
    assert quality_text(t) == (
        "targets not assessed (FD ratio 0.420, target 0.6; identity gap not measured: no clean/degraded pairs)"
    )


def test_a_bad_metrics_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"fd": ')
    with pytest.raises(DataFormatError, match=r"metrics.json:line 1"):
        read_targets(str(bad))


def _results_with_generators(root: pathlib.Path) -> pathlib.Path:
    """The golden results, the CFSM ones pointing at generators (relative to ``root``, where the runs ran)."""
    ev = root / "eval"
    shutil.copytree(GOLDEN / "results", ev)
    gens = {"cfsm_guided": "stage1_ok/generator.pt", "cfsm_random": "stage1_bad/generator.pt"}
    for p in ev.glob("cfsm_*.json"):
        doc = json.loads(p.read_text())
        doc["hparams"] = {"eps": 0.314, "generator": gens[doc["method"]]}
        p.write_text(json.dumps(doc))
    for folder, metrics in (("stage1_ok", OLD_MET), ("stage1_bad", OLD_MISSED)):
        (root / folder).mkdir()
        (root / folder / "generator.pt").write_bytes(b"")
        (root / folder / "metrics.json").write_text(json.dumps(metrics))
    return ev


def test_metrics_file_found_from_the_result_document(tmp_path, monkeypatch):
    ev = _results_with_generators(tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # not the folder the runs ran in: found from the folders above the result
    assert metrics_path_of("stage1_ok/generator.pt", str(ev / "cfsm_guided-s0.json")) == str(
        tmp_path / "run" / "stage1_ok" / "metrics.json"
    )
    assert metrics_path_of("nowhere/generator.pt", str(ev / "cfsm_guided-s0.json")) is None
    assert metrics_path_of(str(tmp_path / "run" / "stage1_bad" / "generator.pt"), "x.json") == str(
        tmp_path / "run" / "stage1_bad" / "metrics.json"
    )


def _cli(results: pathlib.Path, out: pathlib.Path) -> int:
    return main(
        [
            str(results),
            "--out-dir",
            str(out / "tables"),
            "--report",
            str(out / "REPORT.md"),
            "--paper",
            str(GOLDEN / "paper"),
            "--n-boot",
            "200",
            "--seed",
            "0",
        ]
    )


def test_tables_and_report_show_each_generators_quality(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ev = _results_with_generators(tmp_path / "run")
    assert _cli(ev, tmp_path / "out") == 0
    md = (tmp_path / "out" / "tables" / "tables.md").read_text()
    rep = (tmp_path / "out" / "REPORT.md").read_text()
    tex = (tmp_path / "out" / "tables" / "tables.tex").read_text()
    csv_text = (tmp_path / "out" / "tables" / "tables.csv").read_text()
    ijbb = md.split("## IJB-B")[1].split("##")[0].splitlines()
    names = [ln.split(" | ")[0] for ln in ijbb if ln.startswith("| ")]
    # each CFSM row is followed by its generator's quality, the other rows are not
    i = names.index("| cfsm_guided")
    assert (
        names[i + 1] == "| ↳ generator `stage1_ok/generator.pt`: targets met (FD ratio 0.595 ≤ 0.6, identity gap "
        "−0.030 ≥ −0.05)"
    )
    j = names.index("| cfsm_random")
    assert names[j + 1].startswith("| ↳ generator `stage1_bad/generator.pt`: MISSED its targets (FD ratio 1.030 > 0.6")
    assert names[names.index("| source_only") + 1] == "| cfsm_guided"
    table = md.split("## CFSM generators")[1].split("##")[0]
    assert "| cfsm_guided | 0, 1 | `stage1_ok/generator.pt` | 0.595 | −0.030 | met |" in table
    assert "| cfsm_random | 0 | `stage1_bad/generator.pt` | 1.030 | −0.087 | **missed** |" in table
    missed = (
        "**The generator `stage1_bad/generator.pt` missed its stage-1 targets** (FD ratio 1.030 > 0.6; identity "
        "gap −0.087 < −0.05): the rows of `cfsm_random` were trained with it"
    )
    assert missed in table and missed in rep and "stage1_ok/generator.pt` missed" not in md
    claim = rep.split("## The paper's claim")[1]
    assert claim.index("The CFSM rows come from these stage-1 generators") < claim.index("A verdict on these rows")
    assert (
        r"\multicolumn{8}{l}{$\hookrightarrow$ generator stage1\_bad/generator.pt: MISSED its targets (FD ratio "
        r"1.030 $>$ 0.6, identity gap -0.087 $<$ -0.05)} \\" in tex
    )
    # the numbers are those of the same results without generators (the golden outputs)
    assert csv_text == (GOLDEN / "expected" / "tables.csv").read_text()
    without = re.sub(r"## CFSM generators\n.*?(?=\n## )\n", "", md, flags=re.S)
    without = "".join(ln for ln in without.splitlines(keepends=True) if not ln.startswith("| ↳ generator"))
    assert without == (GOLDEN / "expected" / "tables.md").read_text()


def test_a_generator_without_metrics_is_said_to_be_unmeasured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ev = _results_with_generators(tmp_path / "run")
    (tmp_path / "run" / "stage1_bad" / "metrics.json").unlink()
    assert _cli(ev, tmp_path / "out") == 0
    md = (tmp_path / "out" / "tables" / "tables.md").read_text()
    assert "| ↳ generator `stage1_bad/generator.pt`: quality not measured (no stage-1 metrics.json beside it)" in md
    assert "missed its stage-1 targets" not in md and "Not measured: `stage1_bad/generator.pt` (cfsm_random)" in md


def test_a_generator_without_an_identity_gap_is_said_to_be_not_assessed(tmp_path, monkeypatch):
    """Stage 1 on data without clean/degraded pairs (the paper profile's root) writes ``met: null``: the tables say
    "not assessed" with the FD ratio, never that the metrics file is missing."""
    monkeypatch.chdir(tmp_path)
    ev = _results_with_generators(tmp_path / "run")
    block = {"fd_ratio": 2.23, "fd_ratio_max": 0.6, "identity_gap": None, "identity_gap_min": -0.05, "met": None}
    (tmp_path / "run" / "stage1_bad" / "metrics.json").write_text(
        json.dumps({"fd": {"synth_over_source": 2.23}, "targets": block})
    )
    assert _cli(ev, tmp_path / "out") == 0
    md = (tmp_path / "out" / "tables" / "tables.md").read_text()
    table = md.split("## CFSM generators")[1].split("##")[0]
    assert "| cfsm_random | 0 | `stage1_bad/generator.pt` | 2.230 | - | not assessed |" in table
    assert "Not assessed: `stage1_bad/generator.pt` (cfsm_random)" in table
    assert "Not measured" not in md and "missed its stage-1 targets" not in md
