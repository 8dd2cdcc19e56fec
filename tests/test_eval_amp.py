"""``eval.amp``: the precision of the embedding pass is the config's, whatever the training's ``amp`` was, and each row
states the precision that was applied (``knobs.eval_amp``).

One tiny model, evaluated on IJB-B of the tiny SynthFace release through the registry (:func:`evaluate_all`) in
float32 and under the trunk's bfloat16 autocast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from harness.eval.registry import eval_precision, evaluate_all
from harness.models.build import build_model
from harness.run import make_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.widths=8,16,16,32", "model.embedding_size=32", "data.input_size=32", "eval.benchmarks=IJBB"]


@pytest.fixture(scope="module")
def model(tiny_release, tmp_path_factory):
    params = tmp_path_factory.mktemp("eval_amp") / "params.yaml"
    params.write_text("{}\n")
    cfg = make_config(["--params", str(params), f"data.release={tiny_release}", "data.crop_cache=", *SMALL])
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, 4)
    return cfg, backbone.eval()


def _evaluate(cfg, backbone, amp: str):
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, amp=amp))
    items: dict = {}
    rows = evaluate_all(cfg, backbone, "cpu", items)
    return rows, items["IJB-B/scores"]


def test_off_is_float32_even_for_a_backbone_trained_with_amp_and_on_is_bfloat16(model):
    cfg, backbone = model
    rows, fp32 = _evaluate(cfg, backbone, "off")
    assert {r["knobs"]["eval_amp"] for r in rows} == {"float32"}
    backbone.fp16 = True  # as the trainer hands over a backbone trained with amp=on
    try:
        rows_t, fp32_t = _evaluate(cfg, backbone, "off")
        assert backbone.fp16 is True  # restored
    finally:
        backbone.fp16 = False
    assert {r["knobs"]["eval_amp"] for r in rows_t} == {"float32"}
    np.testing.assert_array_equal(fp32_t, fp32)  # bit for bit: the pass really ran in float32

    rows_b, bf16 = _evaluate(cfg, backbone, "on")
    assert backbone.fp16 is False  # restored
    assert {r["knobs"]["eval_amp"] for r in rows_b} == {"bfloat16"}
    assert [r["benchmark"] for r in rows_b] == [r["benchmark"] for r in rows]
    # bfloat16 rounding moves the template scores a little, and only a little
    assert not np.array_equal(bf16, fp32)
    assert np.max(np.abs(bf16 - fp32)) < 0.05 and np.corrcoef(bf16, fp32)[0, 1] > 0.99


def test_a_backbone_without_the_trunk_switch_is_refused_with_amp_and_runs_float32_without():
    net = torch.nn.Linear(2, 2)
    with eval_precision(net, False, "cpu") as precision:
        assert precision == "float32"
    with pytest.raises(ValueError, match=r"^config eval.amp='on': Linear has no fp16 trunk switch"):
        with eval_precision(net, True, "cpu"):
            pass


def test_eval_amp_is_checked_and_the_cpu_default_sets_it(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    with pytest.raises(ValueError, match=r"eval.amp"):
        make_config(["--params", str(params), "eval.amp=bf16"])
    assert make_config(["--params", str(params)]).eval.amp == "off"  # the dataclass: float32, as published
    assert make_config(["--params", "profiles/paper/params.yaml"]).eval.amp == "off"
    assert make_config([]).eval.amp == "on"  # the CPU default (params.yaml): measured within seed noise
