"""Data-parallel training (gloo, 2 CPU processes) and exact resume of the one trainer (harness/engine/train.py).

* 2 ranks x batch 8 against one process x batch 16: BatchNorm normalises each rank's half with its own batch
  statistics (no SyncBatchNorm, as insightface and CFSM's released training), so the meaningful single-process
  reference is the same trainer whose backbone forwards the batch in two chunks ("ghost batches"); with it the
  weights after 6 steps agree up to floating-point reduction order (a tolerance), and a plain one-process run
  is shown to differ by far more than that tolerance (so the comparison can fail). The replicas (backbone, head,
  a DANN discriminator) stay bit-identical across ranks.
* Kill and resume on CPU at the same world size: bit-identical checkpoints and identical metrics.
* Resume at another world size (1 -> 2 and 2 -> 1, same global batch): completes, the step count continues, the
  head is whole.
* resume=auto with another config starts fresh and says why; resume=PATH fails in one line naming the fields.
* Only rank 0 writes (Sacred run, checkpoint, result, metrics, temporary folder); rank 1 writes nothing.

The two-process scenarios share one ``torch.multiprocessing.spawn`` (module fixture ``ddp``) to pay the process
start-up once.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys

import numpy as np
import pytest
import torch

import harness.engine.train as trainer
from harness.core.config import RunConfig, apply_overrides
from harness.engine.train import CHECKPOINT_FORMAT, TrainingStopped, train, train_state_path
from harness.run import compact_metrics, run
from harness.run import main as run_main

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6  # tiny release: 117 images; a global batch of 16 gives 7 steps per epoch


def _overrides(release: str, batch: int = 16, **extra) -> dict:
    """6 steps of a small IResNet at 32 px with a global batch of 16 (``batch`` per rank)."""
    spe = 117 // 16
    return {
        "data.release": release,
        "model.widths": "8,16,16,32",
        "model.embedding_size": "32",
        "data.input_size": "32",
        "optim.batch_size": str(batch),
        "optim.epochs": str(STEPS / spe),
        "optim.warmup_epochs": str(2 / spe),
        "device": "cpu",
        "threads": "1",
        "seed": "3",
        "log_every": "1",
        **extra,
    }


def _cfg(release: str, method: str = "source_only", batch: int = 16, **extra) -> RunConfig:
    small = {"hparams.disc_hidden": "32"} if method == "dann" else {}
    return apply_overrides(RunConfig(), _overrides(release, batch, method=method, **small, **extra))


def _states_equal(a, b, path="") -> list[str]:
    """Paths where two checkpoint trees differ (tensors by torch.equal, arrays by array_equal)."""
    if isinstance(a, torch.Tensor):
        return (
            []
            if isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            else [path]
        )
    if isinstance(a, np.ndarray):
        return [] if np.array_equal(a, b) else [path]
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _states_equal(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _states_equal(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and math.isnan(a):
        return [] if isinstance(b, float) and math.isnan(b) else [path]
    return [] if a == b else [path]


def _cfsm(generator_path: str) -> dict:
    return {
        "hparams.generator": generator_path,
        "hparams.generator_size": "16",
        "hparams.latent_dim": "16",
        "hparams.monitor_every": "2",
    }


# ----------------------------------------------------------------------------------------------- one process
def test_periodic_states_do_not_change_the_trajectory(tiny_release, tmp_path):
    plain = train(_cfg(tiny_release, "dann", checkpoint_every="0"), progress=False)
    ckpt = tmp_path / "m.pt"
    saved = train(_cfg(tiny_release, "dann", checkpoint_every="2"), checkpoint_path=str(ckpt), progress=False)
    for part in ("backbone", "head", "method"):
        assert not _states_equal(getattr(plain, part).state_dict(), getattr(saved, part).state_dict()), part
    assert plain.final_loss == saved.final_loss
    state = torch.load(ckpt, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == state["total_steps"] == STEPS
    assert {"backbone", "num_classes", "config", "train_info"} <= set(state)
    assert not {"head", "method", "optimizer", "rng", "source", "target"} & set(state), (
        "the final model is the weights only"
    )
    assert state["world_size"] == 1 and state["global_batch"] == 16 and state["train_info"]["global_batch"] == 16
    assert not os.path.exists(train_state_path(str(ckpt))), "the train state is removed once the run completes"


@pytest.mark.parametrize("method", ["dann", "cfsm_guided"])
def test_a_killed_run_resumes_bit_identically(tiny_release, tmp_path, generator_path, method, capsys):
    """Killed after step 3 with states every 2 steps: the resumed run redoes step 3 from the step-2 state and
    ends with the uninterrupted run's checkpoint, bit for bit, and the same metrics."""
    extra = {
        "checkpoint_every": "2",
        "eval.benchmarks": "IJBB,TinyFace",
        **(_cfsm(generator_path) if method == "cfsm_guided" else {}),
    }
    ref_ckpt, ckpt = tmp_path / "ref.pt", tmp_path / "killed.pt"
    ref = run(_cfg(tiny_release, method, checkpoint=str(ref_ckpt), **extra))

    cfg = _cfg(tiny_release, method, checkpoint=str(ckpt), **extra)
    with pytest.raises(TrainingStopped):
        train(cfg, checkpoint_path=str(ckpt), progress=False, stop_after=3)
    state_file = train_state_path(str(ckpt))
    assert torch.load(state_file, weights_only=True)["step"] == 2 and not ckpt.exists()
    resumed = run(cfg)
    assert f"resuming from {state_file} at step 2/{STEPS}" in capsys.readouterr().err
    assert resumed["train"]["resumed_from"] == 2

    a, b = torch.load(ref_ckpt, weights_only=True), torch.load(ckpt, weights_only=True)
    timing = ("seconds", "images_per_second", "resumed_from", "start")
    a_info, b_info = ({k: v for k, v in s.pop("train_info").items() if k not in timing} for s in (a, b))
    a["config"].pop("checkpoint"), b["config"].pop("checkpoint")
    assert a_info == b_info
    assert not _states_equal(a, b), _states_equal(a, b)
    ma, mb = compact_metrics(ref), compact_metrics(resumed)
    assert ma.pop("train")["final_loss"] == mb.pop("train")["final_loss"]
    assert ma == mb and ma["TinyFace"] and ma["IJB-B"]


