"""Subspace similarity across stage-1 generators (the paper's analysis of subspaces learnt on different targets).

CFSM (Liu et al., ECCV 2022, arXiv 2207.10180) compares the style subspaces of stage-1 models trained on different
target sets (WIDER FACE, IJB-B, IJB-S, ...) with ``S(A, B) = (1/q) sum_i cos(u_A^i + mu_A, u_B^i + mu_B)``, where
``u^i`` is the i-th basis vector of the q x d basis ``U`` and ``mu`` the subspace mean (the style code at ``o = 0``),
and reports that WIDER FACE, IJB-B and IJB-S give similar subspaces. The formula is
:func:`harness.models.cfsm.subspace_similarity`; the official repository has no code for the analysis.

How to read ``S``: it pairs the basis vectors *by index and sign*, as the formula is written: two generators whose
bases span the same space in another order, or with a flipped sign, score lower than 1 (``o ~ N(0, I)`` is symmetric,
so a sign flip changes no synthesis). And because each term adds ``mu``, a mean much longer than the unit basis
vectors pulls every term towards ``cos(mu_A, mu_B)``. Two checks of that are given beside ``S``:

* :func:`projection_overlap`: ``(1/q) ||Q_A Q_B^T||_F^2`` with ``Q`` orthonormal bases of the row spaces of
  ``U_A`` and ``U_B``, the mean squared cosine of the principal angles between the two subspaces (Bjorck & Golub,
  "Numerical methods for computing angles between linear subspaces", Math. Comp. 1973): 1 for the same span in any
  order, sign or rotation, 0 for orthogonal spans, ``q / d`` expected for random ones;
* the mean cosine ``cos(mu_A, mu_B)``.

Stage-1 runs with the same seed start from the same orthogonal ``U`` (``harness.models.cfsm.SubspaceLayer``), so
a high ``S`` between generators of one seed partly measures how little each moved from that start: the report
gives each generator's ``similarity_to_init`` from its own analysis where it has one.

``python -m harness.subspaces --generator NAME=PATH ... --out DIR`` writes ``DIR/subspace_similarity.json`` (the
names, the three matrices, and each generator's FD figures from its stage-1 analysis) and
``DIR/subspace_similarity.png`` (the ``S`` matrix with each generator's FD to its own target beside it).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from PIL import Image, ImageDraw

from harness.core.atomic import write_atomic, write_json_atomic
from harness.core.runtime import report_error
from harness.models.cfsm import load_generator, subspace_similarity

FORMAT = "cfsm-subspace-similarity/1"


def read_subspace(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(U (q x d), mu (d), meta)`` of a stage-1 generator file (:func:`harness.models.cfsm.load_generator`: a
    missing, unreadable or foreign file is a one-line error naming it)."""
    generator, meta = load_generator(path)
    U, mu = generator.basis()
    return U.double(), mu.double(), meta


def projection_overlap(U_a: torch.Tensor, U_b: torch.Tensor) -> float:
    """``(1/q) ||Q_A Q_B^T||_F^2`` for orthonormal bases ``Q`` of the row spaces of ``U_a`` and ``U_b`` (q x d each):
    the mean squared cosine of the principal angles; invariant to the order, signs and any rotation of the basis."""
    if U_a.shape != U_b.shape:
        raise ValueError(f"subspaces differ in shape: {tuple(U_a.shape)} vs {tuple(U_b.shape)}")
    qa = torch.linalg.qr(U_a.detach().double().t()).Q  # d x q, orthonormal columns spanning U_a's rows
    qb = torch.linalg.qr(U_b.detach().double().t()).Q
    return float((qa.t() @ qb).pow(2).sum() / U_a.shape[0])


def mean_cosine(mu_a: torch.Tensor, mu_b: torch.Tensor) -> float:
    """``cos(mu_A, mu_B)``; 0 when either mean is zero (an untrained subspace)."""
    a, b = mu_a.detach().double(), mu_b.detach().double()
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def similarity_matrices(subspaces: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, list[list[float]]]:
    """Over named ``(U, mu)`` pairs, in their order: ``S`` (the paper's measure, not symmetric-by-construction
    but symmetric in value), the projection overlap and the mean cosine, as nested lists (rows = A, columns = B)."""
    names = list(subspaces)
    out: dict[str, list[list[float]]] = {"S": [], "projection_overlap": [], "mean_cosine": []}
    for a in names:
        Ua, mua = subspaces[a]
        out["S"].append([subspace_similarity(Ua, mua, *subspaces[b]) for b in names])
        out["projection_overlap"].append([projection_overlap(Ua, subspaces[b][0]) for b in names])
        out["mean_cosine"].append([mean_cosine(mua, subspaces[b][1]) for b in names])
    return out


