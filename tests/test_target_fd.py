"""`python -m harness.target_fd`: stage-1 generators measured on one common target sample (toy stage-1 runs on a
RecordIO source and a target folder under a non-default list name, as real data is)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from stage1_toy import TARGET_LIST, stage1_cfg, toy_identity, toy_stage1_release  # noqa: F401  (fixtures)

from harness.cfsm.train import run_stage1
from harness.target_fd import main

SMALL = {"analysis.basis_values": [-1.0, 1.0], "analysis.magnitudes": [0.0, 2.0], "checkpoint_every": 0}


@pytest.fixture(scope="module")
def runs(toy_stage1_release, toy_identity, tmp_path_factory):
    root = tmp_path_factory.mktemp("target_fd")
    for name, iterations in (("short", 4), ("long", 8)):
        cfg = stage1_cfg(toy_stage1_release, toy_identity, root / name, **SMALL, **{"train.iterations": iterations})
        run_stage1(cfg)
    # a generator recorded with another seed (its held-out source images would differ): the short one's file with
    # that one setting changed, as another run would record it
    state = torch.load(root / "short" / "generator.pt", weights_only=True)
    state["meta"]["config"]["seed"] = 7
    (root / "other").mkdir()
    torch.save(state, root / "other" / "generator.pt")
    return root, {name: root / name / "generator.pt" for name in ("short", "long", "other")}


def _args(generators: dict, release: str, out) -> list[str]:
    args = [a for name, path in generators.items() for a in ("--generator", f"{name}={path}")]
    return args + ["--target", os.path.join(release, "target"), "--target-list", TARGET_LIST, "--out", str(out)]


def test_generators_share_the_source_and_target_sample(runs, toy_stage1_release, tmp_path, capsys):
    _, paths = runs
    rc = main(_args({"short": paths["short"], "long": paths["long"]}, toy_stage1_release, tmp_path))
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "target_fd.json").read_text())
    short, long_ = doc["generators"]["short"], doc["generators"]["long"]
    assert doc["target"]["crops"] == 30 and doc["source_held_out"] == 9  # every crop; a fifth of 48 sources
    assert short["fd_source_target"] == long_["fd_source_target"] > 0  # one source sample, one target sample
    assert short["fd_synth_target"] != long_["fd_synth_target"]
    for g in (short, long_):
        assert g["fd_synth_over_source"] == pytest.approx(g["fd_synth_target"] / g["fd_source_target"], rel=1e-4)


def test_identity_cosine_is_the_runs_own(runs, toy_stage1_release, tmp_path):
    """The same held-out source images, o draws and f as the run's own analysis: only the target differs, so the
    identity cosine (which does not involve the target) is the run's own figure."""
    root, paths = runs
    assert main(_args({"long": paths["long"]}, toy_stage1_release, tmp_path)) == 0
    doc = json.loads((tmp_path / "target_fd.json").read_text())
    own = json.loads((root / "long" / "metrics.json").read_text())
    assert doc["generators"]["long"]["identity_cos"] == own["identity"]["cos_synth"]


def test_generators_of_other_settings_are_refused_in_one_line(runs, toy_stage1_release, tmp_path, capsys):
    _, paths = runs
    rc = main(_args({"short": paths["short"], "other": paths["other"]}, toy_stage1_release, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(paths["other"]) in err[0] and "meta.config.seed" in err[0] and "7" in err[0]
    assert not (tmp_path / "target_fd.json").exists()
