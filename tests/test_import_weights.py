"""Strict import of public checkpoints (harness.import_weights): insightface arcface_torch ``backbone.pth`` and AdaFace
Lightning ``.ckpt``.

The checkpoints here are random, written in each project's own key layout by generators below that follow the
published architecture descriptions (insightface ``recognition/arcface_torch/backbones/iresnet.py``; AdaFace
``net.py`` ``Backbone`` / ``BasicBlockIR`` and ``head.py``), independently of our model code: the key lists, the
shapes, and a functional reference forward pass are derived from those descriptions only. Forward passes use
r18 / ir_18 at 112 px; r50 / ir_50 are checked through key / shape lists and zero-stride (tiny) files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness.import_weights as iw
from harness.import_weights import CheckpointError, ImportedModel, load_public_checkpoint, published_keys

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}  # ir_101 is num_layers=100
WIDTHS = [64, 128, 256, 512]
EPOCH = 7


# ------------------------------------------------------------------------- published layouts (test-side)
def _bn(prefix: str, c: int, affine: bool = True) -> list[tuple[str, tuple]]:
    keys = [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,))] if affine else []
    return keys + [
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def insightface_layout(depth: int) -> list[tuple[str, tuple]]:
    """arcface_torch IResNet keys in registration order: conv1, bn1, prelu, layer1..4 (IBasicBlock: bn1, conv1, bn2,
    prelu, conv2, bn3, downsample on each stage's first block, stride 2), bn2, fc (512*7*7 -> 512), features."""
    out = [("conv1.weight", (64, 3, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (64,))]
    inplanes = 64
    for s, (n, planes) in enumerate(zip(BLOCKS[depth], WIDTHS), start=1):
        for j in range(n):
            cin = inplanes if j == 0 else planes
            p = f"layer{s}.{j}"
            out += [
                *_bn(f"{p}.bn1", cin),
                (f"{p}.conv1.weight", (planes, cin, 3, 3)),
                *_bn(f"{p}.bn2", planes),
                (f"{p}.prelu.weight", (planes,)),
                (f"{p}.conv2.weight", (planes, planes, 3, 3)),
                *_bn(f"{p}.bn3", planes),
            ]
            if j == 0:  # stride 2 -> downsample = conv1x1(stride) + BN
                out += [(f"{p}.downsample.0.weight", (planes, cin, 1, 1)), *_bn(f"{p}.downsample.1", planes)]
        inplanes = planes
    out += [*_bn("bn2", 512), ("fc.weight", (512, 512 * 7 * 7)), ("fc.bias", (512,)), *_bn("features", 512)]
    return out


def adaface_layout(depth: int) -> list[tuple[str, tuple]]:
    """AdaFace Backbone keys (no ``model.`` prefix) in registration order: input_layer, output_layer, body; a
    BasicBlockIR registers shortcut_layer (only a conv + BN when in_channel != depth) before res_layer."""
    out = [("input_layer.0.weight", (64, 3, 3, 3)), *_bn("input_layer.1", 64), ("input_layer.2.weight", (64,))]
    out += [
        *_bn("output_layer.0", 512),
        ("output_layer.3.weight", (512, 512 * 7 * 7)),
        ("output_layer.3.bias", (512,)),
        *_bn("output_layer.4", 512, affine=False),
    ]
    k, in_channel = 0, 64
    for n, d in zip(BLOCKS[depth], WIDTHS):
        for j in range(n):
            cin = in_channel if j == 0 else d
            p = f"body.{k}"
            if cin != d:
                out += [(f"{p}.shortcut_layer.0.weight", (d, cin, 1, 1)), *_bn(f"{p}.shortcut_layer.1", d)]
            out += [
                *_bn(f"{p}.res_layer.0", cin),
                (f"{p}.res_layer.1.weight", (d, cin, 3, 3)),
                *_bn(f"{p}.res_layer.2", d),
                (f"{p}.res_layer.3.weight", (d,)),
                (f"{p}.res_layer.4.weight", (d, d, 3, 3)),
                *_bn(f"{p}.res_layer.5", d),
            ]
            k += 1
        in_channel = d
    return out


def adaface_to_ours(key: str, depth: int) -> str:
    """The documented mapping, re-derived here: body index -> (stage, block); res_layer.i / shortcut_layer -> names."""
    starts = np.cumsum([0] + BLOCKS[depth])
    top = {
        "input_layer.0": "conv1",
        "input_layer.1": "bn1",
        "input_layer.2": "prelu",
        "output_layer.0": "bn2",
        "output_layer.3": "fc",
        "output_layer.4": "features",
    }
    m = re.fullmatch(r"body\.(\d+)\.(res_layer|shortcut_layer)\.(\d+)\.(.+)", key)
    if not m:
        mod, idx, tail = key.split(".", 2)
        return f"{top[f'{mod}.{idx}']}.{tail}"
    k = int(m.group(1))
    s = int(np.searchsorted(starts, k, side="right"))
    j = k - int(starts[s - 1])
    if m.group(2) == "shortcut_layer":
        return f"layer{s}.{j}.downsample.{m.group(3)}.{m.group(4)}"
    name = ["bn1", "conv1", "bn2", "prelu", "conv2", "bn3"][int(m.group(3))]
    return f"layer{s}.{j}.{name}.{m.group(4)}"


def random_state(layout: list[tuple[str, tuple]], seed: int) -> dict[str, torch.Tensor]:
    """Random but well-scaled values (conv / linear weights ~ N(0, 1/fan_in), positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000 + len(out), dtype=torch.long)
        elif len(shape) >= 2:
            out[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", ".bias")):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif key == "features.weight":  # insightface freezes the embedding BN scale at 1
            out[key] = torch.ones(shape)
        elif re.search(r"prelu|input_layer\.2|res_layer\.3", key):
            out[key] = torch.rand(shape, generator=g) * 0.2 + 0.1
        else:  # BN weight
            out[key] = torch.rand(shape, generator=g) + 0.5
    return out


def zero_stride_state(layout) -> dict[str, torch.Tensor]:
    """Every tensor a zero-stride view of one element: the file is a few kB whatever the model size."""
    return {
        k: (
            torch.zeros((), dtype=torch.long)
            if k.endswith("num_batches_tracked")
            else torch.full((), 0.5).expand(shape)
        )
        for k, shape in layout
    }


def lightning_ckpt(backbone: dict[str, torch.Tensor], classes: int = 10) -> dict:
    """What AdaFace's pytorch-lightning trainer saves: ``model.*`` backbone, the AdaFace head (kernel + EMA buffers)."""
    sd = {f"model.{k}": v for k, v in backbone.items()}
    sd.update(
        {
            "head.kernel": torch.randn(512, classes),
            "head.t": torch.zeros(1),
            "head.batch_mean": torch.ones(1) * 20,
            "head.batch_std": torch.ones(1) * 100,
        }
    )
    return {"epoch": EPOCH, "global_step": 1234, "pytorch-lightning_version": "1.4.4", "state_dict": sd}


def n_params(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for k, v in state.items() if k.endswith((".weight", ".bias")))


# ---------------------------------------------------------------- functional reference forward (test-side)
def _bnf(x, sd, p):
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd.get(f"{p}.weight"), sd.get(f"{p}.bias"), False, 0.0, 1e-5
    )


def reference_insightface(sd, depth, x):
    x = F.prelu(_bnf(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"), sd["prelu.weight"])
    for s, n in enumerate(BLOCKS[depth], start=1):
        for j in range(n):
            p, stride = f"layer{s}.{j}", 2 if j == 0 else 1
            out = F.conv2d(_bnf(x, sd, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bnf(out, sd, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
            out = _bnf(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn3")
            sc = (
                _bnf(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
                if j == 0
                else x
            )
            x = out + sc
    x = torch.flatten(_bnf(x, sd, "bn2"), 1)
    return _bnf(F.linear(x, sd["fc.weight"], sd["fc.bias"]), sd, "features")


def reference_adaface(sd, depth, x):
    x = F.prelu(
        _bnf(F.conv2d(x, sd["input_layer.0.weight"], padding=1), sd, "input_layer.1"), sd["input_layer.2.weight"]
    )
    k, in_channel = 0, 64
    for n, d in zip(BLOCKS[depth], WIDTHS):
        for j in range(n):
            p, stride, cin = f"body.{k}", 2 if j == 0 else 1, in_channel if j == 0 else d
            if cin == d:
                sc = F.max_pool2d(x, 1, stride)
            else:
                sc = _bnf(F.conv2d(x, sd[f"{p}.shortcut_layer.0.weight"], stride=stride), sd, f"{p}.shortcut_layer.1")
            r = F.conv2d(_bnf(x, sd, f"{p}.res_layer.0"), sd[f"{p}.res_layer.1.weight"], padding=1)
            r = F.prelu(_bnf(r, sd, f"{p}.res_layer.2"), sd[f"{p}.res_layer.3.weight"])
            r = _bnf(F.conv2d(r, sd[f"{p}.res_layer.4.weight"], stride=stride, padding=1), sd, f"{p}.res_layer.5")
            x = r + sc
            k += 1
        in_channel = d
    x = torch.flatten(_bnf(x, sd, "output_layer.0"), 1)
    x = _bnf(F.linear(x, sd["output_layer.3.weight"], sd["output_layer.3.bias"]), sd, "output_layer.4")
    norm = torch.norm(x, 2, 1, True)
    return x / norm, norm


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def insightface_r18(tmp_path_factory):
    sd = random_state(insightface_layout(18), seed=1)
    path = str(tmp_path_factory.mktemp("insightface") / "backbone.pth")
    torch.save(sd, path)
    return path, sd, load_public_checkpoint(path, "insightface", "r18")


@pytest.fixture(scope="module")
def adaface_ir18(tmp_path_factory):
    sd = random_state(adaface_layout(18), seed=2)
    path = str(tmp_path_factory.mktemp("adaface") / "adaface_ir18_test.ckpt")
    torch.save(lightning_ckpt(sd), path)
    return path, sd, load_public_checkpoint(path, "adaface", "ir_18")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (2, 3, 112, 112), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------------------ layouts / keys
@pytest.mark.parametrize("depth", [18, 34, 50, 100])
def test_published_key_lists_match(depth):
    """Our mapping's key / shape lists equal those of the published architectures, for every size."""
    arch_if, arch_ada = {18: ("r18", "ir_18"), 34: ("r34", "ir_34"), 50: ("r50", "ir_50"), 100: ("r100", "ir_101")}[
        depth
    ]
    ours_if = published_keys("insightface", arch_if)
    assert list(ours_if.items()) == insightface_layout(depth)  # same keys, shapes and order: an identity mapping
    ours_ada = published_keys("adaface", arch_ada)
    assert ours_ada == dict(adaface_layout(depth))
    # the published unit counts
    per_stage = [len({k.split(".")[1] for k in ours_if if k.startswith(f"layer{s}.")}) for s in range(1, 5)]
    assert per_stage == BLOCKS[depth]
    body = sorted({int(k.split(".")[1]) for k in ours_ada if k.startswith("body.")})
    assert body == list(range(sum(BLOCKS[depth])))
    shortcuts = sorted({int(k.split(".")[1]) for k in ours_ada if ".shortcut_layer." in k})
    assert shortcuts == [int(x) for x in np.cumsum(BLOCKS[depth])[:3]]  # first unit of stages 2-4 only
    assert len(ours_if) - len(ours_ada) == 8  # stage-1 conv1x1 + BN (6 keys) and features.weight/bias (2)


def test_arch_spellings_and_bad_names():
    for name in ("r50", "ir_50", "IR-50", "iresnet50", "ir50"):
        assert iw.canonical_arch(name) == "r50"
    assert iw.canonical_arch("ir_101") == iw.canonical_arch("r100") == "r100"
    with pytest.raises(ValueError, match="valid: r18/ir_18"):
        iw.canonical_arch("ir_se_50")
    with pytest.raises(ValueError, match="unknown arch 'r200'"):
        iw.canonical_arch("r200")
    with pytest.raises(ValueError, match="unknown layout"):
        iw.build_imported_backbone("arcface", "r18", device="meta")


# ----------------------------------------------------------------------------------------------- insightface
def test_insightface_r18_loads_strictly(insightface_r18, images):
    path, sd, m = insightface_r18
    assert (m.layout, m.arch, m.published_arch, m.channel_order, m.input_size) == (
        "insightface",
        "r18",
        "r18",
        "RGB",
        112,
    )
    assert m.normalisation == "(x/255-0.5)/0.5" and m.eval_defaults == {
        "flip": "sum",
        "faceness": True,
        "image_norm": False,
    }
    assert not m.backbone.training and m.ignored_keys == ()
    assert path in m.source and "insightface" in m.source and len(m.sha256) == 64
    assert m.num_parameters == n_params(sd)
    ours = m.backbone.state_dict()
    assert set(ours) == set(sd)
    for k, v in sd.items():  # identity mapping: every tensor where its name says
        assert torch.equal(ours[k], v), k
    assert torch.equal(m.backbone.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert torch.equal(m.backbone.layer2[0].downsample[1].running_var, sd["layer2.0.downsample.1.running_var"])
    assert int(m.backbone.features.num_batches_tracked) == int(sd["features.num_batches_tracked"])
    x = (images.float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        out = m.backbone(x)
        ref = reference_insightface(sd, 18, x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------------------- AdaFace
def test_adaface_ir18_loads_strictly(adaface_ir18, images):
    path, sd, m = adaface_ir18
    assert (m.layout, m.arch, m.published_arch, m.channel_order, m.input_size) == (
        "adaface",
        "r18",
        "ir_18",
        "BGR",
        112,
    )
    assert m.eval_defaults["faceness"] is False and m.eval_defaults["flip"] == "sum"
    assert m.ignored_keys == ("head.kernel", "head.t", "head.batch_mean", "head.batch_std")
    assert f"epoch {EPOCH}" in m.source and "head.kernel (512, 10)" in m.source
    assert m.num_parameters == n_params(sd)
    ours = m.backbone.state_dict()
    assert set(ours) == {adaface_to_ours(k, 18) for k in sd} and len(ours) == len(sd)
    for k, v in sd.items():
        assert torch.equal(ours[adaface_to_ours(k, 18)], v), k
    b = m.backbone
    assert isinstance(b.layer1[0].downsample, torch.nn.MaxPool2d)  # body.0: MaxPool2d(1, 2) shortcut, no parameters
    assert (b.layer1[0].downsample.kernel_size, b.layer1[0].downsample.stride) == (1, 2)
    assert b.layer1[1].downsample is None and not b.features.affine
    assert torch.equal(b.layer2[0].downsample[0].weight, sd["body.2.shortcut_layer.0.weight"])
    assert torch.equal(b.layer1[0].prelu.weight, sd["body.0.res_layer.3.weight"])
    assert torch.equal(b.layer4[1].conv2.weight, sd["body.7.res_layer.4.weight"])
    assert torch.equal(b.fc.weight, sd["output_layer.3.weight"])
    assert torch.equal(b.bn1.running_mean, sd["input_layer.1.running_mean"])
    assert torch.equal(b.features.running_var, sd["output_layer.4.running_var"])
    x = (images.float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        emb, norm = b(x)
        ref_emb, ref_norm = reference_adaface(sd, 18, x)
    assert emb.shape == (2, 512) and norm.shape == (2, 1)
    torch.testing.assert_close(emb, ref_emb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("which", ["insightface", "adaface"])
def test_evaluator_feature_path_applies_the_conventions(which, insightface_r18, adaface_ir18, images):
    """embed_batches (every evaluator's loop) fed RGB uint8 gives the source's own preprocessing + output feature:
    insightface RGB and the raw embedding; AdaFace BGR and ``emb * norm``."""
    from harness.eval.features import embed_batches

    _, sd, m = insightface_r18 if which == "insightface" else adaface_ir18
    feats = embed_batches(m.backbone, 2, lambda a, e: images[a:e], batch_size=2, channel_order=m.channel_order)
    x = images.float()
    if which == "adaface":
        x = x.flip(1)  # AdaFace inference.py: np_img[:, :, ::-1] (RGB -> BGR)
    x = (x / 255 - 0.5) / 0.5
    with torch.inference_mode():
        if which == "adaface":
            emb, norm = reference_adaface(sd, 18, x)
            want = emb * norm
        else:
            want = reference_insightface(sd, 18, x)
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_cli_prints_one_line_summary(tmp_path, capsys):
    ada_sd, if_sd = zero_stride_state(adaface_layout(18)), zero_stride_state(insightface_layout(18))
    path, ipath = str(tmp_path / "ir18.ckpt"), str(tmp_path / "backbone.pth")
    torch.save(lightning_ckpt(ada_sd), path)
    torch.save(if_sd, ipath)
    assert iw.main([path, "--layout", "adaface", "--arch", "ir_18"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and "adaface ir_18" in out and f"{n_params(ada_sd):,} parameters" in out and "BGR" in out
    assert iw.main([ipath, "--layout", "insightface", "--arch", "iresnet18"]) == 0
    out = capsys.readouterr().out
    assert "insightface r18" in out and f"{n_params(if_sd):,} parameters" in out and "RGB" in out
    assert iw.main([ipath, "--layout", "adaface", "--arch", "r18"]) == 2  # wrong layout: one line, status 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ipath in err and "use layout 'insightface'" in err


# -------------------------------------------------------------------------------------------------- errors
def _case(layout, change):
    if layout == "insightface":
        sd = zero_stride_state(insightface_layout(18))
        change(sd)
        return sd
    sd = zero_stride_state(adaface_layout(18))
    change(sd)
    return lightning_ckpt(sd)


ERROR_CASES = {
    "if-missing": (
        "insightface",
        lambda sd: sd.pop("layer2.0.downsample.0.weight"),
        "key 'layer2.0.downsample.0.weight': missing (expected shape (128, 64, 1, 1))",
    ),
    "if-extra": (
        "insightface",
        lambda sd: sd.update({"layer1.1.downsample.0.weight": torch.zeros(64, 64, 1, 1)}),
        "key 'layer1.1.downsample.0.weight': unexpected",
    ),
    "if-shape": (
        "insightface",
        lambda sd: sd.update({"fc.weight": torch.zeros(512, 512 * 4 * 4)}),
        "key 'fc.weight': has shape (512, 8192), expected (512, 25088)",
    ),
    "if-nan": (
        "insightface",
        lambda sd: sd.update({"bn2.bias": torch.full((512,), float("nan"))}),
        "key 'bn2.bias': holds NaN",
    ),
    "ada-missing": (
        "adaface",
        lambda sd: sd.pop("body.2.shortcut_layer.1.running_var"),
        "key 'model.body.2.shortcut_layer.1.running_var': missing (expected shape (128,))",
    ),
    # an insightface-style conv shortcut on the stage-1 unit is not part of AdaFace's IR
    "ada-extra": (
        "adaface",
        lambda sd: sd.update({"body.0.shortcut_layer.0.weight": torch.zeros(64, 64, 1, 1)}),
        "key 'model.body.0.shortcut_layer.0.weight': unexpected",
    ),
    "ada-shape": (
        "adaface",
        lambda sd: sd.update({"body.4.res_layer.1.weight": torch.zeros(256, 256, 3, 3)}),
        "key 'model.body.4.res_layer.1.weight': has shape (256, 256, 3, 3), expected (256, 128, 3, 3)",
    ),
    "ada-affine-features": (
        "adaface",
        lambda sd: sd.update({"output_layer.4.weight": torch.ones(512)}),
        "key 'model.output_layer.4.weight': unexpected",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_strict_errors_name_file_and_key(case, tmp_path):
    layout, change, message = ERROR_CASES[case]
    path = str(tmp_path / ("bad.pth" if layout == "insightface" else "bad.ckpt"))
    torch.save(_case(layout, change), path)
    with pytest.raises(CheckpointError) as err:
        load_public_checkpoint(path, layout, "r18")
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}:key '") and message in text


def test_other_file_errors(tmp_path):
    ada = str(tmp_path / "a.ckpt")
    ckpt = _case("adaface", lambda sd: None)
    ckpt["state_dict"]["teacher.fc.weight"] = torch.zeros(2)  # neither model.* nor head.*
    torch.save(ckpt, ada)
    with pytest.raises(CheckpointError, match=re.escape(f"{ada}:key 'state_dict.teacher.fc.weight': unexpected")):
        load_public_checkpoint(ada, "adaface", "ir_18")
    plain = str(tmp_path / "backbone.pth")
    torch.save(_case("insightface", lambda sd: None), plain)
    with pytest.raises(CheckpointError, match="use layout 'insightface'"):
        load_public_checkpoint(plain, "adaface", "ir_18")
    torch.save(_case("adaface", lambda sd: None), ada)
    with pytest.raises(CheckpointError, match=re.escape(f"{ada}:key 'state_dict'") + ".*use layout 'adaface'"):
        load_public_checkpoint(ada, "insightface", "r18")
    with pytest.raises(CheckpointError, match=re.escape(f"{plain}:key 'layer1.2.bn1.weight': missing")):  # r18 as r34
        load_public_checkpoint(plain, "insightface", "r34")
    torch.save({"epoch": 3, "global_step": 9, "state_dict_backbone": _case("insightface", lambda sd: None)}, plain)
    with pytest.raises(
        CheckpointError, match=re.escape(f"{plain}:key 'state_dict_backbone': an arcface_torch training")
    ):
        load_public_checkpoint(plain, "insightface", "r18")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_public_checkpoint(str(garbage), "insightface", "r18")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_public_checkpoint(str(tmp_path / "nope.pth"), "insightface", "r18")
    # Lightning hyper-parameters pickled as objects: refused unless the user trusts the file
    ns = str(tmp_path / "ns.ckpt")
    ckpt = _case("adaface", lambda sd: None)
    ckpt["hyper_parameters"] = argparse.Namespace(arch="ir_18")
    torch.save(ckpt, ns)
    with pytest.raises(CheckpointError, match="argparse.Namespace.*trust_pickle=True"):
        load_public_checkpoint(ns, "adaface", "ir_18")
    assert load_public_checkpoint(ns, "adaface", "ir_18", trust_pickle=True).arch == "r18"


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    path = str(tmp_path / "old.pth")
    sd = {k: v for k, v in zero_stride_state(insightface_layout(18)).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, path)
    m = load_public_checkpoint(path, "insightface", "r18")
    assert int(m.backbone.bn1.num_batches_tracked) == 0 and m.source.count("tensors loaded") == 1


@pytest.mark.parametrize("layout,arch", [("insightface", "r50"), ("adaface", "ir_50")])
def test_r50_full_size_strict_load_from_a_tiny_file(layout, arch, tmp_path):
    """Zero-stride tensors: a full r50 / ir_50 key set with every published shape in a file of a few kB."""
    gen = insightface_layout(50) if layout == "insightface" else adaface_layout(50)
    sd = zero_stride_state(gen)
    path = str(tmp_path / "r50.bin")
    torch.save(sd if layout == "insightface" else lightning_ckpt(sd), path)
    assert os.path.getsize(path) < 1_000_000
    m = load_public_checkpoint(path, layout, arch)
    assert m.num_parameters == n_params(sd) and m.arch == "r50"
    assert [len(getattr(m.backbone, f"layer{s}")) for s in range(1, 5)] == [3, 4, 14, 3]


# ---------------------------------------------------------------------------------- docstring example
def _docstring_example() -> str:
    doc = iw.__doc__
    start = doc.index("By hand, with the evaluator classes::")
    lines = doc[start:].splitlines()[1:]
    block = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip() + "\n"


def test_docstring_example_on_tiny_release(tiny_release, monkeypatch):
    """Runs the module docstring's example verbatim on the tiny SynthFace release. ``load_public_checkpoint`` is
    replaced by a CPU-sized stand-in (an :class:`AdaFaceIR` at 32 px: BGR, ``(emb, norm)`` output, MaxPool shortcut);
    the 112 px imports are checked above through the same feature loop (``embed_batches``)."""
    torch.manual_seed(0)
    small = iw.AdaFaceIR([1, 1, 1, 1], widths=(16, 32, 64, 128), stem_width=16, input_size=32, num_features=64).eval()
    stand_in = ImportedModel(
        backbone=small,
        layout="adaface",
        arch="r18",
        channel_order="BGR",
        source="stand-in",
        input_size=32,
        embedding_size=64,
        eval_defaults={"flip": "sum", "faceness": False, "image_norm": False},
    )
    calls = []

    def fake_load(path, layout, arch, **kw):
        calls.append((path, layout, arch))
        return stand_in

    monkeypatch.setattr(iw, "load_public_checkpoint", fake_load)
    scope = {"release": tiny_release}
    exec(compile(_docstring_example(), "harness/import_weights.py:docstring", "exec"), scope)
    assert calls == [("adaface_ir50_ms1mv2.ckpt", "adaface", "ir_50")]

    rows = scope["rows"]
    assert [r["benchmark"] for r in rows][0] == "IJB-B" and rows[-1]["benchmark"] == "TinyFace"
    ijbb_row, tiny_row = rows[0], rows[-1]
    for row in (ijbb_row, tiny_row):
        assert row["imported"]["layout"] == "adaface" and row["knobs"]["channel_order"] == "BGR"
        assert row["knobs"]["input_size" if row is tiny_row else "align_size"] == 32
    assert ijbb_row["knobs"]["faceness"] is False and ijbb_row["knobs"]["flip"] == "sum"
    # the pipeline path (evaluate_imported -> harness.run.evaluate_model) and the by-hand path agree
    assert scope["ijbb"]["tar_at_far"] == ijbb_row["tar_at_far"]
    assert all(0.0 <= v <= 1.0 for v in ijbb_row["tar_at_far"].values())
    assert scope["tinyface"]["rank1"] == tiny_row["rank1"] and 0.0 <= tiny_row["rank1"] <= 1.0
    with pytest.raises(ValueError, match="unknown override"):
        iw.evaluate_imported(stand_in, tiny_release, ("TinyFace",), channel_order="RGB")


def test_cli_scores_an_imported_checkpoint_into_a_result_the_tables_read(tiny_release, tmp_path, monkeypatch, capsys):
    """``python -m harness.import_weights PATH ... --evaluate ROOT --result R.json`` writes the harness.run result
    format (+ items), which harness.tables reads; the model is the 32 px stand-in of the test above."""
    torch.manual_seed(0)
    small = iw.AdaFaceIR([1, 1, 1, 1], widths=(16, 32, 64, 128), stem_width=16, input_size=32, num_features=64).eval()
    stand_in = ImportedModel(
        backbone=small,
        layout="adaface",
        arch="r18",
        channel_order="BGR",
        source="stand-in",
        input_size=32,
        embedding_size=64,
        eval_defaults={"flip": "sum", "faceness": False, "image_norm": False},
    )
    monkeypatch.setattr(iw, "load_public_checkpoint", lambda *a, **k: stand_in)
    result = tmp_path / "eval" / "adaface-r18-s0.json"
    assert (
        iw.main(
            [
                "x.ckpt",
                "--layout",
                "adaface",
                "--arch",
                "ir_18",
                "--evaluate",
                tiny_release,
                "--benchmarks",
                "IJBB,TinyFace",
                "--result",
                str(result),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "adaface-r18 IJB-B  tar@" in out and "adaface-r18 TinyFace  rank1:" in out
    doc = json.loads(result.read_text())
    assert doc["method"] == "adaface-r18" and doc["knobs"]["data.channel_order"] == "BGR"
    assert (result.parent / doc["items"]).is_file()
    from harness import tables

    assert (
        tables.main(
            [
                str(result.parent),
                "--out-dir",
                str(tmp_path / "t"),
                "--report",
                str(tmp_path / "R.md"),
                "--reference",
                "adaface-r18",
                "--no-paper",
                "--n-boot",
                "20",
            ]
        )
        == 0
    )
    assert "| adaface-r18 |" in (tmp_path / "t" / "tables.md").read_text()
    # a root without the benchmarks: one line, status 2
    assert (
        iw.main(
            [
                "x.ckpt",
                "--layout",
                "adaface",
                "--arch",
                "ir_18",
                "--evaluate",
                str(tmp_path / "none"),
                "--benchmarks",
                "IJBB",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("where", ["atomic writer", "raw"])
def test_cli_on_a_full_disk_is_one_line_naming_the_file(where, tiny_release, tmp_path, monkeypatch, capsys):
    """Writing the result on a full disk (``ENOSPC`` while writing): one line naming the file, status 2, no
    traceback, nothing left half-written. ``atomic writer``: the write inside harness.core.atomic fails (its
    DiskFullError names the target); ``raw``: the atomic writer itself raises a bare OSError (the result is named)."""
    import errno

    from harness.core import atomic

    torch.manual_seed(0)
    small = iw.AdaFaceIR([1, 1, 1, 1], widths=(16, 32, 64, 128), stem_width=16, input_size=32, num_features=64).eval()
    stand_in = ImportedModel(
        backbone=small,
        layout="adaface",
        arch="r18",
        channel_order="BGR",
        source="stand-in",
        input_size=32,
        embedding_size=64,
        eval_defaults={"flip": "sum", "faceness": False, "image_norm": False},
    )
    monkeypatch.setattr(iw, "load_public_checkpoint", lambda *a, **k: stand_in)
    real = atomic.write_atomic

    def full(path, write, binary=False):
        if where == "raw":
            raise OSError(errno.ENOSPC, "No space left on device")

        def fail(f):
            f.write(b"x" if binary else "x")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, fail, binary)

    monkeypatch.setattr(atomic, "write_atomic", full)
    result = tmp_path / "eval" / "adaface-r18-s0.json"
    assert (
        iw.main(
            [
                "x.ckpt",
                "--layout",
                "adaface",
                "--arch",
                "ir_18",
                "--evaluate",
                tiny_release,
                "--benchmarks",
                "TinyFace",
                "--result",
                str(result),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    items = str(result)[: -len(".json")] + ".items.npz"  # written first: the document never names a missing file
    if where == "raw":
        assert err == f"harness.import_weights: {result}: No space left on device\n"
    else:
        assert err == f"harness.import_weights: no space left on device: {items}\n"
    assert os.listdir(result.parent) == []  # no result, no items, no temporary file
