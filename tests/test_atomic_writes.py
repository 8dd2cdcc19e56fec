"""Every file the project writes goes through harness/core/atomic.py: no other module of harness/ or methods/ opens a
file for writing or calls a saver (``torch.save``, ``np.save*``, ``Image.save``, ``savefig``, ``Path.write_text``
...) on its own, except the few call sites listed below, each with its reason. Checked on the source (``ast``)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOMIC = "harness/core/atomic.py"
#: method names that write a file (or a stream that may be one) when called on anything
SAVERS = {"save", "savefig", "savez", "savez_compressed", "savemat", "tofile", "write_text", "write_bytes"}
OPENERS = {"open", "fdopen"}  # builtins.open, io.open, Path.open, os.fdopen (os.open alone writes nothing)
#: the writers of harness.core.atomic that hand a callback the file object to write into
CALLBACK_WRITERS = {"write_atomic"}

#: (file, enclosing function, call) -> why this raw write is fine. Each entry must still exist (no stale entry).
ALLOWED = {
    ("harness/data/images.py", "encode_jpeg", "save"): "Image.save into an in-memory buffer (the JPEG's bytes)",
    ("harness/core/figures.py", "png_bytes", "savefig"): "into an in-memory buffer; the bytes go to write_files_atomic",
    ("harness/synthface/tinyface.py", "_save_mat", "savemat"): "into an in-memory buffer, then write_staged",
    (
        "harness/data/recordio.py",
        "RecordIOWriter.__init__",
        "open",
    ): "the streaming .rec/.idx writer: its own temporary files beside the targets, fsynced and os.replace-d at close "
    "(a .rec is written record by record, too large to stage in memory)",
    (
        "harness/data/recordio.py",
        "write_face_rec",
        "open",
    ): "the RecordIO 'property' file: a temporary file fsynced and os.replace-d after the .rec/.idx pair",
    (
        "harness/core/runtime.py",
        "PathLock.acquire",
        "fdopen",
    ): "the lock file, created with O_CREAT | O_EXCL: its creation is the lock, a temporary file would defeat it",
    (
        "harness/launch/jobs.py",
        "JobRunner.run",
        "open",
    ): "a sweep job's log, opened for appending and handed to the child process as its stdout: a log grows while "
    "the job runs (a relaunch appends), it is never replaced as a whole",
}


def _mode(call: ast.Call, position: int) -> str | None:
    """The mode of an ``open``-like call: the positional argument at ``position`` or ``mode=``; "r" when absent;
    None when it is not a constant (counted as a write: it cannot be checked)."""
    node = (
        call.args[position]
        if len(call.args) > position
        else next((k.value for k in call.keywords if k.arg == "mode"), None)
    )
    if node is None:
        return "r"
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _writes(call: ast.Call, name: str | None, sinks: set[str]) -> bool:
    f = call.func
    receiver = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
    if name in OPENERS:
        if receiver == "os" and name == "open":
            return False
        # open(path, mode), io.open(path, mode), os.fdopen(fd, mode); path.open(mode) (a first argument that is
        # not a string is a reader's file: Image.open(buffer))
        if isinstance(f, ast.Name) or receiver in ("io", "os"):
            mode = _mode(call, 1)
        else:
            first = call.args[0] if call.args else None
            mode = _mode(call, 0) if first is None or isinstance(first, ast.Constant) else "r"
        return mode is None or bool(set(mode) & set("wax+"))
    if name in SAVERS and isinstance(f, ast.Attribute):
        first = call.args[0] if call.args else None
        return not (isinstance(first, ast.Name) and first.id in sinks)  # into write_atomic's file object: fine
    return False


def raw_writes(source: str) -> list[tuple[str, str, int]]:
    """``[(enclosing function, call name, line)]`` of the raw write calls in ``source``. A saver whose first argument
    is the parameter of a callback given to :func:`harness.core.atomic.write_atomic` writes into its temporary file,
    not raw."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str], sinks: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, scope + [child.name], sinks)
                continue
            inner = sinks
            if isinstance(child, ast.Call):
                f = child.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if _writes(child, name, sinks):
                    found.append((".".join(scope) or "<module>", name, child.lineno))
                if name in CALLBACK_WRITERS:
                    inner = sinks | {a.arg for arg in child.args if isinstance(arg, ast.Lambda) for a in arg.args.args}
            visit(child, scope, inner)

    visit(ast.parse(source), [], set())
    return found


