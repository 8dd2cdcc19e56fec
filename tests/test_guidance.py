"""Issue 20, the effect of guidance: ``python -m harness.guidance curves`` on a hand-made Sacred FileStorage run
store (summary numbers recomputed here with numpy), its one-line errors, ``faces`` on a tiny trained
``cfsm_guided`` model's weight snapshots, and the trainer's ``snapshot_every`` (weights at several points of
training) leaving training bit-identical."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.config import RunConfig, apply_overrides
from harness.engine.train import CHECKPOINT_FORMAT, TrainingStopped, snapshot_path, train
from harness.guidance import main

pytestmark = pytest.mark.usefixtures("one_thread")

NORMS = [f"{c}_norm.{s}" for c in ("o0", "oadv") for s in ("mean", "std", "min", "max", "q10", "q50", "q90")]
PROBES = ["probe_loss_o0", "probe_loss_adv", "probe_l1_o0", "probe_l1_adv"]
STEPS = [0, 50, 100, 150]


def _write_run(
    store, run_id, method, seed, values: dict[str, dict[int, float]], status="COMPLETED", train: bool = True
):
    d = store / str(run_id)
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"status": status, "start_time": "2026-01-01T00:00:00"}))
    (d / "config.json").write_text(
        json.dumps({"method": method, "seed": seed, "train": train, "data": {"release": "datasets/synthface/tiny"}})
    )
    metrics = {
        name: {"steps": list(series), "values": list(series.values()), "timestamps": ["t"] * len(series)}
        for name, series in values.items()
    }
    (d / "metrics.json").write_text(json.dumps(metrics))


def _values(seed: int) -> dict[str, dict[int, float]]:
    """Random guidance scalars at STEPS, plus a probe logged at one extra step only (not a monitor step of every
    quantity) and the ordinary training loss."""
    rng = np.random.default_rng(seed)
    out = {f"train.cfsm.{q}": {s: float(rng.uniform(0.5, 5.0)) for s in STEPS} for q in NORMS + PROBES}
    out["train.cfsm.probe_loss_o0"][175] = 99.0
    out["train.loss"] = {s: float(rng.uniform(1, 2)) for s in range(0, 200, 25)}
    return out


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "runs"
    truth = {}
    for run_id, seed in ((1, 0), (10, 2), (3, 1)):  # run 10 after run 3: ids are numbers
        truth[seed] = _values(seed + 10)
        _write_run(root, run_id, "cfsm_guided", seed, truth[seed])
    _write_run(root, 4, "source_only", 0, {"train.loss": {0: 1.0}})
    _write_run(root, 11, "cfsm_guided", 0, {"train.loss": {0: 1.0}}, status="FAILED")  # killed before step 0
    _write_run(root, 12, "cfsm_guided", 1, {}, train=False)  # the pipeline's evaluate stage: no training scalar
    (root / "_sources").mkdir()
    return root, truth


def test_curves_summary_and_figure(store, tmp_path, capsys):
    root, truth = store
    out = tmp_path / "fig"
    assert main(["curves", "--runs", str(root), "--out", str(out)]) == 0
    png = (out / "guidance_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out / "guidance_curves.png").size[0] > 600
    summary = json.loads((out / "guidance_curves.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1, 2] and [r["run"] for r in summary["runs"]] == ["1", "3", "10"]
    assert summary["skipped"] == [
        {"run": "11", "seed": 0, "status": "FAILED", "reason": "status FAILED"},
        {"run": "12", "seed": 1, "status": "COMPLETED", "reason": "evaluation only (train=false)"},
    ]
    err = capsys.readouterr().err
    assert "skipped run 11 (seed 0, status FAILED; --any-status reads it)" in err
    assert "skipped run 12 (seed 1, evaluation only (train=false))" in err
    per_means, per_less, per_harder = [], [], []
    for run in summary["runs"]:
        t = {k.removeprefix("train.cfsm."): v for k, v in truth[run["seed"]].items()}
        assert run["monitor_steps"] == len(STEPS)  # step 175 holds one quantity only
        arr = {q: np.array([t[q][s] for s in STEPS]) for q in NORMS + PROBES}
        means = {q: float(arr[q].mean()) for q in arr}
        less = float(np.mean(arr["probe_l1_adv"] < arr["probe_l1_o0"]))
        harder = float(np.mean(arr["probe_loss_adv"] > arr["probe_loss_o0"]))
        assert run["means"] == pytest.approx(means, rel=1e-12)
        assert run["less_degraded"] == pytest.approx(less) and run["harder"] == pytest.approx(harder)
        per_means.append(means), per_less.append(less), per_harder.append(harder)
    over = summary["over_seeds"]
    assert over["n_runs"] == 3 and over["seeds"] == [0, 1, 2]
    for q in NORMS + PROBES:
        assert over["means"][q] == pytest.approx(np.mean([m[q] for m in per_means]), rel=1e-12)
    assert over["less_degraded"] == pytest.approx(np.mean(per_less))
    assert over["harder"] == pytest.approx(np.mean(per_harder))
    # the shares are not all trivially 0 or 1 on these random values (so the comparison can fail)
    assert 0 < over["less_degraded"] < 1 and 0 < over["harder"] < 1


def test_curves_errors_are_one_line(store, tmp_path, capsys):
    root, _ = store
    assert main(["curves", "--runs", str(root), "--method", "adv_degrade", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(root) in err and "no run of method 'adv_degrade'" in err and "cfsm_guided" in err
    assert not (tmp_path / "o").exists()

    broken = _values(5)
    del broken["train.cfsm.probe_l1_adv"]
    _write_run(root, 7, "cfsm_guided", 3, broken)
    assert main(["curves", "--runs", str(root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert os.path.join(str(root), "7", "metrics.json") in err and "train.cfsm.probe_l1_adv" in err
    assert not (tmp_path / "o").exists()

    # --any-status also reads the failed run, which logged no guidance scalar
    (root / "7" / "run.json").write_text(json.dumps({"status": "FAILED"}))
    assert main(["curves", "--runs", str(root), "--out", str(tmp_path / "o"), "--any-status"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and os.path.join(str(root), "11", "metrics.json:train.cfsm.o0_norm.mean") in err

    assert main(["curves", "--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run store folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ snapshots and faces
def _cfg(release: str, generator: str, **extra) -> RunConfig:
    """6 steps of cfsm_guided on the 48-image toy release (batch 16: 3 steps per epoch)."""
    return apply_overrides(
        RunConfig(),
        {
            "method": "cfsm_guided",
            "data.release": release,
            "data.input_size": "32",
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "optim.batch_size": "16",
            "optim.epochs": "2",
            "device": "cpu",
            "threads": "1",
            "checkpoint_every": "0",
            "hparams.monitor_every": "0",
            "hparams.generator": generator,
            "hparams.generator_size": "16",
            "hparams.latent_dim": "16",
            **extra,
        },
    )


@pytest.fixture(scope="module")
def trained(toy_rec_release, generator_path, tmp_path_factory):
    """The same 6-step training with snapshot_every=2 (checkpoint + two snapshots) and without."""
    folder = tmp_path_factory.mktemp("snap")
    ckpt = str(folder / "fr.pt")
    with_snaps = train(_cfg(toy_rec_release, generator_path, snapshot_every="2"), checkpoint_path=ckpt, progress=False)
    plain = train(_cfg(toy_rec_release, generator_path), checkpoint_path=str(folder / "plain.pt"), progress=False)
    return ckpt, with_snaps, plain


def test_snapshots_leave_training_bit_identical(trained):
    ckpt, snaps, plain = trained
    for part in ("backbone", "head"):
        a, b = getattr(snaps, part).state_dict(), getattr(plain, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert snaps.final_loss == plain.final_loss
    final = torch.load(ckpt, weights_only=True)
    files = [snapshot_path(ckpt, n) for n in (2, 4)]
    assert files == [ckpt[:-3] + ".step2.pt", ckpt[:-3] + ".step4.pt"]
    assert snaps.info["snapshot_every"] == 2 and snaps.info["snapshots"] == files
    assert not os.path.exists(snapshot_path(ckpt, 6)) and "snapshots" not in plain.info
    assert final["step"] == 6 and "head" not in final
    for n, path in zip((2, 4), files):
        s = torch.load(path, weights_only=True)
        assert s["format"] == CHECKPOINT_FORMAT and s["step"] == n and s["total_steps"] == 6
        assert set(s) == set(final) | {"head"}  # the final checkpoint's format, plus the margin head
        assert s["config"] == final["config"] and s["backbone"].keys() == final["backbone"].keys()
        assert not all(torch.equal(s["backbone"][k], final["backbone"][k]) for k in s["backbone"])  # earlier weights
        assert s["head"].keys() == snaps.head.state_dict().keys()


def test_snapshot_every_is_validated():
    with pytest.raises(ValueError, match=r"config snapshot_every=-1: expected >= 0"):
        apply_overrides(RunConfig(), {"snapshot_every": "-1"})


def test_faces_random_and_guided(trained, toy_rec_release, generator_path, tmp_path, capsys):
    from harness.engine.guidance import face_rows

    ckpt, _, _ = trained
    snaps = [snapshot_path(ckpt, 2), snapshot_path(ckpt, 4)]
    out = tmp_path / "faces"
    argv = ["faces", "--generator", generator_path, "--release", toy_rec_release, "--out", str(out), "--faces", "5"]
    assert main(argv + sum((["--checkpoint", p] for p in snaps), [])) == 0
    img = Image.open(out / "guidance_faces.png")
    rows, cols, tile = 2 + len(snaps), 5, 2 * 32 + 2  # tiles 32 px upscaled x2, 2 px gaps
    assert img.size[1] == 14 + rows * tile + 2
    assert img.size[0] > cols * tile + 2

    grid, labels, idx = face_rows(generator_path, snaps, toy_rec_release, faces=5, seed=0)
    assert grid.shape == (rows, cols, 32, 32, 3) and grid.dtype == np.uint8
    assert idx == [0, 12, 24, 35, 47]  # evenly spaced over the 48 images
    assert labels[0] == "source" and "step 2/6" in labels[2] and "step 4/6" in labels[3]
    assert not np.array_equal(grid[2], grid[1]) and not np.array_equal(grid[3], grid[1])  # guided != random
    assert not np.array_equal(grid[1], grid[0])  # the synthesis changed the faces
    for row in (1, 2, 3):  # each synthesised row's label: its mean |G(x, o) - x| in [-1, 1] units (uint8 here)
        shown = float(labels[row].rsplit("|G-x| ", 1)[1])
        assert shown == pytest.approx(np.abs(grid[row] / 127.5 - grid[0] / 127.5).mean(), abs=0.01)
    again, _, _ = face_rows(generator_path, snaps, toy_rec_release, faces=5, seed=0)
    assert np.array_equal(grid, again)  # fixed faces and o0: the same figure
    other, _, _ = face_rows(generator_path, snaps, toy_rec_release, faces=5, seed=1)
    assert np.array_equal(other[0], grid[0]) and not np.array_equal(other[1], grid[1])

    # the final checkpoint holds no margin head: one line naming the file and the key
    assert main(argv + ["--checkpoint", ckpt]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and f"{ckpt}:head: missing" in err


def test_a_resumed_run_lists_the_snapshots_written_before_the_kill(trained, toy_rec_release, generator_path, tmp_path):
    _, _, plain = trained
    ckpt = str(tmp_path / "fr.pt")
    cfg = _cfg(toy_rec_release, generator_path, snapshot_every="2", checkpoint_every="2")
    with pytest.raises(TrainingStopped):
        train(cfg, checkpoint_path=ckpt, progress=False, stop_after=3)
    assert os.path.isfile(snapshot_path(ckpt, 2)) and not os.path.exists(snapshot_path(ckpt, 4))
    resumed = train(cfg, checkpoint_path=ckpt, progress=False)
    assert resumed.info["resumed_from"] == 2
    assert resumed.info["snapshots"] == [snapshot_path(ckpt, 2), snapshot_path(ckpt, 4)]
    a, b = resumed.backbone.state_dict(), plain.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # kill, resume and snapshots: still the plain run's weights
