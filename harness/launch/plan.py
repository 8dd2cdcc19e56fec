"""A sweep file, validated, and its expansion into jobs, each in a folder named by the hash of its full config.

The sweep file (YAML, read with ``yaml.safe_load``; every key below is optional except ``methods``)::

    params: params.yaml          # the base params file: its `run` section and method_hparams.<method>
    methods: [source_only, dann] # the methods compared
    seeds: [0, 1, 2]             # training seeds
    n_hparams: 4                 # hyperparameter draws per method: hparams_seed 0..n-1 (0 = the declared defaults)
    overrides:                   # fixed harness.run keys for every job (dotted keys, hparams.<name> too)
      data.release: datasets/synthface/tiny
    observer: results/runs       # the Sacred run store of every job (harness.run out=): a folder or a database URL
    launcher: local              # local | slurm
    local: {gpus: auto}          # auto (every visible GPU, one job each; none: one job at a time) or a number
    slurm: {partition: gpu, gpus_per_node: 4, cpus_per_task: 32, time: 720, mem_gb: 256, array_parallelism: 64,
            account: "", qos: "", constraint: "", setup: [], max_requeue: 10, additional: {}}

An unknown key, or a value of the wrong type, is one line ``<file>:<key>: <what>`` (exit 2 at the command line).

Draws follow DomainBed's random search (``domainbed/sweep.py``: every algorithm gets the same ``n_hparams`` draws
of its own ``hparams_registry`` samplers, trial seeds crossed with them): here ``hparams_seed=k`` of
:func:`methods.resolve_hparams`, k = 0 being the method's declared defaults, so every method gets the same budget.

A job's folder is ``<sweep dir>/jobs/<hash>/``, ``hash`` the first 16 hex digits of the SHA-256 of its full config
(:func:`job_hash`: every ``harness.run`` key except where outputs go and how often it logs, plus the resolved
hyperparameters), so a relaunch finds the same folders and an edited sweep gets new ones. It holds ``job.json``
(the job), ``params.yaml`` (the ``run`` section ``harness.run --params`` reads: the full config), then the run's
``model.pt`` (and train state while it trains), ``<method>-s<seed>.json`` + its ``.items.npz`` (the result document
``harness.tables`` reads) and ``log.txt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import yaml

from harness.core.atomic import write_bytes_atomic, write_json_atomic
from harness.core.config import (
    RunConfig,
    apply_overrides,
    flatten,
    load_params,
    read_yaml,
    with_method_hparams,
)

JOB_FORMAT = "cfsm-bench-sweep-job/1"
PLAN_FORMAT = "cfsm-bench-sweep/1"
LAUNCHERS = ("local", "slurm")
#: harness.run keys that say where outputs go or how often it logs: not part of a job's identity
NOT_HASHED = ("out", "checkpoint", "result", "metrics", "log_every", "resume", "checkpoint_every", "snapshot_every")

SLURM_KEYS = {
    "partition": str,
    "gpus_per_node": int,
    "cpus_per_task": int,
    "time": int,
    "mem_gb": (int, float),
    "array_parallelism": int,
    "account": str,
    "qos": str,
    "constraint": str,
    "setup": list,
    "max_requeue": int,
    "additional": dict,
    "job_name": str,
}
LOCAL_KEYS = {"gpus": (int, str)}
TOP_KEYS = {
    "params": str,
    "methods": list,
    "seeds": list,
    "n_hparams": int,
    "overrides": dict,
    "observer": str,
    "launcher": str,
    "local": dict,
    "slurm": dict,
}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep (file values, then command-line ones)."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    n_hparams: int = 1
    params: str = "params.yaml"
    overrides: dict = dataclasses.field(default_factory=dict)
    observer: str = "results/runs"
    launcher: str = "local"
    local: dict = dataclasses.field(default_factory=dict)
    slurm: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "methods": list(self.methods), "seeds": list(self.seeds)}


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}[k] for k in kinds
    )


def _check_types(where: str, data: dict, spec: dict) -> None:
    for key, value in data.items():
        if key not in spec:
            raise ValueError(f"{where}{key}: unknown key; valid: {', '.join(spec)}")
        kind = spec[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{where}{key}: expected {_type_name(kind)}, got {value!r}")  # noqa: TRY004


def read_sweep(path: str | None, cli: dict[str, Any]) -> Sweep:
    """The sweep of ``path`` (or none) with the command line's values on top (``cli``: ``methods``, ``seeds``,
    ``n_hparams``, ``params``, ``observer``, ``launcher`` when given, ``overrides`` merged over the file's)."""
    data: dict = {}
    where = f"{path}:" if path else "sweep "
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: sweep file not found")
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of sweep keys, got {type(loaded).__name__}")
        data = dict(loaded)
    _check_types(where, data, TOP_KEYS)
    _check_types(f"{where}local.", data.get("local") or {}, LOCAL_KEYS)
    _check_types(f"{where}slurm.", data.get("slurm") or {}, SLURM_KEYS)
    overrides = {**(data.get("overrides") or {}), **cli.get("overrides", {})}
    for key in ("methods", "seeds", "n_hparams", "params", "observer", "launcher"):
        if cli.get(key) is not None:
            data[key] = cli[key]
            where_key = f"--{key.replace('_', '-')}"
        else:
            where_key = f"{where}{key}"
        if key == "methods" and key in data and not (data[key] and all(isinstance(m, str) and m for m in data[key])):
            raise ValueError(f"{where_key}: expected a non-empty list of method names, got {data[key]!r}")
        if key == "seeds" and key in data:
            if not data[key] or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in data[key]):
                raise ValueError(f"{where_key}: expected a non-empty list of integers >= 0, got {data[key]!r}")
            if len(set(data[key])) != len(data[key]):
                raise ValueError(f"{where_key}: a seed appears twice in {data[key]!r}")
        if key == "n_hparams" and key in data and data[key] < 1:
            raise ValueError(f"{where_key}: expected an integer >= 1, got {data[key]!r}")
        if key == "launcher" and key in data and data[key] not in LAUNCHERS:
            raise ValueError(f"{where_key}: expected one of {', '.join(LAUNCHERS)}, got {data[key]!r}")
    if "methods" not in data:
        raise ValueError(f"{where}methods: missing (the methods to sweep; or --methods a,b)")
    if len(set(data["methods"])) != len(data["methods"]):
        raise ValueError(f"{where}methods: a method appears twice in {data['methods']!r}")
    gpus = (data.get("local") or {}).get("gpus", "auto")
    if not (gpus == "auto" or (isinstance(gpus, int) and gpus >= 0)):
        raise ValueError(f"{where}local.gpus: expected auto or an integer >= 0, got {gpus!r}")
    for key in ("gpus_per_node", "cpus_per_task", "time", "array_parallelism"):
        value = (data.get("slurm") or {}).get(key)
        if value is not None and value < 1:
            raise ValueError(f"{where}slurm.{key}: expected an integer >= 1, got {value!r}")
    for key, _value in overrides.items():
        if key in ("method", "seed", "hparams_seed") + NOT_HASHED[:4]:
            raise ValueError(
                f"{where}overrides.{key}: set by the sweep for each job (use methods, seeds, n_hparams, observer)"
            )
    return Sweep(
        methods=tuple(data["methods"]),
        seeds=tuple(data.get("seeds", (0,))),
        n_hparams=int(data.get("n_hparams", 1)),
        params=data.get("params", "params.yaml"),
        overrides=overrides,
        observer=data.get("observer", "results/runs"),
        launcher=data.get("launcher", "local"),
        local=dict(data.get("local") or {}),
        slurm=dict(data.get("slurm") or {}),
    )


