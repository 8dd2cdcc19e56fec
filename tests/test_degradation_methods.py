"""Differentiable per-sample degradations (``methods.degradations``) and the methods built on them:
``kornia_degrade`` (AdaFace-style random degradations) and ``adv_degrade`` (CFSM's FGSM on degradation
parameters)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import methods.adv_degrade  # noqa: F401  (registers)
import methods.kornia_degrade  # noqa: F401  (registers)
from harness.models import build_backbone, build_head
from methods import Batch, FRModel, build_method, resolve_hparams
from methods import degradations as D
from methods.cfsm_guided import mix_indices

REPO = Path(__file__).resolve().parents[1]
INPUT, EMB, CLASSES, B = 32, 16, 4, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _fr(seed=0):
    torch.manual_seed(seed)
    net = build_backbone(
        "small", input_size=INPUT, widths=(8, 16, 16, 32), layers=(1, 1, 1, 1), num_features=EMB, stem_stride=2
    )
    head = build_head("arcface", EMB, CLASSES)
    net.train(), head.train()
    return FRModel(backbone=net, raw=net, head=head)


def _faces(n=B, seed=1, channels_last=True):
    """Smooth random images (low-pass noise) in [-1, 1]: degradations have something to destroy."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(
        torch.rand(n, 3, 8, 8, generator=g), size=(INPUT, INPUT), mode="bicubic", align_corners=False
    )
    x = (x + 0.1 * torch.rand(n, 3, INPUT, INPUT, generator=g)).clamp(0, 1) * 2 - 1
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _checker(n=2, size=32):
    t = torch.arange(size)
    board = ((t[:, None] + t[None, :]) % 2).float() * 1.6 - 0.8  # +-0.8, away from the clip
    return board.expand(n, 3, size, size).clone()


def _hf_energy(x):
    """Energy of the horizontal and vertical first differences (high frequencies)."""
    return (x.diff(dim=-1) ** 2).mean() + (x.diff(dim=-2) ** 2).mean()


def _full(n, **values):
    return {k: torch.full((n,), float(v)) for k, v in values.items()}


