"""Policy augmentations (``autoaugment``, ``randaugment``, ``trivialaugment``, ``augmix``): per-sample application,
torchvision semantics, value/format invariants, the AugMix JS loss, and a few trainer steps each."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

import methods.augmix  # noqa: F401  (registers)
import methods.autoaugment  # noqa: F401
import methods.randaugment  # noqa: F401
import methods.trivialaugment  # noqa: F401
from harness.core.config import RunConfig, apply_overrides
from harness.data.loaders import to_model_input
from harness.models import build_head, small_iresnet
from methods import Batch, FRModel, build_method
from methods.policy_augment import (
    IMAGENET_POLICY,
    OP_ID,
    OPS,
    Stage,
    apply_plan,
    apply_stage,
    augmentation_space,
    augmix_view,
    autoaugment_plan,
    from_uint8,
    jensen_shannon,
    randaugment_plan,
    to_uint8,
    trivialaugment_plan,
)

POLICIES = ("randaugment", "trivialaugment", "autoaugment")
INPUT, EMB, CLASSES = 32, 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _images(b=8, size=INPUT, seed=0, identical=False):
    """uint8 images with structure (a gradient plus noise), so geometric and colour ops all change them."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, size).view(1, 1, 1, size) + torch.linspace(0, 50, size).view(1, 1, size, 1)
    n = 1 if identical else b
    u8 = (ramp + torch.rand(n, 3, size, size, generator=g) * 55).round().clamp(0, 255).to(torch.uint8)
    return u8.expand(b, -1, -1, -1).contiguous() if identical else u8


def _x(u8, channels_last=True):
    x = to_model_input(u8)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _plan(name, b, seed):
    torch.manual_seed(seed)
    if name == "randaugment":
        return randaugment_plan(b, INPUT, INPUT)
    if name == "trivialaugment":
        return trivialaugment_plan(b, INPUT, INPUT)
    return autoaugment_plan(b, INPUT, INPUT)


def _fr(seed=0):
    torch.manual_seed(seed)
    net = small_iresnet(widths=(8, 16, 16, 32), input_size=INPUT, num_features=EMB, stem_stride=2)
    head = build_head("arcface", EMB, CLASSES)
    net.train(), head.train()
    return FRModel(backbone=net, raw=net, head=head)


# ------------------------------------------------------------------------------------------------ per sample
@pytest.mark.parametrize("name", POLICIES)
def test_identical_images_get_different_ops_and_a_seed_fixes_the_output(name):
    b = 16
    x = _x(_images(b, identical=True))
    m = build_method(name, EMB, CLASSES)
    torch.manual_seed(3)
    out = m.augment(Batch(x=x, y=torch.arange(b) % CLASSES), None).x
    plan = _plan(name, b, 3)  # the same draws the method made
    applied = {o for st in plan for o in st.ops.tolist() if o != OP_ID["Identity"]}
    assert len(applied) >= 3, [OPS[o] for o in applied]  # several different ops in one batch
    assert len({tuple(o.flatten().tolist()) for o in out}) >= 4  # identical inputs, different outputs
    torch.manual_seed(3)
    again = m.augment(Batch(x=x, y=torch.arange(b) % CLASSES), None).x
    assert torch.equal(out, again)
    # each row is exactly its own plan applied to that image alone
    u8 = to_uint8(x)
    for i in range(b):
        own = [Stage(st.ops[i : i + 1], st.mags[i : i + 1]) for st in plan]
        assert torch.equal(to_uint8(out[i : i + 1]), apply_plan(u8[i : i + 1], own)), (
            i,
            [OPS[st.ops[i]] for st in plan],
        )


def test_augmix_views_are_per_sample_and_seeded():
    x = _x(_images(8, identical=True))
    torch.manual_seed(1)
    v = augmix_view(x)
    assert len({tuple(r.flatten().tolist()) for r in v}) == 8
    torch.manual_seed(1)
    assert torch.equal(v, augmix_view(x))


