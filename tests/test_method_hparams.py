"""Method hyperparameters in the params files (issue 17 item 5): `method_hparams.<method>`, one mapping per configured
method, read by `harness.run` beneath `run.hparams` and the command line's `hparams.<name>=`, and tracked by DVC per
training stage (`method_hparams.${item.method}`), so that `dvc exp run -S method_hparams.cfsm_guided.eps=0.5`
retrains cfsm_guided and nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.run import main as run_main
from harness.run import make_config
from methods import REGISTRY, resolve_hparams

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "default": REPO / "params.yaml",
    "paper": REPO / "profiles" / "paper" / "params.yaml",
    "smoke": REPO / "profiles" / "smoke" / "params.yaml",
}
PIPELINES = {"default": REPO / "dvc.yaml", "paper": REPO / "profiles" / "paper" / "dvc.yaml"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write(path: Path, tree: dict) -> str:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("profile", sorted(PARAMS))
def test_every_configured_method_has_an_entry_of_declared_names(profile):
    params = _yaml(PARAMS[profile])
    configured = params["methods"] + params["cfsm_methods"]
    entries = params["method_hparams"]
    assert sorted(entries) == sorted(configured), profile  # DVC fails a stage whose entry is missing
    for method, entry in entries.items():
        assert isinstance(entry, dict), (profile, method)
        declared = REGISTRY[method].hparams()
        assert set(entry) <= set(declared), (profile, method, set(entry) - set(declared))
        # and harness.run reads it for that method without complaint
        cfg = make_config(["--params", str(PARAMS[profile]), f"method={method}"])
        assert resolve_hparams(method, cfg.hparams_seed, cfg.hparams) == {
            **{k: v[0] for k, v in declared.items()},
            **entry,
        }, (profile, method)


@pytest.mark.parametrize("profile", ["default", "smoke"])
def test_the_cpu_pipelines_restate_the_declared_defaults(profile):
    """The default and smoke pipelines train every method at its plugin's defaults, as before the section existed
    (their numbers, and the golden tables, do not move); the CFSM methods' defaults are written out for `-S`."""
    params = _yaml(PARAMS[profile])
    for method in params["cfsm_methods"]:
        declared = {k: v[0] for k, v in REGISTRY[method].hparams().items()}
        assert params["method_hparams"][method] == declared, method
    for method in params["methods"] + params["cfsm_methods"]:
        assert make_config(["--params", str(PARAMS[profile]), f"method={method}"]).hparams == {}, method


def test_paper_profile_cfsm_entries_name_its_stage1_generator():
    """A params file is not templated, so the profile writes the generator's path out; it must be the path of the
    stage-1 output that train_cfsm depends on (`${stage1.out}/generator.pt`), at the stage-1 model's size."""
    from harness.cfsm.train import Stage1Config
    from harness.core.config import config_from_cli

    params = _yaml(PARAMS["paper"])
    stages = _yaml(PIPELINES["paper"])["stages"]
    s1 = config_from_cli(["--params", str(PARAMS["paper"])], Stage1Config(), section="stage1")
    assert "${stage1.out}/generator.pt" in stages["train_cfsm"]["deps"]
    for method in params["cfsm_methods"]:
        hp = resolve_hparams(method, 0, make_config(["--params", str(PARAMS["paper"]), f"method={method}"]).hparams)
        assert hp["generator"] == f"{params['stage1']['out']}/generator.pt"
        assert hp["generator_size"] == s1.model.image_size == 112
        assert hp["synthesize"] == "all"  # the released synthesis of the whole batch
        assert (hp["eps"], hp["alpha"], hp["steps"], hp["rs_ratio"]) == (0.314, 0.314, 1, 0.75)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_train_stages_track_their_method_entry_and_no_command_sets_hparams(pipeline):
    stages = _yaml(PIPELINES[pipeline])["stages"]
    for name, stage in stages.items():
        assert "hparams." not in stage["cmd"], name  # method_hparams in the params file instead
        if name in ("train", "train_cfsm"):
            listed = [
                p
                for entry in stage["params"]
                for p in (next(iter(entry.values())) if isinstance(entry, dict) else [entry])
            ]
            assert "method_hparams.${item.method}" in listed, (pipeline, name)
        elif name.startswith("evaluate"):
            assert stage["cmd"] == stages["evaluate"]["cmd"], name