# ------------------------------------------------------------------------------------------------ the ops
def test_blurs_lower_high_frequency_energy_of_a_checkerboard():
    x = _checker()
    e0 = _hf_energy(x)
    blurred = D.apply(x, _full(2, blur_sigma=1.0), ops=("blur",))
    moved = D.apply(x, _full(2, motion_length=5.0, motion_angle=30.0), ops=("motion",))
    assert _hf_energy(blurred) < 0.1 * e0
    assert _hf_energy(moved) < 0.5 * e0
    # zero strength is the identity for both
    torch.testing.assert_close(D.apply(x, _full(2, blur_sigma=0.0), ops=("blur",)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        D.apply(x, _full(2, motion_length=0.0, motion_angle=17.0), ops=("motion",)), x, atol=1e-5, rtol=0
    )


def test_noise_raises_variance_by_sigma_squared():
    x = torch.zeros(4, 3, 32, 32)  # grey 0.5 in [0, 1]: no clipping at sigma 0.05
    field = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = D.apply(x, {**_full(4, noise_sigma=0.05), "noise": field}, ops=("noise",))
    var01 = ((out + 1) / 2).var().item()  # variance in [0, 1] intensity units
    assert abs(var01 - 0.05**2) < 0.15 * 0.05**2


def test_jpeg_quality_100_is_nearly_identity_and_10_is_not():
    # detailed luma, constant chroma (JPEG's 4:2:0 chroma subsampling loses colour detail even at quality 100)
    luma = _faces(2, channels_last=False).mean(1, keepdim=True)
    x = (0.8 * luma + torch.tensor([0.1, -0.05, 0.0]).view(1, 3, 1, 1)).clamp(-1, 1)
    q100 = D.apply(x, _full(2, jpeg_quality=100), ops=("jpeg",))
    q10 = D.apply(x, _full(2, jpeg_quality=10), ops=("jpeg",))
    err100, err10 = (q100 - x).abs().mean().item(), (q10 - x).abs().mean().item()
    assert err100 < 0.02
    assert err10 > 3 * err100 and err10 > 0.03


def test_down_up_at_factor_1_is_identity_and_lower_factors_lose_detail():
    x = _checker(2)
    torch.testing.assert_close(D.apply(x, _full(2, scale=1.0), ops=("resize",)), x, atol=1e-6, rtol=0)
    assert _hf_energy(D.apply(x, _full(2, scale=0.3), ops=("resize",))) < 0.2 * _hf_energy(x)


def test_down_up_is_continuous_and_differentiable_in_the_scale():
    x = _faces(1, channels_last=False)
    outs = [D.down_up((x + 1) / 2, torch.tensor([s])) for s in (0.5 - 1e-4, 0.5, 0.5 + 1e-4)]
    assert (outs[0] - outs[1]).abs().max() < 1e-2 and (outs[2] - outs[1]).abs().max() < 1e-2
    s = torch.tensor([0.43], requires_grad=True)
    (g,) = torch.autograd.grad(D.down_up((x + 1) / 2, s).square().sum(), [s])
    assert g.abs().item() > 0


def test_color_jitter_follows_torchvision_semantics():
    x = _faces(3, channels_last=False)
    u = (x + 1) / 2
    ident = D.color_jitter(u, torch.ones(3), torch.ones(3), torch.ones(3))
    torch.testing.assert_close(ident, u)
    dark = D.color_jitter(u, torch.full((3,), 0.5), torch.ones(3), torch.ones(3))
    torch.testing.assert_close(dark, u * 0.5)
    grey = D.color_jitter(u, torch.ones(3), torch.ones(3), torch.zeros(3))
    assert (grey[:, 0] - grey[:, 1]).abs().max() < 1e-6  # saturation 0: no colour left
    flat = D.color_jitter(u, torch.ones(3), torch.zeros(3), torch.ones(3))
    assert flat.flatten(1).std(1).max() < 1e-6  # contrast 0: the grey mean everywhere


def test_crop_keeps_the_box_and_blackens_the_rest():
    x = _faces(2, channels_last=False)
    box = torch.tensor([[4, 6, 10, 12], [0, 0, 32, 32]])
    out = D.apply(x, {"crop_box": box}, ops=("crop",))
    torch.testing.assert_close(out[0, :, 4:14, 6:18], x[0, :, 4:14, 6:18])
    assert (out[0, :, :4] == -1).all() and (out[0, :, 14:] == -1).all() and (out[0, :, :, :6] == -1).all()
    torch.testing.assert_close(out[1], x[1])
    boxes = D.crop_boxes(500, 64, 64, torch.Generator().manual_seed(0))
    area = (boxes[:, 2] * boxes[:, 3]).float() / 64**2
    assert area.min() >= 0.19 and area.max() <= 1.0 and (boxes[:, :2] >= 0).all()
    assert ((boxes[:, 0] + boxes[:, 2]) <= 64).all() and ((boxes[:, 1] + boxes[:, 3]) <= 64).all()


# ------------------------------------------------------------------------------------------------ per sample
def test_params_are_per_sample():
    x = _faces(1, channels_last=False).expand(2, -1, -1, -1).clone()  # two copies of one image
    g = torch.Generator().manual_seed(0)
    p = D.sample_params(2, g, image_shape=(3, INPUT, INPUT))
    p = {k: v for k, v in p.items() if not k.endswith("_on")}  # every op on both
    ops = ("color", "blur", "motion", "resize", "noise", "jpeg")
    out = D.apply(x, p, ops=ops)
    assert (out[0] - out[1]).abs().mean() > 1e-2  # different params, different outputs
    # sample 0's output does not depend on sample 1's parameters
    q = {k: v.clone() for k, v in p.items()}
    other = {
        "blur_sigma": 0.9,
        "motion_length": 3.0,
        "motion_angle": -20.0,
        "scale": 0.5,
        "noise_sigma": 0.05,
        "jpeg_quality": 70.0,
        "brightness": 1.3,
        "contrast": 0.7,
        "saturation": 1.4,
    }
    for k, v in other.items():
        q[k][1] = v
    q["color_order"][1] = (p["color_order"][1] + 1) % 6
    q["noise"][1] = torch.randn(q["noise"][1].shape, generator=g)
    out2 = D.apply(x, q, ops=ops)
    torch.testing.assert_close(out2[0], out[0])
    assert (out2[1] - out[1]).abs().mean() > 1e-3


def test_masks_select_the_samples_an_op_touches():
    x = _faces(4, channels_last=False)
    p = {**_full(4, blur_sigma=1.5), "blur_on": torch.tensor([True, False, True, False])}
    out = D.apply(x, p)
    torch.testing.assert_close(out[1], x[1])
    torch.testing.assert_close(out[3], x[3])
    assert (out[0] - x[0]).abs().mean() > 1e-2 and (out[2] - x[2]).abs().mean() > 1e-2


def test_every_parameter_gets_a_gradient():
    space = D.DegradationSpace()
    names = space.active()
    x = _faces(4, channels_last=False)
    g = torch.Generator().manual_seed(3)
    p = D.sample_params(4, g, space, image_shape=(3, INPUT, INPUT))
    z = (0.3 + 0.4 * torch.rand(4, len(names), generator=g)).requires_grad_(True)
    params = {**D.unit_to_params(z, space, INPUT, names), "noise": p["noise"], "color_order": p["color_order"]}
    out = D.apply(x, params, ops=("color", "blur", "motion", "resize", "noise", "jpeg"))
    w = torch.randn(out.shape, generator=g)
    (grad,) = torch.autograd.grad((out * w).sum(), [z])
    assert torch.isfinite(grad).all()
    assert (grad != 0).all(), dict(zip(names, (grad == 0).sum(0).tolist()))


def test_sample_params_is_reproducible_and_in_range():
    a = D.sample_params(64, torch.Generator().manual_seed(5), image_shape=(3, 64, 64), probs={"crop": 0.2})
    b = D.sample_params(64, torch.Generator().manual_seed(5), image_shape=(3, 64, 64), probs={"crop": 0.2})
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert (a["scale"] >= 0.2).all() and (a["scale"] <= 1).all()
    assert (a["jpeg_quality"] >= 60).all() and (a["blur_sigma"] <= 2.2 * 64 / 112 + 1e-6).all()
    assert 0 < a["crop_on"].float().mean() < 0.5 and a["blur_on"].all()
    with pytest.raises(ValueError, match="unknown degradation ops"):
        D.sample_params(2, probs={"sharpen": 0.5})


# ------------------------------------------------------------------------------------------------ kornia_degrade
def test_kornia_degrade_defaults_are_adaface_plus_camera_ops_at_its_probability():
    hp = resolve_hparams("kornia_degrade")
    assert (hp["crop_prob"], hp["lowres_prob"], hp["photometric_prob"]) == (0.2, 0.2, 0.2)
    assert hp["blur_prob"] == hp["motion_prob"] == hp["noise_prob"] == hp["jpeg_prob"] == 0.2
    assert hp["scale_min"] == 0.2 and hp["brightness"] == hp["contrast"] == hp["saturation"] == 0.5 and hp["hue"] == 0
    drawn = resolve_hparams("kornia_degrade", hparams_seed=3)
    assert all(0 <= drawn[k] <= 0.5 for k in ("crop_prob", "blur_prob", "jpeg_prob"))


@pytest.mark.parametrize("channels_last", [True, False])
def test_kornia_degrade_keeps_labels_size_dtype_and_memory_format(channels_last):
    m = build_method(
        "kornia_degrade",
        EMB,
        CLASSES,
        overrides={"blur_prob": 0.3, "noise_prob": 0.3, "jpeg_prob": 0.3, "motion_prob": 0.3},
    )
    x = _faces(16, channels_last=channels_last)
    y = torch.arange(16) % CLASSES
    torch.manual_seed(0)
    out = m.augment(Batch(x=x, y=y), _fr())
    assert out.x.shape == x.shape and out.x.dtype == x.dtype
    assert out.x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(out.y, y)
    changed = (out.x - x).flatten(1).abs().amax(1) > 1e-4
    assert 0 < changed.sum() < 16  # some images degraded, some untouched (per-sample masks)
    assert out.x.min() >= -1 and out.x.max() <= 1
    loss, scalars = m.loss(out, _fr())
    assert torch.isfinite(loss) and 0 < scalars["degrade.touched"] < 1


def test_kornia_degrade_all_off_is_identity():
    off = {
        k: 0.0
        for k in ("crop_prob", "lowres_prob", "photometric_prob", "blur_prob", "motion_prob", "noise_prob", "jpeg_prob")
    }
    m = build_method("kornia_degrade", EMB, CLASSES, overrides=off)
    x = _faces(4)
    out = m.augment(Batch(x=x, y=torch.arange(4)), _fr())
    assert torch.equal(out.x, x)


# ------------------------------------------------------------------------------------------------ adv_degrade
def _adv(**kw):
    return build_method("adv_degrade", EMB, CLASSES, overrides={"monitor_every": 0, **kw})


def test_adv_degrade_step_moves_every_coordinate_by_alpha_in_the_box_and_raises_the_loss():
    m = _adv(inner_bn_train=False, alpha=0.05, eps=0.314)
    fr = _fr()
    x, y = _faces(B, channels_last=False), torch.arange(B) % CLASSES
    torch.manual_seed(0)
    _, fixed = m.draw(B, (3, INPUT, INPUT))
    z0 = 0.35 + 0.3 * torch.rand(B, len(m.names), generator=torch.Generator().manual_seed(1))  # box inside [0, 1]
    z, scalars = m.adversarial_coefficients(x, y, z0, fixed, fr)
    torch.testing.assert_close((z - z0).abs(), torch.full_like(z, 0.05), atol=1e-6, rtol=0)
    assert scalars["adv.grad_zero"] == 0 and not z.requires_grad
    assert all(p.grad is None for p in list(fr.raw.parameters()) + list(fr.head.parameters()))
    with torch.no_grad():
        fr.raw.eval(), fr.head.eval()
        l0 = fr.head(fr.raw(m.degrade(x, z0, fixed)), y)
        l1 = fr.head(fr.raw(m.degrade(x, z, fixed)), y)
    assert l1 > l0
    # the released eps = alpha = 0.314: every coordinate moves by 0.314, clipped to [0, 1]
    m2 = _adv(inner_bn_train=False)
    fr.raw.train(), fr.head.train()
    z2, _ = m2.adversarial_coefficients(x, y, z0, fixed, fr)
    expected = (z0 + 0.314 * (z2 - z0).sign()).clamp(0, 1)
    torch.testing.assert_close(z2, expected, atol=1e-6, rtol=0)
    assert ((z2 - z0).abs() > 0.03).all()


def test_adv_degrade_eps_box_binds_over_several_steps():
    m = _adv(inner_bn_train=False, alpha=0.1, eps=0.15, steps=3)
    x, y = _faces(B, channels_last=False), torch.arange(B) % CLASSES
    torch.manual_seed(0)
    z0, fixed = m.draw(B, (3, INPUT, INPUT))
    z, _ = m.adversarial_coefficients(x, y, z0, fixed, _fr())
    assert ((z - z0).abs() <= 0.15 + 1e-6).all() and (z >= 0).all() and (z <= 1).all()


def test_adv_degrade_batch_labels_and_gradient_flow():
    m = build_method("adv_degrade", EMB, CLASSES)  # defaults: eps = alpha = 0.314, 1 step, rs_ratio 0.75
    assert (m.eps, m.alpha, m.steps, m.rs_ratio, m.inner_bn_train) == (0.314, 0.314, 1, 0.75, True)
    assert len(m.names) == 9
    fr = _fr()
    x = _faces(B)
    y = torch.arange(B) % CLASSES
    torch.manual_seed(0)
    out = m.augment(Batch(x=x, y=y, step=0), fr)
    assert out.x.shape == x.shape and out.x.dtype == x.dtype and out.x.is_contiguous(memory_format=torch.channels_last)
    assert out.y.shape == y.shape
    # replay the draws: first 6 rows are real images with their labels, last 2 degraded x[syn] with y[syn]
    torch.manual_seed(0)
    real_idx, syn_idx = mix_indices(B, 0.75)
    torch.testing.assert_close(out.x[:6], x[real_idx])
    assert torch.equal(out.y, torch.cat([y[real_idx], y[syn_idx]]))
    assert (out.x[6:] - x[syn_idx]).abs().mean() > 1e-2
    assert all(p.grad is None for p in fr.raw.parameters())  # the inner pass touched no .grad
    loss, scalars = m.loss(out, fr)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fr.raw.parameters() if p.requires_grad)
    assert fr.raw.conv1.weight.grad.abs().sum() > 0
    assert {"adv.inner_loss", "adv.grad_zero", "adv.z_shift", "adv.z_mean"} <= set(scalars)
    assert 0 < float(scalars["adv.z_shift"]) <= 0.314 + 1e-6


