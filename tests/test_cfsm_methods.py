"""CFSM stage 2 (``cfsm_guided``, ``cfsm_random``): FGSM on the style coefficients, mixing, generator loading."""

from __future__ import annotations

import math

import pytest
import torch

import methods
from harness.core.config import RunConfig, apply_overrides
from harness.models import build_head, small_iresnet
from harness.models.cfsm import CFSMConfig, CFSMGenerator, save_generator
from methods import Batch, FRModel, build_method
from methods.cfsm_guided import decode, encode, fgsm_step, mix_batch, mix_indices, mix_sizes, resize

GEN = CFSMConfig(
    image_size=16, dim=8, n_residual=1, latent_dim=16, mlp_dim=32, d_scales=1, d_layers=2, adain_scale="one_plus_gamma"
)
INPUT, EMB, CLASSES, B = 32, 16, 4, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory):
    torch.manual_seed(0)
    g = CFSMGenerator(GEN)
    with torch.no_grad():  # a generator whose output depends visibly on o
        g.subspace.U.mul_(3.0)
    path = str(tmp_path_factory.mktemp("stage1") / "generator.pt")
    save_generator(path, g)
    return path


def _hp(gen_path, **kw):
    return {"generator": gen_path, "generator_size": 16, "latent_dim": 16, **kw}


def _fr(seed=0):
    torch.manual_seed(seed)
    net = small_iresnet(widths=(8, 16, 16, 32), input_size=INPUT, num_features=EMB, stem_stride=2)
    head = build_head("arcface", EMB, CLASSES)
    net.train(), head.train()
    return FRModel(backbone=net, raw=net, head=head)


def _batch(seed=1, channels_last=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, INPUT, INPUT, generator=g) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x=x, y=torch.arange(B) % CLASSES)


# ------------------------------------------------------------------------------------------------ the step
def test_fgsm_step_moves_by_alpha_and_stays_in_the_box():
    torch.manual_seed(0)
    o0, g = torch.randn(6, 10), torch.randn(6, 10)
    o1 = fgsm_step(o0, o0, g, alpha=0.1, eps=0.314)
    torch.testing.assert_close(o1 - o0, 0.1 * g.sign(), atol=1e-6, rtol=0)
    o1 = fgsm_step(o0, o0, g, alpha=0.5, eps=0.2)  # eps < alpha: the box binds at once
    torch.testing.assert_close(o1 - o0, 0.2 * g.sign(), atol=1e-6, rtol=0)
    # two steps, eps 0.15, alpha 0.1: the same sign clips at 0.15, the opposite sign comes back to 0
    same = fgsm_step(fgsm_step(o0, o0, g, 0.1, 0.15), o0, g, 0.1, 0.15)
    torch.testing.assert_close(same - o0, 0.15 * g.sign(), atol=1e-6, rtol=0)
    back = fgsm_step(fgsm_step(o0, o0, g, 0.1, 0.15), o0, -g, 0.1, 0.15)
    torch.testing.assert_close(back, o0, atol=1e-6, rtol=0)
    assert not o1.requires_grad


def test_decode_of_encode_is_the_generator(gen_path):
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path))
    x, o = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 10)
    with torch.no_grad():
        torch.testing.assert_close(decode(m.generator, encode(m.generator, x), o), m.generator(x, o))


