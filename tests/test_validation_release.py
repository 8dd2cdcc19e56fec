"""SynthFace's validation release for model selection (harness.synthface.validation): written in the IJB 1:1 layout
the IJB readers accept, from identities that no test benchmark (and no training domain) has, and never part of the
default release."""

from __future__ import annotations

import json
import os

import pytest
import torch

from harness.data.ijb import read_ijb
from harness.synthface import __main__ as synthface_cli
from harness.synthface.common import identity_table
from harness.synthface.generate import DOMAIN_SOURCE, DOMAIN_TARGET, DOMAIN_TEST, config_for
from harness.synthface.ijbs import DOMAIN_IJBS
from harness.synthface.tinyface import DOMAIN_TINYFACE, DOMAIN_TINYFACE_DISTRACTOR
from harness.synthface.validation import DOMAIN_VALIDATION, FOLDER, validation_spec, write_validation
from harness.synthface.verification_bin import DOMAIN_BIN

pytestmark = pytest.mark.usefixtures("one_thread")


def _vectors(table: dict) -> torch.Tensor:
    """One row per identity: every parameter of its table, flattened."""
    n = next(iter(table.values())).shape[0]
    return torch.cat([v.reshape(n, -1).double() for _, v in sorted(table.items())], dim=1)


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_validation_identities_are_no_test_or_training_identity(size):
    cfg = config_for(size, seed=0)
    val = _vectors(identity_table(cfg, DOMAIN_VALIDATION, validation_spec(cfg).subjects))
    others = {
        "IJB-B/C": (DOMAIN_TEST, max(cfg.ijbb.subjects, cfg.ijbc.subjects)),
        "IJB-S": (DOMAIN_IJBS, cfg.ijbs.subjects),
        "TinyFace": (DOMAIN_TINYFACE, cfg.tinyface.identities),
        "TinyFace distractors": (DOMAIN_TINYFACE_DISTRACTOR, min(cfg.tinyface.distractors, 2000)),
        ".bin": (DOMAIN_BIN, 64),
        "source": (DOMAIN_SOURCE, cfg.source_identities),
        "target": (DOMAIN_TARGET, cfg.target_identities),
    }
    assert len({d for d, _ in others.values()} | {DOMAIN_VALIDATION}) == len(others) + 1
    for name, (domain, n) in others.items():
        other = _vectors(identity_table(cfg, domain, n))
        nearest = torch.cdist(val, other).min().item()
        # the closest pair of identities across the two sets is as far apart as identities of one set are
        within = torch.cdist(other[:50], other[:50]) + torch.eye(min(50, len(other)), dtype=torch.float64) * 1e9
        assert nearest > 0.1 * within.min().item() > 0, name


def test_the_release_reads_as_ijb_1to1_and_the_cli_writes_it_into_a_release(tmp_path, capsys):
    cfg = config_for("tiny", seed=0)
    release = tmp_path / "rel"
    assert synthface_cli.main(["--size", "tiny", "--out", str(release), "--validation"]) == 2  # no release there
    assert "not a SynthFace release" in capsys.readouterr().err
    release.mkdir()
    (release / "synthface.json").write_text(json.dumps({"config": {"size": "tiny", "seed": 1}}))
    assert synthface_cli.main(["--size", "tiny", "--out", str(release), "--validation"]) == 2
    assert "size tiny seed 1, not --size tiny --seed 0" in capsys.readouterr().err
    (release / "synthface.json").write_text(json.dumps({"config": {"size": "tiny", "seed": 0}}))
    assert synthface_cli.main(["--size", "tiny", "--out", str(release), "--validation"]) == 0
    root = release / FOLDER
    meta = read_ijb(str(root))
    assert meta.prefix == "ijbb" and len(meta) > 0
    info = json.loads((root / "validation.json").read_text())
    spec = validation_spec(cfg)
    assert info["domain"] == DOMAIN_VALIDATION and info["counts"]["subjects"] == spec.subjects
    assert info["counts"]["gallery_templates"] == spec.subjects and info["counts"]["genuine_pairs"] > 0
    pairs = (root / "meta" / "ijbb_template_pair_label.txt").read_text().split("\n")
    assert sum(1 for p in pairs if p.endswith(" 1")) == info["counts"]["genuine_pairs"]
    assert not [p for p in os.listdir(release / "IJB_release") if p != "VAL"]  # nothing else written
    # the release's digest (what the pipeline's stages depend on) now lists the validation files too
    digest = (tmp_path / "rel.sha256").read_text().splitlines()
    assert "IJB_release/VAL/meta/ijbb_template_pair_label.txt" in [ln[66:] for ln in digest]
    before = sorted(os.listdir(root / "loose_crop"))
    write_validation(cfg, str(release))  # rewritten in place: the same files
    assert sorted(os.listdir(root / "loose_crop")) == before


def test_val11_is_registered_but_not_evaluated_by_default():
    from harness.core.config import EvalConfig
    from harness.eval.registry import config_names

    assert "val11" in config_names() and "val11" not in EvalConfig().benchmarks
