"""The quality of the stage-1 CFSM generator behind each CFSM row (issue 19, item 4): its FD ratio and identity gap,
and whether it met the targets, so that a table never shows CFSM rows without saying what their generator was worth.

A CFSM run's result document records its generator in its resolved hyperparameters (``hparams.generator``, the
``generator.pt`` path the run loaded, e.g. ``results/stage1/generator.pt``); ``harness.stage1`` writes the
generator's ``metrics.json`` beside it. The targets are the acceptance targets this repository sets for its
re-implementation of CFSM's stage 1 (Liu et al., ECCV 2022; README, stage 1):

- **FD ratio** = FD(G(source), target) / FD(source, target) (``fd.synth_over_source``) at most
  :data:`FD_RATIO_MAX`: the synthesized images are much closer to the target domain than the raw sources;
- **identity gap** = cos(clean, G(clean)) - cos(clean, degraded) (``identity.gap``, SynthFace only: the same clean
  faces through the true camera model) at least :data:`IDENTITY_GAP_MIN`: G keeps identity about as well as the real
  degradation does.

:func:`targets_of` reads the ``targets`` block of a ``metrics.json`` (``{"fd_ratio", "fd_ratio_max",
"identity_gap", "identity_gap_min", "met"}``: ``harness.stage1`` writes the same block); for a file written before
the block existed it derives it from ``fd.synth_over_source`` and ``identity.gap`` with the same rule
(:func:`harness.cfsm.quality.quality_targets`, where the thresholds are defined).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from harness.cfsm.quality import FD_RATIO_MAX, IDENTITY_GAP_MIN, quality_targets
from harness.core.atomic import load_json_object
from harness.core.errors import DataFormatError

__all__ = [
    "FD_RATIO_MAX",
    "IDENTITY_GAP_MIN",
    "Targets",
    "GeneratorUse",
    "targets_of",
    "generator_of",
    "metrics_path_of",
    "read_targets",
    "generator_uses",
    "quality_text",
    "fd_text",
    "gap_text",
]


@dataclass(frozen=True)
class Targets:
    """A generator's quality: ``met`` is True / False, or None when its metrics are unknown (no metrics file) or
    the targets were not assessed (no identity gap measured: real data)."""

    fd_ratio: float | None
    identity_gap: float | None
    fd_ratio_max: float = FD_RATIO_MAX
    identity_gap_min: float = IDENTITY_GAP_MIN
    met: bool | None = None
    source: str = ""  # the metrics file read ("" when none)
    derived: bool = False  # computed here from fd / identity (an older metrics file without the targets block)

    def misses(self) -> list[str]:
        """What it missed, in words (``[]`` when met or unknown)."""
        out = []
        if self.fd_ratio is None or not math.isfinite(self.fd_ratio) or self.fd_ratio > self.fd_ratio_max:
            out.append(f"FD ratio {_num(self.fd_ratio)} > {_bound(self.fd_ratio_max)}")
        if self.identity_gap is not None and not self.identity_gap >= self.identity_gap_min:
            out.append(f"identity gap {_num(self.identity_gap)} < {_bound(self.identity_gap_min)}")
        return out if self.met is False else []


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}".replace("-", "−")


def _bound(x: float) -> str:
    return f"{x:g}".replace("-", "−")


def _number(block: dict, key: str, where: str, path: str) -> float | None:
    v = block.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataFormatError(path, where, f"{v!r} is not a number")
    return float(v)


def targets_of(metrics: dict, path: str = "metrics.json") -> Targets:
    """The targets of a stage-1 ``metrics.json`` (parsed): its ``targets`` block when it has one with ``met``,
    else derived from ``fd.synth_over_source`` and ``identity.gap`` with :data:`FD_RATIO_MAX` and
    :data:`IDENTITY_GAP_MIN` by :func:`harness.cfsm.quality.quality_targets` (not assessed, None, without a measured
    identity gap). Neither: a one-line error naming ``path``."""
    block = metrics.get("targets")
    if isinstance(block, dict) and "met" in block:
        if block["met"] is not None and not isinstance(block["met"], bool):
            raise DataFormatError(path, "targets.met", f"{block['met']!r} is not true, false or null")
        return Targets(
            _number(block, "fd_ratio", "targets.fd_ratio", path),
            _number(block, "identity_gap", "targets.identity_gap", path),
            _number(block, "fd_ratio_max", "targets.fd_ratio_max", path) or FD_RATIO_MAX,
            _number(block, "identity_gap_min", "targets.identity_gap_min", path) or IDENTITY_GAP_MIN,
            block["met"],
            path,
        )
    fd = metrics.get("fd") if isinstance(metrics.get("fd"), dict) else {}
    identity = metrics.get("identity") if isinstance(metrics.get("identity"), dict) else {}
    ratio = _number(fd, "synth_over_source", "fd.synth_over_source", path)
    gap = _number(identity, "gap", "identity.gap", path)
    if ratio is None:
        raise DataFormatError(
            path, "fd.synth_over_source", "missing: not a harness.stage1 metrics file (no targets block either)"
        )
    return Targets(ratio, gap, FD_RATIO_MAX, IDENTITY_GAP_MIN, quality_targets(ratio, gap)["met"], path, derived=True)


def generator_of(doc: dict) -> str | None:
    """The generator a result document's run used (``hparams.generator``), None for a run without one."""
    hp = doc.get("hparams")
    g = hp.get("generator") if isinstance(hp, dict) else None
    return g if isinstance(g, str) and g else None