# ------------------------------------------------------------------------------------------------ torchvision semantics
def _tv_reference(img, op, mag, interpolation):
    """torchvision's ``_AutoAugmentBase._apply_image_or_video_transform`` through the public kernels, one image."""
    if op == "ShearX":
        return TF.affine(
            img,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=[math.degrees(math.atan(mag)), 0.0],
            interpolation=interpolation,
            center=[0, 0],
        )
    if op == "ShearY":
        return TF.affine(
            img,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=[0.0, math.degrees(math.atan(mag))],
            interpolation=interpolation,
            center=[0, 0],
        )
    if op in ("TranslateX", "TranslateY"):
        t = [int(mag), 0] if op == "TranslateX" else [0, int(mag)]
        return TF.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0], interpolation=interpolation)
    if op == "Rotate":
        return TF.rotate(img, angle=mag, interpolation=interpolation)
    if op == "Solarize":
        return TF.solarize(img, threshold=mag)
    enhance = {
        "Brightness": TF.adjust_brightness,
        "Color": TF.adjust_saturation,
        "Contrast": TF.adjust_contrast,
        "Sharpness": TF.adjust_sharpness,
    }
    if op in enhance:
        return enhance[op](img, 1.0 + mag)
    if op == "Posterize":
        return TF.posterize(img, bits=int(mag))
    return {"Identity": lambda im: im, "AutoContrast": TF.autocontrast, "Equalize": TF.equalize, "Invert": TF.invert}[
        op
    ](img)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_batched_stage_equals_torchvision_per_image(interpolation):
    space = augmentation_space("wide", 31, INPUT, INPUT)
    ops, mags = [], []
    for name, (table, signed) in space.items():
        for k in (0, 7, 20, 30) if table is not None else (0,):
            v = float(table[k]) if table is not None else 0.0
            ops += [OP_ID[name]] * (2 if signed else 1)
            mags += [v, -v] if signed else [v]
    ops.append(OP_ID["Invert"]), mags.append(0.0)
    n = len(ops)
    imgs = _images(n, seed=2)
    out = apply_stage(imgs, Stage(torch.tensor(ops), torch.tensor(mags, dtype=torch.float64)), interpolation)
    for i in range(n):
        ref = _tv_reference(imgs[i], OPS[ops[i]], mags[i], interpolation)
        diff = (out[i].int() - ref.int()).abs().max().item()
        # nearest: bit-exact; bilinear: the batched grid is one GEMM, so a pixel may round 1 grey level apart
        assert diff <= (0 if interpolation == "nearest" else 1), (OPS[ops[i]], mags[i], diff)


def test_autocast_does_not_change_the_augmentation():
    """The trainer calls augment under AMP; the batched affine grid (an einsum) must stay float32."""
    x = _x(_images(16, seed=8))
    outs = []
    for amp in (False, True):
        torch.manual_seed(4)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outs.append(build_method("trivialaugment", EMB, CLASSES).augment(Batch(x=x, y=torch.zeros(16)), None).x)
    assert torch.equal(outs[0], outs[1])


