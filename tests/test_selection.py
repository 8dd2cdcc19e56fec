"""``harness.tables --select validation``: each method's hyperparameter draw selected on the validation metric (mean
over its seeds), its test numbers in the tables, and the oracle (test-selected) draw for contrast, on hand-made
sweep results (one folder per job) whose answer is known: validation prefers another draw than the test metric."""

from __future__ import annotations

import csv
import io
import json
import pathlib

import pytest
from test_tables import PAPER, fake_items, write_run

from harness.report.selection import group_draws, parse_metric, select
from harness.report.summary import load_runs
from harness.tables import main

pytestmark = pytest.mark.usefixtures("one_thread")

#: method -> [(hparams_seed, quality of the model on the test sets, validation TAR@1e-3)]; guided: validation picks
#: draw 1, the test sets would pick draw 2 (the best quality); source_only: a tie on validation (draws 0 and 2)
DRAWS = {
    "cfsm_guided": [(0, 0.0, 0.50), (1, 0.15, 0.80), (2, 0.3, 0.70)],
    "source_only": [(0, 0.0, 0.60), (1, 0.05, 0.40), (2, 0.1, 0.60)],
}


def _validation_row(value: float, seed: int):
    def edit(rows):
        rows.append({"benchmark": "Validation 1:1", "tar_at_far": {"0.001": value + 0.01 * seed, "0.0001": 0.1}})

    return edit


def write_sweep(root: pathlib.Path, draws=DRAWS, seeds=(0, 1)) -> pathlib.Path:
    for method, ds in draws.items():
        for h, quality, val in ds:
            for seed in seeds:
                job = root / f"job-{method}-h{h}-s{seed}"  # a sweep's per-job folder
                job.mkdir(parents=True)
                write_run(
                    job,
                    method,
                    seed,
                    fake_items(quality, 10 * h + seed, ("IJB-B", "IJB-C", "TinyFace")),
                    edit=_validation_row(val, seed),
                    extra={"hparams_seed": h, "hparams": {"eps": 0.1 * h, "steps": 1}},
                )
    return root


def _cli(root, out: pathlib.Path, *extra: str) -> int:
    return main(
        [
            str(root),
            "--select",
            "validation",
            "--out-dir",
            str(out / "tables"),
            "--report",
            str(out / "REPORT.md"),
            "--paper",
            str(PAPER),
            "--n-boot",
            "50",
            *extra,
        ]
    )


def _test_metric(folder: pathlib.Path, method: str, h: int) -> float:
    vals = [
        next(r for r in json.loads(p.read_text())["results"] if r["benchmark"] == "IJB-C")["tar_at_far"]["0.001"]
        for p in folder.glob(f"job-{method}-h{h}-s*/{method}-s*.json")
    ]
    assert len(vals) == 2
    return sum(vals) / 2


def test_validation_selects_another_draw_than_the_oracle(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    runs = load_runs([str(root)], recursive=True, unique=False)
    assert len(runs) == 12
    draws = group_draws(runs)
    assert [d.label for d in draws["cfsm_guided"]] == ["h0", "h1", "h2"] and draws["cfsm_guided"][1].seeds == [0, 1]
    sel = {
        s.method: s
        for s in select(runs, parse_metric("Validation 1:1:tar@0.001", "v"), parse_metric("IJB-C:tar@0.001", "o"))
    }
    g = sel["cfsm_guided"]
    assert g.selected.hparams_seed == 1 and g.validation == pytest.approx(0.805)
    assert g.oracle.hparams_seed == 2 and g.selected.hparams == {"eps": 0.1, "steps": 1}
    assert g.selected_test == pytest.approx(_test_metric(root, "cfsm_guided", 1))
    assert g.oracle_test == pytest.approx(_test_metric(root, "cfsm_guided", 2)) and g.oracle_test > g.selected_test
    s = sel["source_only"]
    assert s.selected.hparams_seed == 0 and s.ties == 2  # the tie goes to the smaller hparams_seed


def test_select_cli_reports_the_selected_draws_and_the_oracle(tmp_path, capsys):
    root = write_sweep(tmp_path / "sweep")
    out = tmp_path / "out"
    assert _cli(root, out) == 0, capsys.readouterr().err
    sel_md = (out / "tables" / "selection.md").read_text()
    report = (out / "REPORT.md").read_text()
    md = (out / "tables" / "tables.md").read_text()
    row = next(ln for ln in sel_md.splitlines() if ln.startswith("| cfsm_guided |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["cfsm_guided", "3", "h1", "0, 1", "80.50"]
    assert cells[6] == "h2 (oracle)" and float(cells[7]) > float(cells[5])
    assert cells[5] == f"{100 * _test_metric(root, 'cfsm_guided', 1):.2f}"
    assert "| source_only | 3 | h0 (2-way tie) |" in sel_md and "Unequal tuning budget" not in sel_md
    assert "**Oracle** (for contrast only, never a result)" in sel_md
    assert report.index("## Model selection on validation") < report.index("## SynthFace tables")
    # the tables hold the selected draws' runs only: 2 seeds of each method
    assert "| cfsm_guided | 2 |" in md and "Validation 1:1 (model selection only, not a test set)" in md
    assert "Inputs: 4 result files" in report
    rows = list(csv.DictReader(io.StringIO((out / "tables" / "selection.csv").read_text())))
    oracle = [r for r in rows if r["method"] == "cfsm_guided" and r["selection"] == "oracle"]
    assert len(oracle) == 1 and oracle[0]["draw"] == "h2" and oracle[0]["metric_row"] == "IJB-C"


def test_unequal_budget_is_said_and_a_method_without_validation_is_an_error(tmp_path, capsys):
    root = write_sweep(tmp_path / "sweep", {**DRAWS, "source_only": DRAWS["source_only"][:2]})
    assert _cli(root, tmp_path / "a") == 0
    assert (
        "**Unequal tuning budget**: `cfsm_guided` 3 draws, `source_only` 2 draws"
        in (tmp_path / "a" / "tables" / "selection.md").read_text()
    )
    assert _cli(root, tmp_path / "b", "--select-metric", "Validation 1:1:tar@0.01") == 2
    err = capsys.readouterr().err
    assert err.startswith("harness.tables: method cfsm_guided: none of its 3 draws reports Validation 1:1 tar@0.01")
    assert err.count("\n") == 1 and not (tmp_path / "b").exists()
    assert _cli(root, tmp_path / "c", "--params", "params.yaml") == 2
    assert "does not take --params" in capsys.readouterr().err