def job_config(sweep: Sweep, method: str, seed: int, hparams_seed: int, where: str = "sweep") -> RunConfig:
    """The ``RunConfig`` of one job: the dataclass defaults, the params file's ``run`` section, the sweep's
    overrides, then method / seed / hparams_seed; ``method_hparams.<method>`` of the params file beneath ``hparams``
    (what ``harness.run --params`` does for one run)."""
    from harness.core.runtime import one_line
    from methods import get_method

    if sweep.params != "params.yaml" and not os.path.isfile(sweep.params):
        raise FileNotFoundError(f"{sweep.params}: params file not found ({where}params)")
    base = load_params(sweep.params, section="run")
    try:
        cfg = apply_overrides(
            RunConfig(), base | dict(sweep.overrides) | {"method": method, "seed": seed, "hparams_seed": hparams_seed}
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where}overrides: {one_line(exc)}") from None
    return with_method_hparams(cfg, sweep.params, lambda m: get_method(m).hparams())


def job_hash(config: dict, hparams: dict) -> str:
    """16 hex digits of the SHA-256 of the job's identity: its flat config without :data:`NOT_HASHED`, and the
    resolved hyperparameters (so a changed sampler or default gives a new job)."""
    ident = {k: v for k, v in flatten(config).items() if k not in NOT_HASHED}
    ident["hparams_resolved"] = hparams
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expand(sweep: Sweep, sweep_dir: str, where: str = "sweep") -> list[dict]:
    """The jobs of a sweep: methods x hparams_seed 0..n-1 x seeds, each ``{"hash", "dir", "method", "seed",
    "hparams_seed", "hparams", "config"}`` with its output paths inside its folder and ``out`` = the sweep's
    observer. Nothing is written."""
    from methods import get_method, resolve_hparams
    from methods.base import to_builtin

    jobs = []
    for method in sweep.methods:
        try:
            get_method(method)
        except KeyError as exc:
            raise ValueError(f"{where}methods: {exc.args[0]}") from None
        for k in range(sweep.n_hparams):
            for seed in sweep.seeds:
                cfg = job_config(sweep, method, seed, k, where)
                try:
                    hparams = {n: to_builtin(v) for n, v in resolve_hparams(method, k, cfg.hparams).items()}
                except KeyError as exc:
                    raise ValueError(f"{where}overrides: {exc.args[0]}") from None
                config = cfg.to_dict()
                digest = job_hash(config, hparams)
                folder = os.path.join(os.path.abspath(sweep_dir), "jobs", digest)
                config.update(
                    out=sweep.observer,
                    checkpoint=os.path.join(folder, "model.pt"),
                    result=os.path.join(folder, result_name(method, seed)),
                    metrics="",
                )
                jobs.append(
                    {
                        "hash": digest,
                        "dir": folder,
                        "method": method,
                        "seed": seed,
                        "hparams_seed": k,
                        "hparams": hparams,
                        "config": config,
                    }
                )
    return jobs