def _params(tmp_path: Path, method_hparams: dict, run: dict | None = None) -> str:
    return _write(tmp_path / "params.yaml", {"method_hparams": method_hparams, **({"run": run} if run else {})})


def test_precedence_defaults_then_params_then_run_hparams_then_command_line(tmp_path):
    params = _params(
        tmp_path, {"cfsm_guided": {"eps": 0.2, "alpha": 0.1, "rs_ratio": 0.6}}, run={"hparams": {"alpha": 0.05}}
    )
    cfg = make_config(["--params", params, "method=cfsm_guided", "hparams.rs_ratio=0.9"])
    hp = resolve_hparams("cfsm_guided", cfg.hparams_seed, cfg.hparams)
    assert (hp["eps"], hp["alpha"], hp["rs_ratio"], hp["steps"]) == (0.2, 0.05, 0.9, 1)


def test_hparams_seed_draws_what_the_params_file_only_restates(tmp_path):
    """hparams_seed != 0 draws every name as before; a method_hparams value that differs from the declared default
    is kept over the draw (as run.hparams and the command line are), one that restates the default is drawn."""
    params = _params(tmp_path, {"cfsm_guided": {"eps": 0.2, "alpha": 0.314, "rs_ratio": 0.75}})
    drawn = resolve_hparams("cfsm_guided", 3)
    assert drawn["alpha"] != 0.314 and drawn["rs_ratio"] != 0.75  # the draws differ from the defaults
    cfg = make_config(["--params", params, "method=cfsm_guided", "hparams_seed=3"])
    assert cfg.hparams == {"eps": 0.2}
    hp = resolve_hparams("cfsm_guided", cfg.hparams_seed, cfg.hparams)
    assert hp == {**drawn, "eps": 0.2}
    # the repository's params.yaml (every CFSM default written out) leaves the random search as it was
    cfg = make_config(["--params", str(PARAMS["default"]), "method=cfsm_guided", "hparams_seed=3"])
    assert resolve_hparams("cfsm_guided", cfg.hparams_seed, cfg.hparams) == drawn


def test_an_entry_for_one_method_never_reaches_another(tmp_path):
    """The defect of `run.hparams` (one dict for every method): a CFSM knob there makes source_only fail."""
    shared = _write(tmp_path / "shared.yaml", {"run": {"hparams": {"eps": 0.2}}})
    with pytest.raises(KeyError, match="unknown hyperparameter 'eps' for method 'source_only'.*method_hparams"):
        cfg = make_config(["--params", shared, "method=source_only"])
        resolve_hparams(cfg.method, cfg.hparams_seed, cfg.hparams)
    params = _params(tmp_path, {"source_only": {}, "cfsm_guided": {"eps": 0.2, "no_such_name": 1}})
    cfg = make_config(["--params", params, "method=source_only"])
    assert cfg.hparams == {} and resolve_hparams("source_only", cfg.hparams_seed, cfg.hparams) == {}


