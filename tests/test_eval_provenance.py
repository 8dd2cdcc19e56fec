"""Every result row's knobs are those of the evaluator that produced it; the run adds run-level facts only.

One ``harness.run`` evaluation (``train=false`` on a saved tiny model) on the tiny SynthFace release, with run
knobs chosen so that a run-wide knob dict would be wrong for some benchmark: ``eval.flip=sum`` and
``eval.faceness=true`` (IJB-S has neither flip test nor faceness), ``eval.image_norm=true`` (IJB-S: frame
normalisation), ``data.channel_order=BGR``. Each row's knobs must equal the knobs of that benchmark's settings
object built from the same config, plus the run-level facts of :func:`harness.run.result_knobs`.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.eval.ijb_identification import identification_knobs
from harness.eval.ijb_verification import VerificationProtocol
from harness.eval.ijbs import IJBSSettings
from harness.eval.tinyface import TinyFaceSettings
from harness.models.build import build_model
from harness.run import make_config, result_knobs, run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.widths=8,16,16,32", "model.embedding_size=32", "data.input_size=32"]
KNOBS = ["eval.flip=sum", "eval.faceness=true", "eval.image_norm=true", "data.channel_order=BGR"]


@pytest.fixture(scope="module")
def evaluated(tiny_release, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("provenance")
    params = tmp / "params.yaml"
    params.write_text("{}\n")
    base = ["--params", str(params), "method=source_only", f"data.release={tiny_release}", *SMALL, *KNOBS]
    cfg = make_config(base)
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, 4)
    ckpt = tmp / "model.pt"
    torch.save({"num_classes": 4, "backbone": backbone.state_dict()}, ckpt)
    cfg = make_config([*base, "train=false", f"checkpoint={ckpt}", f"result={tmp / 'result.json'}", "out="])
    run(cfg)
    doc = json.loads((tmp / "result.json").read_text())
    return cfg, {row["benchmark"]: row for row in doc["results"]}, doc


def _expected(cfg, benchmark: str) -> dict:
    """The knobs each evaluator states for this config (built as ``harness.run.evaluate_model`` builds them)."""
    protocol = VerificationProtocol(
        flip=cfg.eval.flip,
        faceness=cfg.eval.faceness,
        image_norm=cfg.eval.image_norm,
        align_size=cfg.data.input_size,
        channel_order=cfg.data.channel_order,
    )
    if benchmark in ("IJB-B", "IJB-C"):
        return protocol.knobs()
    if benchmark in ("IJB-B 1:N", "IJB-C 1:N"):
        return identification_knobs(protocol)
    if benchmark == "IJB-S":
        return IJBSSettings(
            channel_order=cfg.data.channel_order, input_size=cfg.data.input_size, frame_norm=cfg.eval.image_norm
        ).knobs()
    assert benchmark == "TinyFace"
    return TinyFaceSettings(
        flip=cfg.eval.flip, channel_order=cfg.data.channel_order, input_size=cfg.data.input_size
    ).knobs()


@pytest.mark.parametrize("benchmark", ["IJB-B", "IJB-B 1:N", "IJB-C", "IJB-C 1:N", "IJB-S", "TinyFace"])
def test_row_knobs_are_the_evaluators(evaluated, benchmark):
    cfg, rows, _ = evaluated
    knobs = rows[benchmark]["knobs"]
    want = _expected(cfg, benchmark)
    run_level = result_knobs(cfg)
    assert not set(run_level) & set(want), "a run-level fact shadows an evaluator knob"
    # eval_amp: the embedding pass's precision, stated by harness.eval.registry.evaluate_all, which applies it
    assert knobs == {**run_level, **want, "eval_amp": "float32"}


def test_ijbs_row_says_what_ijbs_ran(evaluated):
    """IJB-S (AdaFace validate_IJB_S.py): no flip test, no faceness, inner products of average-fused
    un-normalised features; ``eval.image_norm`` means frame normalisation, as in ``harness.evaluate --image-norm``."""
    cfg, rows, _ = evaluated
    k = rows["IJB-S"]["knobs"]
    assert cfg.eval.flip == "sum" and k["flip"] == "none"
    assert cfg.eval.faceness is True and k["faceness"] is False
    assert (
        k["image_norm"] is True and k["score"] == "inner product" and k["pooling"].startswith("mean of frame features")
    )
    assert k["channel_order"] == "BGR" and k["ties"].startswith("higher gallery column first")


def test_tinyface_and_ijb_rows(evaluated):
    _, rows, doc = evaluated
    t = rows["TinyFace"]["knobs"]
    assert t["flip"] == "sum" and t["faceness"] is False and "image_norm" not in t and t["ties"] == "high_index_first"
    b = rows["IJB-B"]["knobs"]
    assert (b["flip"], b["faceness"], b["image_norm"], b["pooling"]) == ("sum", True, True, "media-mean-then-sum-l2")
    assert rows["IJB-B 1:N"]["knobs"]["ties"].startswith("joined: lower gallery index first")
    assert doc["knobs"] == {"release": doc["config"]["data"]["release"]}  # the document: run-level facts only


def test_run_level_facts_never_overwrite(evaluated, monkeypatch):
    """The merge in ``harness.run.run``: a run-level fact is added only where the evaluator stated nothing under
    that name; an evaluator knob always keeps its value."""
    import harness.run as hr

    cfg, rows, _ = evaluated
    for row in rows.values():
        assert row["knobs"]["release"] == cfg.data.release
    monkeypatch.setattr(hr, "result_knobs", lambda c: {"flip": "sum", "release": "run", "extra": 1})
    monkeypatch.setattr(
        hr, "evaluate_model", lambda c, b, d, items=None: [{"benchmark": "X", "knobs": {"flip": "none"}}]
    )
    doc = hr.run(cfg)
    assert doc["results"][0]["knobs"] == {"flip": "none", "release": "run", "extra": 1}
