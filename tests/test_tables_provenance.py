"""Labels from each result's data provenance (:mod:`harness.eval.provenance`), published numbers beside the rows of the
same model on real data, the REPORT's claims for every subset of the three claim methods, and imported checkpoints
joining a ``--params`` table.

Result documents are built as ``harness.run`` writes them (``tests/test_tables.py``'s ``write_run``), with a
``data`` provenance entry of either kind, and a ``config.model`` naming the backbone and head.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import pathlib

import pytest

from harness.eval.provenance import data_provenance, doc_provenance
from harness.tables import COLUMNS, build_tables, main, render
from tests.test_tables import fake_items, write_run

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = "/data/cfsm"
PAPER_CSV = """source,source_version,method,backbone,train_set,benchmark,protocol,metric,value,metric_definition,notes
fixture:pub,,ArcFace,R50,MS1MV2,TinyFace,closed-set identification,rank1,62.21,Rank-1 (test value),test
fixture:pub,,ArcFace,R50,MS1MV2,TinyFace,closed-set identification,rank5,66.85,Rank-5 (test value),test
fixture:pub,,ArcFace+CFSM,R50,MS1MV2,TinyFace,closed-set identification,rank1,63.01,Rank-1 (test value),test
fixture:pub,,ArcFace+CFSM,R50,MS1MV2,IJB-B,1:1 verification,tar@0.0001,94.50,TAR (test value),test
fixture:pub,,ArcFace+CFSM,unstated,MS1MV2,TinyFace,closed-set identification,rank5,68.80,Rank-5 (test value),test
fixture:pub,,ArcFace,R100,MS1MV2,TinyFace,closed-set identification,rank1,70.00,Rank-1 (test value),test
fixture:pub,,AdaFace,R50,MS1MV2,TinyFace,closed-set identification,rank1,71.00,Rank-1 (test value),test
"""
CONFIG = {"model": {"backbone": "r50", "head": "arcface"}, "data": {"release": ROOT, "rec": "faces_emore"}}


def real_data(benchmarks=("IJB-B", "TinyFace"), synthface=(), source="real") -> dict:
    """A ``data`` entry for a data root at /data/cfsm with MS1MV2; the benchmarks in ``synthface`` are SynthFace."""
    syn = {"kind": "synthface", "release": "/x/synthface/tiny", "synthface": {"format_version": 1}}
    src = {"kind": source, "rec": "faces_emore", "train_set": "MS1MV2" if source == "real" else "SynthFace"}
    return {
        "root": ROOT,
        "source": src,
        "benchmarks": {b: syn if b in synthface else {"kind": "real"} for b in benchmarks},
    }


def _write(folder: pathlib.Path, methods, seeds=(0, 1), data=None, benchmarks=("IJB-B", "TinyFace"), config=CONFIG):
    folder.mkdir(parents=True, exist_ok=True)
    quality = {"source_only": 0.0, "cfsm_random": 0.05, "cfsm_guided": 0.15, "kornia_degrade": 0.02}
    for j, m in enumerate(methods):
        for s in seeds:
            write_run(
                folder,
                m,
                s,
                fake_items(quality.get(m, 0.0), 10 * j + s, benchmarks),
                data=real_data(benchmarks) if data is None else data,
                extra={"config": config},
            )


def _paper(tmp_path: pathlib.Path) -> str:
    p = tmp_path / "paper.csv"
    p.write_text(PAPER_CSV, encoding="utf-8")
    return str(p)


def _col(bench: str, key: str):
    return next(c for c in COLUMNS if c.benchmark == bench and c.key == key)


# ---------------------------------------------------------------------------------------------------- provenance


def test_provenance_follows_symbolic_links_into_a_synthface_release(tmp_path):
    syn = tmp_path / "synth"
    for d in ("faces_synthface", "IJB_release/IJBB", "tinyface/Testing_Set"):
        (syn / d).mkdir(parents=True)
    (syn / "synthface.json").write_text(json.dumps({"format_version": 1, "config": {"size": "tiny", "seed": 3}}))
    root = tmp_path / "root"  # assembled the README's way: symbolic links, one real dataset beside them
    root.mkdir()
    os.symlink(syn / "faces_synthface", root / "faces_emore")
    os.symlink(syn / "IJB_release", root / "IJB_release")
    (root / "tinyface").mkdir()
    (root / "aligned_pad_0.1_pad_high").mkdir()
    d = data_provenance(str(root), "faces_emore", ["IJBB", "TinyFace", "IJBS"])
    assert d["source"] == {
        "kind": "synthface",
        "release": str(syn.resolve()),
        "rec": "faces_emore",
        "train_set": "SynthFace",
        "synthface": d["source"]["synthface"],
    }
    assert d["source"]["synthface"]["size"] == "tiny" and d["source"]["synthface"]["seed"] == 3
    assert d["benchmarks"]["IJB-B"]["kind"] == "synthface" and d["benchmarks"]["TinyFace"] == {"kind": "real"}
    assert d["benchmarks"]["IJB-S"] == {"kind": "unknown"}
    os.rmdir(root / "tinyface")
    os.symlink(syn / "tinyface", root / "tinyface")  # tinyface from SynthFace, its aligned copy real: mixed
    assert data_provenance(str(root), None, ["TinyFace"])["benchmarks"]["TinyFace"] == {"kind": "mixed"}
    real = tmp_path / "real"
    (real / "faces_emore").mkdir(parents=True)
    (real / "IJB_release" / "IJBC").mkdir(parents=True)
    d = data_provenance(str(real), "faces_emore", ["IJB-C 1:N"])
    assert d["source"] == {"kind": "real", "rec": "faces_emore", "train_set": "MS1MV2"} and d["benchmarks"] == {
        "IJB-C": {"kind": "real"}
    }
    # a document without the entry: looked up now at config.data.release; without either: unknown
    doc = {"results": [{"benchmark": "IJB-B"}], "config": {"data": {"release": str(root), "rec": "faces_emore"}}}
    p = doc_provenance(doc, "x.json")
    assert p.kind("IJB-B 1:N") == "synthface" and p.train_set == "SynthFace" and p.how.startswith("looked up now")
    p = doc_provenance({"results": [{"benchmark": "IJB-B"}]}, "x.json")
    assert p.kind("IJB-B") == "unknown" and p.how == "the result records no data release"


def test_a_malformed_data_entry_is_a_one_line_error(tmp_path, capsys):
    _write(tmp_path / "r", ["source_only"], seeds=(0,), data={"root": ROOT, "benchmarks": {"IJB-B": {"kind": "fake"}}})
    assert (
        main(
            [
                str(tmp_path / "r"),
                "--out-dir",
                str(tmp_path / "o"),
                "--report",
                str(tmp_path / "R.md"),
                "--no-paper",
                "--n-boot",
                "10",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source_only-s0.json:field data.benchmarks.IJB-B: kind must be one of" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------- labels


def test_real_data_is_labelled_real_and_published_numbers_stand_beside_the_same_model(tmp_path):
    _write(tmp_path / "r", ["source_only", "cfsm_guided", "cfsm_random"])
    t = build_tables([str(tmp_path / "r")], n_boot=100, paper=_paper(tmp_path))
    out = render(t)
    md, rep, tex = out["tables.md"], out["REPORT.md"], out["tables.tex"]
    assert md.startswith(f"# Results on the real benchmark data at {ROOT}\n")
    for text in (md.split("\n---\n")[0], rep.split("\n---\n")[0]):
        assert "not the paper's" not in text and "SynthFace results (" not in text and "on SynthFace" not in text
    assert rep.startswith("# Reproduction report: CFSM and baselines on the real benchmarks")
    assert "# Published numbers (as printed by each source)" in md
    r1, r5 = _col("TinyFace", "rank1"), _col("TinyFace", "rank5")
    so, cg = t.cell("source_only", r1), t.cell("cfsm_guided", r1)
    # source_only (r50 ArcFace head, MS1MV2) = the published ArcFace R50 MS1MV2; cfsm_guided = ArcFace+CFSM
    assert [(n.method, n.value_text) for n, _, _ in so.published] == [("ArcFace", "62.21")]
    assert [(n.method, n.value_text) for n, _, _ in cg.published] == [("ArcFace+CFSM", "63.01")]
    n, d, ci = so.published[0]
    assert d == pytest.approx(so.mean - 0.6221) and ci == pytest.approx((so.ci[0] - 0.6221, so.ci[1] - 0.6221))
    # R100 / AdaFace / unstated-backbone rows are other models; cfsm_random has no published counterpart
    assert [n.value_text for n, _, _ in t.cell("source_only", r5).published] == ["66.85"]
    assert not t.cell("cfsm_guided", r5).published and not t.cell("cfsm_random", r1).published
    assert t.cell("cfsm_guided", _col("IJB-B", "tar@0.0001")).published[0][0].value_text == "94.50"
    sign = lambda x: f"{100 * x:+.2f}"  # noqa: E731
    assert "| ↳ published: ArcFace R50 MS1MV2 (fixture:pub) |  | 62.21 | 66.85 | - |" in md
    assert f"| ↳ ours − published |  | {sign(d)} [{sign(ci[0])}, {sign(ci[1])}] |" in md
    assert (
        "## Against the published numbers" in rep
        and f"{sign(d)} [{sign(ci[0])}, {sign(ci[1])}]" in rep.split("## Against")[1]
    )
    assert "published: ArcFace R50 MS1MV2" in tex
    rows = list(csv.DictReader(io.StringIO(out["tables.csv"])))
    row = next(r for r in rows if r["method"] == "source_only" and r["metric"] == "rank1")
    assert (
        row["data"] == "real"
        and row["published"] == "62.21"
        and row["published_source"] == "fixture:pub: ArcFace R50 MS1MV2"
    )
    assert float(row["diff_vs_published"]) == pytest.approx(100 * d, abs=1e-4)
    assert float(row["diff_vs_published_ci_low"]) == pytest.approx(100 * ci[0], abs=1e-4)


def test_synthface_rows_are_never_matched_with_published_numbers(tmp_path):
    _write(tmp_path / "r", ["source_only", "cfsm_guided"], data="synthface")
    out = render(build_tables([str(tmp_path / "r")], n_boot=50, paper=_paper(tmp_path)))
    md = out["tables.md"]
    assert md.startswith("# SynthFace results (a procedural stand-in benchmark; these are not the paper's numbers)")
    assert "↳" not in md and "## Against the published numbers" not in out["REPORT.md"]
    assert "# Published numbers (real datasets, not comparable with SynthFace)" in md
    assert all(
        r["published"] == "" and r["data"] == "synthface" for r in csv.DictReader(io.StringIO(out["tables.csv"]))
    )
    # a real training set with SynthFace benchmarks (an assembled root): still never matched
    _write(tmp_path / "r2", ["source_only"], data=real_data(synthface=("IJB-B", "TinyFace")))
    md2 = render(build_tables([str(tmp_path / "r2")], n_boot=20, paper=_paper(tmp_path)))["tables.md"]
    assert md2.startswith("# SynthFace results") and "↳" not in md2


def test_mixed_inputs_are_labelled_per_section(tmp_path):
    """IJB-B from a SynthFace release and TinyFace real, in one data root: each section names its data, only the
    real section gets published numbers; and results without any data record are labelled unknown, not real."""
    _write(tmp_path / "r", ["source_only", "cfsm_guided"], data=real_data(synthface=("IJB-B",)))
    t = build_tables([str(tmp_path / "r")], n_boot=50, paper=_paper(tmp_path))
    md = render(t)["tables.md"]
    assert md.startswith("# Results on mixed data (each section names its data)")
    ijbb, tiny = md.split("## IJB-B")[1].split("## TinyFace")
    assert "Data: SynthFace (a procedural stand-in benchmark; not the paper's data) at /x/synthface/tiny." in ijbb
    assert f"Data: the real benchmark data at {ROOT}." in tiny.split("## Domain")[0]
    assert "↳" not in ijbb and "| ↳ published: ArcFace+CFSM R50 MS1MV2 (fixture:pub) |" in tiny
    assert "# Published numbers (real datasets, not comparable with SynthFace)" in md
    # one method on SynthFace, one with no record: the section says which result is on which
    _write(tmp_path / "u", ["source_only"], data="synthface", benchmarks=("TinyFace",))
    _write(tmp_path / "u", ["cfsm_guided"], data={}, benchmarks=("TinyFace",), config={})
    for f in (tmp_path / "u").glob("cfsm_guided-*.json"):
        doc = json.loads(f.read_text())
        del doc["data"], doc["config"]
        f.write_text(json.dumps(doc))
    md = render(build_tables([str(tmp_path / "u")], n_boot=20, paper=_paper(tmp_path)))["tables.md"]
    line = next(ln for ln in md.splitlines() if ln.startswith("Data: "))
    assert "SynthFace" in line and "source_only-s0, source_only-s1" in line
    assert "unknown data (the result records no data release): cfsm_guided-s0, cfsm_guided-s1" in line
    assert "real benchmark" not in md and "↳" not in md


# ---------------------------------------------------------------------------------------------------- claims


@pytest.mark.parametrize(
    "subset", [s for k in range(4) for s in itertools.combinations(("source_only", "cfsm_random", "cfsm_guided"), k)]
)
def test_every_claim_is_assessed_exactly_when_both_methods_have_results(tmp_path, subset):
    methods = list(subset) + ["kornia_degrade"]  # always one more method, the reference when source_only is absent
    ref = "source_only" if "source_only" in subset else "kornia_degrade"
    _write(tmp_path / "r", methods, benchmarks=("TinyFace",), data="synthface")
    rep = render(build_tables([str(tmp_path / "r")], n_boot=30, reference=ref, paper=None))["REPORT.md"]
    claims = rep.split("## The paper's claim")[1].split("## Other methods")[0]
    lines = {ln.split(":")[0]: ln for ln in claims.splitlines() if ln.startswith("- `")}
    for a, op, b in (("cfsm_guided", ">", ref), ("cfsm_random", ">", ref), ("cfsm_guided", ">=", "cfsm_random")):
        line = lines[f"- `{a}` {op} `{b}`"]
        missing = [m for m in dict.fromkeys((a, b)) if m not in methods]
        if missing:
            assert line.endswith(
                f"not assessed: no results of {' and '.join(f'`{m}`' for m in missing)} in the inputs."
            ), line
        else:
            assert "not assessed" not in line and any(w in line for w in ("reproduced", "inconclusive")), line
    # no sentence names a method without results as having them
    for m in ("source_only", "cfsm_random", "cfsm_guided"):
        if m not in methods:
            for ln in rep.splitlines():
                if f"`{m}`" in ln:
                    assert "no results of" in ln, ln
    others = rep.split("## Other methods against the reference")[1]
    if not [m for m in methods if m != ref and m not in ("cfsm_random", "cfsm_guided")]:
        besides = others.split("besides ")[1].split(")")[0]
        assert sorted(x.strip("` ") for x in besides.split(",")) == sorted(
            m for m in methods if m == ref or m.startswith("cfsm")
        )


# ---------------------------------------------------------------------------------------------------- imported


def _imported(folder: pathlib.Path, with_data: bool = True) -> pathlib.Path:
    """A result as ``harness.import_weights --evaluate --result`` writes it (method ``--name``, seed 0,
    ``imported``)."""
    folder.mkdir(parents=True, exist_ok=True)
    imported = {"layout": "insightface", "arch": "r100", "path": "backbone.pth", "sha256": "0" * 64}
    write_run(
        folder,
        "insightface-r100",
        0,
        fake_items(0.1, 99, ("IJB-B", "TinyFace")),
        data=real_data() if with_data else None,
        extra={"imported": imported},
    )
    return folder / "insightface-r100-s0.json"


def test_an_imported_checkpoint_joins_a_params_table_and_alone_gets_a_reference_hint(tmp_path, capsys):
    _write(tmp_path / "eval", ["source_only", "cfsm_guided"], seeds=(0,))
    write_run(
        tmp_path / "eval", "dann", 0, fake_items(0.0, 7, ("IJB-B", "TinyFace")), data=real_data()
    )  # not configured
    params = tmp_path / "params.yaml"
    params.write_text("methods: [source_only]\ncfsm_methods: [cfsm_guided]\nseeds: [0]\n", encoding="utf-8")
    extra = _imported(tmp_path / "imported")
    out = tmp_path / "o"
    args = [
        "--params",
        str(params),
        "--out-dir",
        str(out / "t"),
        "--report",
        str(out / "R.md"),
        "--paper",
        _paper(tmp_path),
        "--n-boot",
        "30",
    ]
    assert main([str(tmp_path / "eval"), str(extra), *args]) == 0
    md = (out / "t" / "tables.md").read_text(encoding="utf-8")
    assert "| insightface-r100 | 1 |" in md and "| dann |" not in md and "| cfsm_guided | 1 |" in md
    assert md.startswith(f"# Results on the real benchmark data at {ROOT}")
    # an imported model says nothing of its training: never matched with a published row
    section = md.split("## TinyFace")[1]
    assert "| ↳ published" not in section.split("| insightface-r100 |")[1].split("\n## ")[0]
    # the folder must come first; the imported file alone: a one-line error naming --reference
    assert main([str(extra), str(tmp_path / "eval"), *args]) == 2
    assert "the first input must be the results folder" in capsys.readouterr().err
    assert (
        main([str(extra), "--out-dir", str(out / "t2"), "--report", str(out / "R2.md"), "--no-paper", "--n-boot", "10"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "reference method 'source_only' has no results" in err
        and "--reference insightface-r100" in err
    )
    assert (
        main(
            [
                str(extra),
                "--reference",
                "insightface-r100",
                "--out-dir",
                str(out / "t2"),
                "--report",
                str(out / "R2.md"),
                "--no-paper",
                "--n-boot",
                "10",
            ]
        )
        == 0
    )
    # written before the provenance entry existed: labelled unknown, not real and not SynthFace
    old = _imported(tmp_path / "old", with_data=False)
    t = build_tables([str(old)], n_boot=10, reference="insightface-r100", paper=None)
    assert render(t)["tables.md"].startswith("# Results on unknown data (the result records no data release)")
    assert math.isfinite(t.cell("insightface-r100", _col("TinyFace", "rank1")).mean)


def test_one_benchmark_from_two_releases_is_refused_naming_the_data(tmp_path, capsys):
    """Paired differences need the same subjects: a SynthFace TinyFace and a real one cannot share a section."""
    folder = tmp_path / "r"
    folder.mkdir()
    write_run(folder, "source_only", 0, fake_items(0.0, 0, ("TinyFace",)), data="synthface")
    other = fake_items(0.1, 1, ("TinyFace",))
    other["TinyFace/probe_subject"] = other["TinyFace/probe_subject"] + 1000  # another release's subjects
    write_run(folder, "cfsm_guided", 0, other, data=real_data(("TinyFace",)))
    assert (
        main(
            [
                str(folder),
                "--out-dir",
                str(tmp_path / "o"),
                "--report",
                str(tmp_path / "R.md"),
                "--no-paper",
                "--n-boot",
                "10",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "source_only-s0.items.npz:array TinyFace/probe_subject" in err
        and "cfsm_guided-s0.items.npz" in err
    )
    assert "this result's TinyFace is synthface data, that one's real" in err and not (tmp_path / "o").exists()