def metrics_path_of(generator: str, result_path: str) -> str | None:
    """The ``metrics.json`` beside ``generator``: a relative generator path is the run's, relative to the folder it
    ran in, which is tried as the current folder and then each folder above the result document; None when no
    such file exists (e.g. an imported generator)."""
    if os.path.isabs(generator):
        folders = [""]
    else:
        folders = [os.getcwd()]
        d = os.path.dirname(os.path.abspath(result_path))
        while True:
            folders.append(d)
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
    for f in folders:
        cand = os.path.join(os.path.dirname(os.path.join(f, generator)), "metrics.json")
        if os.path.isfile(cand):
            return cand
    return None


def read_targets(path: str) -> Targets:
    """:func:`targets_of` of the file ``path`` (bad JSON: a one-line error)."""
    return targets_of(load_json_object(path, "a harness.stage1 metrics file"), path)


@dataclass(frozen=True)
class GeneratorUse:
    """One generator and the runs of one method that used it."""

    method: str
    generator: str  # as the result documents record it
    seeds: tuple[int, ...]
    targets: Targets  # met None: no metrics file found


def generator_uses(runs: Sequence) -> list[GeneratorUse]:
    """Every (method, generator) of the runs (result documents: ``method``, ``seed``, ``doc``, ``path``), in the
    order of the runs; runs without a generator are left out."""
    found: dict[tuple[str, str], list] = {}
    for r in runs:
        g = generator_of(r.doc)
        if g is not None:
            found.setdefault((r.method, g), []).append(r)
    out = []
    cache: dict[str, Targets] = {}
    for (method, g), rs in found.items():
        path = next((p for p in (metrics_path_of(g, r.path) for r in rs) if p), None)
        if path is None:
            t = Targets(None, None)
        else:
            if path not in cache:
                cache[path] = read_targets(path)
            t = cache[path]
        out.append(GeneratorUse(method, g, tuple(sorted(r.seed for r in rs)), t))
    return out


def quality_text(t: Targets) -> str:
    """``targets met (FD ratio 0.595 ≤ 0.6, identity gap −0.030 ≥ −0.05)``, ``MISSED its targets (...)`` or
    ``quality not measured (...)``."""
    if t.met is None and t.fd_ratio is None:
        return "quality not measured (no stage-1 metrics.json beside it)"
    if t.met is None:  # real data: no clean/degraded pairs, so the identity gap and the targets are not assessed
        return (
            f"targets not assessed (FD ratio {_num(t.fd_ratio)}, target {_bound(t.fd_ratio_max)}; identity gap "
            "not measured: no clean/degraded pairs)"
        )
    parts = [
        f"FD ratio {_num(t.fd_ratio)} {'≤' if t.fd_ratio is not None and t.fd_ratio <= t.fd_ratio_max else '>'} "
        f"{_bound(t.fd_ratio_max)}"
    ]
    if t.identity_gap is not None:
        ok = t.identity_gap >= t.identity_gap_min
        parts.append(f"identity gap {_num(t.identity_gap)} {'≥' if ok else '<'} {_bound(t.identity_gap_min)}")
    else:
        parts.append("identity gap not measured")
    return f"{'targets met' if t.met else 'MISSED its targets'} ({', '.join(parts)})"


def verdict_text(t: Targets) -> str:
    """The targets column: ``met``, ``**missed**``, ``not assessed`` (a metrics file without an identity gap) or
    ``-`` (no metrics file)."""
    if t.met is None:
        return "not assessed" if t.source else "-"
    return "met" if t.met else "**missed**"


def fd_text(t: Targets) -> str:
    return _num(t.fd_ratio)


def gap_text(t: Targets) -> str:
    return _num(t.identity_gap)
