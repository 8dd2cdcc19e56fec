"""S(A, B) across stage-1 generators (issue 20): the measure on hand-made bases, its two checks, the matrix command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from harness.cfsm.subspace import main as subspaces_main
from harness.cfsm.subspace import mean_cosine, projection_overlap, similarity_matrices
from harness.models.cfsm import CFSMConfig, CFSMGenerator, save_generator, subspace_similarity

pytestmark = pytest.mark.usefixtures("one_thread")


def e(i: int, d: int, scale: float = 1.0) -> torch.Tensor:
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = scale
    return v


def rows(*vs: torch.Tensor) -> torch.Tensor:
    return torch.stack(vs)


def test_identical_sign_flipped_and_orthogonal_bases():
    d = 6
    U = rows(e(0, d), e(1, d), e(2, d))
    zero = torch.zeros(d, dtype=torch.float64)
    mu = torch.tensor([0.3, -1.0, 0.2, 2.0, 0.5, -0.7], dtype=torch.float64)
    assert subspace_similarity(U, mu, U, mu) == pytest.approx(1.0)
    assert subspace_similarity(U, zero, U, zero) == pytest.approx(1.0)
    # sign convention: S pairs the vectors with their signs; a flipped basis is -1, yet the same span
    assert subspace_similarity(U, zero, -U, zero) == pytest.approx(-1.0)
    assert projection_overlap(U, -U) == pytest.approx(1.0)
    # orthogonal spans: e0..e2 against e3..e5
    V = rows(e(3, d), e(4, d), e(5, d))
    assert subspace_similarity(U, zero, V, zero) == pytest.approx(0.0)
    assert projection_overlap(U, V) == pytest.approx(0.0)
    assert mean_cosine(zero, mu) == 0.0 and mean_cosine(mu, 2 * mu) == pytest.approx(1.0)


@pytest.mark.parametrize("m", [1.0, 3.0])
def test_a_shared_mean_pulls_orthogonal_bases_together(m):
    # u_A^i = e_i, u_B^i = e_{i+2}, mu = m e_4 for both: cos(e_i + m e4, e_{i+2} + m e4) = m^2 / (1 + m^2)
    d = 5
    U, V, mu = rows(e(0, d), e(1, d)), rows(e(2, d), e(3, d)), e(4, d, m)
    assert subspace_similarity(U, mu, V, mu) == pytest.approx(m * m / (1 + m * m))  # 0.5 at m = 1, 0.9 at m = 3
    assert projection_overlap(U, V) == pytest.approx(0.0)  # the spans stay orthogonal
    # opposite means: (e_i + m e4) . (e_{i+2} - m e4) = -m^2
    assert subspace_similarity(U, mu, V, -mu) == pytest.approx(-m * m / (1 + m * m))


def test_order_rotation_and_scale():
    d = 4
    zero = torch.zeros(d, dtype=torch.float64)
    U = rows(e(0, d), e(1, d))
    swapped = rows(e(1, d), e(0, d))
    assert subspace_similarity(U, zero, swapped, zero) == pytest.approx(0.0)  # S is order-sensitive
    assert projection_overlap(U, swapped) == pytest.approx(1.0)  # the span is the same
    r = 1 / math.sqrt(2)
    rotated = rows(r * (e(0, d) + e(2, d)), r * (e(1, d) + e(3, d)))  # each vector 45 degrees out of the span
    assert subspace_similarity(U, zero, rotated, zero) == pytest.approx(r)
    assert projection_overlap(U, rotated) == pytest.approx(0.5)  # cos^2(45 deg) per principal angle
    assert subspace_similarity(2 * U, zero, U, zero) == pytest.approx(1.0)  # cosines ignore the length
    assert projection_overlap(3 * U + 0.5 * swapped, U) == pytest.approx(1.0)  # a non-orthonormal basis of the span
    with pytest.raises(ValueError, match="differ in shape"):
        projection_overlap(U, rows(e(0, d)))


def test_matrices_over_several_subspaces():
    d = 4
    zero = torch.zeros(d, dtype=torch.float64)
    A = (rows(e(0, d), e(1, d)), zero)
    B = (rows(-e(0, d), e(1, d)), zero)  # one vector flipped: S = (-1 + 1) / 2 = 0
    C = (rows(e(2, d), e(3, d)), e(0, d))
    got = similarity_matrices({"a": A, "b": B, "c": C})
    # c's vectors e2 + e0, e3 + e0 against a's e0, e1: cos = (1/sqrt2, 0) -> mean 1/(2 sqrt2)
    assert got["S"][0] == pytest.approx([1.0, 0.0, 1 / (2 * math.sqrt(2))])
    assert got["S"][0][2] == pytest.approx(got["S"][2][0])
    assert got["projection_overlap"][0] == pytest.approx([1.0, 1.0, 0.0])
    assert got["mean_cosine"][2] == pytest.approx([0.0, 0.0, 1.0])


GEN = CFSMConfig(image_size=16, dim=8, n_residual=1, latent_dim=8, mlp_dim=16, d_scales=1, d_layers=2, style_dim=2)


def _save(path, U, mu, fd=None):
    g = CFSMGenerator(GEN)
    with torch.no_grad():
        g.subspace.U.copy_(U)
        g.subspace.mu.copy_(mu)
    meta = {"analysis": {"fd": fd, "subspace": {"similarity_to_init": 0.25}}} if fd else {}
    save_generator(str(path), g, meta)
    return str(path)


def test_command_writes_the_matrix_and_the_figure(tmp_path, capsys):
    d = 8
    U = rows(e(0, d), e(1, d)).float()
    mu = e(7, d, 0.5).float()
    fd = {"source_target": 2.0, "synth_target": 1.2, "synth_over_source": 0.6}
    a = _save(tmp_path / "a.pt", U, mu, fd)
    b = _save(tmp_path / "b.pt", -U, mu)
    c = _save(tmp_path / "c.pt", rows(e(2, d), e(3, d)).float(), mu, fd)
    out = tmp_path / "out"
    assert (
        subspaces_main(
            [
                "--generator",
                f"default={a}",
                "--generator",
                f"flipped={b}",
                "--generator",
                f"other={c}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads((out / "subspace_similarity.json").read_text())
    assert doc["names"] == ["default", "flipped", "other"]
    # by hand: (e_i + 0.5 e7) . (-e_i + 0.5 e7) / 1.25 = -0.75 / 1.25; against e_{i+2} + 0.5 e7: 0.25 / 1.25
    assert doc["S"][0] == pytest.approx([1.0, -0.6, 0.2], abs=1e-6)
    assert doc["projection_overlap"][0] == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)
    assert doc["generators"]["default"]["fd_synth_target"] == 1.2
    assert doc["generators"]["default"]["similarity_to_init"] == 0.25
    assert doc["generators"]["flipped"]["fd_synth_target"] is None  # no analysis in its metadata
    assert doc["generators"]["other"]["q"] == 2 and doc["generators"]["other"]["d"] == d
    png = Image.open(out / "subspace_similarity.png")
    assert png.format == "PNG" and png.size[0] > 3 * 56
    assert "-0.6000" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--generator", "x"], "expected NAME=PATH"),
        (["--generator", "a=A", "--generator", "a=A"], "given twice"),
        (["--generator", "a=/nonexistent/g.pt"], "stage-1 generator not found"),
    ],
)
def test_command_bad_input_is_one_line(tmp_path, capsys, args, needle):
    assert subspaces_main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness.subspaces: ") and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_command_refuses_different_shapes(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", rows(e(0, 8), e(1, 8)).float(), torch.zeros(8))
    other = CFSMGenerator(
        CFSMConfig(image_size=16, dim=8, n_residual=1, latent_dim=8, mlp_dim=16, d_scales=1, d_layers=2, style_dim=3)
    )
    save_generator(str(tmp_path / "b.pt"), other)
    assert (
        subspaces_main(["--generator", f"a={a}", "--generator", f"b={tmp_path / 'b.pt'}", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "differ in subspace shape" in capsys.readouterr().err
