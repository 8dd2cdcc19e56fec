"""Stage 1 on data that is not SynthFace (issue 14 item 5): no analysis pairs, a non-default target list. The
analysis still measures FD to the target and the identity cosine by magnitude, U's orthogonality and draws both
pictures, on held-out source images and held-out target crops; the deviations' reasons follow from the values;
progress lines show only what each step computed."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from PIL import Image
from stage1_toy import stage1_cfg, toy_identity, toy_stage1_release  # noqa: F401  (fixtures)

import harness.cfsm.train as stage1_train
import harness.stage1 as stage1
from harness.cfsm.train import run_stage1, split_source, train_stage1
from harness.data.loaders import SourceData
from harness.models.cfsm import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_analysis_runs_without_pairs_on_held_out_source_and_target(toy_stage1_release, toy_identity, tmp_path):
    doc = run_stage1(stage1_cfg(toy_stage1_release, toy_identity, tmp_path))
    analysis = doc["analysis"]
    assert analysis["n"] == {"source_held_out": 9, "target_held_out": 6, "target_half": 3}  # a fifth of 48 and 30
    s = analysis["summary"]
    assert {"source_target", "synth_target", "target_target", "synth_over_source"} <= set(s["fd"])
    assert {f"mag_{a}" for a in range(7)} <= set(s["fd"]) and "degraded_target" not in s["fd"]  # no pairs here
    assert all(v >= 0 for v in s["fd"].values())
    ident = s["identity"]
    assert {f"mag_{a}" for a in range(7)} <= set(ident) and -1 <= ident["cos_synth"] <= 1
    assert ident["trained_target_mag_3"] == pytest.approx(0.65) and "cos_degraded" not in ident
    assert s["targets"].keys() == {
        "fd_ratio_le_0.6",
        "fd_monotone_in_magnitude",
        "fd_ratio",
        "fd_ratio_max",
        "identity_gap",
        "identity_gap_min",
        "met",
    }
    # without clean/degraded pairs the identity gap is not measured, so whether the targets were met is unknown
    assert s["targets"]["identity_gap"] is None and s["targets"]["met"] is None
    assert s["targets"]["fd_ratio"] == s["fd"]["synth_over_source"]
    assert 0 <= s["subspace"]["orthogonality_mse"] < 1e-2 and "similarity_to_init" in s["subspace"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["fd"] == s["fd"] and metrics["identity"] == s["identity"]
    mag = Image.open(doc["figures"]["magnitude"])
    assert mag.size[0] > 8 * 32 and mag.size[1] > 2 * 32  # 2 held-out sources x (input + 7 magnitudes), 2x
    assert os.path.isfile(doc["figures"]["basis"])
    assert doc["train"]["phases"] == [
        {"lambda_id": 8.0, "from": 0, "to": 5},
        {"lambda_id": 5.0, "from": 5, "to": 9},
        {"lambda_id": 2.0, "from": 9, "to": 22},
    ]
    _, meta = load_generator(str(tmp_path / "generator.pt"), image_size=16)
    assert meta["analysis"] == s and meta["deviations"] == doc["deviations"]
    from harness.engine.release import generator_provenance

    described, released = generator_provenance(str(tmp_path / "generator.pt"))  # read with weights_only=True
    assert (
        not released
        and f"trained by this project's stage 1 (harness.stage1; {len(doc['deviations'])} recorded" in described
    )


def test_the_held_out_source_images_are_never_trained_on(toy_stage1_release, toy_identity, tmp_path, monkeypatch):
    train_idx, held_idx = split_source(48, 500, seed=123)
    assert len(held_idx) == 9 and len(train_idx) == 39 and not set(held_idx.tolist()) & set(train_idx.tolist())
    requested = []
    real = SourceData.get
    monkeypatch.setattr(SourceData, "get", lambda self, idx: (requested.append(idx.clone()), real(self, idx))[1])
    result = train_stage1(stage1_cfg(toy_stage1_release, toy_identity, tmp_path, checkpoint_every=100))
    assert torch.equal(requested[0], held_idx)  # the analysis hold-out, read once
    trained = set(torch.cat(requested[1:]).tolist())
    assert len(requested) == 1 + 22 and not trained & set(held_idx.tolist())
    assert len(result.held_out_source) == 9 and result.held_out_source.dtype == torch.uint8


def test_no_hold_out_skips_the_analysis_and_says_why(toy_stage1_release, toy_identity, tmp_path, capsys):
    doc = run_stage1(
        stage1_cfg(toy_stage1_release, toy_identity, tmp_path, **{"analysis.holdout_source": 0, "train.iterations": 2})
    )
    assert "needs >= 2 held-out source images" in doc["analysis"]["skipped"] and doc["figures"] == {}
    assert "analysis skipped" in capsys.readouterr().err


def test_deviation_reasons_follow_from_the_configured_values(toy_stage1_release, toy_identity, tmp_path):
    cfg = stage1_cfg(toy_stage1_release, toy_identity, tmp_path)
    devs = {d["key"]: d for d in stage1_train.deviations(cfg)}
    assert devs["train.batch_size"] == {
        "key": "train.batch_size",
        "ours": 4,
        "release": 32,
        "source": "S/README.md:37-68 (--batch_size 32)",
        "why": "set by the user",
    }
    assert devs["model.image_size"]["why"] == "set by the user"  # 16 px is not the CPU default's 32
    assert devs["train.lr"]["why"].startswith("CPU default")  # 5e-4 is the CPU default's documented choice
    assert devs["train.iterations"]["why"].startswith("set by the user: the released source list is not public")
    assert "target_list_wf_toy.txt" in devs["data.target"]["ours"]
    cpu = {d["key"]: d for d in stage1_train.deviations(stage1.make_config([]))}  # the repository's params.yaml
    assert cpu["train.batch_size"]["why"].startswith("CPU default") and cpu["train.iterations"]["why"].startswith(
        "CPU default"
    )
    assert cpu["model.image_size"]["why"].startswith("CPU default")


def test_progress_lines_show_only_values_computed_in_their_step(toy_stage1_release, toy_identity, tmp_path, capsys):
    train_stage1(stage1_cfg(toy_stage1_release, toy_identity, tmp_path, **{"train.iterations": 4}), progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if re.match(r"stage1 step \d", ln)]
    assert [ln.split()[2] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    for i, ln in enumerate(lines):
        adversarial = i % 2 == 0  # even steps: adversarial + identity; odd steps: reconstruction with o = 0
        assert (" g_adv " in ln and " id " in ln) == adversarial and (" rec " in ln) == (not adversarial)
        assert " d " in ln and " g " in ln and " ort " in ln and " lambda_id " in ln and "ETA" in ln
