"""Resumable train states, one scheme for the trainer (:mod:`harness.engine.train`) and CFSM stage 1
(:mod:`harness.cfsm.train`).

A state is a ``torch.save`` dict with ``format`` (the writer's format string), ``key`` (the part of the config a
resumed run must share with it: the caller decides which) and ``step``, beside the weights. It is

* saved by :func:`save_checkpoint`: atomically (:func:`harness.core.atomic.save_torch_atomic`) and never when a weight
  part (:data:`WEIGHT_PARTS`) holds NaN or inf: the last good state on disk stays, :class:`NonFiniteStateError`
  says so in one line;
* read by :func:`read_state` (``resume=auto``: a state that cannot continue the run is never an error) or
  :func:`require_state` (a state the user named: every problem is one ``ValueError`` line). Both load with
  ``weights_only=True`` (:func:`harness.core.atomic.load_torch`: a file that pickles anything beyond tensors and
  plain data is refused without running it), check ``format`` and ``key`` (:func:`state_problem` names the
  differing config keys) and the weights' finiteness. :func:`read_state` sets a file that cannot be read
  (truncated, foreign, pickled code) or holds non-finite weights aside as ``<path>.unreadable-<time>`` /
  ``<path>.nonfinite-<time>`` (:func:`set_aside`: kept for inspection, out of the way of the next save) and a state
  of another config is left where it is; each case is a one-line reason and the run starts fresh.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from harness.core.atomic import load_torch, save_torch_atomic
from harness.core.config import flatten


class NonFiniteStateError(FloatingPointError):
    """A state about to be saved (or resumed from) holds NaN or inf parameters, buffers or optimiser values."""


#: The parts of a train state / checkpoint that must be finite to be saved or resumed from (the RNG states, the
#: smoothed loss and the metadata are not weights): the trainer's backbone ... optimizer, stage 1's G, D, opt_g,
#: opt_d.
WEIGHT_PARTS = ("backbone", "head", "method", "optimizer", "G", "D", "opt_g", "opt_d", "generator")


def nonfinite_entries(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested state that hold NaN or inf."""
    out: list[str] = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and tree.numel() and not bool(torch.isfinite(tree).all()):
            out.append(prefix or "<tensor>")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            out += nonfinite_entries(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out += nonfinite_entries(v, f"{prefix}.{i}" if prefix else str(i))
    return out


def check_finite_state(payload: dict, path: str) -> None:
    """Raise :class:`NonFiniteStateError` (one line naming ``path`` and the first bad entries) when a weight part
    of ``payload`` holds NaN or inf."""
    bad = [n for part in WEIGHT_PARTS if part in payload for n in nonfinite_entries(payload[part], part)]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteStateError(
            f"{path}: the state at step {payload.get('step', '?')} holds non-finite values ({shown})"
        )


def save_checkpoint(path: str, payload: dict, hint: str = "lower optim.lr or check the data") -> None:
    """Atomic (:func:`harness.core.atomic.save_torch_atomic`: temporary file beside ``path``, fsync, ``os.replace``;
    a full disk is one line). A payload whose weights are not finite is never written: the file at ``path``, the
    last good state, stays as it is, and :class:`NonFiniteStateError` says so (``hint``: what the user can do)."""
    try:
        check_finite_state(payload, path)
    except NonFiniteStateError as exc:
        kept = f"the last good state is kept at {path}" if os.path.isfile(path) else "no earlier state was saved"
        raise NonFiniteStateError(f"{exc}: not saved, {kept}; training diverged ({hint})") from None
    save_torch_atomic(payload, path)


def set_aside(path: str, why: str) -> str:
    """Rename a state file that cannot be used to ``<path>.<why>-<UTC time>`` (kept for inspection, out of the
    way of the next save); returns the new name."""
    aside = f"{path}.{why}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    os.replace(path, aside)
    return aside


def key_differences(saved: dict, now: dict) -> list[str]:
    """``["optim.lr (saved 0.1, now 0.05)", ...]`` for every key whose value differs."""
    missing = object()
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k, missing), now.get(k, missing)
        if a != b:
            was, now_ = ("<absent>" if v is missing else repr(v) for v in (a, b))
            out.append(f"{k} (saved {was}, now {now_})")
    return out


def state_problem(saved: Any, state_format: str, key: dict) -> str | None:
    """Why a loaded state cannot continue a run of format ``state_format`` whose config key is ``key`` (None when it
    can): another format, or another config (the differing keys named, nested keys dotted)."""
    if not isinstance(saved, dict) or saved.get("format") != state_format:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        return f"not a resumable train state (format {found!r}, expected {state_format!r})"
    if saved.get("key") != key:
        diffs = key_differences(flatten(saved.get("key") or {}), flatten(key))
        return "saved with another config: " + (", ".join(diffs) or "the keys differ")
    return None


def one_line(exc: BaseException) -> str:
    """A load failure as one line: a ``ValueError`` (already one line, :func:`load_torch`) as is, else
    ``<type>: <first line>``."""
    if isinstance(exc, ValueError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def read_state(
    path: str, state_format: str, key: dict, mmap: bool = False, label: str = "train state"
) -> tuple[dict | None, str]:
    """``resume=auto``: ``(state, "")`` when the file at ``path`` can continue this run, else ``(None, why)`` with
    ``why`` one line ending in ``starting fresh``. An unreadable file or one with non-finite weights is set aside
    (:func:`set_aside`); a state of another format or config stays where it is (the next save replaces it).
    ``label`` names the file in a load error."""
    try:
        saved = load_torch(path, label, mmap=mmap)
    except Exception as exc:  # noqa: BLE001  (a half-written, foreign or pickled-code file: never resumed from)
        aside = set_aside(path, "unreadable")
        return None, f"unreadable train state ({one_line(exc)}): set aside as {aside}; starting fresh"
    problem = state_problem(saved, state_format, key)
    if problem:
        return None, f"ignoring {path} ({problem}): starting fresh"
    try:
        check_finite_state(saved, path)
    except NonFiniteStateError as exc:
        aside = set_aside(path, "nonfinite")
        return None, f"{exc}: not resumed, set aside as {aside}; starting fresh"
    return saved, ""


def require_state(path: str, state_format: str, key: dict, what: str, mmap: bool = False) -> dict:
    """A state the user named (``what``: how, e.g. ``resume=PATH``): it must exist (``FileNotFoundError``), load,
    match and be finite (``ValueError``); every message is one line starting with ``what``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such train state file")
    try:
        saved = load_torch(path, "train state", mmap=mmap)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{what}: {one_line(exc)}") from None
    problem = state_problem(saved, state_format, key)
    if problem:
        raise ValueError(f"{what}: {problem}")
    try:
        check_finite_state(saved, path)
    except NonFiniteStateError as exc:
        raise ValueError(f"{what}: {exc}; not resumed (resume=none starts fresh)") from None
    return saved
