"""Fixtures for stage-1 tests on non-SynthFace data (not a test module): a release holding only a RecordIO source
(``faces_synthface``, from the session's ``toy_rec_release``) and a target folder of random crops under a
non-default list name, with no analysis pairs, as real data is; and a tiny identity network trained on it.
Import them into a test module (``from stage1_toy import toy_stage1_release, toy_identity``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.core.config import apply_overrides

TINY_MODEL = {
    "model.image_size": 16,
    "model.dim": 8,
    "model.d_scales": 2,
    "model.d_layers": 2,
    "model.adain_scale": "one_plus_gamma",
    "model.mlp_dim": 32,
    "model.latent_dim": 16,
}
TARGET_LIST = "target_list_wf_toy.txt"


def toy_release_with_target(rec_release: str, root, crops: dict, list_name: str = "target_list.txt") -> str:
    """``root`` made a release: the toy RecordIO of ``rec_release`` linked in as ``faces_synthface`` and ``crops``
    (``{name: HxWx3 uint8}``) written as JPEG target crops listed, in order, in ``target/<list_name>``."""
    from harness.data.images import encode_jpeg

    os.symlink(os.path.join(rec_release, "faces_synthface"), os.path.join(root, "faces_synthface"))
    folder = os.path.join(root, "target", "crops")
    os.makedirs(folder)
    for name, img in crops.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(encode_jpeg(img))
    with open(os.path.join(root, "target", list_name), "w") as f:
        f.write("".join(n + "\n" for n in crops))
    return str(root)


@pytest.fixture(scope="module")
def toy_stage1_release(toy_rec_release, tmp_path_factory) -> str:
    """48 source images (6 classes) and 30 darker 32 px target crops listed in ``target/target_list_wf_toy.txt``."""
    rng = np.random.default_rng(3)
    crops = {
        f"0--Parade_toy_{i:04d}_0_900.jpg": np.clip(rng.normal(60, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        for i in range(30)
    }
    return toy_release_with_target(toy_rec_release, tmp_path_factory.mktemp("toy_stage1"), crops, TARGET_LIST)


@pytest.fixture(scope="module")
def toy_identity(toy_rec_release, tmp_path_factory) -> str:
    """A tiny source_only FR model (stage 1's frozen identity network), one epoch on the toy RecordIO."""
    from harness.core.config import RunConfig
    from harness.engine.train import train

    path = str(tmp_path_factory.mktemp("toy_idnet") / "source_only.pt")
    cfg = apply_overrides(
        RunConfig(),
        {
            "data.release": toy_rec_release,
            "data.input_size": 32,
            "model.widths": "8,16,16,32",
            "model.embedding_size": 32,
            "optim.batch_size": 16,
            "optim.epochs": 1,
            "device": "cpu",
            "checkpoint_every": 0,
        },
    )
    train(cfg, checkpoint_path=path, progress=False)
    return path


def stage1_cfg(release: str, identity: str, out, **extra):
    from harness.cfsm.train import Stage1Config

    values = {
        "data.release": release,
        "data.target_list": TARGET_LIST,
        "data.pairs": "",
        "identity": identity,
        "out": str(out),
        "figures": str(out / "fig"),
        "sacred": "",
        "device": "cpu",
        "train.batch_size": 4,
        "train.iterations": 22,
        "train.lr": 5e-4,
        "log_every": 1,
        "checkpoint_every": 4,
        "analysis.figure_inputs": 2,
        "analysis.basis_inputs": 1,
        **TINY_MODEL,
        **extra,
    }
    return apply_overrides(Stage1Config(), values)
