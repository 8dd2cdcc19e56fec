"""Where the default pipeline's time goes: one table (stage, component, seconds, share) for the data, a training
run of each method and the evaluation of one model on every benchmark, on a real release.

- ``data``: decoding the source RecordIO into the trainer's uint8 tensor (:class:`harness.data.loaders.SourceData`)
  and the unlabelled target crops (:class:`harness.data.loaders.TargetData`), once from the JPEGs and once from the
  decoded-image cache (``data.decode_cache``; the first read writes it, so both are timed).
- ``train/<method>``: ``--steps`` steps of the trainer's own step (:class:`harness.engine.train.TrainStep`, whose
  ``phase_seconds`` splits it into ``augment``, ``loss`` = the method's forward, ``backward`` and ``optimizer`` =
  clipping and the optimiser step) after one untimed step, on the release's real batches (``data`` = the sampler's
  batch, flip, the uint8 -> float conversion and the target batch). Every row is scaled to the run's full step count
  (``optim.epochs`` x steps per epoch), so a method's total is what its training loop costs in the pipeline.
- ``eval/<benchmark>``: one model (``--checkpoint``, or the default model at its random initialisation: the cost
  does not depend on the weights) through the registry's evaluator as ``harness.run`` calls it, split into
  ``model`` (the forward passes, timed around the model), ``crops`` (reading, decoding and aligning the crops and
  the uint8 -> float conversion: the rest of the feature loop) and ``scoring`` (everything after the last forward:
  pooling, scores, ROC / ranks, items). Run once with the crop cache off and once warm (``data.crop_cache``).

Every knob comes from ``params.yaml``'s ``run`` section and ``key=value`` arguments, as for ``harness.run``
(``amp=on`` times bfloat16 autocast). The machine is shared: give ``uptime`` with the numbers.

    python benchmarks/pipeline_profile.py --release datasets/synthface/default
    python benchmarks/pipeline_profile.py --release datasets/synthface/default --methods source_only --steps 5 amp=on
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.core.config import RunConfig, apply_overrides, load_params
from harness.core.runtime import tune_malloc


class Row:
    def __init__(self, stage: str, component: str, seconds: float, note: str = ""):
        self.stage, self.component, self.seconds, self.note = stage, component, seconds, note


def print_table(rows: list[Row], out=sys.stdout) -> None:
    """``stage | component | seconds | share``; the share is of the stage's total (its ``total`` row)."""
    totals = {r.stage: r.seconds for r in rows if r.component == "total"}
    print(f"{'stage':28s} {'component':22s} {'seconds':>9s} {'share':>6s}  note", file=out)
    for r in rows:
        total = totals.get(r.stage)
        share = f"{100 * r.seconds / total:5.1f}%" if total and r.component != "total" else ""
        print(f"{r.stage:28s} {r.component:22s} {r.seconds:9.2f} {share:>6s}  {r.note}", file=out)


# ---------------------------------------------------------------------------------------------------- data
def profile_data(cfg: RunConfig, cache_dir: str) -> list[Row]:
    from harness.data.loaders import SourceData, TargetData

    rec = os.path.join(cfg.data.release, cfg.data.rec)
    troot = os.path.join(cfg.data.release, cfg.data.target)
    rows = []
    for label, cache in (("jpeg decode", ""), ("cache write", cache_dir), ("cache read", cache_dir)):
        t0 = time.perf_counter()
        src = SourceData(rec, cfg.data.input_size, cfg.optim.batch_size, 0, True, True, decode_cache=cache)
        t1 = time.perf_counter()
        TargetData(
            os.path.join(troot, "crops"),
            os.path.join(troot, cfg.data.target_list),
            cfg.data.input_size,
            cfg.optim.batch_size,
            0,
            decode_cache=cache,
        )
        t2 = time.perf_counter()
        rows.append(Row("data", f"source {label}", t1 - t0, f"{len(src)} images"))
        rows.append(Row("data", f"target {label}", t2 - t1))
    rows.append(Row("data", "total", sum(r.seconds for r in rows[:2]), "uncached (source + target decode)"))
    return rows