def test_auto_resume_with_another_config_starts_fresh_and_says_why(tiny_release, tmp_path, capsys):
    ckpt = str(tmp_path / "m.pt")
    with pytest.raises(TrainingStopped):
        train(_cfg(tiny_release, checkpoint_every="2"), checkpoint_path=ckpt, progress=False, stop_after=2)
    state = train_state_path(ckpt)
    assert os.path.isfile(state)
    capsys.readouterr()
    with pytest.raises(TrainingStopped):  # log_every does not change the trajectory: resumed
        train(
            _cfg(tiny_release, checkpoint_every="2", log_every="7"), checkpoint_path=ckpt, progress=False, stop_after=3
        )
    assert "resuming from" in capsys.readouterr().err
    fresh = train(
        _cfg(tiny_release, checkpoint_every="0", **{"optim.lr": "0.05"}), checkpoint_path=ckpt, progress=False
    )
    err = capsys.readouterr().err
    assert fresh.resumed_from == 0 and fresh.info["resumed_from"] == 0
    assert f"ignoring {state} (saved with another config: optim.lr (saved 0.1, now 0.05)): starting fresh" in err
    r = train(_cfg(tiny_release, resume="none"), progress=False)
    assert r.resumed_from == 0


def test_resume_path_with_another_config_is_a_one_line_error(tiny_release, tmp_path, capsys):
    ckpt = str(tmp_path / "m.pt")
    with pytest.raises(TrainingStopped):
        train(_cfg(tiny_release, checkpoint_every="2"), checkpoint_path=ckpt, progress=False, stop_after=2)
    state = train_state_path(ckpt)
    with pytest.raises(ValueError, match=r"optim\.lr \(saved 0\.1, now 0\.05\), optim\.momentum"):
        train(_cfg(tiny_release, resume=state, **{"optim.lr": "0.05", "optim.momentum": "0.8"}), progress=False)
    empty = tmp_path / "params.yaml"
    empty.write_text("{}\n")
    args = [f"{k}={v}" for k, v in _overrides(tiny_release).items()]
    capsys.readouterr()
    assert (
        run_main(["--params", str(empty), *args, f"out={tmp_path / 'runs'}", f"resume={state}", "optim.lr=0.05"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        "\n" not in err and "optim.lr (saved 0.1, now 0.05)" in err and err.startswith(f"harness.run: resume={state}:")
    )
    assert not (tmp_path / "runs").exists(), "nothing starts"
    assert run_main(["--params", str(empty), *args, f"resume={tmp_path / 'nope.pt'}"]) == 2
    assert "no such train state file" in capsys.readouterr().err
    resumed = train(_cfg(tiny_release, resume=state), progress=False)  # a matching PATH is resumed from
    assert resumed.resumed_from == 2 and resumed.steps == STEPS


# ----------------------------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, base: str, release: str, generator: str) -> None:
    """One rank of the shared 2-process run; writes its observations under ``base/obs``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from harness.engine import distributed

    ctx = distributed.init_from_env("cpu", timeout=datetime.timedelta(seconds=120))
    assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world, "gloo")
    obs = os.path.join(base, "obs")

    def dump(name, result):
        torch.save(
            {
                "backbone": dict(result.backbone.named_parameters()),
                "head": dict(result.head.named_parameters()),
                "method": dict(result.method.named_parameters()),
                "info": result.info,
                "steps": result.steps,
                "final_loss": result.final_loss,
            },
            os.path.join(obs, f"{name}_rank{rank}.pt"),
        )

    # (a) source_only, 2 x 8 vs one process x 16 (compared in the parent)
    dump("source_only", train(_cfg(release, batch=8), progress=False))
    # (b) dann: backbone, head and discriminator replicas stay in sync; cfsm_guided: its inner FGSM pass goes
    # through the unwrapped backbone (fr.raw) and the replicas still stay in sync
    dump("dann", train(_cfg(release, "dann", batch=8), progress=False))
    dump("cfsm_guided", train(_cfg(release, "cfsm_guided", batch=8, **_cfsm(generator)), progress=False))
    # (c) resume at world size 2 from the world-1 state the parent saved (step 2)
    dump("resume_1to2", train(_cfg(release, batch=8), checkpoint_path=os.path.join(base, "w1", "m.pt"), progress=False))
    # (d) a world-2 run killed after step 3 (state at step 2), for the parent to resume at world size 1
    try:
        train(
            _cfg(release, batch=8, checkpoint_every="2"),
            checkpoint_path=os.path.join(base, "w2", "m.pt"),
            progress=False,
            stop_after=3,
        )
        raise AssertionError("stop_after did not stop")
    except TrainingStopped:
        pass
    # (e) the command line on both ranks, each pointed at its own folders: only rank 0 may write
    import tempfile

    tempfile.tempdir = os.path.join(base, f"tmp_rank{rank}")
    own = os.path.join(base, f"rank{rank}")
    args = [f"{k}={v}" for k, v in _overrides(release, batch=8).items()]
    code = run_main(
        [
            "--params",
            os.path.join(base, "params.yaml"),
            *args,
            f"out={own}/runs",
            f"checkpoint={own}/ck/m.pt",
            f"result={own}/result.json",
            f"metrics={own}/metrics.json",
            "checkpoint_every=2",
            "eval.benchmarks=TinyFace",
        ]
    )
    assert code == 0
    assert not torch.distributed.is_initialized(), "harness.run.main shuts the process group down"
    with open(os.path.join(obs, f"done_rank{rank}"), "w") as f:
        f.write("ok")


@pytest.fixture(scope="module")
def ddp(tiny_release, generator_path, tmp_path_factory):
    """Run the 2-process scenarios once; returns the base folder."""
    import torch.multiprocessing as mp

    base = str(tmp_path_factory.mktemp("ddp"))
    for d in ("obs", "tmp_rank0", "tmp_rank1"):
        os.makedirs(os.path.join(base, d))
    with open(os.path.join(base, "params.yaml"), "w") as f:
        f.write("{}\n")
    with pytest.raises(TrainingStopped):  # (c)'s world-1 state at step 2
        train(
            _cfg(tiny_release, checkpoint_every="2"),
            checkpoint_path=os.path.join(base, "w1", "m.pt"),
            progress=False,
            stop_after=3,
        )
    mp.spawn(_worker, args=(2, _free_port(), base, tiny_release, generator_path), nprocs=2, join=True)
    return base


def _load(base, name, rank):
    return torch.load(os.path.join(base, "obs", f"{name}_rank{rank}.pt"), weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].detach() - b[k].detach()).abs().max().item() for k in a)


def _ghost_build_model(chunks: int):
    original = trainer.build_model

    def build(cfg, num_classes, amp=False):
        backbone, head = original(cfg, num_classes, amp=amp)
        forward = backbone.forward
        backbone.forward = lambda x: torch.cat([forward(c) for c in x.chunk(chunks)])  # BatchNorm per chunk
        return backbone, head

    return build


def test_two_ranks_equal_one_process_with_per_rank_batchnorm(ddp, tiny_release, monkeypatch):
    """2 ranks x 8 == one process x 16 whose backbone sees the batch in 2 chunks (what per-rank BatchNorm is):
    same data, flips, schedule, averaged gradients, clipping and optimiser steps; only float reduction order differs.
    A plain one-process x 16 run (BatchNorm over all 16) differs by much more, so the tolerance is meaningful."""
    r0, r1 = _load(ddp, "source_only", 0), _load(ddp, "source_only", 1)
    for part in ("backbone", "head"):
        assert not _states_equal(r0[part], r1[part]), f"{part}: replicas diverged"
    assert r0["info"]["world_size"] == 2 and r0["info"]["global_batch"] == 16 and r0["info"]["batch_size_per_rank"] == 8
    assert r0["steps"] == STEPS

    plain = train(_cfg(tiny_release), progress=False)
    monkeypatch.setattr(trainer, "build_model", _ghost_build_model(2))
    ghost = train(_cfg(tiny_release), progress=False)
    ghost_p = {"backbone": dict(ghost.backbone.named_parameters()), "head": dict(ghost.head.named_parameters())}
    plain_p = {"backbone": dict(plain.backbone.named_parameters()), "head": dict(plain.head.named_parameters())}
    tol = 2e-5  # seen: 3e-7 (reduction order); the plain run differs by ~0.1
    for part in ("backbone", "head"):
        for k, v in r0[part].items():
            torch.testing.assert_close(v, ghost_p[part][k].detach(), rtol=tol, atol=tol, msg=f"{part}.{k}")
    assert abs(r0["final_loss"] - ghost.final_loss) < 1e-3
    assert _max_diff(r0["backbone"], plain_p["backbone"]) > 100 * tol, "the plain one-process run should differ"


@pytest.mark.parametrize("method", ["dann", "cfsm_guided"])
def test_replicated_head_and_method_modules_stay_in_sync(ddp, method):
    r0, r1 = _load(ddp, method, 0), _load(ddp, method, 1)
    assert bool(r0["method"]) == (method == "dann"), "the discriminator's parameters are dumped"
    assert r0["steps"] == STEPS and math.isfinite(r0["final_loss"])
    for part in ("backbone", "head", "method"):
        assert not _states_equal(r0[part], r1[part]), f"{part}: replicas diverged"


def test_resume_at_another_world_size(ddp, tiny_release):
    # world 1 (killed at step 3, state at 2) -> world 2
    r0 = _load(ddp, "resume_1to2", 0)
    assert r0["info"]["resumed_from"] == 2 and r0["info"]["resumed_world_size"] == 1 and r0["info"]["world_size"] == 2
    final = torch.load(os.path.join(ddp, "w1", "m.pt"), weights_only=True)
    assert final["step"] == STEPS and final["world_size"] == 2 and final["train_info"]["resumed_from"] == 2
    assert not os.path.exists(train_state_path(os.path.join(ddp, "w1", "m.pt")))
    # world 2 (killed at step 3, state at 2) -> world 1
    ckpt = os.path.join(ddp, "w2", "m.pt")
    saved = torch.load(train_state_path(ckpt), weights_only=True)
    assert saved["step"] == 2 and saved["world_size"] == 2 and len(saved["rng"]) == 2 and saved["epoch_samples"] == 32
    assert saved["head"]["weight"].shape == (saved["num_classes"], 32)
    resumed = train(_cfg(tiny_release, checkpoint_every="2"), checkpoint_path=ckpt, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == STEPS and resumed.info["resumed_world_size"] == 2
    assert torch.load(ckpt, weights_only=True)["step"] == STEPS


def test_only_rank_zero_writes(ddp):
    for rank in (0, 1):
        assert os.path.isfile(os.path.join(ddp, "obs", f"done_rank{rank}"))
    assert not os.path.exists(os.path.join(ddp, "rank1")), "rank 1 wrote files"
    assert os.listdir(os.path.join(ddp, "tmp_rank1")) == [], "rank 1 made a temporary folder"
    own = os.path.join(ddp, "rank0")
    runs = [d for d in os.listdir(os.path.join(own, "runs")) if d.isdigit()]
    assert len(runs) == 1
    with open(os.path.join(own, "runs", runs[0], "run.json")) as f:
        assert json.load(f)["status"] == "COMPLETED"
    with open(os.path.join(own, "runs", runs[0], "info.json")) as f:
        info = json.load(f)["train"]
    assert (
        info["world_size"] == 2
        and info["global_batch"] == 16
        and info["cpu_threads"] >= 1
        and info["images_per_second"] > 0
    )
    doc = json.loads(open(os.path.join(own, "result.json")).read())
    assert [r["benchmark"] for r in doc["results"]] == ["TinyFace"]
    assert os.path.isfile(os.path.join(own, "metrics.json")) and os.path.isfile(os.path.join(own, "ck", "m.pt"))
    assert not os.path.exists(os.path.join(own, "ck", "m.train_state.pt"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_amp_runs_the_backbone_trunk_under_autocast(tiny_release, tmp_path):
    """amp=on builds the IResNet with fp16=True (insightface's iresnet(fp16=True) in train_v2.py), so the trunk runs
    in half precision (bfloat16 on the CPU); the run info says so and training stays finite."""
    from harness.models.build import build_model

    cfg = _cfg(tiny_release, amp="on")
    backbone, _ = build_model(cfg, 10, amp=True)
    assert backbone.fp16 is True and build_model(cfg, 10)[0].fp16 is False
    seen = []
    backbone.layer1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", enabled=True):
        out = backbone(torch.randn(2, 3, 32, 32))
    assert seen == [torch.bfloat16] and out.shape == (2, 32)
    res = train(cfg, checkpoint_path=str(tmp_path / "amp.pt"), progress=False)
    assert res.info["amp_backbone_trunk"] is True and math.isfinite(res.final_loss)