def _sources():
    for top in ("harness", "methods"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/"), path


def test_no_raw_writes_outside_core_atomic():
    bad, used = [], set()
    for rel, path in _sources():
        if rel == ATOMIC:
            continue
        with open(path, encoding="utf-8") as f:
            for scope, call, line in raw_writes(f.read()):
                if (rel, scope, call) in ALLOWED:
                    used.add((rel, scope, call))
                else:
                    bad.append(f"{rel}:{line}: {call}() in {scope} writes a file outside harness/core/atomic.py")
    assert not bad, "write through harness.core.atomic (write_atomic, StagedFolder + write_staged ...):\n" + "\n".join(
        bad
    )
    assert not set(ALLOWED) - used, f"allowed raw writes no longer present (remove them): {sorted(set(ALLOWED) - used)}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f(p):\n    with open(p, 'w') as h:\n        h.write('x')\n", [("f", "open", 2)]),
        ("def f(p, m):\n    open(p, mode=m)\n", [("f", "open", 2)]),
        ("import os\nclass A:\n    def g(self, fd):\n        os.fdopen(fd, 'ab')\n", [("A.g", "fdopen", 4)]),
        ("import torch\ntorch.save({}, 'x.pt')\n", [("<module>", "save", 2)]),
        ("def f(p):\n    p.write_text('x')\n", [("f", "write_text", 2)]),
        ("import io\ndef f(p):\n    io.open(p, 'w')\n    p.open('a')\n", [("f", "open", 3), ("f", "open", 4)]),
        (
            "def f(p, img):\n    write_atomic(p, lambda h: img.save(h, format='PNG'))\n    img.save(p)\n",
            [("f", "save", 3)],
        ),
        (
            (
                "import os\ndef f(p, b):\n    open(p)\n    open(p, 'rb')\n    p.open()\n    os.open(p, 1)\n"
                "    Image.open(b)\n"
                "    save(p)\n"
            ),
            [],
        ),
    ],
)
def test_the_walker_sees_raw_writes(source, expected):
    """The check above can fail: it sees ``open`` in a write mode (or a mode it cannot read), ``os.fdopen``, savers
    called as methods, at module level and inside classes; reads, ``os.open``, plain function calls and savers into
    :func:`write_atomic`'s file object are not writes."""
    assert raw_writes(source) == expected


def test_a_staged_folder_is_published_whole_or_not_at_all(tmp_path):
    """harness.core.atomic.StagedFolder: the old folder stays until publish replaces it whole; a failure inside the
    ``with`` block leaves the old folder and no staging folder; a dead writer's staging folder is removed by the next
    writer; the published folder has the usual permissions (not mkdtemp's 0700)."""
    from harness.core.atomic import STAGE_TAG, StagedFolder, write_staged

    out = tmp_path / "release"
    out.mkdir()
    (out / "old.txt").write_bytes(b"old")
    with pytest.raises(RuntimeError), StagedFolder(str(out)) as staged:
        os.makedirs(staged.path("sub"))
        write_staged(staged.path("sub", "a.jpg"), b"\xff\xd8")
        raise RuntimeError("killed half way")
    assert sorted(os.listdir(tmp_path)) == ["release"] and os.listdir(out) == ["old.txt"]

    dead = tmp_path / f".release.{STAGE_TAG}999999999-x"  # no such process
    dead.mkdir()
    with StagedFolder(str(out)) as staged:
        assert not dead.exists() and os.path.dirname(staged.tmp) == str(tmp_path)
        write_staged(staged.path("list.txt"), "a\nb\n")
        write_staged(staged.path("img.bin"), b"\x00\x01")
        assert os.listdir(out) == ["old.txt"]  # not yet visible
        staged.publish()
    assert sorted(os.listdir(tmp_path)) == ["release"]
    assert sorted(os.listdir(out)) == ["img.bin", "list.txt"]
    assert (out / "list.txt").read_bytes() == b"a\nb\n" and (out / "img.bin").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask
