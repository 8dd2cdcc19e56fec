"""The `paper` profile (profiles/paper/) and the data-root check it starts with (issue 9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import check_data

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "profiles" / "paper" / "params.yaml"


def test_paper_profile_is_the_released_fr_recipe():
    from harness.run import make_config

    cfg = make_config(["--params", str(PAPER)])
    assert (cfg.model.backbone, cfg.model.embedding_size, cfg.model.stem_stride, cfg.data.input_size) == (
        "r50",
        512,
        1,
        112,
    )
    assert (cfg.model.head, cfg.model.s, cfg.model.m) == ("arcface", 64.0, 0.5)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.batch_size) == ("sgd", 0.1, 0.9, 5e-4, 256)
    assert (o.epochs, o.warmup_epochs, o.poly_power, o.grad_clip) == (20.0, 2.0, 2.0, 5.0)
    assert cfg.amp == "on" and cfg.data.cache is False
    # the CFSM stage-2 knobs: released eps = alpha = 0.314, k = 1, rs_ratio 0.75, and the 112 px generator
    from methods.base import resolve_hparams

    for method in ("source_only", "cfsm_guided"):
        resolve_hparams(method, cfg.hparams_seed, cfg.hparams)  # the shared run section suits every method
    guided = make_config(["--params", str(PAPER), "method=cfsm_guided"])  # method_hparams.cfsm_guided beneath
    hp = resolve_hparams("cfsm_guided", guided.hparams_seed, guided.hparams)
    assert (hp["eps"], hp["alpha"], hp["steps"], hp["rs_ratio"]) == (0.314, 0.314, 1, 0.75)
    assert hp["generator"] == "results/profile_paper/stage1/generator.pt" and hp["generator_size"] == 112


def test_paper_profile_stage1_has_no_deviation_from_the_release():
    from harness.cfsm.train import Stage1Config, deviations
    from harness.core.config import config_from_cli

    cfg = config_from_cli(["--params", str(PAPER)], Stage1Config(), section="stage1")
    # only what no knob can match (the release's identity network, unpublished data, the G-step parity) and the
    # iteration cap the unpublished source list makes necessary
    unmatched = {"identity", "data.source", "data.target", "train.g_step_parity", "train.iterations"}
    assert {d["key"] for d in deviations(cfg)} <= unmatched
    assert (cfg.model.image_size, cfg.model.dim, cfg.model.d_scales, cfg.model.d_layers) == (112, 64, 3, 4)
    assert cfg.data.rec == "faces_emore" and cfg.data.pairs == ""


def test_paper_pipeline_reads_every_path_from_the_profile():
    params = yaml.safe_load(PAPER.read_text())
    stages = yaml.safe_load((REPO / "profiles" / "paper" / "dvc.yaml").read_text())["stages"]
    assert list(stages)[:2] == ["check_data", "train"]
    assert all(s.get("wdir") == "../.." for s in stages.values())  # every command runs in the repository root
    assert "torchrun" in stages["train"]["cmd"] and "--params profiles/paper/params.yaml" in stages["train"]["cmd"]
    assert params["stage1"]["identity"] == f"{params['out']}/checkpoints/source_only-s0.pt"
    # the one data root reaches every command that reads data, and nothing else names a data release
    assert "--root ${root}" in stages["check_data"]["cmd"]
    for name in ("train", "stage1", "train_cfsm", "evaluate", "evaluate_cfsm"):
        assert "data.release=${root}" in stages[name]["cmd"].split(), name
        listed = [p for group in stages[name]["params"] for p in group["profiles/paper/params.yaml"]]
        assert "root" in listed, name  # a new root re-runs the stage
    assert "release" not in params["run"]["data"] and "release" not in params["stage1"]["data"]
    # the profile's Sacred runs and plots land under the profile's out, not the default pipeline's results/
    assert params["run"]["out"] == params["stage1"]["sacred"] == f"{params['out']}/runs"
    assert stages["plots"]["cmd"].split()[:4] == ["python", "-m", "harness.plots", "${out}/eval"]
    assert "${out}/plots" in stages["plots"]["cmd"]


def _strings(node, where=""):
    """Every string value of a YAML tree with its dotted key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def test_paper_profile_holds_one_absolute_data_path_the_root():
    params = yaml.safe_load(PAPER.read_text())
    absolute = {k: v for k, v in _strings(params) if os.path.isabs(v)}
    assert absolute == {"root": params["root"]}
    stages = yaml.safe_load((REPO / "profiles" / "paper" / "dvc.yaml").read_text())
    assert {k: v for k, v in _strings(stages) if any(os.path.isabs(w) for w in v.split())} == {}
    # and a run configured from the profile plus the pipeline's override reads the root, in stage 1 and stage 2
    from harness.cfsm.train import Stage1Config
    from harness.core.config import config_from_cli
    from harness.run import make_config

    assert make_config(["--params", str(PAPER), "data.release=/elsewhere"]).data.release == "/elsewhere"
    s1 = config_from_cli(["--params", str(PAPER), "data.release=/elsewhere"], Stage1Config(), section="stage1")
    assert s1.data.release == "/elsewhere"


