"""The project's import graph, read from the source with :mod:`ast` (nothing is imported or run).

Shared by ``test_layers.py`` (the allowed directions between the packages) and ``test_dvc_closure.py`` (the
modules a DVC stage's command can reach). Every import counts: module level, inside functions (lazy imports) and
under ``TYPE_CHECKING``; ``from package import name`` counts as an import of ``package.name`` when that is a module.
A module that calls ``importlib.import_module`` imports every project module it names in a string constant (the
benchmark registry loads its plugin modules by name: ``harness.eval.registry.MODULES``).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("harness", "methods")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (a module of the project)
    names: tuple[str, ...]  # the names taken with ``from target import ...`` (empty for ``import target``)
    line: int
    top_level: bool  # at module level (not inside a function or class body)

    def where(self) -> str:
        return f"{module_path(self.importer)}:{self.line}"


def module_path(module: str) -> str:
    """Repository-relative path of a project module (``harness.core`` -> ``harness/core/__init__.py``)."""
    base = os.path.join(*module.split("."))
    if os.path.isdir(os.path.join(ROOT, base)):
        return os.path.join(base, "__init__.py")
    return base + ".py"


def modules() -> list[str]:
    """Every module of the project's packages, dotted (``harness.core.config``, ``methods.base``...)."""
    out = []
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = os.path.relpath(folder, ROOT).split(os.sep)
            for f in sorted(files):
                if f.endswith(".py"):
                    name = rel + ([] if f == "__init__.py" else [f[:-3]])
                    out.append(".".join(name))
    return out


def _is_module(name: str) -> bool:
    return os.path.isfile(os.path.join(ROOT, module_path(name)))


def _parents(module: str) -> list[str]:
    """The packages whose ``__init__`` runs when ``module`` is imported (``a.b.c`` -> ``a``, ``a.b``)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(module: str) -> list[Import]:
    """The project modules ``module`` imports, one entry per imported module and statement."""
    path = os.path.join(ROOT, module_path(module))
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = path.endswith("__init__.py")
    top = {id(node) for node in tree.body}
    # statements under a module-level ``if``/``try`` still run at import time
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top.update(id(n) for n in ast.walk(node))
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    out.append(Import(module, alias.name, (), node.lineno, id(node) in top))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] not in PACKAGES:
                continue
            names = tuple(a.name for a in node.names)
            plain = [n for n in names if not _is_module(f"{source}.{n}")]
            if plain or not names:
                out.append(Import(module, source, tuple(plain), node.lineno, id(node) in top))
            for n in names:
                if _is_module(f"{source}.{n}"):
                    out.append(Import(module, f"{source}.{n}", (), node.lineno, id(node) in top))
    if any(
        isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == "import_module"
        for n in ast.walk(tree)
    ):
        for n in ast.walk(tree):
            if (
                isinstance(n, ast.Constant)
                and isinstance(n.value, str)
                and n.value.split(".")[0] in PACKAGES
                and all(p.isidentifier() for p in n.value.split("."))
                and _is_module(n.value)
            ):
                out.append(Import(module, n.value, (), n.lineno, False))
    return out


def graph() -> dict[str, list[Import]]:
    return {m: imports_of(m) for m in modules()}


def closure(start: str, g: dict[str, list[Import]] | None = None, stop: tuple[str, ...] = ()) -> set[str]:
    """Every project module importing ``start`` can run: its imports, transitively, and the ``__init__`` of every
    package on the way. ``stop``: modules (or packages: every module under them) not entered."""
    g = g if g is not None else graph()
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m in seen or m not in g or any(m == s or m.startswith(s + ".") for s in stop):
            continue
        seen.add(m)
        todo.extend(_parents(m))
        todo.extend(i.target for i in g[m])
    return seen
