"""Issue 16 item 7: a state whose weights are not finite is never saved (the last good one stays) and never
resumed from (resume=auto sets it aside and starts fresh; resume=PATH refuses it in one line)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from faultlib import one_error_line, run_args

from harness.core.config import RunConfig, apply_overrides
from harness.engine.train import TrainingStopped, nonfinite_entries, train, train_state_path
from harness.run import main as run_main


def test_divergence_keeps_the_last_good_state(tiny_release, tmp_path, empty_params, capsys):
    """lr 1e9 with a one-epoch warm-up (3 steps): steps 1 and 2 still leave finite weights (saved), step 3 does not;
    its state is refused and the step-2 state stays. (The issue's case ran with the head clipped too, scope ``all``:
    then the weights overflow while the loss is still finite; clipping the backbone only, the loss turns NaN first.)"""
    ckpt = tmp_path / "m.pt"
    args = run_args(
        tiny_release,
        tmp_path / "runs",
        empty_params,
        f"checkpoint={ckpt}",
        "optim.lr=1e9",
        "checkpoint_every=1",
        "optim.epochs=3",
        "optim.grad_clip_scope=all",
    )
    assert run_main(args) == 2
    line = one_error_line(capsys.readouterr().err, "harness.run")
    state_file = train_state_path(str(ckpt))
    assert f"{state_file}: the state at step 3 holds non-finite values" in line, line
    assert "not saved, the last good state is kept" in line and not ckpt.exists()
    state = torch.load(state_file, weights_only=True)
    assert state["step"] == 2
    assert nonfinite_entries({k: state[k] for k in ("backbone", "head", "method", "optimizer")}) == []
    # rerunning resumes from the good state instead of dying at once on inf weights
    assert run_main(args) == 2
    err = capsys.readouterr().err
    assert f"resuming from {state_file} at step 2" in err and "at step 3 holds non-finite" in err


@pytest.fixture
def poisoned(tiny_release, tmp_path):
    cfg = apply_overrides(
        RunConfig(),
        {
            "data.release": tiny_release,
            "data.input_size": 32,
            "model.widths": "8,16,16,32",
            "model.embedding_size": 32,
            "optim.batch_size": 32,
            "optim.epochs": 1,
            "checkpoint_every": 1,
            "evaluate": False,
        },
    )
    ckpt = str(tmp_path / "m.pt")
    with pytest.raises(TrainingStopped):
        train(cfg, checkpoint_path=ckpt, progress=False, stop_after=1)
    path = train_state_path(ckpt)
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["backbone"] if k.endswith("running_var"))
    state["backbone"][name] = torch.full_like(state["backbone"][name], math.inf)
    torch.save(state, path)
    return cfg, ckpt, path, name


def test_auto_resume_sets_a_nonfinite_state_aside(poisoned, capsys):
    cfg, ckpt, path, name = poisoned
    result = train(cfg, checkpoint_path=ckpt, progress=False)
    err = capsys.readouterr().err
    assert result.resumed_from == 0 and os.path.exists(ckpt)
    assert f"backbone.{name}" in err and "not resumed, set aside as" in err and "starting fresh" in err
    assert len([f for f in os.listdir(os.path.dirname(ckpt)) if ".nonfinite-" in f]) == 1


def test_resume_path_refuses_a_nonfinite_state(poisoned, tiny_release, tmp_path, empty_params, capsys):
    _, ckpt, path, name = poisoned
    rc = run_main(
        run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={tmp_path / 'other.pt'}", f"resume={path}")
    )
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and f"resume={path}" in line and "non-finite" in line and name in line
    assert os.path.exists(path), "a state the user named is left where it is"


def test_save_refuses_nonfinite_weights_and_keeps_the_file(tmp_path):
    from harness.engine.train import NonFiniteStateError, save_checkpoint

    path = str(tmp_path / "s.pt")
    save_checkpoint(path, {"step": 1, "backbone": {"w": torch.ones(3)}})
    with pytest.raises(NonFiniteStateError, match="not saved, the last good state is kept at"):
        save_checkpoint(path, {"step": 2, "backbone": {"w": torch.tensor([1.0, math.nan, 0.0])}})
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["s.pt"], "no temporary file left"