def test_op_tables_are_torchvisions():
    """The ImageNet policy and the RandAugment / TrivialAugment-wide spaces are torchvision's (private attributes:
    skipped if a torchvision release renames them)."""
    policies = getattr(v2.AutoAugment(), "_policies", None)
    if policies is None:
        pytest.skip("torchvision.transforms.v2.AutoAugment._policies not found")
    assert [tuple(p) for p in policies] == list(IMAGENET_POLICY)
    for kind, cls, bins in (
        ("randaugment", v2.RandAugment, 31),
        ("wide", v2.TrivialAugmentWide, 31),
        ("autoaugment", v2.AutoAugment, 10),
    ):
        ours = augmentation_space(kind, bins, INPUT, INPUT)
        theirs = cls._AUGMENTATION_SPACE
        assert set(ours) == set(theirs) - ({"Identity"} if kind == "autoaugment" else set())
        for name, (fn, signed) in theirs.items():
            if name not in ours:
                continue
            ref = fn(bins, INPUT, INPUT)
            table, our_signed = ours[name]
            assert our_signed == signed
            if ref is None:
                assert table is None
            else:
                ref = ref.double() * (255.0 if name == "Solarize" else 1.0)
                torch.testing.assert_close(table, ref, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("name", [*POLICIES, "augmix"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_values_dtype_shape_format_and_labels_are_kept(name, channels_last):
    x = _x(_images(12, seed=4), channels_last)
    y = torch.tensor([3, 1, 0, 2] * 3)
    torch.manual_seed(0)
    out = build_method(name, EMB, CLASSES).augment(Batch(x=x, y=y, step=5), None)
    assert torch.equal(out.y, y) and out.step == 5
    for t in [out.x, *(out.extras[k] for k in methods.augmix.VIEWS if k in out.extras)]:
        assert t.shape == x.shape and t.dtype == x.dtype
        assert t.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert t.min() >= -1.0 and t.max() <= 1.0
    if name == "augmix":
        assert torch.equal(out.x, x) and not torch.equal(out.extras["augmix.view1"], out.extras["augmix.view2"])
    else:
        assert not torch.equal(out.x, x)
        torch.testing.assert_close(to_model_input(to_uint8(out.x)).to(x.dtype), out.x.contiguous(), atol=0, rtol=0)


def test_randaugment_zero_ops_is_identity_and_magnitude_zero_only_moves_magnitude_free_ops():
    x = _x(_images(16, seed=5))
    out = build_method("randaugment", EMB, CLASSES, overrides={"n": 0}).augment(Batch(x=x, y=torch.zeros(16)), None)
    assert torch.equal(out.x, x)
    assert torch.equal(from_uint8(to_uint8(x), x), x)  # the uint8 round trip of a trainer batch is exact
    torch.manual_seed(6)
    plan = randaugment_plan(16, INPUT, INPUT, num_ops=2, magnitude=0)
    got = apply_plan(to_uint8(x), plan)
    # at bin 0 every geometric and enhance op is the identity, and posterize keeps 8 bits
    neutral = {
        OP_ID[n]
        for n in (
            "Identity",
            "ShearX",
            "ShearY",
            "TranslateX",
            "TranslateY",
            "Rotate",
            "Brightness",
            "Color",
            "Contrast",
            "Sharpness",
            "Posterize",
        )
    }
    rows = [i for i in range(16) if all(int(st.ops[i]) in neutral for st in plan)]
    assert rows and len(rows) < 16
    assert torch.equal(got[rows], to_uint8(x)[rows])
    with pytest.raises(ValueError, match="magnitude"):
        build_method("randaugment", EMB, CLASSES, overrides={"m": 31})


# ------------------------------------------------------------------------------------------------ AugMix loss
def test_jensen_shannon_zero_positive_and_hand_computed():
    z = torch.randn(5, 7)
    assert jensen_shannon(z, z, z).item() == pytest.approx(0.0, abs=1e-7)
    assert jensen_shannon(z, z + torch.randn(5, 7), z).item() > 1e-4
    # p = (1/2, 1/2), (3/4, 1/4), (1/4, 3/4): M = (1/2, 1/2); JS = (0 + 2 * (3/4 ln 3/2 + 1/4 ln 1/2)) / 3
    l3 = math.log(3.0)
    js = jensen_shannon(torch.tensor([[0.0, 0.0]]), torch.tensor([[l3, 0.0]]), torch.tensor([[0.0, l3]]))
    assert js.item() == pytest.approx(2 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 3, rel=1e-5)


def test_augmix_loss_is_the_clean_margin_loss_plus_lambda_js_and_reaches_the_backbone():
    fr = _fr()
    x, y = _x(_images(8, seed=7)), torch.arange(8) % CLASSES
    m = build_method("augmix", EMB, CLASSES)
    same = Batch(x=x, y=y, extras={k: x.clone() for k in methods.augmix.VIEWS})
    loss, scalars = m.loss(same, fr)  # identical views: JS 0, and 3 copies leave BatchNorm's statistics unchanged
    assert scalars["augmix.js"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(fr.loss(x, y).item(), rel=1e-4)
    torch.manual_seed(0)
    batch = m.augment(Batch(x=x, y=y), fr)
    loss, scalars = m.loss(batch, fr)
    js = scalars["augmix.js"].item()
    assert js > 0 and loss.item() == pytest.approx(scalars["augmix.ce"].item() + 12.0 * js, rel=1e-5)
    loss.backward()
    grads = [p.grad for p in fr.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(KeyError, match="extras"):
        m.loss(Batch(x=x, y=y), fr)


# ------------------------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize("name", [*POLICIES, "augmix"])
def test_trainer_runs_the_policy_methods(toy_rec_release, name):
    from harness.engine.train import train
    from harness.models.build import build_model

    cfg = apply_overrides(
        RunConfig(),
        {
            "method": name,
            "data.release": toy_rec_release,
            "data.input_size": "32",
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "optim.batch_size": "16",
            "optim.epochs": "1",
            "optim.warmup_epochs": "0",
            "optim.weight_decay": "0",
            "device": "cpu",
            "threads": "1",
            "log_every": "1",
        },
    )
    logged = {}
    result = train(cfg, log=lambda k, v, s: logged.setdefault(k, []).append(v), progress=False)
    assert math.isfinite(result.final_loss) and result.steps == 3
    torch.manual_seed(cfg.seed)  # the trainer's initial weights: the same seed, the same construction
    initial, _ = build_model(cfg, 6)
    moved = [not torch.equal(a, b) for a, b in zip(initial.parameters(), result.backbone.parameters())]
    assert sum(moved) > len(moved) // 2  # no weight decay: only gradients move the weights
    if name == "augmix":
        assert len(logged["train.augmix.js"]) == 3 and all(
            math.isfinite(v) and v >= 0 for v in logged["train.augmix.js"]
        )


@pytest.mark.parametrize("name", [*POLICIES, "augmix"])
def test_random_search_points_build(name):
    for seed in range(1, 6):
        build_method(name, EMB, CLASSES, hparams_seed=seed)
