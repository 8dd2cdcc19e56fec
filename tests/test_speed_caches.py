"""The speed levers that must not change a number: the decoded-image cache of the training data
(``data.decode_cache``) and the evaluation's crop cache (``data.crop_cache``) give the model the same tensors, bit
for bit, as decoding every time; the training step's phase timing changes nothing it times."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from harness.core.config import RunConfig, apply_overrides
from harness.data.loaders import SourceData, TargetData

pytestmark = pytest.mark.usefixtures("one_thread")


def _source(release: str, cache: str, seed: int = 0) -> SourceData:
    return SourceData(os.path.join(release, "faces_synthface"), 32, 8, seed, True, True, decode_cache=cache)


def test_decoded_source_cache_gives_the_same_batches(toy_rec_release, tmp_path):
    cache = str(tmp_path / "decoded")
    plain, written, read = (_source(toy_rec_release, c) for c in ("", cache, cache))
    assert [s.decode_cache["status"] for s in (plain, written, read)] == ["off", "written", "hit"]
    assert len([f for f in os.listdir(cache) if f.endswith(".npy")]) == 1
    assert plain.images.dtype == read.images.dtype == torch.uint8
    assert torch.equal(plain.images, written.images) and torch.equal(plain.images, read.images)
    for _ in range(7):  # across an epoch boundary (48 images, batch 8): same indices, flips and pixels
        (xa, ya), (xb, yb) = plain.next_batch(), read.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_decode_cache_key_follows_the_input_size_and_a_damaged_file_is_rewritten(toy_rec_release, tmp_path, capsys):
    cache = str(tmp_path / "decoded")
    a = _source(toy_rec_release, cache)
    b = SourceData(os.path.join(toy_rec_release, "faces_synthface"), 16, 8, 0, True, True, decode_cache=cache)
    assert b.decode_cache["status"] == "written" and b.images.shape[-1] == 16  # another size: another file
    path = os.path.join(cache, a.decode_cache["file"])
    with open(path, "wb") as f:
        f.write(b"not an npy file")
    again = _source(toy_rec_release, cache)
    assert again.decode_cache["status"] == "written" and "unreadable decoded-image cache" in capsys.readouterr().err
    assert torch.equal(again.images, a.images)
    assert _source(toy_rec_release, cache).decode_cache["status"] == "hit"


def test_decoded_target_cache_gives_the_same_crops(toy_rec_release, tmp_path):
    from harness.data.images import encode_jpeg

    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = [f"c{i}.jpg" for i in range(12)]
    for n in names:
        (folder / n).write_bytes(encode_jpeg(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
    (tmp_path / "list.txt").write_text("".join(n + "\n" for n in names))
    cache = str(tmp_path / "decoded")

    def target(c):
        return TargetData(str(folder), str(tmp_path / "list.txt"), 16, 4, 0, decode_cache=c)

    plain, written, read = target(""), target(cache), target(cache)
    assert (written.decode_cache["status"], read.decode_cache["status"]) == ("written", "hit")
    assert torch.equal(plain.images, read.images) and torch.equal(plain.images, written.images)
    (folder / names[3]).write_bytes(encode_jpeg(np.zeros((24, 24, 3), np.uint8)))  # a changed crop: a new key
    changed = target(cache)
    assert changed.decode_cache["status"] == "written" and not torch.equal(changed.images, plain.images)


class Recorder(torch.nn.Module):
    """A fixed small model that keeps every input batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.model(x)


@pytest.fixture(scope="module")
def tiny_model(tiny_release):
    from harness.models.build import build_model

    cfg = apply_overrides(
        RunConfig(), {"data.release": tiny_release, "model.widths": "8,8,16,16", "model.embedding_size": 16}
    )
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, 24)
    return cfg, backbone


def _evaluate(cfg, backbone, name):
    from harness.eval.registry import get_benchmark

    model = Recorder(backbone)
    found = get_benchmark(name).evaluate(cfg, model, "cpu", True)
    return model.seen, found


