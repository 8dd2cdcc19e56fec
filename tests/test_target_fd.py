"""`python -m harness.target_fd`: stage-1 generators measured on one common target sample (tiny SynthFace runs)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from harness.cfsm.train import Stage1Config, run_stage1
from harness.core.config import apply_overrides
from harness.target_fd import main

TINY = {
    "model.image_size": 16,
    "model.dim": 8,
    "model.d_scales": 2,
    "model.d_layers": 2,
    "model.adain_scale": "one_plus_gamma",
    "model.mlp_dim": 32,
    "model.latent_dim": 16,
    "train.batch_size": 8,
    "train.lr": 5e-4,
    "sacred": "",
    "checkpoint_every": 0,
    "analysis.holdout_target": 10,
    "analysis.figure_inputs": 2,
    "analysis.basis_inputs": 1,  # small figures: they are not what is tested here
    "analysis.basis_values": [-1.0, 1.0],
    "analysis.magnitudes": [0.0, 2.0],
}


def _stage1(release, identity, out, **extra) -> dict:
    cfg = apply_overrides(
        Stage1Config(),
        {"data.release": release, "identity": identity, "out": str(out), "figures": str(out / "fig"), **TINY, **extra},
    )
    return run_stage1(cfg)


@pytest.fixture(scope="module")
def runs(tiny_release, identity_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("target_fd")
    docs = {
        "short": _stage1(tiny_release, identity_ckpt, root / "short", **{"train.iterations": 4}),
        "long": _stage1(tiny_release, identity_ckpt, root / "long", **{"train.iterations": 8}),
    }
    # a generator recorded with another seed (its held-out source images would differ): the short one's file with
    # that one setting changed, as another run would record it
    state = torch.load(root / "short" / "generator.pt", weights_only=True)
    state["meta"]["config"]["seed"] = 7
    (root / "other").mkdir()
    torch.save(state, root / "other" / "generator.pt")
    paths = {
        "short": root / "short" / "generator.pt",
        "long": root / "long" / "generator.pt",
        "other_seed": root / "other" / "generator.pt",
    }
    return root, docs, paths


def test_generators_share_the_source_and_target_sample(runs, tiny_release, tmp_path, capsys):
    _, _, paths = runs
    target = os.path.join(tiny_release, "target")
    rc = main(
        ["--generator", f"short={paths['short']}", "--generator", f"long={paths['long']}"]
        + ["--target", target, "--out", str(tmp_path)]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "target_fd.json").read_text())
    short, long_ = doc["generators"]["short"], doc["generators"]["long"]
    with open(os.path.join(target, "target_list.txt")) as f:
        assert doc["target"]["crops"] == sum(1 for line in f if line.strip())
    assert short["fd_source_target"] == long_["fd_source_target"] > 0  # one source sample, one target sample
    assert short["fd_synth_target"] != long_["fd_synth_target"]
    for g in (short, long_):
        assert g["fd_synth_over_source"] == pytest.approx(g["fd_synth_target"] / g["fd_source_target"], rel=1e-4)


def test_identity_cosine_is_the_runs_own(runs, tiny_release, tmp_path):
    """The same held-out source images, o draws and f as the run's own analysis: only the target differs, so the
    identity cosine (which does not involve the target) is the run's own figure."""
    root, _, paths = runs
    assert main(["--generator", f"long={paths['long']}", "--target", os.path.join(tiny_release, "target"),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    doc = json.loads((tmp_path / "target_fd.json").read_text())
    own = json.loads((root / "long" / "metrics.json").read_text())
    assert doc["generators"]["long"]["identity_cos"] == own["identity"]["cos_synth"]


def test_generators_of_other_settings_are_refused_in_one_line(runs, tiny_release, tmp_path, capsys):
    _, _, paths = runs
    rc = main(
        ["--generator", f"short={paths['short']}", "--generator", f"other={paths['other_seed']}"]
        + ["--target", os.path.join(tiny_release, "target"), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(paths["other_seed"]) in err[0] and "meta.config.seed" in err[0] and "7" in err[0]
    assert not (tmp_path / "target_fd.json").exists()
