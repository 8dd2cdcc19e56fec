"""The result document a run (or ``harness.import_weights``) writes, as far as the readers need it: its format
version, where its per-item arrays go, and the compact metrics ``dvc metrics`` shows (each row's keys are its
benchmark's, :func:`harness.eval.registry.row_metrics`)."""

from __future__ import annotations

import os
from typing import Any

RESULT_FORMAT = 1


def items_path(result_path: str) -> str:
    """Where the per-item arrays of ``result_path`` go: ``<dir>/<stem>.items.npz`` (``x/a.json`` ->
    ``x/a.items.npz``)."""
    return os.path.splitext(result_path)[0] + ".items.npz"


def compact_metrics(doc: dict) -> dict:
    """{"IJB-B": {"tar@1e-4": ..., "stills_only.tar@1e-3": ..., ...}, "train": {...}}: what `dvc metrics` shows. Each
    row's keys are its benchmark's (:func:`harness.eval.registry.row_metrics`); only numbers (or None) are kept."""
    from harness.eval.registry import row_metrics

    out: dict[str, Any] = {}
    for row in doc["results"]:
        out[row["benchmark"]] = {k: v for k, v in row_metrics(row).items() if v is None or isinstance(v, (int, float))}
    if "seconds" in doc.get("train", {}):
        out["train"] = {k: doc["train"][k] for k in ("seconds", "images_per_second", "final_loss")}
    return out
