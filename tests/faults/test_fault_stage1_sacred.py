"""Issue 16 items 8 and 10: stage 1's final metrics reach its Sacred record (the artifact no longer collides with
Sacred's own metrics.json), and a stage-1 state that cannot be read is set aside (kept) while the stage starts
fresh, as harness.run does."""

from __future__ import annotations

import json
import os

from faultlib import STAGE1_TINY

from harness.stage1 import main as stage1_main


def _stage1(tiny_release, trained_ckpt, tmp_path, params, *extra):
    return stage1_main(
        [
            "--params",
            params,
            f"data.release={tiny_release}",
            f"identity={trained_ckpt}",
            f"out={tmp_path / 's1'}",
            f"figures={tmp_path / 'fig'}",
            *STAGE1_TINY,
            *extra,
        ]
    )


def test_stage1_metrics_are_in_the_sacred_run(tiny_release, trained_ckpt, tmp_path, empty_params, capsys):
    runs = tmp_path / "runs"
    # a half-written state of an earlier run is in the way: set aside, and the stage runs
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "train_state.pt").write_bytes(b"PK\x03\x04 truncated")
    assert _stage1(tiny_release, trained_ckpt, tmp_path, empty_params, f"sacred={runs}") == 0
    err = capsys.readouterr().err
    assert "stage1: unreadable train state" in err and "set aside as" in err
    kept = [f for f in os.listdir(tmp_path / "s1") if f.startswith("train_state.pt.unreadable-")]
    assert len(kept) == 1 and (tmp_path / "s1" / kept[0]).read_bytes() == b"PK\x03\x04 truncated"

    (run_id,) = [d for d in os.listdir(runs) if d.isdigit()]
    folder = runs / run_id
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "COMPLETED"
    assert {"generator.pt", "analysis.json", "stage1_metrics.json"} <= set(run["artifacts"])
    metrics = json.loads((folder / "metrics.json").read_text())  # Sacred's own file: the log_scalar series
    final = {k for k in metrics if k.startswith("stage1.train.")}
    assert {"stage1.train.seconds", "stage1.train.steps", "stage1.train.loss_g"} <= final, sorted(metrics)
    assert any(k.startswith("stage1.loss_") for k in metrics)
    written = json.loads((folder / "stage1_metrics.json").read_text())
    assert written == json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert metrics["stage1.train.steps"]["values"] == [written["train"]["steps"]]