@pytest.mark.parametrize("name", ["IJBB", "IJBS", "TinyFace"])
def test_crop_cache_feeds_the_model_the_same_inputs(tiny_model, tmp_path, name):
    cfg, backbone = tiny_model
    off, cold_cfg = cfg, apply_overrides(cfg, {"data.crop_cache": str(tmp_path / "crops")})
    seen_off, rows_off = _evaluate(off, backbone, name)
    seen_cold, rows_cold = _evaluate(cold_cfg, backbone, name)
    seen_warm, rows_warm = _evaluate(cold_cfg, backbone, name)
    assert len(seen_off) == len(seen_cold) == len(seen_warm) > 0
    for a, b, c in zip(seen_off, seen_cold, seen_warm):
        assert a.dtype == torch.float32 and torch.equal(a, b) and torch.equal(a, c)
    assert [r["crop_cache"] for r, _ in rows_off] == ["off"] * len(rows_off)
    assert {p for r, _ in rows_cold for p in r["crop_cache"]["passes"]} == {"written"}
    assert {p for r, _ in rows_warm for p in r["crop_cache"]["passes"]} == {"hit"}
    for (ra, ia), (rc, ic) in zip(rows_off, rows_warm):
        drop = ("seconds", "crop_cache")
        assert {k: v for k, v in ra.items() if k not in drop} == {k: v for k, v in rc.items() if k not in drop}
        assert ia.keys() == ic.keys()
        for k in ia:
            a, c = np.asarray(ia[k]), np.asarray(ic[k])
            assert np.array_equal(a, c, equal_nan=a.dtype.kind == "f"), k


def test_crop_cache_key_follows_the_alignment_size(tiny_model, tmp_path):
    cfg, backbone = tiny_model
    cached = apply_overrides(cfg, {"data.crop_cache": str(tmp_path / "crops")})
    _evaluate(cached, backbone, "IJBB")
    from harness.models.build import build_model

    other = apply_overrides(cached, {"data.input_size": 32})
    torch.manual_seed(0)
    seen, rows = _evaluate(other, build_model(other, 24)[0], "IJBB")  # a model for 32 px crops
    assert rows[0][0]["crop_cache"]["passes"] == ["written"] and seen[0].shape[-1] == 32


def test_training_with_the_decode_cache_ends_with_the_same_weights(toy_rec_release, tmp_path):
    """Off, cache written, cache read: three trainings of the same seed end bit-identical, and each records what the
    cache did; with ``phase_seconds`` set, the step's phases are timed (and nothing else changes)."""
    from harness.engine.train import train

    cfg = apply_overrides(
        RunConfig(),
        {
            "data.release": toy_rec_release,
            "data.input_size": 32,
            "model.widths": "8,8,16,16",
            "model.embedding_size": 16,
            "optim.batch_size": 8,
            "optim.epochs": 0.5,
            "device": "cpu",
            "checkpoint_every": 0,
        },
    )
    cached = apply_overrides(cfg, {"data.decode_cache": str(tmp_path / "decoded")})
    runs = [train(c, progress=False) for c in (cfg, cached, cached)]
    assert [r.info["decode_cache"]["source"]["status"] for r in runs] == ["off", "written", "hit"]
    ref = runs[0].backbone.state_dict()
    for r in runs[1:]:
        assert all(torch.equal(ref[k], v) for k, v in r.backbone.state_dict().items())


def test_train_step_phase_timing_changes_nothing(toy_rec_release):
    import copy

    from harness.data.loaders import to_model_input
    from harness.engine.train import TrainStep, build_optimizer, build_scaler
    from harness.models.build import build_model
    from methods import Batch, FRModel, build_method

    cfg = apply_overrides(RunConfig(), {"data.input_size": 32, "model.widths": "8,8,16,16", "model.embedding_size": 16})
    torch.manual_seed(0)
    backbone, head = build_model(cfg, 6)
    x, y = _source(toy_rec_release, "").next_batch()
    states = []
    for timed in (False, True):
        b, h = copy.deepcopy(backbone), copy.deepcopy(head)
        method = build_method("source_only", 16, 6)
        opt = build_optimizer(cfg.optim, b, h, method)
        scaler = build_scaler(cfg.optim, torch.device("cpu"), False)
        step = TrainStep(FRModel(backbone=b, raw=b, head=h), method, opt, scaler, cfg.optim)
        if timed:
            step.phase_seconds = {}
        for i in range(2):
            step(Batch(x=to_model_input(x), y=y, step=i))
        states.append(b.state_dict())
        if timed:
            assert set(step.phase_seconds) == {"augment", "loss", "backward", "optimizer"}
            assert all(v >= 0 for v in step.phase_seconds.values())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
