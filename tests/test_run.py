"""End to end on tiny SynthFace: `python -m harness.run` trains, evaluates and records a Sacred run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile

import pytest

from harness.run import compact_metrics
from harness.run import main as run_main

SMALL = [
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "data.input_size=32",
    "optim.batch_size=32",
    "optim.epochs=2",
    "log_every=1",
]


@pytest.fixture
def empty_params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("{}\n")
    return str(p)


def _run(tiny_release, out, empty_params, *extra):
    args = [
        "--params",
        empty_params,
        "method=source_only",
        f"data.release={tiny_release}",
        f"out={out}",
        *SMALL,
        *extra,
    ]
    return run_main(args)


def _only_run_dir(root):
    runs = [d for d in os.listdir(root) if d.isdigit()]
    assert len(runs) == 1
    return os.path.join(root, runs[0])


def test_run_trains_evaluates_and_records_a_sacred_run(tiny_release, tmp_path, empty_params):
    out = tmp_path / "runs"
    result = tmp_path / "result.json"
    assert _run(tiny_release, out, empty_params, f"result={result}") == 0
    run_dir = _only_run_dir(out)
    with open(os.path.join(run_dir, "run.json")) as f:
        assert json.load(f)["status"] == "COMPLETED"
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["method"] == "source_only" and config["data"]["input_size"] == 32
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    losses = metrics["train.loss"]["values"]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses)
    for key in ("ijbb.tar@0.001", "ijbc.tar@0.001", "ijbb1:n.joined.rank1", "ijbs.V2S.rank1", "tinyface.rank1"):
        assert key in metrics, sorted(metrics)
    assert "result.json" in os.listdir(run_dir) and "model.pt" not in os.listdir(run_dir), "checkpoint not copied"
    with open(os.path.join(run_dir, "info.json")) as f:
        recorded = json.load(f)["checkpoint"]
    with open(recorded["path"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == recorded["sha256"], "the run records the checkpoint's hash"
    doc = json.loads(result.read_text())
    assert [r["benchmark"] for r in doc["results"]] == ["IJB-B", "IJB-B 1:N", "IJB-C", "IJB-C 1:N", "IJB-S", "TinyFace"]
    for bench, values in compact_metrics(doc).items():
        if bench != "train":
            assert values and all(v is None or 0.0 <= v <= 1.0 for v in values.values()), bench
    for row in doc["results"]:
        assert row["knobs"], row["benchmark"]
    # Every protocol knob is in every verification row.
    for row in doc["results"][:1]:
        for knob in ("alignment", "flip", "faceness", "image_norm", "channel_order", "input_size", "normalization"):
            assert knob in row["knobs"]
    assert doc["train"]["device"] == "cpu" and doc["train"]["steps"] >= 2


def test_same_seed_gives_the_same_metrics(tiny_release, tmp_path, empty_params):
    docs = []
    for name in ("a", "b"):
        result = tmp_path / f"{name}.json"
        assert _run(tiny_release, tmp_path / f"runs_{name}", empty_params, f"result={result}", "seed=5") == 0
        docs.append(json.loads(result.read_text()))
    a, b = docs
    assert a["train"]["final_loss"] == b["train"]["final_loss"]
    assert compact_metrics(a) | {"train": None} == compact_metrics(b) | {"train": None}


def test_evaluate_only_from_a_saved_checkpoint_matches(tiny_release, tmp_path, empty_params):
    ckpt, r1, r2 = tmp_path / "m.pt", tmp_path / "r1.json", tmp_path / "r2.json"
    assert (
        _run(tiny_release, tmp_path / "runs1", empty_params, f"checkpoint={ckpt}", f"result={r1}", "evaluate=true") == 0
    )
    assert (
        _run(tiny_release, tmp_path / "runs2", empty_params, f"checkpoint={ckpt}", f"result={r2}", "train=false") == 0
    )
    m1, m2 = compact_metrics(json.loads(r1.read_text())), compact_metrics(json.loads(r2.read_text()))
    m1.pop("train"), m2.pop("train", None)
    assert m1 == m2


def _ours(folder) -> list[str]:
    """harness.run's temporary folders in ``folder`` (other libraries may put their own caches there)."""
    return sorted(n for n in os.listdir(folder) if n.startswith("cfsm-run-"))


def test_no_temporary_folder_is_left_behind(tiny_release, tmp_path, empty_params, monkeypatch, capsys):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ckpt, result = tmp_path / "m.pt", tmp_path / "r.json"
    assert (
        _run(tiny_release, tmp_path / "runs1", empty_params, f"checkpoint={ckpt}", f"result={result}", "evaluate=false")
        == 0
    )
    assert _ours(scratch) == [] and ckpt.is_file() and result.is_file()
    # evaluation without result=: the result goes to the Sacred run only, staged in a folder that is removed
    assert (
        _run(
            tiny_release, tmp_path / "runs2", empty_params, f"checkpoint={ckpt}", "train=false", "eval.benchmarks=IJBB"
        )
        == 0
    )
    assert _ours(scratch) == []
    with open(os.path.join(_only_run_dir(tmp_path / "runs2"), "result.json")) as f:
        assert [r["benchmark"] for r in json.load(f)["results"]] == ["IJB-B", "IJB-B 1:N"]
    # training without checkpoint=: the model is kept in its temporary folder, and named
    capsys.readouterr()
    assert _run(tiny_release, tmp_path / "runs3", empty_params, "evaluate=false") == 0
    (kept,) = _ours(scratch)
    assert sorted(os.listdir(scratch / kept)) == ["model.pt", "result.json"]
    assert f"the model is {scratch / kept / 'model.pt'}" in capsys.readouterr().err
    # a training that fails before anything is written leaves no empty folder
    assert _run(tiny_release, tmp_path / "runs4", empty_params, "evaluate=false", "data.rec=no_such_rec") == 2
    assert _ours(scratch) == [kept]


@pytest.mark.parametrize(
    "arg,needle",
    [
        ("method=no_such_method", "registered methods: adv_degrade, "),
        ("optim.lrr=1", "valid keys:"),
        ("hparams.nope=1", "unknown hyperparameter 'nope'"),
    ],
)
def test_unknown_method_or_key_is_a_one_line_error(tiny_release, tmp_path, empty_params, capsys, arg, needle):
    assert run_main(["--params", empty_params, f"data.release={tiny_release}", f"out={tmp_path}", arg]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_a_failing_run_is_recorded_as_failed(tmp_path, empty_params, capsys):
    out = tmp_path / "runs"
    empty = tmp_path / "empty_release"  # exists (passes the first checks), holds no RecordIO: fails inside the run
    empty.mkdir()
    assert run_main(["--params", empty_params, f"data.release={empty}", f"out={out}", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("harness.run: ") and "faces_synthface" in err[-1] and "Traceback" not in "\n".join(err)
    with open(os.path.join(_only_run_dir(out), "run.json")) as f:
        assert json.load(f)["status"] == "FAILED"
