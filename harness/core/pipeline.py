"""The result files a pipeline's params file asks for: ``methods`` (+ ``cfsm_methods``) x ``seeds`` ->
``<results_dir>/<method>-s<seed>.json``. The table and plot stages read exactly these, so a result left in the
folder by an earlier configuration (a method since removed from ``params.yaml``, whose items file DVC no longer
restores) never enters the tables."""

from __future__ import annotations

import os

from harness.core.config import read_yaml


def configured_results(params_path: str, results_dir: str) -> list[str]:
    """Paths of the configured results, in params order (methods, then cfsm_methods; seeds inner). A missing file
    or an empty configuration is one FileNotFoundError / ValueError naming it."""
    if not os.path.isfile(params_path):
        raise FileNotFoundError(f"{params_path}: params file not found")
    params = read_yaml(params_path) or {}  # a syntax error: one line with file, line and column
    methods = list(params.get("methods") or []) + list(params.get("cfsm_methods") or [])
    seeds = list(params.get("seeds") or [])
    if not methods or not seeds:
        raise ValueError(f"{params_path}: needs non-empty `methods` (or `cfsm_methods`) and `seeds` lists")
    paths = [os.path.join(results_dir, f"{m}-s{s}.json") for m in methods for s in seeds]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: result listed by {params_path} (methods x seeds) not found; run `dvc repro`")
    return paths
