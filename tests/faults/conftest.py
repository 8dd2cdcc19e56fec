"""Fixtures of the fault suite (issue 16); the helpers are in ``faultlib``."""

from __future__ import annotations

import pytest
from faultlib import SMALL, write_payload


@pytest.fixture
def payload(tmp_path):
    marker = str(tmp_path / "PWNED")
    return write_payload(str(tmp_path / "payload.pt"), marker), marker


@pytest.fixture
def empty_params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("{}\n")
    return str(p)


@pytest.fixture(scope="session")
def trained_ckpt(tiny_release, tmp_path_factory) -> str:
    """A tiny source_only checkpoint (the SMALL config), for evaluation and stage 1's identity network."""
    from harness.core.config import RunConfig, apply_overrides
    from harness.engine.train import train

    path = str(tmp_path_factory.mktemp("faults_ckpt") / "source_only.pt")
    cfg = apply_overrides(RunConfig(), dict(a.split("=", 1) for a in SMALL) | {"data.release": tiny_release})
    train(cfg, checkpoint_path=path, progress=False)
    return path
