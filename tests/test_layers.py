"""The package layering, checked on the source (``ast``; see ``importgraph.py``).

Only commands (``python -m harness.X``) live at the root of ``harness/``; everything else sits in a subpackage by
role, and imports go one way only::

    core <- data <- models <- methods <- engine <- commands
                                        engine <- cfsm <- commands
            data <- eval <- report <- commands
            data <- synthface (a command package: ``python -m harness.synthface``)
    core <- methods <- launch <- commands (sweeps: ``python -m harness.sweep``)

``methods/`` is the top-level package of the method plugins (with its four internal modules); it never imports
the training engine. A name starting with ``_`` is private to its module: no other module imports it (the
convention timm states for its ``_``-modules, made checkable). Every import counts, lazy ones included; the few
edges that go the other way are listed below, each with its reason, and must still exist (no stale entry).
"""

from __future__ import annotations

import ast
import os

import pytest
from importgraph import ROOT, graph, module_path

LAYERS = ("core", "data", "models", "methods", "engine", "eval", "report", "cfsm", "synthface", "launch")
#: what each layer may import besides itself (commands may import every layer)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "methods": {"core", "data", "models"},
    "engine": {"core", "data", "models", "methods"},
    "eval": {"core", "data", "models"},
    "report": {"core", "eval", "cfsm"},  # cfsm: the generator quality targets (harness/cfsm/quality.py)
    "cfsm": {"core", "data", "models", "engine"},  # stage 1 reuses the trainer's progress line and release table
    "synthface": {"core", "data"},
    "launch": {"core", "methods"},  # runs harness.run as a child process; imports no command
}

#: (importer, imported module) -> why this edge goes against the layering. Each must be a lazy import (inside a
#: function), so that importing the lower layer never loads the upper one.
EXCEPTIONS = {
    (
        "harness.core.config",
        "harness.models",
    ): "config validation checks model.backbone / model.head against the model registries, at call time",
    (
        "harness.core.config",
        "harness.eval.registry",
    ): "config validation checks the eval.* keys against the registered benchmarks, at call time",
    (
        "harness.eval.benchmarks",
        "harness.report.bootstrap",
    ): "a benchmark plugin names the bootstrap metric of its table columns (built when the tables run)",
}
#: commands that import other commands, and why
COMMAND_EXCEPTIONS = {}
#: (importer, imported module, name) -> why a private name crosses a module boundary
PRIVATE_EXCEPTIONS: dict = {}  # none: every name imported across modules is public

#: root modules that are not commands: one-line re-exports of an import path README documented before it moved
SHIMS = {
    "harness.align": "README's readers section showed `from harness.align import align_faces, ...`",
}

GRAPH = graph()


def layer(module: str) -> str:
    """``core``, ``data``... for a module of a subpackage (or of ``methods``), ``command`` for a module at the root
    of ``harness/``, ``package`` for ``harness`` itself."""
    parts = module.split(".")
    if parts[0] == "methods":
        return "methods"
    if len(parts) == 1:
        return "package"
    if parts[1] in LAYERS:
        return parts[1]
    return "command"


def test_every_subpackage_is_a_known_layer():
    found = {
        d
        for d in os.listdir(os.path.join(ROOT, "harness"))
        if os.path.isfile(os.path.join(ROOT, "harness", d, "__init__.py"))
    }
    assert found <= set(LAYERS), f"harness/ subpackages without a layer: {sorted(found - set(LAYERS))}"


def test_only_commands_at_the_root_of_harness():
    """Every root module runs as ``python -m harness.X`` (it has a ``__main__`` guard)."""
    not_commands = []
    for m in GRAPH:
        if layer(m) == "command" and m not in SHIMS:
            with open(os.path.join(ROOT, module_path(m)), encoding="utf-8") as f:
                if 'if __name__ == "__main__":' not in f.read():
                    not_commands.append(module_path(m))
    assert not not_commands, f"modules at the root of harness/ that are not commands: {not_commands}"
    for m in SHIMS:  # a shim re-exports and nothing else
        with open(os.path.join(ROOT, module_path(m)), encoding="utf-8") as f:
            body = [n for n in ast.parse(f.read()).body if not isinstance(n, ast.Expr)]
        assert len(body) == 1 and isinstance(body[0], ast.ImportFrom), f"{module_path(m)}: a shim holds one import"


def _edges():
    for m, imports in GRAPH.items():
        for i in imports:
            yield m, i


def test_imports_go_down_the_layers():
    bad, used = [], set()
    for m, i in _edges():
        a, b = layer(m), layer(i.target)
        if a == b and a != "command" or b == "package" or (a == "command" and b != "command"):
            continue
        key = next(
            ((m, t) for t in (i.target, i.target.rsplit(".", 1)[0]) if (m, t) in EXCEPTIONS | COMMAND_EXCEPTIONS), None
        )
        if key is not None:
            used.add(key)
            if key in EXCEPTIONS and i.top_level:
                bad.append(f"{i.where()}: {m} imports {i.target} at module level (allowed only inside a function)")
            continue
        if a == "command":
            bad.append(f"{i.where()}: command {m} imports command {i.target} (move the shared part into a layer)")
        elif a == "package" or b not in ALLOWED[a]:
            bad.append(f"{i.where()}: {a} module {m} imports {b} module {i.target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)
    stale = set(EXCEPTIONS) | set(COMMAND_EXCEPTIONS)
    assert not stale - used, f"exceptions no longer needed (remove them): {sorted(stale - used)}"


def test_methods_never_import_the_engine_or_commands():
    bad = [
        f"{i.where()}: {i.target}"
        for m, i in _edges()
        if layer(m) == "methods" and layer(i.target) in ("engine", "command", "eval", "report", "cfsm")
    ]
    assert not bad, bad


def test_no_private_name_crosses_a_module():
    bad, used = [], set()
    for m, i in _edges():
        if i.target == m:
            continue
        for name in i.names:
            if name.startswith("_") and not name.startswith("__"):
                if (m, i.target, name) in PRIVATE_EXCEPTIONS:
                    used.add((m, i.target, name))
                else:
                    bad.append(f"{i.where()}: from {i.target} import {name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)
    assert not set(PRIVATE_EXCEPTIONS) - used, sorted(set(PRIVATE_EXCEPTIONS) - used)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from harness.core.config import RunConfig\n", ("harness.core.config", ("RunConfig",))),
        ("from harness.engine import distributed\n", ("harness.engine.distributed", ())),
        ("def f():\n    from methods.base import _x\n", ("methods.base", ("_x",))),
    ],
)
def test_the_walker_sees_imports(tmp_path, monkeypatch, source, expected):
    """The checks above can fail: the walker resolves ``from package import module`` to the module, keeps the
    names of ``from module import name`` and sees imports inside functions."""
    import importgraph

    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text(source)
    for sub in ("core", "engine"):
        (pkg / sub).mkdir()
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "core" / "config.py").write_text("")
    (pkg / "engine" / "distributed.py").write_text("")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    (tmp_path / "methods" / "base.py").write_text("")
    monkeypatch.setattr(importgraph, "ROOT", str(tmp_path))
    found = [(i.target, i.names) for i in importgraph.imports_of("harness.probe")]
    assert found == [expected]
    assert layer("harness.probe") == "command" and layer(expected[0]) in LAYERS