def report(generators: dict[str, str]) -> dict[str, Any]:
    """The JSON document of :func:`main` for ``{name: generator path}``."""
    if len(generators) < 1:
        raise ValueError("no generator given")
    subspaces, per = {}, {}
    for name, path in generators.items():
        U, mu, meta = read_subspace(path)
        subspaces[name] = (U, mu)
        analysis = meta.get("analysis", {}) if isinstance(meta, dict) else {}
        fd = analysis.get("fd", {})
        per[name] = {
            "path": path,
            "q": int(U.shape[0]),
            "d": int(U.shape[1]),
            "mu_norm": float(mu.norm()),
            "fd_source_target": fd.get("source_target"),
            "fd_synth_target": fd.get("synth_target"),
            "fd_synth_over_source": fd.get("synth_over_source"),
            "similarity_to_init": analysis.get("subspace", {}).get("similarity_to_init"),
        }
    if len({tuple(U.shape) for U, _ in subspaces.values()}) > 1:
        shapes = ", ".join(f"{n}={tuple(U.shape)}" for n, (U, _) in subspaces.items())
        raise ValueError(f"generators differ in subspace shape (q x d): {shapes}")
    return {
        "format": FORMAT,
        "names": list(generators),
        "generators": per,
        **similarity_matrices(subspaces),
        "measure": "S(A, B) = 1/q sum_i cos(u_A_i + mu_A, u_B_i + mu_B) (CFSM, ECCV 2022)",
    }


def _colour(v: float) -> tuple[int, int, int]:
    """-1 blue, 0 white, +1 red."""
    v = max(-1.0, min(1.0, v))
    w = int(round(255 * (1 - abs(v))))
    return (255, w, w) if v >= 0 else (w, w, 255)


def figure(doc: dict[str, Any], cell: int = 56) -> Image.Image:
    """The ``S`` matrix as a coloured grid with its values, and a column of each generator's FD(G(source), own
    target) / FD(source, target) from its stage-1 analysis ("-" where absent)."""
    names = doc["names"]
    n = len(names)
    left, top, fd_w = 8 + 7 * max(len(x) for x in names), 24 + 7 * max(len(x) for x in names) // 2, 2 * cell
    img = Image.new("RGB", (left + n * cell + fd_w + 8, top + n * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 4), "S(A, B)", fill="black")
    draw.text((left + n * cell + 6, 4), "FD synth/src", fill="black")
    for j, name in enumerate(names):
        draw.text((left + j * cell + 2, top - 12), name[: cell // 7], fill="black")
    for i, a in enumerate(names):
        y = top + i * cell
        draw.text((4, y + cell // 2 - 5), a, fill="black")
        for j in range(n):
            v = doc["S"][i][j]
            x = left + j * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_colour(v), outline="grey")
            draw.text((x + 8, y + cell // 2 - 5), f"{v:.3f}", fill="black")
        g = doc["generators"][a]
        fd = "-" if g["fd_synth_target"] is None else f"{g['fd_synth_target']:.3g}/{g['fd_source_target']:.3g}"
        draw.text((left + n * cell + 6, y + cell // 2 - 5), fd, fill="black")
    return img


def parse_generators(items: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` -> ``{NAME: PATH}``; a malformed or repeated name is a one-line ValueError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--generator {item!r}: expected NAME=PATH")
        if name in out:
            raise ValueError(f"--generator {item!r}: the name {name!r} is given twice")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.subspaces",
        description="S(A, B) between stage-1 generators (CFSM's subspace similarity)",
    )
    ap.add_argument("--generator", action="append", default=[], metavar="NAME=PATH", required=True)
    ap.add_argument("--out", required=True, help="folder for subspace_similarity.json and .png")
    args = ap.parse_args(argv)
    try:
        doc = report(parse_generators(args.generator))
    except (ValueError, OSError) as exc:
        return report_error("harness.subspaces", exc)
    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(doc, os.path.join(args.out, "subspace_similarity.json"))
    img = figure(doc)
    write_atomic(os.path.join(args.out, "subspace_similarity.png"), lambda f: img.save(f, format="PNG"), binary=True)
    width = max(len(n) for n in doc["names"])
    print("S(A, B)".ljust(width) + "".join(f"  {n[:8]:>8}" for n in doc["names"]))
    for name, row in zip(doc["names"], doc["S"]):
        print(name.ljust(width) + "".join(f"  {v:8.4f}" for v in row))
    return 0