@pytest.mark.parametrize("steps,alpha,eps", [(1, 0.314, 0.314), (2, 0.2, 0.3)])
def test_guided_step_is_the_projected_sign_ascent_and_raises_the_loss(gen_path, steps, alpha, eps):
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, steps=steps, alpha=alpha, eps=eps))
    fr, batch = _fr(), _batch()
    torch.manual_seed(3)
    o0 = torch.randn(B, 10)
    with torch.no_grad():
        content = encode(m.generator, resize(batch.x, 16).contiguous())
    o, scalars = m.adversarial_coefficients(m.generator, content, o0, batch.y, fr, batch.x)
    shift = (o - o0).abs()
    assert shift.max().item() <= eps + 1e-6
    if steps == 1:
        torch.testing.assert_close(shift, torch.full_like(shift, alpha), atol=1e-6, rtol=0)
    else:  # 0.2 then 0.2 more clipped at 0.3, or 0.2 then back to 0: only these three values occur
        vals = shift.flatten().tolist()
        assert all(min(abs(v - t) for t in (0.0, 0.2, 0.3)) < 1e-6 for v in vals) and max(vals) > 0.29
    assert all(p.grad is None for p in [*fr.raw.parameters(), *fr.head.parameters()])  # grads w.r.t. o only

    def fr_loss(coeff):
        with torch.no_grad():
            return fr.head(fr.raw(resize(decode(m.generator, content, coeff), INPUT)), batch.y).item()

    before, after = fr_loss(o0), fr_loss(o)
    assert after > before + 1e-3, (before, after)
    assert scalars["cfsm.inner_loss"].item() == pytest.approx(before, rel=1e-4)


def test_inner_pass_mode_and_batchnorm_statistics(gen_path):
    fr = _fr()
    bn = fr.raw.bn1
    for inner_bn_train, moves in ((False, False), (True, True)):
        m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, inner_bn_train=inner_bn_train))
        before = bn.running_mean.clone()
        torch.manual_seed(0)
        m.augment(_batch(), fr)
        assert fr.raw.training and fr.head.training and all(mod.training for mod in fr.raw.modules())
        assert (not torch.equal(bn.running_mean, before)) == moves


# ------------------------------------------------------------------------------------------------ mixing
def test_mix_sizes_and_indices():
    assert mix_sizes(128, 0.75) == (96, 32) and mix_sizes(10, 0.75) == (8, 2) and mix_sizes(4, 1.0) == (4, 0)
    real, syn = mix_indices(10, 0.75, torch.Generator().manual_seed(0))
    assert len(real) == 8 and len(syn) == 2 and len(set(real.tolist())) == 8 and len(set(syn.tolist())) == 2
    x = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    y = torch.arange(10) + 100
    xm, ym = mix_batch(x, y, -x[syn], real, syn)
    assert xm.shape == x.shape and xm.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xm[:8], x[real]) and torch.equal(xm[8:], -x[syn])
    assert torch.equal(ym, torch.cat([y[real], y[syn]]))
    with pytest.raises(ValueError, match="rs_ratio"):
        mix_sizes(4, 1.5)


@pytest.mark.parametrize("name", ["cfsm_guided", "cfsm_random"])
def test_augment_keeps_size_format_and_label_alignment(gen_path, name):
    m = build_method(name, EMB, CLASSES, overrides=_hp(gen_path))
    fr, batch = _fr(), _batch()
    torch.manual_seed(7)
    out = m.augment(batch, fr)
    torch.manual_seed(7)  # the method's first draws: the two permutations, then o0 for the synthetic rows
    real, syn = mix_indices(B, 0.75)
    o0 = torch.randn(len(syn), 10)
    assert out.x.shape == batch.x.shape and out.x.dtype == batch.x.dtype
    assert out.x.is_contiguous(memory_format=torch.channels_last)
    n_real = len(real)
    assert torch.equal(out.x[:n_real], batch.x[real])
    assert torch.equal(out.y, torch.cat([batch.y[real], batch.y[syn]]))
    with torch.no_grad():
        x_random = resize(m.generator(resize(batch.x[syn], 16).contiguous(), o0), INPUT)
    if name == "cfsm_random":  # o stayed o0
        torch.testing.assert_close(out.x[n_real:], x_random, atol=1e-5, rtol=0)
        assert out.extras["cfsm.o_shift"].item() == 0.0
    else:
        assert (out.x[n_real:] - x_random).abs().max() > 1e-3
        assert out.extras["cfsm.o_shift"].item() == pytest.approx(0.314, abs=1e-5)
    loss, scalars = m.loss(out, fr)
    assert math.isfinite(loss.item()) and "cfsm.o_abs" in scalars