def test_paper_profile_uses_auto_device_and_the_released_synthesis_of_the_whole_batch():
    from harness.cfsm.train import Stage1Config
    from harness.core.config import config_from_cli
    from harness.run import make_config
    from methods.base import resolve_hparams

    params = yaml.safe_load(PAPER.read_text())
    assert make_config(["--params", str(PAPER)]).device == "auto"
    assert config_from_cli(["--params", str(PAPER)], Stage1Config(), section="stage1").device == "auto"
    assert params["method_hparams"]["cfsm_guided"]["synthesize"] == "all"
    guided = make_config(["--params", str(PAPER), "method=cfsm_guided"])
    assert resolve_hparams("cfsm_guided", guided.hparams_seed, guided.hparams)["synthesize"] == "all"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("module", ["harness.run", "harness.stage1"])
def test_device_cuda_without_cuda_is_one_line_before_anything_starts(module, tmp_path):
    runs = tmp_path / "runs"
    key = "out" if module == "harness.run" else "sacred"
    args = [
        sys.executable,
        "-m",
        module,
        "--params",
        str(PAPER),
        "device=cuda",
        f"{key}={runs}",
        f"data.release={tmp_path / 'nowhere'}",
    ]
    if module == "harness.run":
        args += ["method=source_only", f"checkpoint={tmp_path / 'c.pt'}"]
    proc = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO))
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err == [
        f"{module}: config device='cuda' but CUDA is not available on this machine "
        "(set device: auto in the params, or device=cpu)"
    ]
    assert not runs.exists()  # no Sacred run was started


def test_check_data_passes_on_a_release_in_the_real_layouts(tiny_release, tmp_path):
    record = tmp_path / "check.txt"
    # every entry but the validation release, which `harness.synthface --validation` writes on request (tested below)
    keys = [k for k in check_data.BY_KEY if k != "val11"]
    assert check_data.check(tiny_release, keys, rec="faces_synthface") == []
    assert check_data.main(["--root", tiny_release, "--rec", "faces_synthface", "--record", str(record)]) == 0
    assert record.read_text().endswith("found\n")


