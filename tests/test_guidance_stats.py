"""Issue 20, the effect of guidance: ``cfsm_guided`` records the distribution of ||o|| before and after the FGSM
step, the FR loss and the distance to the source image at random and guided o, every ``monitor_every`` steps,
without changing training (no random numbers drawn, no running statistics moved)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from harness.core.config import RunConfig, apply_overrides
from harness.models import build_head, small_iresnet
from harness.models.cfsm import CFSMConfig, CFSMGenerator, save_generator
from methods import Batch, FRModel, build_method
from methods.cfsm_guided import decode, encode, fr_input, mix_indices, resize
from methods.guidance import norm_summary

GEN = CFSMConfig(
    image_size=16, dim=8, n_residual=1, latent_dim=16, mlp_dim=32, d_scales=1, d_layers=2, adain_scale="one_plus_gamma"
)
INPUT, EMB, CLASSES, B, ALPHA = 32, 16, 4, 8, 0.314

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory):
    torch.manual_seed(0)
    g = CFSMGenerator(GEN)
    with torch.no_grad():
        g.subspace.U.mul_(3.0)
    path = str(tmp_path_factory.mktemp("stage1") / "generator.pt")
    save_generator(path, g)
    return path


def _hp(gen_path, **kw):
    return {"generator": gen_path, "generator_size": 16, "latent_dim": 16, **kw}


def _fr():
    torch.manual_seed(0)
    net = small_iresnet(widths=(8, 16, 16, 32), input_size=INPUT, num_features=EMB, stem_stride=2)
    head = build_head("arcface", EMB, CLASSES)
    net.train(), head.train()
    return FRModel(backbone=net, raw=net, head=head)


def _batch(step=0):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(B, 3, INPUT, INPUT, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    return Batch(x=x, y=torch.arange(B) % CLASSES, step=step)


def _summary(norms: np.ndarray) -> dict[str, float]:
    q10, q50, q90 = np.quantile(norms, [0.1, 0.5, 0.9])
    return {
        "mean": norms.mean(),
        "std": norms.std(ddof=1),
        "min": norms.min(),
        "max": norms.max(),
        "q10": q10,
        "q50": q50,
        "q90": q90,
    }


def test_norm_summary_on_hand_made_coefficients():
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 0.0], [1.0, 0.0]])  # norms 5, 1, 10, 0, 1
    got = {k.split(".", 1)[1]: v.item() for k, v in norm_summary("x", z).items()}
    # by hand: sorted 0 1 1 5 10; mean 17/5; q10 at position 0.4 -> 0.4; q50 = 1; q90 at 3.6 -> 5 + 0.6 * 5 = 8
    assert got["mean"] == pytest.approx(3.4) and got["min"] == 0.0 and got["max"] == 10.0
    assert got["std"] == pytest.approx(math.sqrt(sum((v - 3.4) ** 2 for v in (5, 1, 10, 0, 1)) / 4))
    assert (got["q10"], got["q50"], got["q90"]) == pytest.approx((0.4, 1.0, 8.0))
    assert norm_summary("one", torch.ones(1, 3))["one.std"].item() == 0.0


def test_recorded_statistics_match_a_direct_computation(gen_path):
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, inner_bn_train=False, monitor_every=1))
    fr, batch = _fr(), _batch()
    twin = copy.deepcopy(fr)  # the direct computation runs on an identical model
    torch.manual_seed(5)
    out = m.augment(batch, fr).extras

    # the same draws in the same order: the two permutations, then o0 for the selected synthetic rows
    torch.manual_seed(5)
    _, syn = mix_indices(B, 0.75)
    o0 = torch.randn(syn.numel(), 10)
    x, y = batch.x[syn], batch.y[syn]
    with torch.no_grad():
        content = encode(m.generator, resize(x.float(), 16).contiguous())

    def render(o):
        return fr_input(decode(m.generator, content, o), batch.x)

    twin.raw.eval(), twin.head.eval()
    o = o0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin.head(twin.raw(render(o)), y), [o])
    o_adv = o0 + ALPHA * torch.sign(grad)  # eps = alpha: the box never clips one step

    for prefix, coeff in (("cfsm.o0_norm", o0), ("cfsm.oadv_norm", o_adv)):
        want = _summary(np.linalg.norm(coeff.detach().double().numpy(), axis=1))
        for k, v in want.items():
            assert out[f"{prefix}.{k}"].item() == pytest.approx(v, rel=1e-5, abs=1e-6), (prefix, k)
    with torch.no_grad():
        for tag, coeff in (("o0", o0), ("adv", o_adv)):
            images = render(coeff)
            loss = twin.head(twin.raw(images), y).item()
            assert out[f"cfsm.probe_loss_{tag}"].item() == pytest.approx(loss, rel=1e-5)
            assert out[f"cfsm.probe_l1_{tag}"].item() == pytest.approx((images - x).abs().mean().item(), rel=1e-5)
    # the guided coefficients moved by alpha per coordinate and the loss went up (what the step is for)
    assert out["cfsm.oadv_norm.mean"].item() != pytest.approx(out["cfsm.o0_norm.mean"].item())
    assert out["cfsm.probe_loss_adv"].item() > out["cfsm.probe_loss_o0"].item()


@pytest.mark.parametrize("inner_bn_train", [False, True])
def test_recording_changes_nothing_and_follows_monitor_every(gen_path, inner_bn_train):
    runs = []
    for every in (0, 1):
        m = build_method(
            "cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, inner_bn_train=inner_bn_train, monitor_every=every)
        )
        fr = _fr()
        torch.manual_seed(7)
        out = m.augment(_batch(), fr)
        runs.append((out, torch.get_rng_state(), fr.raw.bn1.running_mean.clone()))
    (a, rng_a, bn_a), (b, rng_b, bn_b) = runs
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # bit for bit
    assert torch.equal(rng_a, rng_b) and torch.equal(bn_a, bn_b)  # no random number drawn, no statistic moved
    assert not any(k.startswith("cfsm.o0_norm") for k in a.extras) and "cfsm.o0_norm.q90" in b.extras
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, monitor_every=2))
    assert "cfsm.oadv_norm.mean" not in m.augment(_batch(step=1), _fr()).extras
    assert "cfsm.oadv_norm.mean" in m.augment(_batch(step=2), _fr()).extras


def test_trainer_logs_the_guidance_statistics(gen_path, toy_rec_release):
    from harness.engine.train import train

    cfg = apply_overrides(
        RunConfig(),
        {
            "method": "cfsm_guided",
            "data.release": toy_rec_release,
            "data.input_size": "32",
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "optim.batch_size": "16",
            "optim.epochs": "1",
            "device": "cpu",
            "threads": "1",
            "log_every": "1",
            "hparams.monitor_every": "2",
            "hparams.generator": gen_path,
            "hparams.generator_size": "16",
            "hparams.latent_dim": "16",
        },
    )
    logged: dict[str, list] = {}
    train(cfg, log=lambda k, v, s: logged.setdefault(k, []).append((s, v)), progress=False)
    for key in (
        "o0_norm.mean",
        "o0_norm.std",
        "o0_norm.q50",
        "oadv_norm.mean",
        "oadv_norm.q90",
        "probe_l1_o0",
        "probe_l1_adv",
        "probe_loss_o0",
        "probe_loss_adv",
    ):
        assert [s for s, _ in logged[f"train.cfsm.{key}"]] == [0, 2], key  # 3 steps, monitored every 2
        assert all(math.isfinite(v) for _, v in logged[f"train.cfsm.{key}"])
