"""Every registered benchmark reaches every place a benchmark must reach: the ``harness.evaluate --benchmark``
choices, ``harness.run``'s evaluation (``eval.benchmarks``), the tables' sections (rendered), ``dvc metrics`` (the
compact metric keys, read back by ``dvc metrics show``), the plots' outputs and ``harness.check_data``'s entries.

One ``harness.run`` evaluation (``train=false`` on a saved tiny model) of *all* registered benchmarks on the tiny
SynthFace release (``VerificationBins`` on SynthFace's ``synth_lfw.bin``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from harness import check_data, plots, tables
from harness.eval import registry
from harness.eval.cli import build_parser
from harness.eval.provenance import row_benchmark
from harness.eval.registry import Benchmark, benchmarks, config_names, metric_value
from harness.models.build import build_model
from harness.run import compact_metrics, make_config, run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.widths=8,16,16,32", "model.embedding_size=32", "data.input_size=32"]


@pytest.fixture(scope="module")
def evaluated(tiny_release, tmp_path_factory):
    from harness.synthface.generate import config_for
    from harness.synthface.validation import write_validation

    tmp = tmp_path_factory.mktemp("registry")
    release = tmp / "tiny"  # a copy with the validation release (val11), which the default release does not hold
    shutil.copytree(tiny_release, release)
    write_validation(config_for("tiny", seed=0), str(release))
    params = tmp / "params.yaml"
    params.write_text("{}\n")
    names = ",".join(config_names())
    base = [
        "--params",
        str(params),
        "method=source_only",
        f"data.release={release}",
        *SMALL,
        f"eval.benchmarks={names}",
        "eval.bin_sets=synth_lfw",
    ]
    cfg = make_config(base)
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, 4)
    ckpt = tmp / "model.pt"
    torch.save({"num_classes": 4, "backbone": backbone.state_dict()}, ckpt)
    result, metrics = tmp / "source_only-s0.json", tmp / "metrics.json"
    cfg = make_config([*base, "train=false", f"checkpoint={ckpt}", f"result={result}", f"metrics={metrics}", "out="])
    run(cfg)
    return json.loads(result.read_text()), result, metrics


def test_the_builtin_and_bin_benchmarks_are_registered():
    assert config_names() == ("IJBB", "IJBC", "IJBS", "TinyFace", "VerificationBins", "val11")
    assert registry.row_names()[:6] == ("IJB-B", "IJB-B 1:N", "IJB-C", "IJB-C 1:N", "IJB-S", "TinyFace")


@pytest.mark.parametrize("bench", benchmarks(), ids=lambda b: b.name)
def test_every_benchmark_is_a_cli_choice(bench: Benchmark):
    action = next(a for a in build_parser()._actions if a.dest == "benchmark")
    assert bench.cli, f"{bench.name} has no harness.evaluate command"
    for command in bench.cli:
        assert command.name in action.choices
        args = build_parser().parse_args(["--benchmark", command.name, "--release", "x"])
        assert all(hasattr(args, dest) for dest in command.options)  # its options exist on the parser


@pytest.mark.parametrize("bench", benchmarks(), ids=lambda b: b.name)
def test_every_benchmark_is_evaluated_by_the_run_and_in_dvc_metrics(bench: Benchmark, evaluated):
    doc, _, metrics_path = evaluated
    rows = [r for r in doc["results"] if r["benchmark"] in bench.rows]
    assert rows, f"harness.run did not evaluate {bench.name}"
    compact = compact_metrics(doc)
    assert json.loads(metrics_path.read_text()) == compact  # the file dvc metrics reads
    for row in rows:  # its data provenance is recorded: the tiny release is SynthFace
        assert doc["data"]["benchmarks"][row_benchmark(row["benchmark"])]["kind"] == "synthface"
    for row in rows:
        keys = [c.key for s in tables.SECTIONS for c in s.columns if c.benchmark == row["benchmark"]]
        assert keys, f"no table column reads {row['benchmark']}"
        for key in keys:  # every number a table column shows is a dvc metric, with the same value
            value = metric_value(row, key)
            assert value is not registry.MISSING and compact[row["benchmark"]][key] == value


def test_dvc_metrics_show_lists_every_row(evaluated, tmp_path):
    doc, _, metrics_path = evaluated
    (tmp_path / "metrics.json").write_text(metrics_path.read_text())
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json", "metrics.json"],
        cwd=tmp_path,
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    shown = json.loads(out)
    data = next(iter(shown.values()))["data"]["metrics.json"]["data"]
    for row in doc["results"]:
        assert data[row["benchmark"]] == compact_metrics(doc)[row["benchmark"]]


@pytest.mark.parametrize("bench", benchmarks(), ids=lambda b: b.name)
def test_every_benchmark_has_a_rendered_table_section(bench: Benchmark, evaluated):
    doc, result, _ = evaluated
    own = [s for s in tables.SECTIONS if any(c.benchmark in bench.rows for c in s.columns)]
    assert own, f"{bench.name} contributes no table section"
    t = tables.build_tables([str(result)], n_boot=20, paper=None)
    md = tables.render(t)["tables.md"]
    present = {r["benchmark"] for r in doc["results"]}
    for s in own:
        if any(c.benchmark in present for c in s.columns):
            assert s.title in md


def test_curves_and_data_entries_reach_plots_and_check_data():
    for bench in benchmarks():
        for c in bench.curves:
            assert c.stem in plots.OUTPUT_STEMS and c.row in bench.rows
        for d in bench.data:
            assert check_data.BY_KEY[d.key].paths == d.paths


def test_registry_refuses_duplicates_and_non_numbers():
    b = benchmarks()[0]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_benchmark(b)
    clash = Benchmark("Other", (b.rows[0],), b.evaluate, b.metrics)
    with pytest.raises(ValueError, match="already 'IJBB'"):
        registry.register_benchmark(clash)
    with pytest.raises(ValueError, match="not a number"):
        metric_value({"benchmark": "TinyFace", "rank1": "high"}, "rank1")
    assert metric_value({"benchmark": "TinyFace"}, "rank1") is registry.MISSING
    assert metric_value({"benchmark": "unregistered", "rank1": 0.5}, "rank1") is registry.MISSING


def test_check_eval_config_names_the_bad_key():
    from harness.core.config import EvalConfig

    registry.check_eval_config(EvalConfig(benchmarks=("IJBB", "VerificationBins"), bin_sets=("synth_lfw",)))
    with pytest.raises(
        ValueError,
        match=r"^config eval.benchmarks='LFW': expected one of IJBB, IJBC, IJBS, TinyFace, VerificationBins, val11$",
    ):
        registry.check_eval_config(EvalConfig(benchmarks=("IJBB", "LFW")))
    with pytest.raises(ValueError, match=r"^config eval.bin_sets='lfw2': expected one of lfw, cfp_fp"):
        registry.check_eval_config(EvalConfig(benchmarks=("VerificationBins",), bin_sets=("lfw2",)))
    registry.check_eval_config(EvalConfig(benchmarks=("IJBB",), bin_sets=("lfw2",)))  # not evaluated: not checked
