"""Behavioural tests for harness.models.cfsm (CFSM stage-1 synthesis model, losses and control API).

Expected parameter counts are derived here from the layer shapes in the reference (CFSM
``synthesis_network.py`` / eriklindernoren MUNIT), independently of the module code; the loss examples are worked
out by hand in the comments.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.models.cfsm import (
    CPU_DEFAULT,
    PAPER,
    AdaptiveInstanceNorm2d,
    CFSMConfig,
    CFSMGenerator,
    InstanceNorm2dAnySize,
    LayerNorm,
    MultiScaleDiscriminator,
    count_parameters,
    identity_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    magnitude_target,
    orthogonality_loss,
    reconstruction_loss,
    subspace_similarity,
)


def conv(cin, cout, k):
    return cin * cout * k * k + cout


# ------------------------------------------------------------------------------------------ parameter counts


def test_paper_parameter_counts_match_layer_arithmetic_and_reference_table():
    # encoder: 7x7 3->64; 4x4 64->128, 128->256; 3 residual blocks of two 3x3 256->256 convs (IN has no affine)
    enc = conv(3, 64, 7) + conv(64, 128, 4) + conv(128, 256, 4) + 3 * 2 * conv(256, 256, 3)
    # decoder: 3 AdaIN residual blocks (no own params); 5x5 256->128 + LN(128) (gamma, beta); 5x5 128->64 + LN(64);
    # 7x7 64->3
    dec = 3 * 2 * conv(256, 256, 3) + conv(256, 128, 5) + 2 * 128 + conv(128, 64, 5) + 2 * 64 + conv(64, 3, 7)
    n_adain = 3 * 2 * 256 * 2  # 3 blocks x 2 AdaIN layers x 256 channels x (beta, gamma) = 3072
    mlp = (128 * 256 + 256) + (256 * 256 + 256) + (256 * n_adain + n_adain)
    sub = 10 * 128 + 128
    d_scale = conv(3, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4) + conv(256, 512, 4) + conv(512, 1, 3)
    assert (enc, dec, mlp, sub, d_scale) == (4_205_696, 4_574_467, 888_320, 1_408, 2_761_153)

    with torch.device("meta"):
        G = CFSMGenerator(PAPER)
        D = MultiScaleDiscriminator(PAPER)
    assert G.subspace.U.is_meta
    assert count_parameters(G.encoder) == enc
    assert count_parameters(G.decoder) == dec
    assert count_parameters(G.mlp) == mlp
    assert count_parameters(G.subspace) == sub
    assert count_parameters(G) == enc + dec + mlp + sub == 9_669_891
    assert count_parameters(D) == 3 * d_scale == 8_283_459


def test_config_deviations_are_recorded():
    assert PAPER.deviations() == {}
    dev = CPU_DEFAULT.deviations()
    assert set(dev) == {"image_size", "dim", "d_scales", "d_layers", "adain_scale"}
    assert dev["adain_scale"] == {"paper": "gamma", "used": "one_plus_gamma"}
    assert CPU_DEFAULT.d_base == 64
    with pytest.raises(ValueError):
        CFSMConfig(adain_scale="bogus")


# ---------------------------------------------------------------------------------------------------- shapes


def test_paper_shapes_on_meta_device():
    with torch.device("meta"):
        G, D = CFSMGenerator(PAPER), MultiScaleDiscriminator(PAPER)
        x = torch.empty(2, 3, 112, 112)
        assert G.encoder(x).shape == (2, 256, 28, 28)
        assert G(x, torch.empty(2, 10)).shape == (2, 3, 112, 112)
        assert [tuple(p.shape) for p in D(x)] == [(2, 1, 7, 7), (2, 1, 3, 3), (2, 1, 1, 1)]


def test_paper_discriminator_real_tensor_handles_1x1_instance_norm():
    torch.manual_seed(0)
    D = MultiScaleDiscriminator(PAPER)
    out = D(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert [tuple(p.shape) for p in out] == [(2, 1, 7, 7), (2, 1, 3, 3), (2, 1, 1, 1)]
    assert all(torch.isfinite(p).all() for p in out)
    norm = InstanceNorm2dAnySize(4)
    assert torch.equal(norm(torch.randn(2, 4, 1, 1)), torch.zeros(2, 4, 1, 1))  # (x - mean) = 0 on a 1x1 map
    z = torch.randn(2, 4, 3, 3)
    assert torch.allclose(
        norm(z),
        (z - z.mean((2, 3), keepdim=True)) / (z.var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt(),
        atol=1e-5,
    )


def test_cpu_default_shapes_and_range():
    torch.manual_seed(0)
    G, D = CFSMGenerator(CPU_DEFAULT), MultiScaleDiscriminator(CPU_DEFAULT)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = G(x, torch.randn(4, 10) * 3)
    assert y.shape == (4, 3, 32, 32)
    assert y.min() >= -1 and y.max() <= 1
    assert y.std() > 0
    assert [tuple(p.shape) for p in D(x)] == [(4, 1, 4, 4), (4, 1, 2, 2)]
    with pytest.raises(ValueError):
        G(x, torch.randn(4, 7))


def test_init_conv_normal_002_layernorm_uniform_subspace_orthogonal():
    torch.manual_seed(0)
    G = CFSMGenerator(PAPER)
    w = G.encoder.model[-1].block[1].weight  # a 256x256x3x3 conv: 589,824 samples
    assert abs(w.std().item() - 0.02) < 5e-4 and abs(w.mean().item()) < 5e-4
    lns = [m for m in G.decoder.modules() if isinstance(m, LayerNorm)]
    assert len(lns) == 2
    for ln in lns:
        assert (ln.gamma >= 0).all() and (ln.gamma <= 1).all() and (ln.beta == 0).all()
    U, mu = G.basis()
    assert U.shape == (10, 128) and (mu == 0).all()
    assert torch.allclose(U @ U.t(), torch.eye(10), atol=1e-5)


# ----------------------------------------------------------------------------------------------------- AdaIN


def _first_adain_io(G, x, o):
    layer = next(m for m in G.decoder.modules() if isinstance(m, AdaptiveInstanceNorm2d))
    seen = {}
    h = layer.register_forward_hook(lambda m, i, out: seen.update(inp=i[0].clone(), out=out.clone()))
    with torch.no_grad():
        G(x, o)
    h.remove()
    return seen["inp"], seen["out"]


def test_adain_one_plus_gamma_with_zero_mlp_output_is_instance_norm():
    torch.manual_seed(0)
    G = CFSMGenerator(CPU_DEFAULT)
    last = G.mlp.model[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    inp, out = _first_adain_io(G, torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 10))
    assert torch.allclose(out, F.instance_norm(inp), atol=1e-5)
    assert out.abs().max() > 0.5  # not collapsed


def test_adain_gamma_scale_and_munit_parameter_order():
    torch.manual_seed(0)
    G = CFSMGenerator(dataclasses.replace(CPU_DEFAULT, adain_scale="gamma"))
    last = G.mlp.model[-1]
    layers = [m for m in G.decoder.modules() if isinstance(m, AdaptiveInstanceNorm2d)]
    assert len(layers) == 6 and all(m.num_features == 64 for m in layers)
    # constant MLP output: layer k gets slice [k*128, (k+1)*128); first 64 -> beta = k, next 64 -> gamma = 10 + k
    bias = torch.cat([torch.cat([torch.full((64,), float(k)), torch.full((64,), 10.0 + k)]) for k in range(6)])
    nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(bias)
    inp, out = _first_adain_io(G, torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 10))
    for k, m in enumerate(layers):
        assert torch.all(m.beta == k) and torch.all(m.gamma == 10 + k)
    assert torch.allclose(out, 10.0 * F.instance_norm(inp) + 0.0, atol=1e-4)

    # the same numbers with the 1+gamma variant (the layer reads its own mode)
    for m in layers:
        m.scale_mode = "one_plus_gamma"
    inp, out = _first_adain_io(G, torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 10))
    assert torch.allclose(out, 11.0 * F.instance_norm(inp), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- losses


def test_lsgan_losses_two_scales():
    d_real = [torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0]])]
    d_fake = [torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5]])]
    # D: scale 1 mean(0, 1) + mean(0, 1) = 0.5 + 0.5; scale 2 (2-1)^2 + 0.5^2 = 1.25; total 2.25
    assert lsgan_d_loss(d_real, d_fake).item() == pytest.approx(2.25)
    # G: scale 1 mean((0-1)^2, (1-1)^2) = 0.5; scale 2 (0.5-1)^2 = 0.25; total 0.75
    assert lsgan_g_loss(d_fake).item() == pytest.approx(0.75)


def test_magnitude_target_linear_and_unclipped():
    # t(a) = 0.05 + 0.1 a with the defaults; a = 9 > ua stays unclipped
    t = magnitude_target(torch.tensor([0.0, 3.0, 6.0, 9.0]))
    assert torch.allclose(t, torch.tensor([0.05, 0.35, 0.65, 0.95]))
    # la=1, ua=3, lm=0, um=1: t(2) = (2-1)*1/2 + 0 = 0.5
    assert magnitude_target(torch.tensor(2.0), la=1, ua=3, lm=0, um=1).item() == pytest.approx(0.5)


def test_identity_loss_known_cosines():
    # sample 1: cos([1,0],[3,4]) = 3/5 -> d = 0.4; ||o|| = 3 -> t = 0.35; (0.05)^2 = 0.0025
    # sample 2: cos([0,2],[0,-1]) = -1 -> d = 2; o = 0 -> t = 0.05; (1.95)^2 = 3.8025
    f_x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    f_gx = torch.tensor([[3.0, 4.0], [0.0, -1.0]])
    o = torch.zeros(2, 10)
    o[0, 4] = 3.0
    assert identity_loss(f_x, f_gx, o).item() == pytest.approx((0.0025 + 3.8025) / 2)
    # custom mapping: lm=0.4 -> t(3) = 3*0.6/6 + 0.4 = 0.7, t(0) = 0.4: ((0.4-0.7)^2 + (2-0.4)^2)/2 = (0.09+2.56)/2
    assert identity_loss(f_x, f_gx, o, lm=0.4, um=1.0).item() == pytest.approx((0.09 + 2.56) / 2)


def test_orthogonality_loss_both_forms():
    Q = torch.linalg.qr(torch.randn(128, 10, generator=torch.Generator().manual_seed(1)))[0].t()  # 10x128
    assert orthogonality_loss(Q).item() < 1e-12
    assert orthogonality_loss(Q, form="l1").item() < 1e-6
    # U = 2Q: U U^T - I = 3 I_10 -> squared mean 10*9/100 = 0.9; L1 mean 10*3/100 = 0.3
    assert orthogonality_loss(2 * Q).item() == pytest.approx(0.9, rel=1e-5)
    assert orthogonality_loss(2 * Q, form="l1").item() == pytest.approx(0.3, rel=1e-5)
    with pytest.raises(ValueError):
        orthogonality_loss(Q, form="fro")


def test_orthogonality_loss_alone_makes_random_u_orthonormal():
    torch.manual_seed(0)
    U = nn.Parameter(torch.randn(10, 128) * 0.2)
    eye = torch.eye(10)
    assert torch.linalg.norm(U @ U.t() - eye) > 1.0
    opt = torch.optim.Adam([U], lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        orthogonality_loss(U).backward()
        opt.step()
    assert torch.linalg.norm(U.detach() @ U.detach().t() - eye) < 1e-3


def test_reconstruction_loss_l1():
    x = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    # |0-0.5| + |1-1| + |-1-0| + |0.5-0.5| = 1.5 over 4 -> 0.375
    assert reconstruction_loss(x, torch.tensor([[0.5, 1.0, 0.0, 0.5]])).item() == pytest.approx(0.375)


def test_subspace_similarity():
    torch.manual_seed(0)
    U, mu = torch.randn(10, 128), torch.randn(128)
    zero = torch.zeros(128)
    assert subspace_similarity(U, mu, U, mu) == pytest.approx(1.0)
    assert subspace_similarity(U, zero, -U, zero) == pytest.approx(-1.0)
    # rows e_0, e_1 vs e_0, e_2 (mu = 0): cos = 1 and 0 -> S = 0.5
    A, B = torch.zeros(2, 3), torch.zeros(2, 3)
    A[0, 0] = B[0, 0] = A[1, 1] = B[1, 2] = 1.0
    assert subspace_similarity(A, zero[:3], B, zero[:3]) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ control API


@pytest.fixture(scope="module")
def small_g():
    torch.manual_seed(0)
    return CFSMGenerator(CPU_DEFAULT).eval()


def _capture_o(G):
    seen = {}
    h = G.subspace.register_forward_pre_hook(lambda m, args: seen.update(o=args[0].clone()))
    return seen, h


def test_along_basis_uses_scaled_one_hot(small_g):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    seen, h = _capture_o(small_g)
    with torch.no_grad():
        y = small_g.along_basis(x, 4, -2.5)
    h.remove()
    expected = torch.zeros(3, 10)
    expected[:, 4] = -2.5
    assert torch.equal(seen["o"], expected)
    with torch.no_grad():
        assert torch.allclose(y, small_g.synthesize(x, expected))
        assert not torch.allclose(y, small_g.along_basis(x, 4, 2.5))
    with pytest.raises(IndexError):
        small_g.along_basis(x, 10, 1.0)


def test_with_magnitude_norm_and_demo_scaling(small_g):
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y, o = small_g.with_magnitude(x, 3.0, generator=torch.Generator().manual_seed(7), return_o=True)
        y2, o2 = small_g.with_magnitude(
            x, 3.0, generator=torch.Generator().manual_seed(7), demo_scaling=True, return_o=True
        )
    assert torch.allclose(o.norm(dim=1), torch.full((5,), 3.0))
    assert torch.allclose(o2.norm(dim=1), torch.full((5,), 1.5))
    assert torch.allclose(o2 * 2, o)  # same direction for the same seed
    assert torch.allclose(y, small_g.synthesize(x, o))
    assert len({tuple(r.tolist()) for r in o}) == 5  # independent directions per sample
    seen, h = _capture_o(small_g)
    with torch.no_grad():
        small_g.with_magnitude(x, 2.0)
    h.remove()
    assert torch.allclose(seen["o"].norm(dim=1), torch.full((5,), 2.0))


# ----------------------------------------------------------------------------------------------- training step


def test_tiny_training_step_reaches_every_part():
    torch.manual_seed(0)
    G, D = CFSMGenerator(CPU_DEFAULT), MultiScaleDiscriminator(CPU_DEFAULT)
    f = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
    ).eval()
    f.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=5e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=5e-4, betas=(0.5, 0.999))
    x = torch.rand(4, 3, 32, 32) * 2 - 1  # source
    t = torch.rand(4, 3, 32, 32) * 2 - 1  # target
    o = torch.randn(4, 10)

    def grads_ok(names):
        for name in names:
            params = [p for n, p in G.named_parameters() if n.startswith(name)]
            assert params, name
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name

    # even step: D then G (adversarial + identity + orthogonality)
    fake = G(x, o)
    opt_d.zero_grad()
    loss_d = lsgan_d_loss(D(t), D(fake.detach()))
    loss_d.backward()
    assert all(p.grad is not None for p in D.parameters())
    opt_d.step()
    opt_g.zero_grad()
    loss_adv, loss_id = lsgan_g_loss(D(fake)), identity_loss(f(x), f(fake), o)
    loss_ort = orthogonality_loss(G.subspace.U)
    (loss_adv + 8.0 * loss_id + loss_ort).backward()
    grads_ok(["subspace.U", "subspace.mu", "mlp.", "encoder.", "decoder."])
    assert all(p.grad is None for p in f.parameters())
    u_before = G.subspace.U.detach().clone()
    opt_g.step()
    assert not torch.equal(u_before, G.subspace.U)

    # odd step: reconstruction with o = 0 (style code = mu) + orthogonality
    opt_g.zero_grad()
    rec = G(x, torch.zeros(4, 10))
    loss_rec = 10.0 * reconstruction_loss(x, rec) + orthogonality_loss(G.subspace.U)
    loss_rec.backward()
    grads_ok(["subspace.mu", "mlp.", "encoder.", "decoder."])
    assert G.subspace.U.grad is not None  # only the orthogonality term reaches U at o = 0
    opt_g.step()
    for v in (loss_d, loss_adv, loss_id, loss_ort, loss_rec):
        assert torch.isfinite(v)