@pytest.mark.parametrize(
    "entry,needle",
    [
        (
            {"cfsm_guided": {"epz": 0.5}},
            ":method_hparams.cfsm_guided.epz: unknown hyperparameter of method 'cfsm_guided'; "
            "valid: alpha, eps, generator, generator_size, ",
        ),
        ({"cfsm_guided": [0.5]}, ":method_hparams.cfsm_guided: expected a mapping of hyperparameter names to values"),
        (
            {"source_only": {"eps": 0.5}},
            ":method_hparams.source_only.eps: unknown hyperparameter of method 'source_only'; valid: none",
        ),
    ],
)
def test_an_unknown_name_is_one_line_naming_the_file_the_key_and_the_valid_names(tmp_path, capsys, entry, needle):
    params = _params(tmp_path, entry)
    method = next(iter(entry))
    assert (
        run_main(
            [
                "--params",
                params,
                f"method={method}",
                f"out={tmp_path / 'runs'}",
                "train=false",
                f"checkpoint={tmp_path / 'none.pt'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"harness.run: {params}{needle}") and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


SMALL = [
    "data.input_size=32",
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "optim.batch_size=16",
    "optim.epochs=1",
    "device=cpu",
    "threads=1",
    "log_every=1",
    "evaluate=false",
]


def test_the_run_records_the_params_value_and_source_only_trains_beside_it(tmp_path, toy_rec_release, generator_path):
    params = _params(
        tmp_path,
        {
            "source_only": {},
            "cfsm_guided": {"generator": generator_path, "generator_size": 16, "latent_dim": 16, "eps": 0.5},
        },
    )
    docs = {}
    for method in ("cfsm_guided", "source_only"):
        result = tmp_path / f"{method}.json"
        args = [
            "--params",
            params,
            f"method={method}",
            f"data.release={toy_rec_release}",
            f"out={tmp_path / 'runs'}",
            f"checkpoint={tmp_path / method}.pt",
            f"result={result}",
            *SMALL,
        ]
        assert run_main(args) == 0, method
        docs[method] = json.loads(result.read_text())
    guided = docs["cfsm_guided"]
    assert guided["hparams"]["eps"] == 0.5 and guided["hparams"]["generator_size"] == 16
    assert guided["hparams"]["alpha"] == 0.314  # the declared default beneath
    assert guided["config"]["hparams"]["eps"] == 0.5 and guided["train"]["steps"] >= 1
    assert docs["source_only"]["hparams"] == {} and docs["source_only"]["config"]["hparams"] == {}


DVC_ENV = dict(
    os.environ,
    DVC_NO_ANALYTICS="1",
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
)


def _dvc(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=DVC_ENV)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="DVC needs git for its project")
def test_dvc_sees_a_change_of_cfsm_guided_eps_in_the_cfsm_guided_train_stages_only(tmp_path):
    """In a scratch copy of the pipeline: every train stage recorded as up to date (`dvc commit` of placeholder
    outputs), then `method_hparams.cfsm_guided.eps` changed: `dvc status` names cfsm_guided's train stages alone,
    for that one params key."""
    work = tmp_path / "repo"
    work.mkdir()
    for rel in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / rel, work / rel)
    for rel in ("harness", "methods"):
        shutil.copytree(REPO / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    params = _yaml(work / "params.yaml")
    seeds = [0, 1]
    text = (work / "params.yaml").read_text()
    text = re.sub(r"(?m)^seeds: \[[0-9, ]*\]\n", f"seeds: {seeds}\n", text, count=1)
    assert f"seeds: {seeds}\n" in text
    (work / "params.yaml").write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=DVC_ENV)
    _dvc(["init", "-q"], work)
    size = params["synthface"]["size"]
    (work / "datasets" / "synthface" / size).mkdir(parents=True)
    (work / "datasets" / "synthface" / size / "placeholder").write_text("x")
    (work / "datasets" / "synthface" / f"{size}.sha256").write_text("x")  # the release's digest: the stages' dep
    (work / "results" / "stage1").mkdir(parents=True)
    (work / "results" / "stage1" / "generator.pt").write_text("g")
    (work / "results" / "checkpoints").mkdir(parents=True)
    methods = params["methods"] + params["cfsm_methods"]
    for method in methods:
        for seed in seeds:
            (work / "results" / "checkpoints" / f"{method}-s{seed}.pt").write_text(method)
    _dvc(["commit", "-f", "-q", "train", "train_cfsm"], work)
    assert json.loads(_dvc(["status", "--json", "train", "train_cfsm"], work)) == {}
    # change eps in cfsm_guided's entry only (the text edit a user makes; cfsm_random's eps stays)
    lines = text.splitlines(keepends=True)
    at = lines.index("  cfsm_guided:              # the same, with one FGSM step on o (the paper's method)\n")
    eps = next(i for i in range(at, len(lines)) if lines[i].strip().startswith("eps:"))
    lines[eps] = "    eps: 0.5\n"
    (work / "params.yaml").write_text("".join(lines))
    assert _yaml(work / "params.yaml")["method_hparams"]["cfsm_guided"]["eps"] == 0.5
    assert _yaml(work / "params.yaml")["method_hparams"]["cfsm_random"]["eps"] == 0.314
    status = json.loads(_dvc(["status", "--json", "train", "train_cfsm"], work))
    assert sorted(status) == [f"train_cfsm@cfsm_guided-{s}" for s in seeds]
    for change in status.values():
        assert change == [{"changed deps": {"params.yaml": {"method_hparams.cfsm_guided": "modified"}}}]
