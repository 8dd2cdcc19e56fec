"""The timing scripts take the trainer's step: ``benchmarks/train_throughput.py``'s ``Stepper`` (which
``benchmarks/gpu_check.py`` and ``benchmarks/train_step_overhead.py`` reuse) and :func:`harness.engine.train.train` both
step through :class:`harness.engine.train.TrainStep`. From the same seed, on the same batches and learning rates, N
Stepper steps end with bit-identical weights to N trainer steps: with and without a method's own trained module
(DANN's discriminator) and target batch, with CFSM's guided synthesis (global random draws), both clipping
scopes, and AMP on the CPU (bfloat16 trunk). A Stepper built with the other clipping scope ends elsewhere, so the
comparison can fail."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.config import RunConfig, apply_overrides
from harness.data.loaders import SourceData, TargetData, to_model_input
from harness.engine.train import poly_lr, train
from harness.models.build import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stage1_toy import toy_release_with_target  # noqa: E402
from train_throughput import Stepper  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def release(toy_rec_release, tmp_path_factory) -> str:
    """The toy RecordIO (6 classes x 8 images, 32 px) plus 12 unlabelled target crops for the DA methods."""
    rng = np.random.default_rng(1)
    crops = {f"crop_{i:02d}.jpg": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(12)}
    return toy_release_with_target(toy_rec_release, tmp_path_factory.mktemp("step_release"), crops)


def _cfg(release: str, method: str, **extra) -> RunConfig:
    """4 steps (48 images, batch 8: 6 per epoch) of a small IResNet at 32 px, one warm-up step, clipping at 0.5 so
    that it acts."""
    return apply_overrides(
        RunConfig(),
        {
            "data.release": release,
            "method": method,
            "model.widths": "8,16,16,32",
            "model.embedding_size": "32",
            "data.input_size": "32",
            "optim.batch_size": "8",
            "optim.epochs": str(4 / 6),
            "optim.warmup_epochs": str(1 / 6),
            "optim.grad_clip": "0.5",
            "device": "cpu",
            "threads": "1",
            "seed": "5",
            "resume": "none",
            **extra,
        },
    )


def _replay(cfg: RunConfig, clip_scope: str | None = None) -> Stepper:
    """What :func:`harness.engine.train.train` does around its steps, with a benchmark Stepper taking them: the same
    seeds, model, data streams and learning-rate schedule (one process, no checkpoint)."""
    if clip_scope is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, grad_clip_scope=clip_scope))
    o = cfg.optim
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    amp = cfg.amp == "on"
    source = SourceData(
        os.path.join(cfg.data.release, cfg.data.rec),
        cfg.data.input_size,
        o.batch_size,
        cfg.seed,
        cfg.data.flip,
        cfg.data.cache,
    )
    backbone, head = build_model(cfg, source.num_classes, amp=amp)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(memory_format=fmt)
    total = max(1, int(round(o.epochs * source.steps_per_epoch)))
    warmup = int(round(o.warmup_epochs * source.steps_per_epoch))
    stepper = Stepper(cfg.method, cfg, backbone, head, source.num_classes, CPU, amp, cfg.hparams, total_steps=total)
    target = None
    if stepper.method.uses_target:
        troot = os.path.join(cfg.data.release, cfg.data.target)
        target = TargetData(
            os.path.join(troot, "crops"),
            os.path.join(troot, cfg.data.target_list),
            cfg.data.input_size,
            o.batch_size,
            cfg.seed,
        )
    for step in range(total):
        x, y = source.next_batch()
        xt = to_model_input(target.next_batch()).contiguous(memory_format=fmt) if target is not None else None
        stepper.step(
            to_model_input(x).contiguous(memory_format=fmt),
            y,
            xt,
            step,
            lr=poly_lr(step, o.lr, warmup, total, o.poly_power),
        )
    return stepper


def _differences(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    return [k for k in sa if not (sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]))]


CASES = {
    "source_only": ("source_only", {}),
    "source_only, amp on the CPU, clip all": ("source_only", {"amp": "on", "optim.grad_clip_scope": "all"}),
    "dann, clip backbone": ("dann", {"hparams.disc_hidden": "16"}),
    "dann, clip all": ("dann", {"hparams.disc_hidden": "16", "optim.grad_clip_scope": "all"}),
    "cfsm_guided": (
        "cfsm_guided",
        {"hparams.generator_size": "16", "hparams.latent_dim": "16", "hparams.monitor_every": "2"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_benchmark_stepper_takes_the_trainers_step(case, release, generator_path):
    method, extra = CASES[case]
    if method.startswith("cfsm_"):
        extra = {**extra, "hparams.generator": generator_path}
    cfg = _cfg(release, method, **extra)
    trained = train(cfg, progress=False)
    assert trained.steps == 4
    stepper = _replay(cfg)
    for name, a, b in (
        ("backbone", trained.backbone, stepper.backbone),
        ("head", trained.head, stepper.head),
        ("method", trained.method, stepper.method),
    ):
        assert _differences(a, b) == [], f"{case}: {name} differs"
    # the trainer moved: the comparison is between trained weights, not two copies of the initial ones
    torch.manual_seed(cfg.seed)
    initial, _ = build_model(cfg, trained.info["num_classes"], amp=cfg.amp == "on")
    assert _differences(initial, trained.backbone)


def test_a_stepper_with_the_other_clip_scope_ends_elsewhere(release):
    cfg = _cfg(release, "dann", **{"hparams.disc_hidden": "16"})
    trained = train(cfg, progress=False)
    stepper = _replay(cfg, clip_scope="all")
    assert _differences(trained.backbone, stepper.backbone)