def result_name(method: str, seed: int) -> str:
    """A job's result document's file name, ``<method>-s<seed>.json``: the pipeline's own name for a result, the one
    ``harness.tables --select`` finds in the folders it is given."""
    return f"{method}-s{seed}.json"


def write_jobs(sweep: Sweep, sweep_dir: str, jobs: list[dict], cwd: str | None = None) -> None:
    """Write ``sweep.json`` (the plan, for ``status``) and each job's ``job.json`` + ``params.yaml`` (atomically;
    an existing job folder keeps its run outputs)."""
    cwd = os.path.abspath(cwd or os.getcwd())
    for job in jobs:
        os.makedirs(job["dir"], exist_ok=True)
        write_bytes_atomic(
            yaml.safe_dump({"run": job["config"]}, sort_keys=False).encode(), os.path.join(job["dir"], "params.yaml")
        )
        write_json_atomic(
            {"format": JOB_FORMAT, **{k: v for k, v in job.items() if k != "dir"}, "cwd": cwd},
            os.path.join(job["dir"], "job.json"),
        )
    write_json_atomic(
        {
            "format": PLAN_FORMAT,
            "sweep": sweep.to_dict(),
            "cwd": cwd,
            "jobs": [{k: job[k] for k in ("hash", "method", "seed", "hparams_seed")} for job in jobs],
        },
        os.path.join(sweep_dir, "sweep.json"),
    )


def read_plan(sweep_dir: str) -> dict:
    """``<sweep_dir>/sweep.json`` as written by :func:`write_jobs` (a one-line error when absent or not a plan)."""
    path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not a sweep folder (no sweep.json; `python -m harness.sweep` writes it)")
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a sweep plan ({exc})") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path}:format: not a {PLAN_FORMAT} plan")
    return plan
