"""The README's two commands are the project's contract; CI must run exactly the test command."""

from __future__ import annotations

import pathlib
import tomllib

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    install_and_run, install_and_test = _readme_commands()
    assert install_and_run.endswith("dvc repro")
    assert "pytest" in install_and_test
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install_and_test in ci


def test_dependencies_are_pinned_exactly_and_locked():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = {
        line.split("==")[0].lower(): line.split("==")[1] for line in (REPO / "requirements.lock").read_text().split()
    }
    for req in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, _, version = req.partition("==")
        if req.startswith("setuptools"):  # a range on purpose: sacred 0.8.7 needs pkg_resources (< 80.9)
            locked = tuple(int(x) for x in lock["setuptools"].split(".")[:2])
            assert "<80.9" in req and locked < (80, 9)
            continue
        assert version, f"{req} is not pinned exactly"
        assert lock[name.lower()] == version, f"{name}: pyproject {version} != lock {lock[name.lower()]}"


def test_datasets_folder_is_not_a_python_package():
    assert not (REPO / "datasets" / "__init__.py").exists()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert all(not p.startswith("datasets") for p in packages)


def test_dvc_pipeline_starts_with_synthface_on_the_params_file_size():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == "synthface"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["synthface"]["size"] == "default"
    assert "python -m harness.synthface" in stages["synthface"]["cmd"]
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config


def test_stages_reading_the_release_depend_on_its_digest_not_its_folder():
    """DVC walks a folder dependency several times per stage it runs: the 33,000-file release cost 6-7 s a stage. Every
    stage that reads the release depends on ``<release>.sha256``, which the ``synthface`` stage writes beside it."""
    main = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert main["synthface"]["outs"] == [
        "datasets/synthface/${synthface.size}",
        "datasets/synthface/${synthface.size}.sha256",
    ]
    folders = {"datasets/synthface/${synthface.size}", "${release}"}
    readers = 0
    for path in ("dvc.yaml", "profiles/analyses/dvc.yaml"):
        for name, stage in yaml.safe_load((REPO / path).read_text())["stages"].items():
            deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
            assert not folders & set(deps), f"{path}: stage {name} depends on the release folder, not its digest"
            readers += any(d in {f + ".sha256" for f in folders} for d in deps)
    assert readers >= 10
