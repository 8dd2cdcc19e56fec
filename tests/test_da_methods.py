"""Domain-adaptation baselines (``dann``, ``coral``, ``mmd``) and their shared losses (``methods.da_losses``)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import methods.coral  # noqa: F401  (registers itself)
import methods.dann  # noqa: F401
import methods.mmd  # noqa: F401
from harness.core.config import RunConfig, apply_overrides
from harness.models import build_head
from methods import Batch, FRModel, build_method, resolve_hparams
from methods.da_losses import (
    binary_domain_loss,
    coral_loss,
    covariance,
    da_features,
    grad_reverse,
    grl_coefficient,
    mk_mmd,
)

DA_METHODS = ("dann", "coral", "mmd")
EMB, CLASSES, B, SIZE = 8, 4, 6, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


# ------------------------------------------------------------------------------------------------ GRL
def test_grl_is_identity_forward_and_scales_the_gradient_by_minus_lambda():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * w)


def test_grl_schedule():
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1) == pytest.approx(0.98661, abs=1e-5)
    assert grl_coefficient(1.0) == pytest.approx(0.999909, abs=1e-6)
    assert grl_coefficient(2.0) == grl_coefficient(1.0) and grl_coefficient(-1.0) == 0.0  # p clamped to [0, 1]
    # TLlib WarmStartGradientReverseLayer(alpha=1, max_iters=1000) at i = 500 == gamma 10 with T = 10,000
    assert grl_coefficient(500 / 10_000) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)


def test_binary_domain_loss_and_accuracy():
    ls, lt = torch.tensor([2.0, -1.0]), torch.tensor([-3.0, 0.5])
    loss, acc = binary_domain_loss(ls, lt)
    sp = nn.functional.softplus
    expected = 0.5 * ((sp(-ls)).mean() + sp(lt).mean())  # -log sigmoid(s), -log(1 - sigmoid(t))
    torch.testing.assert_close(loss, expected)
    assert acc.item() == pytest.approx(0.5)  # one of two right on each side


# ------------------------------------------------------------------------------------------------ CORAL
def test_coral_zero_for_identical_covariances_and_a_hand_computed_value():
    torch.manual_seed(0)
    xs = torch.randn(20, 5)
    assert coral_loss(xs, xs + 3.0).item() == pytest.approx(0.0, abs=1e-10)  # a shift keeps the covariance
    assert coral_loss(xs, xs[torch.randperm(20)]).item() == pytest.approx(0.0, abs=1e-10)
    # C_s = [[1, 0], [0, 0]], C_t = [[1, 1], [1, 1]]: ||C_s - C_t||_F^2 = 3, d = 2 -> 3 / 16
    s = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    torch.testing.assert_close(covariance(s), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert coral_loss(s, t).item() == pytest.approx(3 / 16)
    # the mean term: ||(1, 1)||^2 / d = 1
    assert coral_loss(s, t + 1.0, match_mean=True).item() == pytest.approx(3 / 16 + 1.0)


# ------------------------------------------------------------------------------------------------ MMD
def test_mmd_near_zero_for_one_distribution_and_larger_for_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    shifted = torch.randn(200, 8, generator=g) + 0.75
    same, diff = mk_mmd(a, b).item(), mk_mmd(a, shifted).item()
    # the unbiased estimate's spread over seeds is ~0.007 here (mean ~0.001); this seed draws 0.024
    assert abs(same) < 0.03 and diff > 0.3 and diff > 15 * abs(same)
    lin_same, lin_diff = mk_mmd(a, b, estimator="linear").item(), mk_mmd(a, shifted, estimator="linear").item()
    assert lin_diff > lin_same and lin_diff > 0.1


def test_mmd_hand_computed_one_kernel_two_plus_two_points():
    s, t = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [4.0]])
    e = math.exp
    # k(a, b) = exp(-(a - b)^2 / 2) (bandwidth 1, one kernel of scale 1)
    expected = e(-0.5) + e(-2) - 0.5 * (e(-2) + e(-8) + e(-0.5) + e(-4.5))
    assert mk_mmd(s, t, scales=(1.0,), bandwidth=1.0).item() == pytest.approx(expected, rel=1e-6)
    # linear-time: one quad-tuple, k(s0,s1) + k(t0,t1) - k(s0,t1) - k(s1,t0)
    assert mk_mmd(s, t, scales=(1.0,), bandwidth=1.0, estimator="linear").item() == pytest.approx(
        e(-2) - e(-8), rel=1e-6
    )
    # the data-driven bandwidth: mean of the 4x4 squared-distance matrix = 2 * (1 + 4 + 16 + 1 + 9 + 4) / 16
    base = 70 / 16

    def k(d2):
        return e(-d2 / (2 * base))

    expected = k(1) + k(4) - 0.5 * (k(4) + k(16) + k(1) + k(9))
    assert mk_mmd(s, t, scales=(1.0,)).item() == pytest.approx(expected, rel=1e-6)
    # two kernels add up
    two = mk_mmd(s, t, scales=(0.5, 2.0), bandwidth=1.0).item()
    assert two == pytest.approx(sum(mk_mmd(s, t, scales=(c,), bandwidth=1.0).item() for c in (0.5, 2.0)), rel=1e-6)


def test_losses_run_in_float32_under_autocast():
    torch.manual_seed(0)
    xs, xt = torch.randn(6, 4), torch.randn(6, 4) + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c, m = coral_loss(xs, xt), mk_mmd(xs, xt)
    assert c.dtype == m.dtype == torch.float32
    torch.testing.assert_close(c, coral_loss(xs, xt))
    torch.testing.assert_close(m, mk_mmd(xs, xt))


def test_normalized_features_lie_on_the_sqrt_d_sphere():
    e = torch.randn(5, 16) * 7
    f = da_features(e, "normalized")
    torch.testing.assert_close(f.norm(dim=1), torch.full((5,), 4.0))
    assert torch.equal(da_features(e, "raw"), e)
    with pytest.raises(ValueError, match="features"):
        da_features(e, "unit")


# ------------------------------------------------------------------------------------------------ methods
def _fr(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, EMB))
    head = build_head("arcface", EMB, CLASSES)
    return FRModel(backbone=net, raw=net, head=head)


def _batch(step=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, SIZE, SIZE, generator=g) * 2 - 1
    xt = torch.rand(B, 3, SIZE, SIZE, generator=g) * 2 - 1 + 0.3
    return Batch(x=x, y=torch.arange(B) % CLASSES, xt=xt, step=step)


def test_dann_discriminator_is_trained_and_the_backbone_gets_the_reversed_gradient():
    m = build_method("dann", EMB, CLASSES, overrides={"disc_hidden": 16, "schedule_steps": 10})
    fr, batch = _fr(), _batch(step=5)
    disc = list(m.discriminator.parameters())
    groups = m.param_groups()
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in disc}
    assert groups[0]["lr_scale"] == 1.0
    lam = grl_coefficient(0.5)
    assert m.coefficient(5) == pytest.approx(lam)

    loss, scalars = m.loss(batch, fr)
    loss.backward()
    assert scalars["dann.lambda"] == pytest.approx(lam) and 0.0 <= float(scalars["dann.domain_acc"]) <= 1.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc if p.requires_grad)
    got_backbone = [p.grad.clone() for p in fr.backbone.parameters()]
    got_disc = [p.grad.clone() for p in disc]

    # the reference without the GRL: the discriminator's own objective, separately for the FR and domain terms
    bb = list(fr.backbone.parameters())
    emb = fr.backbone(torch.cat([batch.x, batch.xt]))
    fr_loss = fr.head(emb[:B], batch.y)
    logits = m.discriminator(da_features(emb, "normalized"))
    d_loss, _ = binary_domain_loss(logits[:B], logits[B:])
    g_fr = torch.autograd.grad(fr_loss, bb, retain_graph=True)
    g_dom = torch.autograd.grad(d_loss, bb + disc)
    g_dom_bb, g_dom_disc = g_dom[: len(bb)], g_dom[len(bb) :]
    assert torch.allclose(loss.detach(), fr_loss.detach() + d_loss.detach())
    for got, f, d in zip(got_backbone, g_fr, g_dom_bb):
        assert d.abs().sum() > 0
        torch.testing.assert_close(got, f - lam * d, atol=1e-6, rtol=1e-4)  # reversed and scaled by lambda
    for got, d in zip(got_disc, g_dom_disc):
        torch.testing.assert_close(got, d, atol=1e-6, rtol=1e-4)  # the discriminator descends its own loss


def test_dann_schedule_horizon():
    m = build_method("dann", EMB, CLASSES, overrides={"disc_hidden": 4})
    with pytest.warns(RuntimeWarning, match="total_steps"):
        assert m.coefficient(500) == pytest.approx(grl_coefficient(0.05))  # TLlib's default curve
    m.total_steps = 20  # what the trainer would set
    assert m.coefficient(10) == pytest.approx(grl_coefficient(0.5)) and m.coefficient(0) == 0.0
    m = build_method("dann", EMB, CLASSES, overrides={"disc_hidden": 4, "schedule_steps": 40})
    m.total_steps = 20
    assert m.coefficient(10) == pytest.approx(grl_coefficient(0.25))  # the explicit hparam wins


@pytest.mark.parametrize("name", DA_METHODS)
def test_every_da_method_loss_backward_and_declared_hparams(name):
    m = build_method(name, EMB, CLASSES, overrides={"disc_hidden": 16, "schedule_steps": 10} if name == "dann" else {})
    assert m.uses_target and m.paper
    fr = _fr()
    loss, scalars = m.loss(_batch(step=3), fr)
    loss.backward()
    assert math.isfinite(loss.item()) and all(math.isfinite(float(v)) for v in scalars.values())
    assert all(p.grad is not None for p in fr.backbone.parameters())
    with pytest.raises(ValueError, match="batch.xt"):
        m.loss(Batch(x=_batch().x, y=_batch().y), fr)
    for seed in (1, 2):  # every random-search point builds
        hp = resolve_hparams(name, seed)
        build_method(name, EMB, CLASSES, hparams_seed=seed, overrides={"disc_hidden": 16} if name == "dann" else {})
        assert set(hp) == set(type(m).hparams())
    with pytest.raises(ValueError, match="features"):
        build_method(name, EMB, CLASSES, overrides={"features": "unit"})


def test_mmd_and_coral_options():
    fr, batch = _fr(), _batch()
    lin = build_method("mmd", EMB, CLASSES, overrides={"estimator": "linear", "kernel_exp_lo": 0, "kernel_exp_hi": 0})
    assert lin.scales == (1.0,) and math.isfinite(lin.loss(batch, fr)[0].item())
    assert build_method("mmd", EMB, CLASSES).scales == (0.25, 0.5, 1.0, 2.0, 4.0)
    with pytest.raises(ValueError, match="estimator"):
        build_method("mmd", EMB, CLASSES, overrides={"estimator": "biased"})
    raw = build_method("coral", EMB, CLASSES, overrides={"features": "raw", "match_mean": True})
    assert math.isfinite(raw.loss(batch, fr)[0].item())
    with pytest.raises(ValueError, match="match_mean"):
        build_method("coral", EMB, CLASSES, overrides={"match_mean": "yes"})


# ------------------------------------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def toy_target(tmp_path_factory) -> str:
    """A ``target/`` folder (``crops/`` + ``target_list.txt``) of 10 random 32 px JPEGs, darker than the source.

    (The session's ``tiny_release`` has one too, but rendering it takes most of a minute on 2 busy cores.)"""
    from harness.data.images import encode_jpeg

    root = tmp_path_factory.mktemp("toy_target") / "target"
    (root / "crops").mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = []
    for i in range(10):
        name = f"61--Street_Surveillance_toy_{i:06d}_0_900.jpg"
        img = np.clip(60 + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        (root / "crops" / name).write_bytes(encode_jpeg(img))
        names.append(name)
    (root / "target_list.txt").write_text("".join(n + "\n" for n in names))
    return str(root)


@pytest.mark.parametrize("name", DA_METHODS)
def test_trainer_passes_target_batches(name, toy_rec_release, toy_target, monkeypatch):
    from harness.engine.train import train
    from methods import da_losses

    module = {"dann": methods.dann, "coral": methods.coral, "mmd": methods.mmd}[name]
    seen = []

    def spy(backbone, x, xt):
        seen.append(None if xt is None else (tuple(xt.shape), x.shape[0]))
        return da_losses.joint_embeddings(backbone, x, xt)

    monkeypatch.setattr(module, "joint_embeddings", spy)
    overrides = {
        "method": name,
        "data.release": toy_rec_release,
        "data.target": toy_target,
        "data.input_size": "32",
        "model.widths": "8,16,16,32",
        "model.embedding_size": "32",
        "optim.batch_size": "16",
        "optim.epochs": "1",
        "device": "cpu",
        "threads": "1",
        "log_every": "1",
    }
    if name == "dann":
        overrides["hparams.disc_hidden"] = "32"
    logged = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dann: total steps unknown until the trainer sets them
        result = train(
            apply_overrides(RunConfig(), overrides),
            log=lambda k, v, s: logged.setdefault(k, []).append(v),
            progress=False,
        )
    assert result.steps == 3 and math.isfinite(result.final_loss)
    assert seen == [((16, 3, 32, 32), 16)] * 3  # a target batch of the source's size at every step
    assert all(math.isfinite(v) for v in logged["train.loss"])
    keys = {
        "dann": ("dann.domain_loss", "dann.domain_acc", "dann.lambda"),
        "coral": ("coral.loss",),
        "mmd": ("mmd.loss",),
    }[name]
    for k in keys:
        assert len(logged[f"train.{k}"]) == 3 and all(math.isfinite(v) for v in logged[f"train.{k}"])
    if name == "dann":
        horizon = result.method.total_steps or methods.dann.FALLBACK_SCHEDULE_STEPS
        assert logged["train.dann.lambda"] == pytest.approx([grl_coefficient(s / horizon) for s in range(3)])
