"""The `paper` profile end to end (issue 14 item 13): `dvc repro profiles/paper/dvc.yaml` on a tiny SynthFace
release written at the real resolution (112 px aligned, 144 px loose) and assembled into a data root of symbolic
links named as the real datasets, exactly as README "Reproducing the paper" describes, with only sizes changed
(steps, batch, iterations, a smaller backbone and generator width) in a scratch copy of the repository. One torchrun
process on the CPU (gloo), `device: auto`. Checks that every stage connects, that the data root reaches every
stage, that runs and plots land under the profile's folder, and what the table and REPORT say about the data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ("harness", "methods", "profiles/paper", "results/paper", ".dvcignore", "pyproject.toml")
# README step 1, for a dry run on SynthFace: its folders under the names of the real datasets
LINKS = {
    "faces_emore": "faces_synthface",
    "target": "target",
    "IJB_release": "IJB_release",
    "IJB-S": "IJB-S",
    "tinyface": "tinyface",
    "aligned_pad_0.1_pad_high": "aligned_pad_0.1_pad_high",
}


def _env():
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )


def _run(args, cwd, env=None):
    proc = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-8000:]}"
    return proc


@pytest.fixture(scope="module")
def root_112(tmp_path_factory) -> Path:
    """README's way: a tiny SynthFace release at 112 / 144 px, then a root of links named as the real datasets."""
    base = tmp_path_factory.mktemp("paper_e2e_data")
    src = base / "src"
    env = dict(_env(), PYTHONPATH=str(REPO))
    _run(
        [
            sys.executable,
            "-m",
            "harness.synthface",
            "--size",
            "tiny",
            "--set",
            "aligned_size=112",
            "--set",
            "loose_size=144",
            "--out",
            str(src),
        ],
        base,
        env,
    )
    root = base / "root"
    root.mkdir()
    for name, target in LINKS.items():
        os.symlink(src / target, root / name)
    _run([sys.executable, "-m", "harness.check_data", "--root", str(root)], base, env)
    return root


def _sized(params: dict, root: Path) -> dict:
    """The profile with the root set (README step 3) and only sizes cut."""
    p = json.loads(json.dumps(params))
    p["root"], p["gpus"] = str(root), 1
    p["tables"]["n_boot"] = 20
    run = p["run"]
    run["log_every"] = 1
    run["model"].update(
        backbone="small", widths=[16, 32, 64, 128], layers=[1, 1, 1, 1], stem_stride=1, embedding_size=64
    )
    run["optim"].update(batch_size=16, epochs=0.3, warmup_epochs=0.1)  # 117 images: 2 steps
    run["eval"]["batch_size"] = 64
    s1 = p["stage1"]
    s1["log_every"], s1["checkpoint_every"] = 1, 1000
    s1["model"] = {"dim": 8, "d_base": 8, "mlp_dim": 32}  # 112 px and the released D depth stay
    s1["train"] = {"iterations": 2, "batch_size": 2}
    s1["analysis"] = {"holdout_target": 4, "batch_size": 16}
    return p


@pytest.mark.skipif(shutil.which("git") is None, reason="DVC needs git for its project")
def test_paper_profile_runs_end_to_end_on_a_112px_synthface_root(root_112, tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    for rel in COPY:
        src, dst = REPO / rel, work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "dvc.lock"))
        elif src.exists():
            shutil.copy2(src, dst)
    params_path = work / "profiles" / "paper" / "params.yaml"
    profile = yaml.safe_load(params_path.read_text())
    params_path.write_text(yaml.safe_dump(_sized(profile, root_112), sort_keys=False))
    env = dict(_env(), PYTHONPATH=str(work))
    _run(["git", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    # README step 3: enable the profile in DVC, then reproduce it
    (work / "profiles" / "paper" / ".dvcignore").unlink()
    t0 = time.perf_counter()
    proc = _run([sys.executable, "-m", "dvc", "repro", "profiles/paper/dvc.yaml"], work, env)
    seconds = time.perf_counter() - t0
    print(f"dvc repro profiles/paper/dvc.yaml: {seconds:.0f} s")
    out = work / profile["out"]

    lock = (work / "profiles" / "paper" / "dvc.lock").read_text()
    for stage in (
        "check_data",
        "train@source_only-0",
        "stage1",
        "train_cfsm@cfsm_guided-0",
        "evaluate@source_only-0",
        "evaluate_cfsm@cfsm_guided-0",
        "plots",
        "table",
    ):
        assert f"  {stage}:" in lock, stage
    assert (out / "data_check.txt").read_text().startswith(f"{root_112}: MS1MV2")

    # the one root reached every stage; the device is auto, resolved and recorded; CFSM synthesises the whole batch
    for method in ("source_only", "cfsm_guided"):
        doc = json.loads((out / "eval" / f"{method}-s0.json").read_text())
        assert doc["config"]["data"]["release"] == str(root_112), method
        assert doc["config"]["device"] == "auto" and doc["host"]["device"] == "cpu"
        assert doc["train"]["device"] == "cpu" and doc["train"]["world_size"] == 1
        assert {r["benchmark"] for r in doc["results"]} >= {"IJB-B", "IJB-C", "IJB-S", "TinyFace"}
    guided = json.loads((out / "eval" / "cfsm_guided-s0.json").read_text())
    assert guided["hparams"]["synthesize"] == "all" and guided["hparams"]["generator_size"] == 112
    assert guided["hparams"]["generator"] == f"{profile['stage1']['out']}/generator.pt"
    s1 = json.loads((work / profile["stage1"]["out"] / "analysis.json").read_text())
    assert s1["config"]["data"]["release"] == str(root_112) and s1["config"]["model"]["image_size"] == 112
    assert s1["config"]["device"] == "auto" and s1["train"]["device"] == "cpu"

    # Sacred runs and plots under the profile's folder, none in the default pipeline's results/runs
    runs = [p for p in (out / "runs").iterdir() if (p / "run.json").is_file()]
    assert len(runs) == 5  # 2 trainings, stage 1, 2 evaluations
    assert all(json.loads((p / "run.json").read_text())["status"] == "COMPLETED" for p in runs)
    assert not (work / "results" / "runs").exists()
    for name in ("roc_ijbb.png", "roc_ijbc.png", "cmc_tinyface.png", "cmc_ijbs.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the table labels the data as what it is: SynthFace (found through the root's links), never the real benchmarks
    tables = (out / "tables" / "tables.md").read_text()
    report = (out / "REPORT.md").read_text()
    assert tables.splitlines()[0].startswith("# SynthFace results")
    assert report.splitlines()[0] == "# Reproduction report: CFSM and baselines on SynthFace"
    for text in (tables, report):
        assert "real benchmark" not in text.lower() and "Results on the real" not in text
    for method in ("source_only", "cfsm_guided"):
        assert f"| {method} |" in tables, method
    # the REPORT speaks of the profile's own methods, and never of results that do not exist
    assert "`cfsm_guided`" in report and "no results of `cfsm_random`" in report
    assert not any("besides" in line and "cfsm_random" in line for line in report.splitlines())

    # nothing left to do (check_data alone always re-runs: it looks at the data)
    again = _run([sys.executable, "-m", "dvc", "repro", "profiles/paper/dvc.yaml"], work, env).stdout
    assert "Running stage 'profiles/paper/dvc.yaml:train@source_only-0'" not in again
    assert proc.stdout.count("Running stage") >= 8
