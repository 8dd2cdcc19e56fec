"""The one resume-state scheme (harness.core.resume) shared by harness.engine.train and CFSM stage 1: a state saved
atomically, read back only when its format and config key match, a foreign or broken file never resumed from."""

from __future__ import annotations

import math
import os

import pytest
import torch

from harness.core.resume import (
    NonFiniteStateError,
    read_state,
    require_state,
    save_checkpoint,
)

FORMAT = "test-state/1"
KEY = {"seed": 1, "train": {"lr": 0.0001, "betas": [0.5, 0.999]}}


def _state(step=3, w=None):
    return {"format": FORMAT, "key": KEY, "step": step, "G": {"w": torch.ones(4) if w is None else w}}


def test_a_saved_state_is_read_back_when_format_and_key_match(tmp_path):
    path = str(tmp_path / "s.pt")
    save_checkpoint(path, _state())
    state, why = read_state(path, FORMAT, KEY)
    assert why == "" and state["step"] == 3 and torch.equal(state["G"]["w"], torch.ones(4))
    assert require_state(path, FORMAT, KEY, "resume=" + path)["step"] == 3
    assert os.listdir(tmp_path) == ["s.pt"]  # no temporary file left beside it


def test_a_state_of_another_config_is_ignored_naming_the_nested_key_and_kept(tmp_path):
    path = str(tmp_path / "s.pt")
    save_checkpoint(path, _state())
    other = {"seed": 1, "train": {"lr": 0.001, "betas": [0.5, 0.999]}}
    state, why = read_state(path, FORMAT, other)
    assert state is None
    assert why == f"ignoring {path} (saved with another config: train.lr (saved 0.0001, now 0.001)): starting fresh"
    assert os.path.isfile(path)  # left in place: the next save replaces it
    with pytest.raises(ValueError, match=r"^resume=X: saved with another config: train\.lr"):
        require_state(path, FORMAT, other, "resume=X")
    state, why = read_state(path, "other-format/1", KEY)
    assert state is None and "expected 'other-format/1'" in why


def test_an_unreadable_or_nonfinite_state_is_set_aside(tmp_path):
    path = tmp_path / "s.pt"
    save_checkpoint(str(path), _state())
    path.write_bytes(path.read_bytes()[:40])  # truncated, as a kill during a non-atomic write would leave it
    state, why = read_state(str(path), FORMAT, KEY)
    assert state is None and why.startswith("unreadable train state (") and why.endswith("; starting fresh")
    assert not path.exists() and [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["s.pt.unreadable"]

    torch.save(_state(w=torch.tensor([1.0, math.inf])), str(path))  # written around save_checkpoint's check
    state, why = read_state(str(path), FORMAT, KEY)
    assert state is None and "G.w" in why and "not resumed, set aside as" in why
    with pytest.raises(FileNotFoundError, match="resume=Y: no such train state file"):
        require_state(str(path), FORMAT, KEY, "resume=Y")


def test_a_nonfinite_state_is_never_saved_and_the_last_good_one_stays(tmp_path):
    path = str(tmp_path / "s.pt")
    save_checkpoint(path, _state(step=1))
    with pytest.raises(NonFiniteStateError, match=r"G\.w.*not saved, the last good state is kept at.*lower train\.lr"):
        save_checkpoint(path, _state(step=2, w=torch.tensor([math.nan])), hint="lower train.lr")
    assert read_state(path, FORMAT, KEY)[0]["step"] == 1
