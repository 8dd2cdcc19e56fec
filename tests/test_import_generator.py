"""harness.import_generator: the released CFSM stage-1 generator (WiderFace70K.pth) imported strictly into
CFSMGenerator (issue 14 item 11), tested on random tensors in the official key layout.

The layout below was written out by hand from the official model definition, github.com/liufeng2915/CFSM
``CFSM/synthesis_network.py`` ``Generator(dim=64, n_downsample=2, n_residual=3, style_dim=10, latent_dim=128)``
(the constructor arguments of ``GuidedFaceRecognition/train.py``): parameter and buffer names and shapes only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import import_generator as ig
from harness.models.cfsm import PAPER, load_generator

REPO = Path(__file__).resolve().parents[1]


def official_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``Generator().state_dict()`` of the official definition."""
    k: dict[str, tuple[int, ...]] = {}

    def conv(prefix, cout, cin, size):
        k[f"{prefix}.weight"] = (cout, cin, size, size)
        k[f"{prefix}.bias"] = (cout,)

    # Encoder: ReflectionPad2d(3), Conv 3->64 7x7, IN, ReLU; 2 x [Conv 4x4 s2, IN, ReLU]; 3 ResidualBlock(norm="in")
    conv("encoder.model.1", 64, 3, 7)
    conv("encoder.model.4", 128, 64, 4)
    conv("encoder.model.7", 256, 128, 4)
    for i in (10, 11, 12):  # ResidualBlock.block: pad, conv, norm, relu, pad, conv, norm
        conv(f"encoder.model.{i}.block.1", 256, 256, 3)
        conv(f"encoder.model.{i}.block.5", 256, 256, 3)
    # Decoder: 3 ResidualBlock(norm="adain") whose AdaptiveInstanceNorm2d registers running_mean / running_var
    for i in (0, 1, 2):
        conv(f"decoder.model.{i}.block.1", 256, 256, 3)
        conv(f"decoder.model.{i}.block.5", 256, 256, 3)
        for j in (2, 6):
            k[f"decoder.model.{i}.block.{j}.running_mean"] = (256,)
            k[f"decoder.model.{i}.block.{j}.running_var"] = (256,)
    # 2 x [Upsample, Conv 5x5, LayerNorm(gamma, beta), ReLU], then ReflectionPad2d(3), Conv 7x7 -> 3, Tanh
    conv("decoder.model.4", 128, 256, 5)
    k["decoder.model.5.gamma"], k["decoder.model.5.beta"] = (128,), (128,)
    conv("decoder.model.8", 64, 128, 5)
    k["decoder.model.9.gamma"], k["decoder.model.9.beta"] = (64,), (64,)
    conv("decoder.model.12", 3, 64, 7)
    # Decoder.mlp = MLP(latent_dim=128, 2 x 3 blocks x 2 AdaIN x 256 = 3072, dim=256, n_blk=3)
    for i, (o, n) in zip((0, 2, 4), ((256, 128), (256, 256), (3072, 256))):
        k[f"decoder.mlp.model.{i}.weight"], k[f"decoder.mlp.model.{i}.bias"] = (o, n), (o,)
    # Generator.pca = SubspaceLayer(dim=128, n_basis=10)
    k["pca.U"], k["pca.mu"] = (10, 128), (128,)
    return k


def random_official(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in official_layout().items()}


def released_file(path, state, **extra):
    """Saved as CFSM/train.py checkpoint() does: a dict of G / D state dicts and optimiser states."""
    torch.save(
        {
            "G_state_dict": state,
            "D_state_dict": {"models.disc_0.0.weight": torch.zeros(64, 3, 4, 4)},
            "optimizerG_state_dict": {
                "state": {},
                "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": [0, 1]}],
            },
            "optimizerD_state_dict": {"state": {}, "param_groups": []},
            **extra,
        },
        path,
    )
    return str(path)


def test_official_layout_has_the_released_parameter_count():
    params = {k: v for k, v in official_layout().items() if "running_" not in k}
    total = sum(torch.Size(s).numel() for s in params.values())
    assert total == 9_669_891  # the released G (harness/models/cfsm.py docstring: encoder + decoder + MLP + subspace)