def test_adv_degrade_inner_bn_train_semantics():
    x, y = _faces(B), torch.arange(B) % CLASSES
    for flag, changes in ((True, True), (False, False)):
        fr = _fr()
        m = _adv(inner_bn_train=flag)
        torch.manual_seed(0)
        z0, fixed = m.draw(B, (3, INPUT, INPUT))
        bns = [mod for mod in fr.raw.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
        before = [b.running_mean.clone() for b in bns]
        m.adversarial_coefficients(x, y, z0, fixed, fr)
        moved = any(not torch.equal(b.running_mean, r) for b, r in zip(bns, before))
        assert moved is changes
        assert fr.raw.training and fr.head.training  # restored


def test_adv_degrade_probe_and_steps_zero():
    x, y = _faces(B), torch.arange(B) % CLASSES
    m = _adv(monitor_every=1)
    torch.manual_seed(0)
    out = m.augment(Batch(x=x, y=y, step=0), _fr())
    assert {"adv.probe_loss_z0", "adv.probe_loss_adv"} <= set(out.extras)
    m0 = _adv(steps=0)
    z0, fixed = m0.draw(B, (3, INPUT, INPUT))
    z, scalars = m0.adversarial_coefficients(x, y, z0, fixed, _fr())
    assert z is z0 and scalars == {}


def test_the_degradation_code_never_imports_synthface():
    """SynthFace's camera model stays hidden: no import of anything under harness.synthface."""
    import ast

    for rel in ("methods/degradations.py", "methods/kornia_degrade.py", "methods/adv_degrade.py"):
        for node in ast.walk(ast.parse((REPO / rel).read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("synthface" in n for n in names), (rel, names)
