"""Issue 16 item 9: one atomic writer for every file (harness.core.atomic). A full disk is one line ("no space left on
device: <path>") and leaves no temporary file; a file set killed during its renames is completed by the next
write into that folder, and temporaries of dead writers are removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from faultlib import SMALL

from harness.core.atomic import (
    DiskFullError,
    recover,
    save_torch_atomic,
    write_files_atomic,
    write_json_atomic,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _tmpfs_works() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs $d"], capture_output=True
    )
    return r.returncode == 0


TMPFS = _tmpfs_works()


def _in_small_disk(
    folder: str, argv: list[str], size: str = "64k", fsize: int = 64 << 10
) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``folder`` on a full-able file system: a private tmpfs of ``size`` mounted there (user and
    mount namespace) where the machine allows it, else the process's file-size limit (RLIMIT_FSIZE: EFBIG)."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    if TMPFS:
        cmd = f'mount -t tmpfs -o size={size} tmpfs {folder} && exec "$@"'
        return subprocess.run(["unshare", "-rm", "sh", "-c", cmd, "sh", *argv], capture_output=True, text=True, env=env)

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=limit)


def test_disk_full_while_saving_a_torch_state(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    script = textwrap.dedent(f"""
        import os, torch
        from harness.core.atomic import DiskFullError, save_torch_atomic, write_json_atomic
        write_json_atomic({{"old": True}}, "{folder}/state.pt")
        try:
            save_torch_atomic({{"w": torch.zeros(200_000)}}, "{folder}/state.pt")
        except DiskFullError as exc:
            print("ERR", exc)
        print("LEFT", sorted(os.listdir("{folder}")))
        print("OLD", open("{folder}/state.pt").read().strip().replace(chr(10), ""))
    """)
    r = _in_small_disk(str(folder), [sys.executable, "-c", script])
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert out["ERR"].startswith(f"no space left on device: {folder}/state.pt"), out
    assert out["LEFT"] == "['state.pt']", "no temporary file left behind"
    assert json.loads(out["OLD"]) == {"old": True}, "the previous file is untouched"


@pytest.mark.skipif(not TMPFS, reason="needs a private tmpfs (user + mount namespaces); covered above by RLIMIT_FSIZE")
def test_disk_full_in_a_run_is_one_line(tiny_release, tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    params = tmp_path / "p.yaml"
    params.write_text("{}\n")
    argv = [
        sys.executable,
        "-m",
        "harness.run",
        "--params",
        str(params),
        f"data.release={tiny_release}",
        f"out={tmp_path / 'runs'}",
        f"checkpoint={folder}/m.pt",
        "checkpoint_every=1",
        *SMALL,
    ]
    r = _in_small_disk(str(folder), argv, size="32k")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("harness.run: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines == [f"harness.run: no space left on device: {folder}/m.train_state.pt"], r.stderr


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic({"a": 1}, str(path))
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, str(path))
    with pytest.raises(ValueError):
        write_json_atomic({"a": float("nan")}, str(path))
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


def test_a_file_set_killed_mid_rename_is_completed_next_time(tmp_path):
    out = tmp_path / "tables"
    files = {str(out / n): f"old {n}\n" for n in ("a.md", "b.tex", "c.csv")}
    files[str(tmp_path / "REPORT.md")] = "old report\n"
    write_files_atomic(files)
    script = textwrap.dedent(f"""
        import os
        from harness.core import atomic
        real = os.replace
        done = []
        def replace(src, dst):
            if ".cfsm-tmp-" in os.path.basename(src) and not os.path.basename(dst).startswith(".cfsm-journal-"):
                if len(done) == 2:
                    os._exit(9)  # killed after two of the four renames
                done.append(dst)
            real(src, dst)
        os.replace = replace
        atomic.write_files_atomic({{p: "new " + os.path.basename(p) + chr(10) for p in {sorted(files)!r}}})
    """)
    r = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True
    )
    assert r.returncode == 9, r.stderr
    contents = {p: open(p).read().split()[0] for p in files}
    assert sorted(contents.values()) == ["new", "new", "old", "old"], "killed mid-set: a mix on disk"
    leftovers = [f for d in (tmp_path, out) for f in os.listdir(d) if f.startswith(".")]
    assert any(f.startswith(".cfsm-journal-") for f in leftovers) and any(".cfsm-tmp-" in f for f in leftovers)

    completed = recover(str(tmp_path))  # what the next write_files_atomic into this folder does first
    assert len(completed) == 2
    assert all(open(p).read().startswith("new ") for p in files), "the set is now all new"
    assert [f for d in (tmp_path, out) for f in os.listdir(d) if f.startswith(".")] == [], "no temporaries left"


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / f".x.json.cfsm-tmp-{p.pid}-abc123.tmp"
    stale.write_text("partial")
    mine = tmp_path / f".y.json.cfsm-tmp-{os.getpid()}-abc123.tmp"
    mine.write_text("in progress")
    write_files_atomic({str(tmp_path / "x.json"): "{}\n", str(tmp_path / "y.json"): "{}\n"})
    assert not stale.exists() and mine.exists(), "a live writer's temporary is left alone"


def test_every_writer_goes_through_harness_atomic():
    import harness.eval.cli as evaluate
    import harness.run as run
    import harness.tables as tables

    assert evaluate.write_json_atomic is write_json_atomic
    assert tables.write_files_atomic is write_files_atomic
    assert callable(run.write_npz_atomic) and DiskFullError.__mro__[1] is OSError
    assert save_torch_atomic.__module__ == "harness.core.atomic"


def test_a_killed_single_file_writer_leaves_nothing_for_long(tmp_path):
    """SIGKILL mid-write leaves a temporary file (nothing can run then); the next write of that file removes it,
    and the ``<name>.tmp-<pid>`` files of earlier versions too."""
    script = textwrap.dedent(f"""
        import os
        from harness.core.atomic import write_atomic
        def write(f):
            f.write(b"partial")
            f.flush()
            os._exit(9)
        write_atomic("{tmp_path}/state.pt", write, binary=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True)
    assert r.returncode == 9
    (tmp_path / f"state.pt.tmp-{_dead()}").write_bytes(b"old-style leftover")
    assert len(os.listdir(tmp_path)) == 2
    save_torch_atomic({"step": 1}, str(tmp_path / "state.pt"))
    assert os.listdir(tmp_path) == ["state.pt"]


def _dead() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
