"""Issue 14 (item 12, last part): the model is stored once. The final checkpoint holds the weights evaluation needs
(+ config, num_classes, train_info, metadata), the resumable state lives beside it only while a run is unfinished,
and the Sacred run records the checkpoint's path and sha256 instead of a copy. Checkpoints of the old format (the
whole train state, numpy RNG arrays included) are still read: evaluation and stage 1 use only the weights keys."""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import torch
from faultlib import run_args

from harness.run import main as run_main


def test_final_checkpoint_is_weights_and_metadata(trained_ckpt):
    state = torch.load(trained_ckpt, weights_only=True)
    assert state["format"] == "cfsm-checkpoint/1"
    assert set(state) == {
        "format",
        "config",
        "num_classes",
        "step",
        "total_steps",
        "world_size",
        "global_batch",
        "backbone",
        "train_info",
    }
    assert not os.path.exists(trained_ckpt.replace(".pt", ".train_state.pt")), "a completed run keeps no state"


def test_the_run_records_path_and_hash_not_a_copy(tiny_release, tmp_path, empty_params, trained_ckpt):
    runs = tmp_path / "runs"
    assert run_main(run_args(tiny_release, runs, empty_params, "train=false", f"checkpoint={trained_ckpt}")) == 0
    (run_id,) = [d for d in os.listdir(runs) if d.isdigit()]
    info = json.loads((runs / run_id / "info.json").read_text())["checkpoint"]
    assert info == {
        "path": os.path.abspath(trained_ckpt),
        "sha256": hashlib.sha256(open(trained_ckpt, "rb").read()).hexdigest(),
    }
    assert not [f for f in os.listdir(runs / run_id) if f.endswith(".pt")]


def test_old_format_checkpoints_are_still_evaluated(tiny_release, tmp_path, empty_params, trained_ckpt, capsys):
    """The old final checkpoint: the train state (optimizer, numpy and python RNG states as pickled numpy arrays and
    tuples) plus train_info. Read with weights_only=True (numpy arrays allowed), only the weights keys are used."""
    new = torch.load(trained_ckpt, weights_only=True)
    old = {
        **new,
        "format": "cfsm-train-state/1",
        "head": {"weight": torch.randn(24, 32)},
        "optimizer": {"state": {}},
        "rng": [
            {"torch": torch.get_rng_state(), "cuda": None, "numpy": np.random.get_state(), "python": random.getstate()}
        ],
        "source": {"epoch": 0},
        "target": None,
        "running_loss": 1.0,
    }
    path = tmp_path / "old.pt"
    torch.save(old, path)
    rc = run_main(
        run_args(
            tiny_release,
            tmp_path / "runs",
            empty_params,
            "train=false",
            f"checkpoint={path}",
            f"result={tmp_path / 'r.json'}",
        )
    )
    assert rc == 0, capsys.readouterr().err
    ref = tmp_path / "ref.json"
    assert (
        run_main(
            run_args(
                tiny_release,
                tmp_path / "runs",
                empty_params,
                "train=false",
                f"checkpoint={trained_ckpt}",
                f"result={ref}",
            )
        )
        == 0
    )
    a, b = (json.loads(p.read_text())["results"][0] for p in (tmp_path / "r.json", ref))
    assert a["rank1"] == b["rank1"] and a["rank5"] == b["rank5"]

    from harness.cfsm.train import IdentityNet

    net = IdentityNet(str(path), torch.device("cpu"))
    assert net.input_size == 32
