"""Behavioural tests for harness.models: insightface-layout IResNet backbones and ArcFace/CosFace heads.

Expected parameter counts and state-dict keys are derived here from the architecture description
(insightface arcface_torch ``backbones/iresnet.py``), independently of the module code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.models import build_backbone, build_head, iresnet, small_iresnet
from harness.models.heads import ArcFaceHead, CosFaceHead
from harness.models.iresnet import BACKBONES

LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}
WIDTHS = [64, 128, 256, 512]


def _expected_params(layers, widths=WIDTHS, stem=64, final_hw=7, emb=512):
    def bn(c):
        return 2 * c  # weight + bias (running stats are buffers)

    total = 3 * 3 * 3 * stem + bn(stem) + stem  # conv1, bn1, prelu
    inplanes = stem
    for n_blocks, planes in zip(layers, widths):
        for b in range(n_blocks):
            cin = inplanes if b == 0 else planes
            total += bn(cin) + 9 * cin * planes + bn(planes) + planes + 9 * planes * planes + bn(planes)
            if b == 0:  # every stage starts with stride 2 -> conv1x1 + BN shortcut
                total += cin * planes + bn(planes)
        inplanes = planes
    total += bn(widths[-1])  # bn2
    total += widths[-1] * final_hw * final_hw * emb + emb  # fc
    total += bn(emb)  # features (BatchNorm1d; weight frozen but still a parameter)
    return total


def _meta(name, **kw):
    with torch.device("meta"):  # no real allocation or init cost
        return iresnet(name, **kw)


@pytest.mark.parametrize("name", list(LAYERS))
def test_parameter_counts_match_architecture_arithmetic(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(LAYERS[name])


def test_known_insightface_sizes():
    # Published/commonly quoted sizes: insightface r50 ~43.6 M parameters, r100 ~65.2 M. Our arithmetic gives
    # r50 = 43,590,848 and r100 = 65,156,160, which agree with them.
    assert _expected_params(LAYERS["r50"]) == 43_590_848
    assert _expected_params(LAYERS["r100"]) == 65_156_160
    assert round(_expected_params(LAYERS["r50"]) / 1e6, 1) == 43.6
    assert round(_expected_params(LAYERS["r100"]) / 1e6, 1) == 65.2


def _bn_keys(prefix):
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def test_r50_state_dict_keys_are_insightface_layout():
    keys = ["conv1.weight", *_bn_keys("bn1"), "prelu.weight"]
    for stage, n_blocks in enumerate(LAYERS["r50"], start=1):
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            keys += [
                *_bn_keys(f"{p}.bn1"),
                f"{p}.conv1.weight",
                *_bn_keys(f"{p}.bn2"),
                f"{p}.prelu.weight",
                f"{p}.conv2.weight",
                *_bn_keys(f"{p}.bn3"),
            ]
            if b == 0:
                keys += [f"{p}.downsample.0.weight", *_bn_keys(f"{p}.downsample.1")]
    keys += [*_bn_keys("bn2"), "fc.weight", "fc.bias", *_bn_keys("features")]
    model = _meta("r50")
    assert list(model.state_dict().keys()) == keys
    assert model.features.weight.requires_grad is False
    assert model.fc.weight.shape == (512, 512 * 7 * 7)
    assert model.layer3[0].downsample[0].weight.shape == (256, 128, 1, 1)


def test_state_dict_round_trips_strictly():
    a, b = small_iresnet(), small_iresnet()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 48, 48)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


def test_init_rules():
    torch.manual_seed(0)
    m = small_iresnet(zero_init_residual=True)
    assert torch.all(m.features.weight == 1.0)
    assert torch.all(m.layer1[0].bn1.weight == 1) and torch.all(m.layer1[0].bn1.bias == 0)
    assert torch.all(m.layer2[0].bn3.weight == 0)
    std = m.layer4[0].conv2.weight.std().item()
    assert 0.09 < std < 0.11  # normal_(0, 0.1)


def test_r18_forward_112():
    torch.manual_seed(0)
    model = iresnet("r18").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [32, 48, 64])
def test_small_forward_sizes(size):
    model = small_iresnet(input_size=size, num_features=64)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 64) and torch.isfinite(out).all()
    if size == 32:
        out.sum().backward()
        assert model.conv1.weight.grad is not None and model.features.weight.grad is None


def test_stem_stride_2():
    model = small_iresnet(input_size=64, stem_stride=2)
    assert model.fc.in_features == 256 * 2 * 2
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 128)


def test_fp16_autocast_on_cpu():
    torch.manual_seed(0)
    model = small_iresnet(widths=(8, 16, 32, 64), input_size=32, num_features=32, fp16=True)  # bf16 is slow on CPU
    out = model(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(model.conv1.weight.grad).all()


@pytest.mark.parametrize("size", [40, 8, 50, 0])
def test_bad_input_size(size):
    with pytest.raises(ValueError, match="input_size"):
        small_iresnet(input_size=size)
    with pytest.raises(ValueError, match="input_size"):
        small_iresnet(input_size=size if size else 24, stem_stride=2)


def test_wrong_input_resolution_raises():
    with pytest.raises(ValueError, match="48x48"):
        small_iresnet()(torch.randn(2, 3, 32, 32))


def test_build_backbone_registry_and_errors():
    assert set(BACKBONES) == {"r18", "r34", "r50", "r100", "r200", "small"}
    assert isinstance(build_backbone("small", input_size=32), type(small_iresnet()))
    with pytest.raises(ValueError) as e:
        build_backbone("r51")
    for name in ("r18", "r34", "r50", "r100", "r200", "small"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="r100"):
        iresnet("resnet50")


def test_same_seed_same_weights():
    def make():
        torch.manual_seed(123)
        return small_iresnet(), build_head("arcface", 128, 10)

    (b1, h1), (b2, h2) = make(), make()
    for (k, v1), v2 in zip(b1.state_dict().items(), b2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert torch.equal(h1.weight, h2.weight)
    torch.manual_seed(124)
    assert not torch.equal(small_iresnet().conv1.weight, b1.conv1.weight)


# ----------------------------------------------------------------------------------------------------- heads


def _on_centres(head, labels):
    """Embeddings exactly on the (normalised) class centres, with arbitrary norms."""
    scale = torch.linspace(0.5, 20, labels.numel()).unsqueeze(1)
    return F.normalize(head.weight.detach(), dim=1)[labels] * scale


def test_cosface_target_logit_on_centre():
    torch.manual_seed(0)
    head = CosFaceHead(32, 10)
    y = torch.tensor([0, 3, 9, 3])
    logits = head.logits(_on_centres(head, y), y)
    target = logits[torch.arange(4), y]
    torch.testing.assert_close(target, torch.full((4,), 64.0 * (1 - 0.4)), atol=1e-3, rtol=0)
    # non-target entries carry no margin
    plain = head.logits(_on_centres(head, y))
    mask = F.one_hot(y, 10).bool()
    torch.testing.assert_close(logits[~mask], plain[~mask])
    torch.testing.assert_close(plain[torch.arange(4), y], torch.full((4,), 64.0), atol=1e-3, rtol=0)


def test_arcface_target_logit_on_centre():
    torch.manual_seed(0)
    head = ArcFaceHead(32, 10)
    y = torch.tensor([1, 2, 2, 7])
    x = _on_centres(head, y)
    target = head.logits(x, y)[torch.arange(4), y]
    cos = head.cosine(x)[torch.arange(4), y]
    # On the centre the cosine is 1 up to float32 rounding, and cos(theta + m) has an infinite slope in cos there:
    # one ulp below 1 (which some CPUs' kernels give and others do not) moves s*cos(theta+m) by ~0.01. So the
    # margin is checked against the formula at the cosine actually computed, and the cosine against 1.
    torch.testing.assert_close(cos, torch.ones(4), atol=1e-6, rtol=0)
    sin = torch.sqrt(torch.clamp_min(1 - cos.double() ** 2, 1e-12))
    expected = 64.0 * (cos.double() * math.cos(0.5) - sin * math.sin(0.5))
    torch.testing.assert_close(target.double(), expected, atol=1e-3, rtol=0)
    assert (target - 64.0 * math.cos(0.5)).abs().max() < 0.05


def test_arcface_margin_rule_and_fallback():
    head = ArcFaceHead(4, 2, m=0.5)
    m = 0.5
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    cos = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    t = head.target_logit(cos)
    above = cos > th
    torch.testing.assert_close(t[above], torch.cos(torch.arccos(cos[above]) + m), atol=1e-5, rtol=0)
    torch.testing.assert_close(t[~above], cos[~above] - mm)  # fallback branch: cos - mm
    assert (~above).sum() > 0
    assert torch.all(t[1:] >= t[:-1] - 1e-12)  # monotone in cos over the whole range
    # jump at the threshold: cos(pi) = -1 on the right, th - mm on the left; small and upward
    jump = -1.0 - (th - mm)
    assert 0 < jump < 0.15
    eps = 1e-6
    left, right = head.target_logit(torch.tensor([th - eps, th + eps], dtype=torch.float64))
    assert abs((right - left).item() - jump) < 1e-3


def test_margins_lower_the_target_logit():
    torch.manual_seed(0)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
    for head in (ArcFaceHead(32, 10), CosFaceHead(32, 10)):
        with_m = head.logits(x, y)[torch.arange(16), y]
        plain = head.logits(x)[torch.arange(16), y]
        assert torch.all(with_m < plain)


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_loss_decreases_on_separable_toy_problem(name):
    torch.manual_seed(0)
    C, D, E, N = 4, 8, 16, 64
    centres = torch.randn(C, D) * 3
    y = torch.arange(N) % C
    x = centres[y] + 0.3 * torch.randn(N, D)
    net = torch.nn.Linear(D, E)
    head = build_head(name, E, C)
    params = [*net.parameters(), *head.parameters()]
    losses = []
    for _ in range(30):  # plain SGD, lr 0.1 (s=64 gives large gradients)
        loss = head(net(x), y)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.1 * p.grad
                p.grad = None
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.01 * losses[0]
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 20  # mostly monotone
    assert head(net(x), y).item() < losses[0]
    with torch.no_grad():
        acc = (head.logits(net(x)).argmax(1) == y).float().mean().item()
    assert acc == 1.0


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_ignored_labels(name):
    torch.manual_seed(0)
    head = build_head(name, 16, 5)
    x = torch.randn(8, 16)
    y = torch.tensor([0, -1, 2, 4, -1, 1, 3, -1])
    keep = y >= 0
    full = head(x, y)
    sub = head(x[keep], y[keep])
    torch.testing.assert_close(full, sub)
    # the -1 rows get no margin
    logits = head.logits(x, y)
    torch.testing.assert_close(logits[~keep], head.logits(x)[~keep])
    # all ignored: a zero that still backpropagates
    x.requires_grad_(True)
    z = head(x, torch.full((8,), -1))
    assert z.item() == 0.0
    z.backward()
    with pytest.raises(ValueError, match="out of range"):
        head(x, torch.tensor([0, 1, 2, 5, 0, 0, 0, 0]))


def test_margin_gradient_reaches_weights():
    torch.manual_seed(0)
    x, y = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    head = ArcFaceHead(16, 3)
    # gradient of the target logits with and without the margin differs (d cos(theta+m) / d cos != 1)
    head.logits(x, y)[torch.arange(6), y].sum().backward()
    g_margin = head.weight.grad.clone()
    head.weight.grad = None
    head.logits(x)[torch.arange(6), y].sum().backward()
    g_plain = head.weight.grad.clone()
    assert torch.isfinite(g_margin).all() and g_margin.abs().sum() > 0
    assert not torch.allclose(g_margin, g_plain)
    # full loss: gradient reaches the centres and the network producing the embeddings
    for name in ("arcface", "cosface"):
        torch.manual_seed(0)
        net, head = torch.nn.Linear(8, 16), build_head(name, 16, 3)
        head(net(torch.randn(4, 8)), torch.tensor([0, 1, 2, 1])).backward()
        assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
        assert net.weight.grad.abs().sum() > 0


def test_gradient_finite_on_exact_centres():
    torch.manual_seed(0)
    head = ArcFaceHead(8, 3)
    y = torch.tensor([0, 1, 2])
    x = _on_centres(head, y).requires_grad_(True)
    head(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_build_head_errors_and_defaults():
    h = build_head("arcface", 64, 7)
    assert (h.s, h.m, tuple(h.weight.shape)) == (64.0, 0.5, (7, 64))
    assert build_head("cosface", 64, 7).m == 0.4
    assert build_head("cosface", 64, 7, s=30.0, m=0.35).s == 30.0
    with pytest.raises(ValueError) as e:
        build_head("sphereface", 64, 7)
    assert "arcface" in str(e.value) and "cosface" in str(e.value)
    with pytest.raises(TypeError, match="'margin'"):
        build_head("arcface", 64, 7, margin=0.3)
    std = build_head("arcface", 512, 1000).weight.std().item()
    assert 0.009 < std < 0.011  # normal_(0, 0.01)
