"""Analyses and pictures of a trained CFSM stage-1 generator (the paper's Sec. 4 analyses), on any data.

* :func:`frechet_distance`: the Frechet distance between two sets of L2-normalised embeddings of the frozen FR
  model (Heusel et al., NeurIPS 2017, computed in the FR embedding space instead of Inception's): the domain
  distance used to check that ``G(source, o)`` lands near the target domain.
* :func:`analyse`: on held-out source images and held-out target crops, FD(source, target), FD(G(source, o ~ N(0,
  I)), target), FD by magnitude ``||o||`` (moving away from the target as ``||o||`` goes to 0) and the
  target-vs-target floor; the identity cosine ``cos(f(x), f(G(x, o)))`` by magnitude, beside the trained target
  ``1 - t(||o||)``; the orthogonality of ``U`` and the subspace similarity to its initialisation
  (:func:`harness.models.cfsm.subspace_similarity`, the paper's ``S(A, B)``). Where SynthFace's clean/degraded
  pairs (``stage1_pairs``) exist, also the ideal FD(true degradation, target) and the identity cosine the true
  degradation keeps against G's on the same images.
* :func:`magnitude_grid`, :func:`basis_grid`: the paper's two figures (inputs x magnitudes 0..6; inputs x basis
  directions, -3..+3), as uint8 arrays; :func:`write_figures` saves them as PNG.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import linalg

from harness.cfsm.quality import FD_RATIO_MAX, IDENTITY_GAP_MIN, quality_targets
from harness.core.atomic import write_atomic
from harness.models.cfsm import CFSMGenerator, magnitude_target, subspace_similarity


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` of two (N, d) samples (unbiased covariances, as
    in FID); the matrix square root's negligible imaginary part is dropped."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs two (N>=2, d) arrays of equal d, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    if not np.isfinite(root).all():  # near-singular product: regularise as pytorch-fid does
        eps = np.eye(len(ca)) * 1e-6
        root = linalg.sqrtm((ca + eps) @ (cb + eps))
    return float(max(0.0, mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * np.trace(root.real)))


def _to_input(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div(255.0).sub(0.5).div(0.5)


@torch.no_grad()
def embed(f: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, synth=None) -> torch.Tensor:
    """L2-normalised embeddings of uint8 images (or, with ``synth(x, start)``, of images produced from them)."""
    device = next(f.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = _to_input(images[start : start + batch_size]).to(device)
        if synth is not None:
            x = synth(x, start)
        out.append(F.normalize(f(x).float(), dim=1).cpu())
    return torch.cat(out)


def _synth_with(G: CFSMGenerator, o_all: torch.Tensor, device):
    """``synth(x, start)`` for :func:`embed`: ``G(x, o)`` with the rows of ``o_all`` that belong to the batch."""
    return lambda x, start: G(x, o_all[start : start + len(x)].to(device))


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum(1).mean())


def random_style_embeddings(
    G: CFSMGenerator, f: torch.nn.Module, source: torch.Tensor, batch_size: int, seed: int
) -> torch.Tensor:
    """``f``'s embeddings of ``G(x, o)``, ``o ~ N(0, I)`` drawn from ``seed + 101``: the synthesis behind every FD
    and identity figure of a generator, in its own analysis (:func:`analyse`) and on a common sample
    (:func:`common_target_fd`)."""
    o = torch.randn(len(source), G.config.style_dim, generator=torch.Generator().manual_seed(seed + 101))
    return embed(f, source, batch_size, synth=_synth_with(G, o, next(G.parameters()).device))


def _unit_directions(n: int, q: int, seed: int) -> torch.Tensor:
    o = torch.randn(n, q, generator=torch.Generator().manual_seed(seed))
    return o / o.norm(dim=1, keepdim=True)


@torch.no_grad()
def analyse(
    G: CFSMGenerator,
    f: torch.nn.Module,
    source: torch.Tensor,
    target: torch.Tensor,
    acfg,
    seed: int = 0,
    initial_basis: torch.Tensor | None = None,
    train=None,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Every stage-1 figure on held-out source images and held-out target crops (uint8, generator size), which any
    data has; SynthFace's (clean, degraded) ``pairs`` add the true degradation's figures where present.
    Returns ``{"summary": {fd, identity, subspace, targets}, "n": {...}}``; ``summary`` is what ``dvc metrics``
    shows.

    On any data: FD(source, target), FD(G(source, o ~ N(0, I)), target), FD by magnitude, the target-vs-target
    floor; the identity cosine ``cos(f(x), f(G(x, o)))`` overall and by magnitude beside the trained target
    ``1 - t(a)``; U's orthogonality and its similarity to the initialisation. With ``pairs``: FD(true degradation,
    target) and the identity cosine the true degradation keeps against G's on the same clean images (``gap``)."""
    G.eval()
    q = G.config.style_dim
    device = next(G.parameters()).device
    bs = acfg.batch_size
    emb_src = embed(f, source, bs)
    emb_tgt = embed(f, target, bs)
    half = len(emb_tgt) // 2

    def gen_with(o_all: torch.Tensor):
        return _synth_with(G, o_all, device)

    cos = _mean_cosine
    emb_synth = random_style_embeddings(G, f, source, bs, seed)
    fd_src = frechet_distance(emb_src, emb_tgt)
    fd = {"source_target": fd_src, "synth_target": frechet_distance(emb_synth, emb_tgt)}
    if half >= 2:
        fd["target_target"] = frechet_distance(emb_tgt[:half], emb_tgt[half:])
    fd["synth_over_source"] = fd["synth_target"] / fd_src if fd_src > 0 else float("nan")
    identity = {"cos_synth": cos(emb_src, emb_synth)}
    directions = _unit_directions(len(source), q, seed + 202)
    by_mag_fd, by_mag_cos = {}, {}
    for a in acfg.magnitudes:
        emb = embed(f, source, bs, synth=gen_with(directions * a))
        key = f"mag_{a:g}"
        by_mag_fd[key] = frechet_distance(emb, emb_tgt)
        by_mag_cos[key] = cos(emb_src, emb)
    fd.update(by_mag_fd)
    identity.update(by_mag_cos)
    if train is not None:
        for a in acfg.magnitudes:
            t_a = magnitude_target(torch.tensor(float(a)), train.la, train.ua, train.lm, train.um)
            identity[f"trained_target_mag_{a:g}"] = 1.0 - float(t_a)
    # "grows monotonically away from the target as ||o|| goes to 0": over 0 .. sqrt(q) (the typical norm of
    # o ~ N(0, I_q)) the FD must not increase with the magnitude.
    typical = [a for a in acfg.magnitudes if a <= np.sqrt(q) + 1e-9]
    seq = [by_mag_fd[f"mag_{a:g}"] for a in sorted(typical)]
    targets = {
        f"fd_ratio_le_{FD_RATIO_MAX:g}": bool(fd["synth_over_source"] <= FD_RATIO_MAX),
        "fd_monotone_in_magnitude": bool(all(x >= y for x, y in zip(seq, seq[1:]))),
    }
    n = {"source_held_out": len(source), "target_held_out": len(target), "target_half": half}
    if pairs is not None:  # SynthFace: the same clean images through the true target camera model
        clean, degraded = pairs
        emb_clean, emb_deg = embed(f, clean, bs), embed(f, degraded, bs)
        o_pairs = torch.randn(len(clean), q, generator=torch.Generator().manual_seed(seed + 103))
        emb_pair_synth = embed(f, clean, bs, synth=gen_with(o_pairs))
        fd["degraded_target"] = frechet_distance(emb_deg, emb_tgt)
        identity["pairs_cos_synth"] = cos(emb_clean, emb_pair_synth)
        identity["cos_degraded"] = cos(emb_clean, emb_deg)
        identity["gap"] = identity["pairs_cos_synth"] - identity["cos_degraded"]
        targets[f"identity_gap_le_{-IDENTITY_GAP_MIN:g}"] = bool(abs(identity["gap"]) <= -IDENTITY_GAP_MIN)
        n["pairs"] = len(clean)
    U, mu = G.basis()
    gram = U @ U.t()
    subspace = {"orthogonality_mse": float(((gram - torch.eye(q, device=gram.device)) ** 2).mean())}
    if initial_basis is not None:
        subspace["similarity_to_init"] = subspace_similarity(U, mu, initial_basis.to(U.device), torch.zeros_like(mu))
    fd, identity = _round(fd), _round(identity)
    targets.update(quality_targets(fd["synth_over_source"], identity.get("gap")))
    summary = {"fd": fd, "identity": identity, "subspace": _round(subspace), "targets": targets}
    return {
        "summary": summary,
        "n": n,
        "notes": "FD in the frozen FR model's L2-normalised embedding space between held-out source images and "
        "held-out target crops; images at the generator's size, resized to the FR input; FD is biased "
        "upward at small N (compare within this file).",
    }


