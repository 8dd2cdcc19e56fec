"""The default DVC pipeline end to end on the `smoke` profile (SynthFace tiny, a few steps per stage): every stage
of dvc.yaml runs in a scratch copy of the repository, and the table, report and plots come out (issues 7, 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COPY = ("harness", "methods", "dvc.yaml", "results/paper", ".dvcignore", "pyproject.toml")


def _run(args, cwd, env):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="DVC needs git for its project")
def test_smoke_profile_runs_the_whole_pipeline(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    for rel in COPY:
        src = REPO / rel
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst)
    shutil.copy2(REPO / "profiles" / "smoke" / "params.yaml", work / "params.yaml")
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        DVC_NO_ANALYTICS="1",
    )
    _run(["git", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    shutil.copytree(REPO / ".dvc" / "plots", work / ".dvc" / "plots")  # the plot templates dvc.yaml names
    _run([sys.executable, "-m", "dvc", "repro"], work, env)

    tables = (work / "results" / "tables" / "tables.md").read_text()
    for method in ("source_only", "kornia_degrade", "dann", "cfsm_guided"):
        assert f"| {method} |" in tables, method
    report = (work / "results" / "REPORT.md").read_text()
    assert "cfsm_guided" in report and "not the paper's numbers" in report
    for name in ("roc_ijbb.png", "roc_ijbc.png", "cmc_tinyface.png", "cmc_ijbs.png"):
        assert (work / "results" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "results" / "stage1" / "generator.pt").is_file()
    lock = (work / "dvc.lock").read_text()
    for stage in (
        "train@source_only-0",
        "train@dann-0",
        "stage1",
        "train_cfsm@cfsm_guided-0",
        "evaluate_cfsm@cfsm_guided-0",
        "plots",
        "table",
    ):
        assert f"  {stage}:" in lock, stage
    # a second run has nothing to do: every stage's dependencies and params were recorded
    assert "up to date" in _run([sys.executable, "-m", "dvc", "status"], work, env)
