"""benchmarks/gpu_check.py (issue 14 item 14): the prepared CUDA check runs end to end on the CPU with --tiny, every
row through the code the CUDA run takes (the Stepper, torchrun + harness.run on a RecordIO, stage 1, evaluation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(args, tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, env=env)


def test_gpu_check_tiny_runs_every_row_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    proc = _run(["--tiny", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["tiny"] is True and doc["device"].startswith("CPU")
    rows = {(r["row"], r["method"]): r for r in doc["rows"]}
    assert all("error" not in r for r in doc["rows"]), doc["rows"]
    for row in ("step", "torchrun"):
        for method in ("source_only", "cfsm_guided"):
            r = rows[(row, method)]
            assert r["images_per_second"] > 0 and r["batch"] == 4 and r["peak_gpu_mib"] is None
    for method in ("source_only", "cfsm_guided"):  # the real trainer under torchrun, one process, the steps asked
        r = rows[("torchrun", method)]
        assert (r["steps"], r["world_size"], r["device"]) == (2, 1, "cpu")
    (s1,) = [r for r in doc["rows"] if r["row"] == "stage1"]
    assert s1["steps"] == 3 and s1["iterations_per_second"] > 0 and s1["method"] == "32 px / dim 8 / D 2x3"
    (ev,) = [r for r in doc["rows"] if r["row"] == "evaluate"]
    assert ev["images_per_second"] > 0 and ev["faces"] > 100 and "6 rows" in ev["method"]
    # one printed table: a header, a rule, one line per row
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check on CPU") and lines[1].split()[:2] == ["row", "what"]
    assert len(lines) == 3 + len(doc["rows"])


def test_gpu_check_refuses_a_machine_without_cuda_and_unknown_rows(tmp_path):
    if not torch.cuda.is_available():
        proc = _run(["--out", str(tmp_path / "x.json")], tmp_path)
        assert (
            proc.returncode == 2
            and proc.stderr.strip() == "gpu_check: CUDA is not available (use --tiny for the CPU check)"
        )
    proc = _run(["--tiny", "--rows", "step,fast"], tmp_path)
    assert proc.returncode == 2 and "unknown row(s) ['fast']" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.parametrize("row", ["step"])
def test_gpu_check_reports_a_failing_row_and_exits_1(tmp_path, row, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    def boom(*_):
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(gpu_check, "step_rows", boom)
    out = tmp_path / "x.json"
    assert gpu_check.main(["--tiny", "--rows", row, "--out", str(out)]) == 1
    (r,) = json.loads(out.read_text())["rows"]
    assert r["error"] == "RuntimeError: out of memory second line"
