"""MagFace head: the magnitude-dependent margin and g(a) against the formula computed here, gradients, the trainer's
feature-norm metrics."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.config import RunConfig, apply_overrides
from harness.models import MagFaceHead, build_head
from harness.models.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

# the paper's MS1M setting (IrvingMeng/MagFace run/run.sh)
LA, UA, LM, UM, LG, S = 10.0, 110.0, 0.45, 0.8, 35.0, 64.0

# (norm, angle to class 0): below l_a (clipped up), inside, above u_a (clipped down), and an angle past pi/2
# (cos < 0: easy_margin keeps the plain cosine)
SAMPLES = [(4.0, 0.3), (60.0, 1.0), (300.0, 0.2), (35.0, 2.0)]


def _head(easy_margin=True):
    head = MagFaceHead(2, 2, easy_margin=easy_margin)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))  # centres e0, e1
    return head


def _embeddings():
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for r, a in SAMPLES], dtype=torch.float64)


def _expected(norm, angle, easy=True):
    a = min(max(norm, LA), UA)
    m = (UM - LM) / (UA - LA) * (a - LA) + LM
    c = math.cos(angle)
    if easy:
        target = math.cos(angle + m) if c > 0 else c
    else:
        target = math.cos(angle + m) if c > math.cos(math.pi - m) else c - math.sin(math.pi - m) * m
    return target, m, 1.0 / a + a / UA**2


def test_defaults_are_the_published_setting_and_model_m_does_not_apply():
    head = build_head("magface", 8, 3)
    got = (head.s, head.l_a, head.u_a, head.l_m, head.u_m, head.lambda_g, head.easy_margin)
    assert got == (S, LA, UA, LM, UM, LG, True)
    # the release's feasibility bound (trainer.py): s k u_a^2 l_a^2 / (u_a^2 - l_a^2), k = 0.35 / 100
    assert head.min_lambda_g() == pytest.approx(64 * 0.0035 * 12100 * 100 / 12000)
    assert 22 < head.min_lambda_g() < LG
    cfg = apply_overrides(RunConfig(), {"model.head": "magface", "model.m": "0.4", "model.embedding_size": "16"})
    _, built = build_model(cfg, 5)
    assert isinstance(built, MagFaceHead) and built.l_m == LM and not hasattr(built, "m")
    with pytest.raises(TypeError, match="unexpected keyword"):
        build_head("magface", 8, 3, m=0.5)


@pytest.mark.parametrize("easy", [True, False])
def test_logits_and_loss_match_the_formula(easy):
    head = _head(easy).double()
    x, y = _embeddings(), torch.zeros(len(SAMPLES), dtype=torch.long)
    logits = head.logits(x, y) / S
    gs, rows = [], []
    for i, (r, a) in enumerate(SAMPLES):
        want, _, g = _expected(r, a, easy)
        assert logits[i, 0].item() == pytest.approx(want, abs=2e-6)  # the head's cosine is float32
        assert logits[i, 1].item() == pytest.approx(math.sin(a), abs=2e-6)  # non-target: the plain cosine
        gs.append(g)
        rows.append((want, math.sin(a)))
    # the loss: cross-entropy over s * logits, plus lambda_g * mean g(a)
    ce = sum(-S * t + math.log(math.exp(S * t) + math.exp(S * o)) for t, o in rows) / len(rows)
    assert head(x, y).item() == pytest.approx(ce + LG * sum(gs) / len(gs), rel=1e-5)
    # the branches were exercised: both clips of a, and cos < 0 (easy margin: unchanged; else ArcFace's fallback)
    assert _expected(*SAMPLES[0])[1] == LM and _expected(*SAMPLES[2])[1] == pytest.approx(UM)
    if easy:
        assert logits[3, 0].item() == pytest.approx(math.cos(2.0), abs=2e-6)


def test_statistics_of_training_forward_and_ignored_rows():
    head = _head().double().train()
    x = _embeddings()
    y = torch.tensor([0, -1, 1, 0])
    loss = head(x, y)
    norms = [r for r, _ in SAMPLES]
    stats = head.scalars()
    assert stats["feature_norm_mean"] == pytest.approx(sum(norms) / 4)
    assert (stats["feature_norm_min"], stats["feature_norm_max"]) == (4.0, 300.0)  # unclipped norms
    assert stats["magface_margin_mean"] == pytest.approx(sum(_expected(r, a)[1] for r, a in SAMPLES) / 4)
    assert stats["magface_g_mean"] == pytest.approx(sum(_expected(r, a)[2] for r, a in SAMPLES) / 4)
    keep = y >= 0
    torch.testing.assert_close(loss, head(x[keep], y[keep]))  # an ignored row adds nothing, not even to g
    assert head(x, torch.full((4,), -1)).item() == 0.0
    fresh = _head().eval()
    fresh(x.float(), y)
    assert fresh.scalars() == {}  # eval mode keeps nothing


def test_gradient_reaches_the_magnitude_inside_the_bounds_only():
    head = _head().double()
    x = _embeddings().requires_grad_(True)
    head(x, torch.tensor([0, 0, 0, 1])).backward()
    assert torch.isfinite(x.grad).all()
    radial = (x.grad * x.detach()).sum(1) / x.detach().norm(dim=1)
    # inside [l_a, u_a] the margin and g depend on ||f||: a radial gradient; clipped samples have none
    assert abs(radial[1].item()) > 1e-3 and abs(radial[3].item()) > 1e-3
    assert abs(radial[0].item()) < 1e-6 and abs(radial[2].item()) < 1e-6  # float32 rounding of the cosine's part
    # g alone (lambda_g's part) at a = 60: d/da (1/a + a/u_a^2) / n = (-1/3600 + 1/12100) / 4
    g_only = MagFaceHead(2, 2, l_m=0.0, u_m=0.0).double()
    with torch.no_grad():
        g_only.weight.copy_(torch.eye(2))
    x2 = _embeddings()[1:2].requires_grad_(True)
    ce_only = MagFaceHead(2, 2, l_m=0.0, u_m=0.0, lambda_g=0.0).double()
    ce_only.load_state_dict(g_only.state_dict())
    g_only(x2, torch.zeros(1, dtype=torch.long)).backward()
    x3 = _embeddings()[1:2].requires_grad_(True)
    ce_only(x3, torch.zeros(1, dtype=torch.long)).backward()
    diff = ((x2.grad - x3.grad) * x2.detach()).sum() / 60.0
    assert diff.item() == pytest.approx(LG * (-1 / 3600 + 1 / UA**2), rel=1e-4)


def test_trainer_logs_the_feature_norms_and_records_the_constants(toy_rec_release):
    from harness.engine.train import train

    cfg = apply_overrides(
        RunConfig(),
        {
            "data.release": toy_rec_release,
            "data.input_size": "32",
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "model.head": "magface",
            "optim.batch_size": "16",
            "optim.epochs": "2",
            "device": "cpu",
            "threads": "1",
            "log_every": "1",
        },
    )
    logged: dict[str, list[float]] = {}
    result = train(cfg, log=lambda k, v, s: logged.setdefault(k, []).append(v), progress=False)
    assert isinstance(result.head, MagFaceHead) and math.isfinite(result.final_loss)
    for k in ("feature_norm_mean", "feature_norm_min", "feature_norm_max", "magface_margin_mean", "magface_g_mean"):
        assert len(logged[f"train.head.{k}"]) == result.steps
    for lo, mean, hi in zip(
        logged["train.head.feature_norm_min"],
        logged["train.head.feature_norm_mean"],
        logged["train.head.feature_norm_max"],
    ):
        assert 0 < lo <= mean <= hi
    assert result.info["head"] == {
        "name": "magface",
        "s": S,
        "l_a": LA,
        "u_a": UA,
        "l_m": LM,
        "u_m": UM,
        "lambda_g": LG,
        "easy_margin": True,
    }