def test_random_variant_never_runs_the_inner_pass(gen_path, monkeypatch):
    m = build_method("cfsm_random", EMB, CLASSES, overrides=_hp(gen_path))
    assert m.steps == 0 and methods.get_method("cfsm_random").hparams()["steps"][0] == 0
    fr = _fr()
    calls = []
    fr.raw.register_forward_hook(lambda *a: calls.append(1))
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("autograd.grad called"))
    m.augment(_batch(), fr)
    assert calls == []
    with pytest.raises(ValueError, match="steps=0"):
        build_method("cfsm_random", EMB, CLASSES, overrides=_hp(gen_path, steps=1))


def test_synthesize_all_and_the_probe_do_not_change_the_batch(gen_path):
    outs = []
    for kw in ({"monitor_every": 0}, {"monitor_every": 1}):
        m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, inner_bn_train=False, **kw))
        torch.manual_seed(5)
        outs.append(m.augment(_batch(), _fr()))
    torch.testing.assert_close(outs[0].x, outs[1].x)
    assert "cfsm.probe_loss_adv" in outs[1].extras and "cfsm.probe_loss_adv" not in outs[0].extras
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, synthesize="all"))
    out = m.augment(_batch(), _fr())
    assert out.x.shape == (B, 3, INPUT, INPUT) and torch.isfinite(out.x).all()
    with pytest.raises(ValueError, match="synthesize"):
        build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path, synthesize="half"))


# ------------------------------------------------------------------------------------------------ the generator
def test_missing_or_incompatible_generator_fails_at_build(gen_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro stage1"):
        build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(str(tmp_path / "none.pt")))
    for kw, needle in (
        ({"generator_size": 32}, "image_size=16 (expected 32)"),
        ({"style_dim": 8}, "style_dim=10 (expected 8)"),
        ({"latent_dim": 128}, "latent_dim=16 (expected 128)"),
    ):
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            build_method("cfsm_random", EMB, CLASSES, overrides={**_hp(gen_path), **kw})


def test_harness_run_names_the_missing_stage_before_starting(gen_path, tmp_path, capsys):
    from harness.run import main as run_main

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "runs"
    args = ["--params", str(params), "method=cfsm_guided", f"out={out}"]
    assert run_main([*args, f"hparams.generator={tmp_path / 'none.pt'}"]) == 2
    assert "run `dvc repro stage1`" in capsys.readouterr().err
    assert run_main([*args, f"hparams.generator={gen_path}"]) == 2  # generator_size 32 != the checkpoint's 16
    assert "image_size=16 (expected 32)" in capsys.readouterr().err
    assert not out.exists()  # nothing started, no Sacred run recorded


def test_generator_is_frozen_and_not_part_of_the_method(gen_path):
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path))
    m.train()
    assert m.state_dict() == {} and list(m.parameters()) == [] and list(m.children()) == []
    assert not m.generator.training and not any(p.requires_grad for p in m.generator.parameters())


def test_trainer_runs_cfsm_guided(gen_path, toy_rec_release):
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
            "hparams.generator": gen_path,
            "hparams.generator_size": "16",
            "hparams.latent_dim": "16",
        },
    )
    logged = {}
    result = train(cfg, log=lambda k, v, s: logged.setdefault(k, []).append(v), progress=False)
    assert math.isfinite(result.final_loss) and result.steps == 3
    assert len(logged["train.cfsm.inner_loss"]) == 3 and all(math.isfinite(v) for v in logged["train.cfsm.inner_loss"])
    assert "train.cfsm.probe_loss_adv" in logged  # step 0


def test_augment_under_autocast_feeds_the_backbone_its_own_dtype(gen_path):
    # IResNet(fp16=False) disables autocast inside its forward, so the half-precision synthesis must be cast back
    m = build_method("cfsm_guided", EMB, CLASSES, overrides=_hp(gen_path))
    fr = _fr()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.augment(_batch(), fr)
        loss, _ = m.loss(out, fr)
    assert out.x.dtype == torch.float32 and math.isfinite(loss.item())
