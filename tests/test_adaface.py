"""AdaFace head: the margin formula on hand-made norms and cosines, the running statistics, gradients, training."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from harness.core.config import RunConfig, apply_overrides
from harness.models import AdaFaceHead, build_head

M, H, EPS = 0.4, 0.333, 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _head(mean=10.0, std=1.0):
    """2-d embeddings, 2 classes with centres e0 and e1, statistics set by hand."""
    head = AdaFaceHead(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.batch_mean.fill_(mean)
        head.batch_std.fill_(std)
    return head


# (norm, angle to class 0): a low-norm sample (z clipped at -1), a middle one, a high-norm one at the centre
# (z clipped at +1, and theta - m clipped at eps).
SAMPLES = [(1.0, 1.0), (11.0, 0.7), (30.0, 0.01)]


def _embeddings(samples=SAMPLES):
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for r, a in samples], dtype=torch.float32)


def _expected_target(norm, angle, mean, std):
    z = max(-1.0, min(1.0, (min(max(norm, 0.001), 100.0) - mean) / (std + EPS) * H))
    theta = math.acos(max(-1 + EPS, min(1 - EPS, math.cos(angle))))
    theta_m = max(EPS, min(math.pi - EPS, theta - M * z))
    return math.cos(theta_m) - (M + M * z), z


def test_margin_matches_the_formula_in_eval_mode():
    head = _head().eval()
    y = torch.zeros(3, dtype=torch.long)
    logits = head.logits(_embeddings(), y) / head.s
    zs = []
    for i, (r, a) in enumerate(SAMPLES):
        want, z = _expected_target(r, a, 10.0, 1.0)
        zs.append(z)
        assert logits[i, 0].item() == pytest.approx(want, abs=2e-5)
        assert logits[i, 1].item() == pytest.approx(math.sin(a), abs=1e-6)  # non-target: plain cosine
    assert zs[0] == -1.0 and zs[2] == 1.0 and 0.3 < zs[1] < 0.34  # both clips and one interior value exercised
    # z = -1 is ArcFace's cos(theta + m); z = +1 with theta < m clips the angle at eps: cos(eps) - 2m
    assert logits[0, 0].item() == pytest.approx(math.cos(1.0 + M), abs=2e-5)
    assert logits[2, 0].item() == pytest.approx(math.cos(EPS) - 2 * M, abs=2e-5)
    # the statistics do not move in eval mode; explicit norms give the same as norms computed from the embeddings
    assert head.batch_mean.item() == 10.0 and head.batch_std.item() == 1.0
    explicit = head.logits(_embeddings(), y, norms=torch.tensor([r for r, _ in SAMPLES])) / head.s
    torch.testing.assert_close(explicit, logits)


def test_running_statistics_update_with_t_alpha_in_training_mode_first():
    head = _head().train()
    y = torch.zeros(3, dtype=torch.long)
    logits = head.logits(_embeddings(), y) / head.s
    norms = [r for r, _ in SAMPLES]
    mean = 0.99 * 10.0 + 0.01 * statistics.mean(norms)
    std = 0.99 * 1.0 + 0.01 * statistics.stdev(norms)  # unbiased, as torch.std
    assert head.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert head.batch_std.item() == pytest.approx(std, rel=1e-6)
    for i, (r, a) in enumerate(SAMPLES):  # the margin uses the statistics after this batch's update
        assert logits[i, 0].item() == pytest.approx(_expected_target(r, a, mean, std)[0], abs=2e-5)
    # a second batch: another EMA step; eval mode: none
    head.logits(_embeddings(), y)
    assert head.batch_mean.item() == pytest.approx(0.99 * mean + 0.01 * statistics.mean(norms), rel=1e-6)
    before = head.batch_mean.clone(), head.batch_std.clone()
    head.eval().logits(_embeddings(), y)
    assert torch.equal(head.batch_mean, before[0]) and torch.equal(head.batch_std, before[1])
    # defaults and state
    fresh = build_head("adaface", 8, 3)
    assert (fresh.m, fresh.h, fresh.s, fresh.t_alpha) == (0.4, 0.333, 64.0, 0.01)
    assert fresh.batch_mean.item() == 20.0 and fresh.batch_std.item() == 100.0
    assert {"batch_mean", "batch_std", "weight"} <= set(fresh.state_dict())
    assert build_head("adaface", 8, 3, m=0.5).h == 0.333  # config passes s and m only; h, t_alpha stay


def test_ignored_rows_are_unchanged_but_count_in_the_statistics():
    head = _head().train()
    y = torch.tensor([0, -1, 0])
    logits = head.logits(_embeddings(), y)
    plain = head.logits(_embeddings())
    torch.testing.assert_close(logits[1], plain[1])
    assert head.batch_mean.item() == pytest.approx(
        0.99 * 10 + 0.01 * statistics.mean([r for r, _ in SAMPLES]), rel=1e-6
    )
    z = head(_embeddings(), torch.full((3,), -1))
    assert z.item() == 0.0
    with pytest.raises(ValueError, match="norms"):
        head.margin(head.cosine(_embeddings()), y)


def test_gradients_are_finite_including_exact_centres_and_antipodes():
    torch.manual_seed(0)
    head = AdaFaceHead(8, 3).train()
    w = torch.nn.functional.normalize(head.weight.detach(), dim=1)
    x = torch.cat([5 * w, -7 * w, torch.randn(4, 8) * 10]).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    head(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    assert x.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0
    # the norms are detached: the loss sees each embedding's norm only through the margin, with no gradient, so
    # each row's gradient is orthogonal to the row (a function of the direction only)
    cos = torch.nn.functional.cosine_similarity(x.grad, x.detach(), dim=1)
    assert cos.abs().max().item() < 1e-4


def test_trainer_trains_with_the_adaface_head(toy_rec_release):
    from harness.engine.train import train

    cfg = apply_overrides(
        RunConfig(),
        {
            "data.release": toy_rec_release,
            "data.input_size": "32",
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "model.head": "adaface",
            "model.m": "0.4",
            "optim.batch_size": "16",
            "optim.epochs": "2",
            "device": "cpu",
            "threads": "1",
        },
    )
    result = train(cfg, progress=False)
    assert isinstance(result.head, AdaFaceHead) and result.head.m == 0.4
    assert math.isfinite(result.final_loss) and result.steps == 6
    # the norms reached the head: the statistics moved from their initial values by six EMA steps
    assert result.head.batch_mean.item() != 20.0 and result.head.batch_std.item() < 100.0
