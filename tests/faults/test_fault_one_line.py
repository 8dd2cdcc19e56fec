"""Issue 16 item 3: after the first config check, every error of harness.run is one line and exit 2 (a corrupt
data file found while training, here); ``CFSM_TRACEBACK=1`` shows the traceback. A YAML syntax error in the params
file is one line with file, line and column in harness.run, harness.stage1 and harness.tables."""

from __future__ import annotations

import os
import shutil

import pytest
from faultlib import one_error_line, run_args

from harness.run import main as run_main
from harness.stage1 import main as stage1_main
from harness.tables import main as tables_main


@pytest.fixture
def corrupt_release(tiny_release, tmp_path):
    dst = tmp_path / "rel"
    shutil.copytree(tiny_release, dst)
    rec = dst / "faces_synthface" / "train.rec"
    data = bytearray(rec.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # damage a record in the middle
    rec.write_bytes(bytes(data))
    return str(dst)


def test_a_corrupt_record_found_during_the_run_is_one_line(corrupt_release, tmp_path, empty_params, capsys):
    rc = run_main(run_args(corrupt_release, tmp_path / "runs", empty_params))
    err = capsys.readouterr().err
    line = one_error_line(err, "harness.run")
    assert rc == 2 and "train.rec" in line, line


def test_the_switch_shows_the_traceback(corrupt_release, tmp_path, empty_params, capsys, monkeypatch):
    monkeypatch.setenv("CFSM_TRACEBACK", "1")
    assert run_main(run_args(corrupt_release, tmp_path / "runs", empty_params)) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("harness.run: ")


BROKEN = "run:\n  optim:\n    lr: 0.1\n   batch_size: [1, 2\n"


@pytest.mark.parametrize("prog", ["harness.run", "harness.stage1", "harness.tables"])
def test_yaml_syntax_errors_name_file_line_and_column(tmp_path, capsys, prog):
    params = tmp_path / "params.yaml"
    params.write_text(BROKEN)
    if prog == "harness.run":
        rc = run_main(["--params", str(params)])
    elif prog == "harness.stage1":
        rc = stage1_main(["--params", str(params)])
    else:
        (tmp_path / "eval").mkdir()
        rc = tables_main(
            [
                str(tmp_path / "eval"),
                "--params",
                str(params),
                "--out-dir",
                str(tmp_path / "t"),
                "--report",
                str(tmp_path / "R.md"),
            ]
        )
    line = one_error_line(capsys.readouterr().err, prog)
    assert rc == 2
    assert line.startswith(f"{prog}: {params}:line 4, column 4: YAML syntax error"), line
    assert not os.path.exists(tmp_path / "t")


def test_under_torchrun_one_line_from_rank_zero_and_quiet_workers(tiny_release, tmp_path, empty_params):
    """An error after the process group starts (the checkpoint held by a live process): rank 0 prints the one
    line, the worker exits 2 without a word, no harness traceback. (torchrun then prints its own summary of the
    failed workers, which any non-zero exit brings.)"""
    import json
    import socket
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ckpt = tmp_path / "m.pt"
        (tmp_path / "m.pt.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "start": "t"}))
        args = run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={ckpt}", "optim.batch_size=16")
        r = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "harness.run", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    finally:
        holder.kill()
        holder.wait()
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert [ln for ln in text.splitlines() if ln.startswith("harness.run: ")] == [
        f"harness.run: {ckpt}: checkpoint in use by another run (pid {holder.pid} on {socket.gethostname()}, "
        f"started t: ); lock file {ckpt}.lock (remove it only if that run is gone)"
    ], text
    assert "/harness/" not in text, "no traceback through the harness"
    assert "exitcode  : 2" in text