def test_check_data_names_each_missing_dataset_where_it_looked_and_where_to_get_it(tiny_release, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(os.path.join(tiny_release, "IJB_release"), root / "IJB_release")  # IJB-B/C present, the rest missing
    record = tmp_path / "check.txt"
    assert check_data.main(["--root", str(root), "--record", str(record)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and not record.exists()
    by_name = {line.split(": ", 1)[1].split(" (")[0]: line for line in err}
    assert set(by_name) == {"MS1MV2", "WIDER FACE target crops", "IJB-S", "TinyFace"}
    assert f"{root}/faces_emore/train.rec not found (and 2 more)" in by_name["MS1MV2"]
    assert "harness.prepare_target wider" in by_name["WIDER FACE target crops"]
    assert f"{root}/IJB-S/protocols not found" in by_name["IJB-S"] and "gated" in by_name["IJB-S"]


def test_check_data_reports_a_missing_root_and_unknown_keys(tmp_path, capsys):
    assert check_data.main(["--root", str(tmp_path / "nowhere"), "--need", "ijbb"]) == 2
    assert "data root not found" in capsys.readouterr().err
    assert check_data.main(["--root", str(tmp_path), "--need", "ijbb,lfw"]) == 2
    assert "unknown dataset key(s) ['lfw']" in capsys.readouterr().err


DVC_ENV = dict(
    os.environ,
    DVC_NO_ANALYTICS="1",
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
)


def _dvc(args, cwd):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=DVC_ENV)


@pytest.mark.skipif(not (REPO / ".dvc").is_dir(), reason="needs the DVC project (a clone of the repository)")
def test_dvc_reads_the_paper_pipeline_once_enabled(tmp_path):
    # shipped off: DVC does not see the profile (README step 3 enables it by deleting profiles/paper/.dvcignore)
    off = _dvc(["stage", "list", "profiles/paper/dvc.yaml"], REPO)
    assert off.returncode != 0 and "profiles/paper/dvc.yaml' is dvc-ignored" in off.stderr
    work = tmp_path / "repo"
    shutil.copytree(REPO / "profiles", work / "profiles")
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=DVC_ENV)
    (work / "profiles" / "paper" / ".dvcignore").unlink()
    on = _dvc(["stage", "list", "profiles/paper/dvc.yaml"], work)
    assert on.returncode == 0, on.stderr
    for stage in (
        "check_data",
        "train@source_only-0",
        "stage1",
        "train_cfsm@cfsm_guided-0",
        "evaluate_cfsm@cfsm_guided-0",
        "plots",
        "table",
    ):
        assert f"profiles/paper/dvc.yaml:{stage} " in on.stdout


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_a_fresh_clone_hears_nothing_of_the_paper_profile(tmp_path):
    """`dvc status` and `dvc metrics show` in a fresh clone (of the committed branch) speak of the default pipeline
    only: no paper-profile output reported deleted, no failure to load its metrics."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, env=DVC_ENV)
    status = _dvc(["status"], clone)
    assert status.returncode == 0, status.stderr
    assert "train@source_only-0:" in status.stdout  # the default pipeline, not run yet in this clone
    assert "profile_paper" not in status.stdout + status.stderr and "profiles/paper" not in status.stdout
    metrics = _dvc(["metrics", "show"], clone)
    assert metrics.returncode == 0, metrics.stderr
    assert "failed to load" not in (metrics.stdout + metrics.stderr).lower()
    assert "profile_paper" not in metrics.stdout


def test_check_data_validation_release_on_request(tiny_release, tmp_path, capsys):
    """`val11`'s data (the validation release) is checked with --need val11 only; missing, it names its folder and how
    to write it; written by `python -m harness.synthface --validation`, it passes."""
    from harness.synthface.__main__ import main as synthface_main

    root = tmp_path / "release"
    shutil.copytree(tiny_release, root)  # --validation adds IJB_release/VAL to an existing release
    assert check_data.main(["--root", str(root), "--need", "val11"]) == 2
    err = capsys.readouterr().err
    assert "IJB_release/VAL/meta/ijbb_template_pair_label.txt not found" in err
    assert "harness.synthface --validation" in err
    assert synthface_main(["--size", "tiny", "--seed", "0", "--validation", "--out", str(root)]) == 0
    capsys.readouterr()
    assert check_data.main(["--root", str(root), "--need", "val11"]) == 0