def test_import_maps_every_tensor_and_drops_only_the_adain_buffers(tmp_path):
    state = random_official()
    src = released_file(tmp_path / "WiderFace70K.pth", state)
    out = tmp_path / "released_generator.pt"
    meta = ig.import_generator(src, str(out))
    dropped = sorted(k for k in state if "running_" in k)
    assert len(dropped) == 12 and meta["imported"]["dropped"] == dropped

    # what stage 2 loads (methods.cfsm_guided: load_generator with the profile's generator_size)
    g, loaded_meta = load_generator(str(out), image_size=112, style_dim=10, latent_dim=128)
    assert g.config == PAPER and loaded_meta["imported"]["sha256"] == meta["imported"]["sha256"]
    ours = g.state_dict()
    assert torch.equal(ours["subspace.U"], state["pca.U"]) and torch.equal(ours["subspace.mu"], state["pca.mu"])
    assert torch.equal(ours["mlp.model.4.weight"], state["decoder.mlp.model.4.weight"])
    for key, value in state.items():
        if key not in dropped:
            assert torch.equal(ours[ig.official_to_ours(key)], value), key
    assert len(ours) == len(state) - len(dropped)
    U, mu = g.basis()
    assert torch.equal(U, state["pca.U"])
    # it runs: a 112 px face batch through G with the imported weights
    with torch.no_grad():
        y = g(torch.rand(2, 3, 112, 112) * 2 - 1, torch.randn(2, 10))
    assert y.shape == (2, 3, 112, 112) and bool(torch.isfinite(y).all())


def test_stage2_accepts_the_imported_generator(tmp_path):
    from methods import resolve_hparams
    from methods.cfsm_guided import CFSMGuided

    out = tmp_path / "g.pt"
    ig.import_generator(released_file(tmp_path / "W.pth", random_official()), str(out))
    hp = resolve_hparams("cfsm_guided", 0, {"generator": str(out), "generator_size": "112", "synthesize": "all"})
    CFSMGuided.preflight(hp)  # what harness.run checks before training: loads it with the profile's sizes


def test_a_plain_state_dict_and_a_module_prefix_are_accepted(tmp_path):
    state = random_official(1)
    plain = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, plain)
    ig.import_generator(str(plain), str(tmp_path / "g.pt"))
    g, _ = load_generator(str(tmp_path / "g.pt"))
    assert torch.equal(g.state_dict()["subspace.U"], state["pca.U"])


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("extra", "1 key(s) with no counterpart: decoder.extra.weight"),
        ("missing", "2 key(s) of ours not in the file: mlp.model.0.bias, subspace.U"),
        ("shape", "1 shape mismatch(es): pca.U (12, 128) (ours subspace.U (10, 128))"),
    ],
)
def test_unmatched_keys_are_one_line_listing_them(tmp_path, capsys, damage, expected):
    state = random_official()
    if damage == "extra":
        state["decoder.extra.weight"] = torch.zeros(3)
    elif damage == "missing":
        del state["pca.U"], state["decoder.mlp.model.0.bias"]
    else:
        state["pca.U"] = torch.zeros(12, 128)
    src = released_file(tmp_path / "W.pth", state)
    out = tmp_path / "g.pt"
    assert ig.main([src, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert err.startswith(f"harness.import_generator: {src}: not the released CFSM generator (112 px, dim 64): ")
    assert expected in err


def test_a_pickled_model_needs_trust_pickle(tmp_path, capsys):
    from harness.models.cfsm import CFSMGenerator

    src = tmp_path / "model.pth"
    torch.save(CFSMGenerator(PAPER), src)  # a whole pickled module, not tensors
    assert ig.main([str(src), "--out", str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused by torch.load(weights_only=True)" in err and "--trust-pickle" in err
    # with --trust-pickle it is read; our own module has our key names, which are not the official layout
    assert ig.main([str(src), "--out", str(tmp_path / "g.pt"), "--trust-pickle"]) == 2
    assert "key(s) with no counterpart: " in capsys.readouterr().err


def test_cli(tmp_path):
    src = released_file(tmp_path / "WiderFace70K.pth", random_official())
    out = tmp_path / "results" / "stage1" / "released_generator.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.import_generator", src, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "9,669,891 parameters" in proc.stdout and "dropped 12 unused AdaIN buffer(s)" in proc.stdout
    assert out.is_file()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.import_generator", str(tmp_path / "nope.pth"), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "nope.pth: released generator not found (no such file)"
    )
