"""Fixtures for stage-1 tests on non-SynthFace data (not a test module): a release holding only a RecordIO source
(``faces_synthface``, from the session's ``toy_rec_release``) and a target folder of random crops under a
non-default list name, with no analysis pairs, as real data is; and a tiny identity network trained on it.
Import them into a test module (``from stage1_toy import toy_stage1_release, toy_identity``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.core.config import apply_overrides

TINY_MODEL = {"model.image_size": 16, "model.dim": 8, "model.d_scales": 2, "model.d_layers": 2,
              "model.adain_scale": "one_plus_gamma", "model.mlp_dim": 32, "model.latent_dim": 16}
TARGET_LIST = "target_list_wf_toy.txt"


@pytest.fixture(scope="module")
def toy_stage1_release(toy_rec_release, tmp_path_factory) -> str:
    """48 source images (6 classes) and 30 darker 32 px target crops listed in ``target/target_list_wf_toy.txt``."""
    from harness.data.images import encode_jpeg

    root = tmp_path_factory.mktemp("toy_stage1")
    os.symlink(os.path.join(toy_rec_release, "faces_synthface"), root / "faces_synthface")
    crops = root / "target" / "crops"
    crops.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"0--Parade_toy_{i:04d}_0_900.jpg" for i in range(30)]
    for n in names:
        (crops / n).write_bytes(encode_jpeg(np.clip(rng.normal(60, 30, (32, 32, 3)), 0, 255).astype(np.uint8)))
    (root / "target" / TARGET_LIST).write_text("".join(n + "\n" for n in names))
    return str(root)


@pytest.fixture(scope="module")
def toy_identity(toy_rec_release, tmp_path_factory) -> str:
    """A tiny source_only FR model (stage 1's frozen identity network), one epoch on the toy RecordIO."""
    from harness.core.config import RunConfig
    from harness.engine.train import train

    path = str(tmp_path_factory.mktemp("toy_idnet") / "source_only.pt")
    cfg = apply_overrides(RunConfig(), {"data.release": toy_rec_release, "data.input_size": 32,
                                        "model.widths": "8,16,16,32", "model.embedding_size": 32,
                                        "optim.batch_size": 16, "optim.epochs": 1, "device": "cpu",
                                        "checkpoint_every": 0})
    train(cfg, checkpoint_path=path, progress=False)
    return path


def stage1_cfg(release: str, identity: str, out, **extra):
    from harness.stage1 import Stage1Config

    values = {"data.release": release, "data.target_list": TARGET_LIST, "data.pairs": "", "identity": identity,
              "out": str(out), "figures": str(out / "fig"), "sacred": "", "device": "cpu", "train.batch_size": 4,
              "train.iterations": 22, "train.lr": 5e-4, "log_every": 1, "checkpoint_every": 4,
              "analysis.figure_inputs": 2, "analysis.basis_inputs": 1, **TINY_MODEL, **extra}
    return apply_overrides(Stage1Config(), values)
