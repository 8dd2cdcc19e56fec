"""The code passes ruff's lint and is ruff-formatted (configuration: pyproject.toml [tool.ruff])."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint_is_clean():
    r = _ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = _ruff("format", "--no-cache", "--check", ".")
    assert r.returncode == 0, "files ruff would reformat (run `ruff format .`):\n" + r.stdout + r.stderr


def test_ruff_lint_catches_a_defect(tmp_path):
    """The configuration lints: an unused import and an undefined name in a scratch file are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    r = _ruff("check", "--no-cache", "--config", os.path.join(ROOT, "pyproject.toml"), str(bad))
    assert r.returncode == 1 and "F401" in r.stdout and "F821" in r.stdout, r.stdout + r.stderr