# ---------------------------------------------------------------------------------------------------- train
def profile_train(cfg: RunConfig, methods: list[str], steps: int) -> list[Row]:
    from harness.data.loaders import SourceData, TargetData, to_model_input
    from harness.engine.train import (
        TrainStep,
        build_optimizer,
        build_scaler,
        poly_lr,
        set_lr,
    )
    from harness.models.build import build_model
    from methods import Batch, FRModel, build_method, get_method, resolve_hparams

    rows = []
    rec = os.path.join(cfg.data.release, cfg.data.rec)
    troot = os.path.join(cfg.data.release, cfg.data.target)
    cache = cfg.data.decode_cache
    source = SourceData(rec, cfg.data.input_size, cfg.optim.batch_size, 0, cfg.data.flip, True, decode_cache=cache)
    target = TargetData(
        os.path.join(troot, "crops"),
        os.path.join(troot, cfg.data.target_list),
        cfg.data.input_size,
        cfg.optim.batch_size,
        0,
        decode_cache=cache,
    )
    total_steps = max(1, round(cfg.optim.epochs * source.steps_per_epoch))
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    amp = cfg.amp == "on"
    for name in methods:
        from harness.core.config import with_method_hparams

        mcfg = with_method_hparams(
            apply_overrides(cfg, {"method": name}), "params.yaml", lambda m: get_method(m).hparams()
        )
        get_method(name).preflight(resolve_hparams(name, mcfg.hparams_seed, mcfg.hparams))
        torch.manual_seed(0)
        backbone, head = build_model(mcfg, source.num_classes, amp=amp)
        method = build_method(name, mcfg.model.embedding_size, source.num_classes, mcfg.hparams_seed, mcfg.hparams)
        method.total_steps = total_steps
        backbone.to(memory_format=fmt)
        optimizer = build_optimizer(mcfg.optim, backbone, head, method)
        step_fn = TrainStep(
            FRModel(backbone=backbone, raw=backbone, head=head),
            method,
            optimizer,
            build_scaler(mcfg.optim, torch.device("cpu"), amp),
            mcfg.optim,
        )
        backbone.train(), head.train(), method.train()
        data_s, wall = [], []
        warm = total_steps // 3  # past warm-up: the learning rate of the middle of the run
        for i in range(steps + 1):
            if i == 1:
                step_fn.phase_seconds = {}
            set_lr(optimizer, poly_lr(warm + i, mcfg.optim.lr, 0, total_steps, mcfg.optim.poly_power))
            t0 = time.perf_counter()
            x, y = source.next_batch()
            x = to_model_input(x, mcfg.data.channel_order).contiguous(memory_format=fmt)
            batch = Batch(x=x, y=y, step=warm + i)
            if method.uses_target:
                batch.xt = to_model_input(target.next_batch(), mcfg.data.channel_order).contiguous(memory_format=fmt)
            t1 = time.perf_counter()
            shown, _ = step_fn(batch)
            shown.item()
            t2 = time.perf_counter()
            if i >= 1:
                data_s.append(t1 - t0)
                wall.append(t2 - t0)
        scale = total_steps / steps
        stage = f"train/{name}"
        phases = step_fn.phase_seconds
        parts = [Row(stage, "data", sum(data_s) * scale)] + [Row(stage, k, v * scale) for k, v in phases.items()]
        med = statistics.median(wall)
        rows += parts + [
            Row(
                stage,
                "total",
                sum(wall) * scale,
                f"{total_steps} steps, median step {med:.3f} s, {mcfg.optim.batch_size / med:.0f} img/s",
            )
        ]
    return rows


# ---------------------------------------------------------------------------------------------------- eval
class TimedModel(torch.nn.Module):
    """The model with its forward passes timed (seconds summed, end of the last one kept)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.seconds, self.last_end = 0.0, 0.0

    def forward(self, x):
        t0 = time.perf_counter()
        out = self.model(x)
        self.last_end = time.perf_counter()
        self.seconds += self.last_end - t0
        return out


def profile_eval(cfg: RunConfig, checkpoint: str, label: str) -> list[Row]:
    from harness.eval.registry import get_benchmark
    from harness.models.build import build_model

    state = None
    if checkpoint:
        from harness.core.atomic import load_torch

        state = load_torch(checkpoint, "checkpoint")
    from harness.data.recordio import FaceRecDataset

    rec = os.path.join(cfg.data.release, cfg.data.rec)
    num_classes = state["num_classes"] if state else FaceRecDataset(rec).num_classes
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, num_classes)
    if state:
        backbone.load_state_dict(state["backbone"])
    rows = []
    for name in cfg.eval.benchmarks:
        model = TimedModel(backbone)
        t0 = time.perf_counter()
        found = get_benchmark(name).evaluate(cfg, model, "cpu", True)
        t1 = time.perf_counter()
        stage = f"eval/{name} ({label})"
        feats = model.last_end - t0
        rows += [
            Row(stage, "crops", feats - model.seconds, "read + decode + align + to float"),
            Row(stage, "model", model.seconds, "forward passes (flip included)"),
            Row(stage, "scoring", t1 - model.last_end, ", ".join(r["benchmark"] for r, _ in found)),
            Row(stage, "total", t1 - t0),
        ]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", default="", help="the release (default: params.yaml run.data.release)")
    ap.add_argument(
        "--methods", default="all", help="comma-separated, 'all' (params.yaml methods + cfsm_methods) or 'none'"
    )
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per method (after one untimed)")
    ap.add_argument("--checkpoint", default="", help="the model evaluated (default: random initialisation)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: data, train, eval")
    ap.add_argument("overrides", nargs="*", help="key=value run config overrides (as harness.run)")
    args = ap.parse_args(argv)
    tune_malloc()
    over = load_params("params.yaml", "run") | dict(a.split("=", 1) for a in args.overrides)
    if args.release:
        over["data.release"] = args.release
    cfg = apply_overrides(RunConfig(), over)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    skip = set(filter(None, args.skip.split(",")))
    if args.methods == "all":
        from harness.core.config import read_yaml

        p = read_yaml("params.yaml")
        methods = list(p["methods"]) + list(p.get("cfsm_methods") or [])
    else:
        methods = [] if args.methods == "none" else args.methods.split(",")
    print(
        f"# release {cfg.data.release}; amp {cfg.amp}; threads {torch.get_num_threads()}; "
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}",
        flush=True,
    )
    rows: list[Row] = []
    tmp = tempfile.mkdtemp(prefix="cfsm_profile_")
    try:
        if "data" not in skip:
            rows += profile_data(cfg, os.path.join(tmp, "decoded"))
        if "train" not in skip and methods:
            rows += profile_train(cfg, methods, args.steps)
        if "eval" not in skip:
            for label, crop_cache in (
                ("crop cache off", ""),
                ("crop cache cold", os.path.join(tmp, "crops")),
                ("crop cache warm", os.path.join(tmp, "crops")),
            ):
                rows += profile_eval(apply_overrides(cfg, {"data.crop_cache": crop_cache}), args.checkpoint, label)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    train_total = sum(r.seconds for r in rows if r.stage.startswith("train/") and r.component == "total")
    if train_total:
        rows.append(Row("train (all methods)", "total", train_total, f"{len(methods)} methods, one seed"))
    print_table(rows)
    print(f"# load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
