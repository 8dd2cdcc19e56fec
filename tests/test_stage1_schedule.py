"""Stage 1's released schedule (issue 14 item 9): lambda_id phases of 5 / 4 / 13 passes out of 22, scaled to an
iteration cap, fresh Adam states for G and D at each phase start, and a resume at a phase boundary that behaves as
the uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from stage1_toy import stage1_cfg, toy_identity, toy_stage1_release  # noqa: F401  (fixtures)

import harness.cfsm.train as stage1
from harness.cfsm.train import Stage1Config, lambda_id_at, phase_bounds, train_stage1
from harness.core.config import apply_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def test_phases_are_the_released_passes_5_4_13_of_22():
    t = Stage1Config().train
    assert list(t.phase_passes) == [5, 4, 13] and list(t.lambda_id) == [8, 5, 2] and t.reset_optimizers
    # without a cap: passes over the training images at batch 32, drop_last (1000 // 32 = 31 iterations a pass)
    assert phase_bounds(t, 1000) == [0, 5 * 31, 9 * 31, 22 * 31]
    # with a cap: the same proportions of it, rounded half up
    capped = apply_overrides(Stage1Config(), {"train.iterations": 48114}).train
    assert phase_bounds(capped, 5_000_000) == [0, 10935, 19683, 48114]
    assert phase_bounds(apply_overrides(Stage1Config(), {"train.iterations": 11}).train, 0) == [0, 3, 5, 11]
    bounds = phase_bounds(capped, 0)
    assert [lambda_id_at(capped, s, bounds) for s in (0, 10934, 10935, 19682, 19683, 48113)] == [8, 8, 5, 5, 2, 2]


def test_a_schedule_whose_lengths_differ_is_a_one_line_error():
    bad = apply_overrides(Stage1Config(), {"train.phase_passes": "5,17"})
    with pytest.raises(ValueError, match=r"train.lambda_id \[8.0, 5.0, 2.0\] and train.phase_passes \[5.0, 17.0\]"):
        phase_bounds(bad.train, 100)
    with pytest.raises(ValueError, match="every phase needs > 0 passes"):
        phase_bounds(apply_overrides(Stage1Config(), {"train.phase_passes": "5,0,13"}).train, 100)


def _adam_steps(state: dict) -> set[int]:
    return {int(s["step"]) for s in state["state"].values()}


def test_each_phase_starts_with_fresh_adam_states(toy_stage1_release, toy_identity, tmp_path):
    # 22 iterations: phases [0, 5), [5, 9), [9, 22); a state saved after 7 iterations holds Adam moments of 2 steps
    cfg = stage1_cfg(toy_stage1_release, toy_identity, tmp_path / "reset", checkpoint_every=100)
    train_stage1(cfg, stop_after=7)
    state = torch.load(tmp_path / "reset" / "train_state.pt", weights_only=False)
    assert state["step"] == 7 and _adam_steps(state["opt_g"]) == {2} and _adam_steps(state["opt_d"]) == {2}
    carried = stage1_cfg(
        toy_stage1_release, toy_identity, tmp_path / "carry", checkpoint_every=100, **{"train.reset_optimizers": False}
    )
    train_stage1(carried, stop_after=7)
    state = torch.load(tmp_path / "carry" / "train_state.pt", weights_only=False)
    assert _adam_steps(state["opt_g"]) == {7} and _adam_steps(state["opt_d"]) == {7}


def test_resuming_at_a_phase_boundary_gives_the_uninterrupted_weights(toy_stage1_release, toy_identity, tmp_path):
    full = train_stage1(stage1_cfg(toy_stage1_release, toy_identity, tmp_path / "a", checkpoint_every=100))
    assert full.phase_bounds == [0, 5, 9, 22]
    cfg = stage1_cfg(toy_stage1_release, toy_identity, tmp_path / "b", checkpoint_every=100)
    part = train_stage1(cfg, stop_after=5)  # killed exactly at the start of phase 2 (state saved at step 5)
    assert part.steps == 5
    resumed = train_stage1(cfg)
    assert resumed.resumed_from == 5
    for k, v in full.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_the_phase_and_lambda_are_logged_and_announced(toy_stage1_release, toy_identity, tmp_path, capsys):
    logged = []
    train_stage1(
        stage1_cfg(toy_stage1_release, toy_identity, tmp_path, **{"train.iterations": 11}),
        log=lambda n, v, s: logged.append((n, v, s)),
        progress=True,
    )
    lam = {s: v for n, v, s in logged if n == "stage1.lambda_id"}
    assert [lam[s] for s in range(11)] == [8, 8, 8, 5, 5, 2, 2, 2, 2, 2, 2]  # bounds [0, 3, 5, 11]
    err = capsys.readouterr().err
    assert "phase 2/3 (lambda_id 5) from step 3: fresh Adam states" in err
    assert "phase 3/3 (lambda_id 2) from step 5" in err
    assert stage1.total_iterations(stage1_cfg(toy_stage1_release, toy_identity, tmp_path), 10) == 22


def test_checkpoint_every_0_saves_no_periodic_state_only_the_stopped_one(toy_stage1_release, toy_identity, tmp_path):
    """``checkpoint_every=0`` is "no periodic train state" (as in the trainer): the run trains without one and a run
    stopped early still leaves its state; a negative value is refused before any training."""
    cfg = stage1_cfg(toy_stage1_release, toy_identity, tmp_path / "off", checkpoint_every=0)
    seen = []
    real_save = stage1.save_checkpoint
    stage1.save_checkpoint = lambda path, payload, **kw: (seen.append(payload["step"]), real_save(path, payload, **kw))
    try:
        train_stage1(cfg, stop_after=7)
    finally:
        stage1.save_checkpoint = real_save
    assert seen == [7]
    with pytest.raises(ValueError, match="checkpoint_every=-1"):
        train_stage1(stage1_cfg(toy_stage1_release, toy_identity, tmp_path / "neg", checkpoint_every=-1))