@torch.no_grad()
def common_target_fd(
    generators, f: torch.nn.Module, source: torch.Tensor, target: torch.Tensor, batch_size: int = 256, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{name: {fd_synth_target, fd_source_target, fd_synth_over_source, identity_cos}}`` of each generator on the
    same uint8 ``source`` images and ``target`` crops (:mod:`harness.cfsm.target_fd`). ``o ~ N(0, I)`` is drawn as
    :func:`analyse` draws it (``seed + 101``), so a run's own analysis and this one differ only in the target."""
    emb_src = embed(f, source, batch_size)
    emb_tgt = embed(f, target, batch_size)
    fd_src = frechet_distance(emb_src, emb_tgt)
    out = {}
    for name, G in generators.items():
        G.eval()
        emb = random_style_embeddings(G, f, source, batch_size, seed)
        fd = frechet_distance(emb, emb_tgt)
        out[name] = _round(
            {
                "fd_synth_target": fd,
                "fd_source_target": fd_src,
                "fd_synth_over_source": fd / fd_src if fd_src > 0 else float("nan"),
                "identity_cos": _mean_cosine(emb_src, emb),
            }
        )
    return out


def _round(d: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------- pictures
def _to_u8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def magnitude_grid(G: CFSMGenerator, inputs_u8: torch.Tensor, magnitudes, seed: int = 0) -> np.ndarray:
    """(rows = inputs, cols = [input, ||o|| = m for m in magnitudes]) tiles; each row walks one random direction,
    so its columns differ only in the magnitude. Returns (n, 1 + len(magnitudes), H, W, 3) uint8."""
    G.eval()
    device = next(G.parameters()).device
    x = _to_input(inputs_u8).to(device)
    d = _unit_directions(len(x), G.config.style_dim, seed).to(device)
    cols = [_to_u8(x)] + [_to_u8(G(x, d * float(a))) for a in magnitudes]
    return np.stack(cols, axis=1)


@torch.no_grad()
def basis_grid(G: CFSMGenerator, input_u8: torch.Tensor, values) -> np.ndarray:
    """For one input: (rows = basis vectors 0..q-1, cols = o = v * e_i for v in values) tiles,
    (q, len(values), H, W, 3) uint8 (``CFSM/interface.py`` shows each basis this way, v in [-3, 3])."""
    G.eval()
    device = next(G.parameters()).device
    x = _to_input(input_u8[None]).to(device)
    rows = []
    for i in range(G.config.style_dim):
        rows.append(np.concatenate([_to_u8(G.along_basis(x, i, float(v))) for v in values]))
    return np.stack(rows)


def tile(
    grid: np.ndarray, scale: int = 2, gap: int = 2, col_labels=None, row_labels=None, label_width: int = 22
) -> Image.Image:
    """A (rows, cols, H, W, 3) tile array as one image, nearest-upscaled, with optional text labels (row labels in
    a left margin ``label_width`` pixels wide)."""
    rows, cols, h, w, _ = grid.shape
    h, w = h * scale, w * scale
    top = 14 if col_labels else 0
    left = label_width if row_labels else 0
    img = Image.new("RGB", (left + cols * (w + gap) + gap, top + rows * (h + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r in range(rows):
        for c in range(cols):
            t = Image.fromarray(grid[r, c]).resize((w, h), Image.NEAREST)
            img.paste(t, (left + gap + c * (w + gap), top + gap + r * (h + gap)))
        if row_labels:
            draw.text((2, top + gap + r * (h + gap) + h // 2 - 5), str(row_labels[r]), fill=(0, 0, 0))
    for c, label in enumerate(col_labels or []):
        draw.text((left + gap + c * (w + gap) + 2, 1), str(label), fill=(0, 0, 0))
    return img


def _save_png(img: Image.Image, path: str) -> None:
    """PNG, written atomically (:func:`harness.core.atomic.write_atomic`)."""
    write_atomic(path, lambda f: img.save(f, format="PNG", optimize=True), binary=True)


def write_figures(G: CFSMGenerator, inputs_u8: torch.Tensor, acfg, out_dir: str, seed: int = 0) -> dict[str, str]:
    """``cfsm_magnitude.png`` and ``cfsm_basis.png`` under ``out_dir``; returns their paths."""
    n = min(acfg.figure_inputs, len(inputs_u8))
    mags = magnitude_grid(G, inputs_u8[:n], acfg.magnitudes, seed=seed)
    mag_path = os.path.join(out_dir, "cfsm_magnitude.png")
    _save_png(tile(mags, col_labels=["input"] + [f"|o|={a:g}" for a in acfg.magnitudes]), mag_path)
    blocks = [basis_grid(G, inputs_u8[i], acfg.basis_values) for i in range(min(acfg.basis_inputs, len(inputs_u8)))]
    basis = np.concatenate(blocks, axis=1)  # inputs side by side
    labels = [f"{v:+g}" for v in acfg.basis_values] * len(blocks)
    basis_path = os.path.join(out_dir, "cfsm_basis.png")
    _save_png(tile(basis, col_labels=labels, row_labels=[f"u{i}" for i in range(G.config.style_dim)]), basis_path)
    return {"magnitude": mag_path, "basis": basis_path}
