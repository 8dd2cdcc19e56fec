"""Every DVC stage depends on every module its command can import.

For each stage of ``dvc.yaml``, ``profiles/paper/dvc.yaml`` and ``profiles/analyses/dvc.yaml`` that runs
``python -m harness.X`` (or ``torchrun ... -m harness.X``), the import closure of ``harness.X`` is computed from the
source (``ast``; see ``importgraph.py``: lazy imports and registry plugins loaded by name included), and each module in
it must lie in one of the stage's ``deps`` (a file, or a folder holding it). A few modules are reached only on code
paths the stage's command turns off; they are listed below per stage, with the reason and the flag that turns them off.
"""

from __future__ import annotations

import ast
import os
import re

import pytest
import yaml
from importgraph import ROOT, closure, graph, module_path

DVC_FILES = ("dvc.yaml", "profiles/paper/dvc.yaml", "profiles/analyses/dvc.yaml")
GRAPH = graph()

#: Modules (or packages) the benchmark plugins call into only under one command: not entered for other stages.
CLI_ONLY = {
    "harness.eval.cli": (
        "harness.evaluate",
        "the built-in benchmarks' feature-file runners (eval.benchmarks, "
        "eval.verification_bin) call into it only under python -m harness.evaluate",
    ),
    "harness.report.bootstrap": (
        "harness.tables",
        "a benchmark's table columns name their bootstrap metric "
        "(eval.benchmarks); it is built and run only by python -m harness.tables",
    ),
}
_TRAIN_ONLY = (
    "evaluate=false",
    {
        "harness.eval": "evaluation code: run.py imports it to evaluate (evaluate=false here) and core.config to check "
        "the eval.* keys; neither changes the checkpoint",
    },
)
_EVAL_ONLY = (
    "train=false",
    {
        "harness.engine.train": (
            "the training loop: run.py imports it but calls it only when training (train=false here)"
        ),
    },
)
_STAGE1 = (
    "harness.stage1",
    {
        "harness.eval": "stage 1 evaluates nothing: core.config imports the benchmark registry only to check the "
        "eval.* keys of the identity network's run config",
    },
)
#: stage name -> (a text its command must hold, {module or package not entered: why})
NOT_REACHED = {
    "train": _TRAIN_ONLY,
    "train_cfsm": _TRAIN_ONLY,
    "evaluate": _EVAL_ONLY,
    "evaluate_cfsm": _EVAL_ONLY,
    "stage1": _STAGE1,
    "stage1_camera": _STAGE1,  # profiles/analyses: stage 1 per target camera, target count and q
    "stage1_count": _STAGE1,
    "stage1_q": _STAGE1,
}


def _stages():
    for dvc_file in DVC_FILES:
        with open(os.path.join(ROOT, dvc_file), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for name, stage in doc["stages"].items():
            found = re.search(r"-m (harness(?:\.\w+)+)", " ".join(str(stage.get("cmd", "")).split()))
            if found:
                yield dvc_file, name, stage, found.group(1)


STAGES = list(_stages())


def entry_module(command: str) -> str:
    """``harness.synthface`` (a package run with ``-m``) -> ``harness.synthface.__main__``."""
    return f"{command}.__main__" if os.path.isdir(os.path.join(ROOT, *command.split("."))) else command


def _code_free(module: str) -> bool:
    """An ``__init__`` holding only its docstring: nothing in it can change an output."""
    with open(os.path.join(ROOT, module_path(module)), encoding="utf-8") as f:
        body = ast.parse(f.read()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def missing_deps(name: str, cmd: str, command: str, deps: list[str]) -> list[str]:
    """The files of the command's closure that no dep covers (a dep covers itself and every file under it)."""
    must_hold, skipped = NOT_REACHED.get(name, ("", {}))
    assert must_hold in cmd, f"stage {name}: the modules listed as not reached assume {must_hold!r} in its command"
    stop = tuple(skipped) + tuple(m for m, (user, _) in CLI_ONLY.items() if user != command)
    paths = [d.rstrip("/") for d in deps if isinstance(d, str) and d.split("/")[0] in ("harness", "methods")]
    out = []
    for m in sorted(closure(entry_module(command), GRAPH, stop=stop)):
        path = module_path(m)
        if _code_free(m):
            continue
        if not any(path == d or path.startswith(d + "/") for d in paths):
            out.append(path)
    return out


@pytest.mark.parametrize("dvc_file, name, stage, command", STAGES, ids=[f"{f}:{n}" for f, n, _, _ in STAGES])
def test_stage_depends_on_its_import_closure(dvc_file, name, stage, command):
    missing = missing_deps(name, " ".join(str(stage["cmd"]).split()), command, stage.get("deps", []))
    assert not missing, (
        f"{dvc_file}: stage {name} (python -m {command}) imports modules no dependency covers: {missing}"
    )


def test_every_pipeline_command_is_checked():
    """Both pipelines' code-running stages are found (a stage whose command the pattern misses would go unchecked)."""
    names = {(f, n) for f, n, _, _ in STAGES}
    for f, n in [
        ("dvc.yaml", "synthface"),
        ("dvc.yaml", "train"),
        ("dvc.yaml", "stage1"),
        ("dvc.yaml", "evaluate"),
        ("dvc.yaml", "table"),
        ("dvc.yaml", "plots"),
        ("profiles/paper/dvc.yaml", "train"),
        ("profiles/paper/dvc.yaml", "check_data"),
        ("profiles/paper/dvc.yaml", "table"),
        ("profiles/analyses/dvc.yaml", "targets"),
        ("profiles/analyses/dvc.yaml", "stage1_camera"),
        ("profiles/analyses/dvc.yaml", "subspaces"),
    ]:
        assert (f, n) in names


def test_not_reached_modules_are_really_imported():
    """An entry of NOT_REACHED or CLI_ONLY that the command no longer imports is stale."""
    for _, name, _, command in STAGES:
        reached = closure(entry_module(command), GRAPH)
        for m in NOT_REACHED.get(name, ("", {}))[1]:
            assert any(r == m or r.startswith(m + ".") for r in reached), (name, m)
    everything = set().union(*(closure(entry_module(c), GRAPH) for _, _, _, c in STAGES))
    for m in CLI_ONLY:
        assert any(r == m or r.startswith(m + ".") for r in everything), m


def test_a_missing_dependency_is_found():
    """The check fails when a folder the trainer imports is left out (``harness/core``: config, atomic...)."""
    _, name, stage, command = next(s for s in STAGES if s[0] == "dvc.yaml" and s[1] == "train")
    cmd = " ".join(str(stage["cmd"]).split())
    assert missing_deps(name, cmd, command, stage["deps"]) == []
    missing = missing_deps(name, cmd, command, [d for d in stage["deps"] if d != "harness/core"])
    assert "harness/core/config.py" in missing and "harness/core/atomic.py" in missing
    # and a lazily imported module counts: the trainer's final checkpoint goes through methods' registry
    assert "methods/base.py" in missing_deps(name, cmd, command, [d for d in stage["deps"] if d != "methods"])
