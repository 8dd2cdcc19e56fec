"""Issue 16 item 6: a run holds its checkpoint path (``<checkpoint>.lock``: pid, host, start); a second run fails
at once naming the holder; the lock of a run that no longer runs is taken over. harness.stage1 holds its output
folder the same way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from faultlib import STAGE1_TINY, one_error_line, run_args

from harness.core.runtime import LockHeldError, PathLock
from harness.run import main as run_main
from harness.stage1 import main as stage1_main


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _hold(path, pid, host=None):
    with open(f"{path}.lock", "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "start": "2026-01-01T00:00:00", "argv": "x"}, f)


def test_path_lock_excludes_and_releases(tmp_path, sleeper):
    target = str(tmp_path / "m.pt")
    _hold(target, sleeper.pid)
    with pytest.raises(LockHeldError, match=rf"in use by another run \(pid {sleeper.pid} on {socket.gethostname()}"):
        PathLock(target).acquire()
    os.unlink(f"{target}.lock")
    with PathLock(target) as lock:
        assert json.load(open(lock.path))["pid"] == os.getpid()
        with pytest.raises(LockHeldError):
            PathLock(target).acquire()  # a second holder while this (live) process holds it: refused too
    assert not os.path.exists(f"{target}.lock")


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    target = str(tmp_path / "m.pt")
    _hold(target, _dead_pid(), host="elsewhere.example")
    with pytest.raises(LockHeldError, match="elsewhere.example"):
        PathLock(target).acquire()


def test_a_second_run_fails_at_once_naming_the_holder(tiny_release, tmp_path, empty_params, capsys, sleeper):
    ckpt = tmp_path / "m.pt"
    _hold(ckpt, sleeper.pid)
    t0 = time.perf_counter()
    rc = run_main(run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={ckpt}"))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and f"pid {sleeper.pid}" in line and "in use by another run" in line
    assert time.perf_counter() - t0 < 30 and not ckpt.exists(), "failed before training"
    assert json.load(open(f"{ckpt}.lock"))["pid"] == sleeper.pid, "the holder's lock is untouched"


def test_two_concurrent_runs_on_one_checkpoint(tiny_release, tmp_path, empty_params, capsys):
    """The issue's case: two runs with different learning rates on one path. The second fails; the file holds the
    first run's model."""
    ckpt = tmp_path / "m.pt"
    args = run_args(
        tiny_release,
        tmp_path / "runs_a",
        empty_params,
        f"checkpoint={ckpt}",
        "optim.lr=0.05",
        "optim.epochs=6",
        "evaluate=false",
    )
    first = subprocess.Popen([sys.executable, "-m", "harness.run", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(f"{ckpt}.lock") and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert os.path.exists(f"{ckpt}.lock"), first.communicate()[1]
    rc = run_main(run_args(tiny_release, tmp_path / "runs_b", empty_params, f"checkpoint={ckpt}", "optim.lr=0.2"))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and f"pid {first.pid}" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert torch.load(ckpt, weights_only=True)["config"]["optim"]["lr"] == 0.05
    assert not os.path.exists(f"{ckpt}.lock"), "released at the end"


def test_a_stale_lock_is_taken_over(tiny_release, tmp_path, empty_params, capsys):
    ckpt = tmp_path / "m.pt"
    dead = _dead_pid()
    _hold(ckpt, dead)
    assert (
        run_main(run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={ckpt}", "evaluate=false")) == 0
    )
    err = capsys.readouterr().err
    assert f"taking over a stale lock (pid {dead} on {socket.gethostname()} no longer runs)" in err
    assert ckpt.exists() and not os.path.exists(f"{ckpt}.lock")


def test_stage1_holds_its_output_folder(tiny_release, tmp_path, empty_params, capsys, sleeper):
    out = tmp_path / "s1"
    _hold(out, sleeper.pid)
    rc = stage1_main(
        [
            "--params",
            empty_params,
            f"data.release={tiny_release}",
            f"identity={tmp_path / 'x.pt'}",
            f"out={out}",
            "sacred=",
            *STAGE1_TINY,
        ]
    )
    line = one_error_line(capsys.readouterr().err, "harness.stage1")
    assert rc == 2 and f"pid {sleeper.pid}" in line and "stage-1 output folder" in line
    assert not out.exists()
