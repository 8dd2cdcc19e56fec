"""The one trainer, top to bottom (in the shape of insightface's ``arcface_torch/train_v2.py``).

Source data (an insightface RecordIO, or the records an index list names: ``data.index_list``) -> a method's
``augment`` and ``loss`` hooks -> SGD (or AdamW) with linear warm-up and polynomial decay (insightface
``PolyScheduler``), gradient-norm clipping, AMP -> one checkpoint. The recipe of CFSM's released FR training is SGD
lr 0.1, momentum 0.9, weight decay 5e-4, 2 warm-up epochs, poly power 2, clip 5
(``GuidedFaceRecognition/configs/arcface_ms1mv2_r50_ours.py``); every value is a config knob.

As released (``GuidedFaceRecognition/train.py``): the clipping norm covers the backbone's gradients only
(``optim.grad_clip_scope: backbone``; ``all`` adds the margin head and a method's modules), taken after the
GradScaler's ``unscale_``; AMP puts no autocast around the step: the backbone autocasts its own convolutional trunk
(float16 on CUDA, bfloat16 on CPU) and runs ``fc`` / ``features`` in float32, so a CFSM generator, the margin head
and a method's own modules stay float32; the CUDA GradScaler grows every ``optim.amp_growth_interval`` (100)
steps. Both scopes are recorded in the train info.

Progress: on a terminal, a tqdm bar; otherwise (DVC, logs) one plain line every ``log_every`` steps on stderr
(:class:`ProgressLine`: step, loss, lr, images/s, ETA).

Determinism: on CPU, the same seed gives the same weights (data order, flips, initialisation and the method's
randomness all come from generators seeded by the run seed).

**Data parallel** (``torchrun --nproc_per_node N -m harness.run key=value ...``; :mod:`harness.engine.distributed`).
The same loop on N processes (NCCL on GPUs, one per ``LOCAL_RANK``; gloo on CPU). ``optim.batch_size`` is per
process, as in insightface; the global batch is ``N x optim.batch_size`` and the step count and schedule follow
it (``steps_per_epoch = images // global batch``). Every rank draws the same seeded global permutation and flip
mask per step and keeps its contiguous slice (:class:`harness.data.loaders.SourceData`; target batches alike,
:class:`~harness.data.loaders.TargetData`), so one step's data over all ranks is exactly the one-process batch of the
global size. The backbone is wrapped in ``DistributedDataParallel`` (``FRModel.backbone``; ``FRModel.raw`` stays
unwrapped for methods' inner gradient probes); the margin head and a method's trainable modules stay replicated and
their gradients are averaged by one all-reduce after backward (insightface instead shards the head, PartialFC); every
module's buffers are broadcast from rank 0 at the start of each step. BatchNorm normalises with per-rank batch
statistics (no SyncBatchNorm, as in insightface and CFSM's released training), so N ranks x B equals one process x N*B
exactly in data and schedule but not in BatchNorm's batch statistics: the N-rank run equals a one-process run whose
BatchNorm sees the batch in N chunks ("ghost batches"), up to floating-point reduction order (tested). Method randomness
drawn from the global generators (CFSM's o0 and mixing permutations, degradation parameters) is per rank: rank 0 keeps
the run seed, rank r > 0 gets its own (:func:`harness.engine.distributed.rank_seed`). The logged loss is the mean over
ranks; a method's logged scalars are rank 0's. Rank 0 alone writes (checkpoints, train states, Sacred records, results)
and evaluates; one process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) is the single-process trainer, draw for draw and bit
for bit.

**Checkpoints and resume.** One format, ``STATE_FORMAT = "cfsm-train-state/1"``: a ``torch.save`` dict with
``format``; ``config`` (``RunConfig.to_dict()``) and ``key`` (:func:`trajectory_key`: what a resumed run must
match); ``num_classes``; ``step`` (optimiser steps done) and ``total_steps``; ``epoch`` and ``epoch_samples``
(global samples consumed in that epoch); ``world_size``, ``batch_size`` (per rank) and ``global_batch``;
``backbone`` (the unwrapped module's state dict), ``head`` (whole: it is replicated, never per rank), ``method``
(the method's state dict: a discriminator), ``optimizer``, ``scaler`` (AMP); ``source`` and ``target`` (sampler
positions: :meth:`SourceData.state_dict`, :meth:`TargetData.state_dict`); ``rng``, one entry per rank (torch CPU,
CUDA when on a GPU, numpy, python ``random``); ``running_loss`` (the smoothed loss that becomes ``final_loss``).
The RNG states are tensors and plain types, so every file loads with ``torch.load(weights_only=True)``
(:func:`harness.core.atomic.load_torch`); a file that pickles anything else is refused without running it.
The final checkpoint (``checkpoint=PATH``, ``CHECKPOINT_FORMAT = "cfsm-checkpoint/1"``) holds only what evaluation
and stage 1's ``IdentityNet`` read: ``backbone`` (the weights), ``config``, ``num_classes``, ``train_info`` and the
metadata ``step``, ``total_steps``, ``world_size``, ``global_batch``; no optimiser, sampler or RNG state, so the
model is stored once. (Checkpoints written before the split also hold the state keys; readers use the weights
keys only.) The resumable state is every ``checkpoint_every`` steps (default 1000; 0 = never; not after the last
step) written atomically (:func:`harness.core.atomic.save_torch_atomic`) to ``<checkpoint stem>.train_state.pt``
(:func:`train_state_path`), and deleted once the final checkpoint is written: a completed run has nothing left
to resume (rerunning it starts fresh and overwrites the checkpoint). With ``snapshot_every`` N > 0, rank 0 also
leaves the weights after every N optimiser steps (not after the last: that is the checkpoint) in the final
checkpoint's format plus the margin head's state dict (``head``, for probes of the FR loss such as
``python -m harness.guidance faces``) at ``<checkpoint stem>.step<N>.pt`` (:func:`snapshot_path`); writing them
reads state dicts only (no random draw), so training is unchanged (tested); the train info lists them
(``snapshots``). A state whose weights are not finite is
never written (the last good one stays) and never resumed from (``resume=auto`` sets it aside as
``<state>.nonfinite-<time>``; an unreadable one as ``<state>.unreadable-<time>``; both then start fresh). While
training, rank 0 holds the checkpoint path (``<checkpoint>.lock``, :class:`harness.core.runtime.PathLock`): a second
run on the same path fails at once naming the holder; the lock of a killed run is taken over.
``resume=auto`` (default) continues from that file when its ``key`` matches this run's (every knob except paths,
logging, evaluation, threads, device, ``data.cache`` and the checkpoint knobs; the method's resolved hyperparameters;
the *global* batch instead of the per-rank one), else starts fresh and says why on stderr; ``resume=PATH`` continues
from PATH and fails with a one-line error naming the differing fields; ``resume=none`` always starts fresh. (Saving,
reading and checking states: :mod:`harness.core.resume`, shared with stage 1.)

Exactness: on CPU, a run killed after any step and resumed at the same world size ends with bit-identical weights
and metrics (everything that determines the next step is in the state; tested). At another world size with the
same global batch, the run continues at the same sample of the same epoch with the same schedule, but is not
bit-identical: gradient reduction order, per-rank BatchNorm statistics and per-rank method randomness differ
(ranks the saved run did not have are seeded afresh). A different global batch is a different run (its schedule
differs) and is not resumed.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from harness.core.atomic import load_torch
from harness.core.config import OptimConfig, RunConfig, flatten
from harness.core.errors import require_dir
from harness.core.resume import (  # noqa: F401  (NonFiniteStateError, nonfinite_entries: this module's API too)
    NonFiniteStateError,
    nonfinite_entries,
    read_state,
    require_state,
    save_checkpoint,
)
from harness.core.runtime import LockHeldError, PathLock, tune_malloc
from harness.data.loaders import SourceData, TargetData, to_model_input
from harness.engine import distributed
from harness.models.build import autocast_dtype, build_model, resolve_device
from methods import Batch, FRModel, Method, build_method

LogFn = Callable[[str, float, int], None]
STATE_FORMAT = "cfsm-train-state/1"
CHECKPOINT_FORMAT = "cfsm-checkpoint/1"  # the final model: weights and metadata, no optimiser or RNG state
#: ``optim.grad_clip_scope``: "backbone" clips the backbone's gradients only, as CFSM's release
#: (``GuidedFaceRecognition/train.py``: ``clip_grad_norm_(backbone.parameters(), 5)`` after ``unscale_``) and
#: insightface's arcface_torch do; "all" clips the backbone, the margin head and a method's modules together.
GRAD_CLIP_SCOPES = ("backbone", "all")
#: What AMP covers (recorded in the train info): as released, no autocast around the step.
AMP_SCOPE = (
    "backbone trunk only (conv/BN/PReLU under autocast); generator, fc/features, head and method modules float32"
)


class ProgressLine:
    """A plain progress line for logs that are not a terminal (DVC, nohup, CI), where tqdm's redraws are noise:
    ``<name> step S/T (P%) loss L lr R  I img/s  ETA h:mm:ss`` on stderr. Only the values passed to :meth:`show`
    are printed, so nothing stale is repeated."""

    def __init__(self, name: str, start: int, total: int, images_per_step: int = 0, unit: str = "img/s"):
        self.name, self.start, self.total = name, start, total
        self.images_per_step, self.unit = images_per_step, unit
        self.t0 = time.perf_counter()

    def show(self, done: int, values: dict[str, float], stream=None) -> str:
        elapsed = time.perf_counter() - self.t0
        steps = done - self.start
        rate = steps / elapsed if elapsed > 0 else 0.0
        speed = f"{rate * self.images_per_step:.1f} {self.unit}" if self.images_per_step else f"{rate:.2f} it/s"
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_text = (
            time.strftime("%H:%M:%S", time.gmtime(eta))
            if math.isfinite(eta) and eta < 86400
            else (f"{eta / 86400:.1f} d" if math.isfinite(eta) else "?")
        )
        shown = " ".join(f"{k} {v:.4g}" if k != "lr" else f"lr {v:.5f}" for k, v in values.items())
        line = (
            f"{self.name} step {done}/{self.total} ({100 * done / max(1, self.total):.1f}%) {shown}  {speed}  "
            f"ETA {eta_text}"
        )
        print(line, file=stream or sys.stderr, flush=True)
        return line


# ----------------------------------------------------------------------------------------------- schedule
def poly_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, power: float) -> float:
    """insightface ``PolyScheduler``: linear warm-up from 0, then base * (1 - progress) ** power."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * max(0.0, 1.0 - progress) ** power


def build_optimizer(
    o: OptimConfig, backbone: torch.nn.Module, head: torch.nn.Module, method: Method
) -> torch.optim.Optimizer:
    """The optimiser of ``optim.name`` (SGD with momentum, or AdamW; both with ``optim.weight_decay``) over three
    kinds of parameter groups, in this order: the backbone's trainable parameters, the margin head's, then the
    method's own (:meth:`methods.Method.param_groups`, which may carry an ``lr_scale``). Its learning rate is
    ``optim.lr`` until :func:`set_lr` sets the step's."""
    params = [{"params": [p for p in backbone.parameters() if p.requires_grad]}, {"params": list(head.parameters())}]
    params += method.param_groups()
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    raise ValueError(f"config optim.name={o.name!r}: expected 'sgd' or 'adamw'")


def build_scaler(o: OptimConfig, device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """AMP's loss scaler: CFSM's release uses ``GradScaler(growth_interval=100)``
    (``GuidedFaceRecognition/train.py``; ``optim.amp_growth_interval``); enabled for AMP on CUDA only (bfloat16
    on the CPU needs none, and a disabled scaler's ``scale``/``unscale_``/``step`` are the plain operations)."""
    return torch.amp.GradScaler(
        device.type, growth_interval=o.amp_growth_interval, enabled=amp and device.type == "cuda"
    )


def check_clip_scope(o: OptimConfig) -> None:
    """A one-line ValueError when ``optim.grad_clip_scope`` is not one of :data:`GRAD_CLIP_SCOPES`."""
    if o.grad_clip_scope not in GRAD_CLIP_SCOPES:
        raise ValueError(
            f"config optim.grad_clip_scope={o.grad_clip_scope!r}: expected one of {', '.join(GRAD_CLIP_SCOPES)}"
        )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the step's learning rate on every parameter group (times a group's ``lr_scale``, default 1)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


class TrainStep:
    """One optimisation step of the trainer, the only one: :func:`train` calls it once per batch, and so do the
    timing scripts (``benchmarks/train_throughput.py``'s ``Stepper``, which ``benchmarks/gpu_check.py`` and
    ``benchmarks/train_step_overhead.py`` reuse), so what they time is the step the trainer takes.

    A call on a :class:`methods.Batch` (already on the device): ``method.augment`` then ``method.loss`` with no
    autocast around them (as released, the backbone autocasts its own trunk under AMP: :func:`build_model`); the
    loss, averaged over ranks under data parallelism, must be finite (else :class:`FloatingPointError` naming the
    step and learning rate, on every rank alike); ``zero_grad``, the scaled ``backward``; under data parallelism
    the gradients of the replicated parameters (the margin head and the method's modules; DDP averages the
    backbone's during backward) averaged by one all-reduce (:func:`harness.engine.distributed.allreduce_gradients`);
    the scaler's ``unscale_``, gradient-norm clipping at ``optim.grad_clip`` over ``optim.grad_clip_scope``
    (:data:`GRAD_CLIP_SCOPES`: the backbone's parameters only, as released, or every trained parameter), and the
    scaler's ``step`` and ``update``. Returns the detached loss (the mean over ranks) and the method's scalars.
    The learning rate is the caller's (:func:`set_lr`), as are logging and checkpoints.
    """

    def __init__(
        self,
        fr: FRModel,
        method: Method,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        o: OptimConfig,
        ctx: distributed.DistContext | None = None,
    ):
        check_clip_scope(o)
        self.fr, self.method, self.optimizer, self.scaler = fr, method, optimizer, scaler
        self.ctx = ctx or distributed.DistContext()
        self.grad_clip = o.grad_clip
        all_params = [p for g in optimizer.param_groups for p in g["params"]]
        # what the clipping norm covers: the backbone alone as released, or every trained parameter
        self.clip_params = (
            [p for p in fr.raw.parameters() if p.requires_grad] if o.grad_clip_scope == "backbone" else all_params
        )
        self.replicated = list(fr.head.parameters()) + [p for g in method.param_groups() for p in g["params"]]
        #: Profiling (``benchmarks/pipeline_profile.py``): a dict here accumulates the seconds of each phase of
        #: every step (``augment``, ``loss`` = the method's forward, ``backward``, ``optimizer`` = clipping and the
        #: optimiser step); None (default) times nothing. On CPU the phases are synchronous, so the split is exact.
        self.phase_seconds: dict[str, float] | None = None

    def _lap(self, phase: str, t0: float) -> float:
        t = time.perf_counter()
        if self.phase_seconds is not None:
            self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + t - t0
        return t

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        step, ctx, optimizer, scaler = batch.step, self.ctx, self.optimizer, self.scaler
        t = time.perf_counter()
        # No autocast around the step (as released): with AMP the backbone autocasts its own convolutional trunk
        # (build_model(amp=True), insightface's iresnet(fp16=True)); the generator, the backbone's fc / features,
        # the margin head and the methods' own modules run in float32.
        batch = self.method.augment(batch, self.fr)
        t = self._lap("augment", t)
        loss, scalars = self.method.loss(batch, self.fr)
        t = self._lap("loss", t)
        shown = loss.detach()
        if ctx.distributed:  # the mean over ranks: logged, and every rank stops together on a non-finite loss
            shown = shown.float().clone().div_(ctx.world_size)
            torch.distributed.all_reduce(shown)
        if not torch.isfinite(shown):
            lr = optimizer.param_groups[0]["lr"]  # the backbone's group: the step's learning rate
            raise FloatingPointError(
                f"step {step}: the training loss is {shown.item()} (lr {lr:g}); lower optim.lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if ctx.distributed:
            distributed.allreduce_gradients(self.replicated, ctx.world_size)
        t = self._lap("backward", t)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.clip_params, self.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        self._lap("optimizer", t)
        return shown, scalars


@dataclass
class TrainResult:
    backbone: torch.nn.Module  # unwrapped (never the DDP wrapper)
    head: torch.nn.Module
    method: Method
    steps: int  # the run's total optimiser steps (a resumed run counts the steps before the resume too)
    seconds: float  # of this process's training loop
    images_per_second: float  # global: steps run here x global batch / seconds
    final_loss: float
    device: str
    amp: bool
    resumed_from: int = 0
    world_size: int = 1
    info: dict = field(default_factory=dict)  # what run.py records as the run's train info


class TrainingStopped(RuntimeError):
    """Raised by :func:`train` when ``stop_after`` is reached: the run ends there as a kill would (nothing more is
    written; the last saved train state is what a resumed run continues from)."""


# ----------------------------------------------------------------------------------------------- train state
def train_state_path(checkpoint_path: str) -> str:
    """Where the periodic train state of ``checkpoint_path`` goes: ``<dir>/<stem>.train_state.pt``."""
    return os.path.splitext(checkpoint_path)[0] + ".train_state.pt"


def snapshot_path(checkpoint_path: str, step: int) -> str:
    """Where the weight snapshot after ``step`` optimiser steps goes (``snapshot_every``):
    ``<dir>/<stem>.step<step>.pt``."""
    return os.path.splitext(checkpoint_path)[0] + f".step{step}.pt"


def snapshot_steps(every: int, total_steps: int) -> list[int]:
    """The steps after which ``snapshot_every = every`` writes a snapshot: every multiple of ``every`` below
    ``total_steps`` (the last step's weights are the final checkpoint)."""
    return list(range(every, total_steps, every)) if every > 0 else []


#: Config keys that do not change the training trajectory (paths, logging, evaluation, threads, the device
#: name, the checkpoint knobs themselves): a state saved with other values of these is still resumable.
NON_TRAJECTORY = (
    "device",
    "threads",
    "out",
    "train",
    "evaluate",
    "checkpoint",
    "result",
    "metrics",
    "log_every",
    "checkpoint_every",
    "snapshot_every",
    "resume",
    "data.cache",
    "data.decode_cache",
    "data.crop_cache",
    "hparams",
    "hparams_seed",
)


def trajectory_key(cfg: RunConfig, world_size: int = 1) -> dict[str, Any]:
    """The flat config a resumed run must share with its saved state: every knob except :data:`NON_TRAJECTORY`
    and ``eval.*``; the method's hyperparameters resolved (``hparams.<name>``, defaults included, so a changed
    default is caught); ``optim.batch_size`` (per rank) replaced by ``optim.global_batch`` (x world size)."""
    from methods import resolve_hparams
    from methods.base import to_builtin

    key = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in NON_TRAJECTORY and not k.startswith("eval.")}
    key["optim.global_batch"] = key.pop("optim.batch_size") * world_size
    for name, value in resolve_hparams(cfg.method, cfg.hparams_seed, cfg.hparams).items():
        key[f"hparams.{name}"] = to_builtin(value)
    return key


def resolve_resume(cfg: RunConfig, state_path: str | None, world_size: int = 1) -> dict[str, Any]:
    """Decide what a run starts from: ``{"path": state file or None, "message": one line}``.

    ``resume=none``: fresh. ``resume=auto``: ``state_path`` when it exists and its config matches, else fresh
    (the message says why). ``resume=PATH``: that file, which must exist (FileNotFoundError) and match
    (ValueError naming the differing fields); both one-line."""
    mode = (cfg.resume or "none").strip()
    if mode == "none":
        return {"path": None, "message": "resume=none: starting fresh"}
    key = trajectory_key(cfg, world_size)
    if mode == "auto":
        if not state_path or not os.path.isfile(state_path):
            where = state_path or "<no checkpoint path>"
            return {"path": None, "message": f"no train state at {where}: starting fresh"}
        saved, why = read_state(state_path, STATE_FORMAT, key, mmap=True)
        if saved is None:
            return {"path": None, "message": why}
        return {
            "path": state_path,
            "message": f"resuming from {state_path} at step {saved['step']}/{saved['total_steps']}",
        }
    saved = require_state(mode, STATE_FORMAT, key, f"resume={mode}", mmap=True)
    return {"path": mode, "message": f"resuming from {mode} at step {saved['step']}/{saved['total_steps']}"}


def _rng_state(device: torch.device) -> dict:
    """Every global RNG as tensors and plain types (so the state loads with ``weights_only=True``): torch CPU/CUDA
    as uint8 tensors, numpy's MT19937 as ``{kind, keys (int64 tensor), pos, has_gauss, cached_gaussian}``, python's
    ``random`` as ``{version, state (list of ints), gauss_next}``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state(
            (
                n["kind"],
                n["keys"].numpy().astype(np.uint32),
                int(n["pos"]),
                int(n["has_gauss"]),
                float(n["cached_gaussian"]),
            )
        )
    else:  # states written before the RNG states were stored as tensors
        np.random.set_state(n)
    p = state["python"]
    random.setstate(
        (int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss_next"]) if isinstance(p, dict) else p
    )


def _seed_rank(seed: int, rank: int) -> None:
    """Rank ``rank``'s own global random streams (torch CPU and CUDA, numpy, python): what a method draws per rank
    (CFSM's o0 and mixing permutations, degradation parameters) differs between ranks, as with insightface's
    per-rank seeds. Rank 0 is never reseeded."""
    s = distributed.rank_seed(seed, rank)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


# ----------------------------------------------------------------------------------------------- train
def _train(
    cfg: RunConfig,
    checkpoint_path: str | None = None,
    log: LogFn | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    _locks: list | None = None,
) -> TrainResult:
    """Train as ``cfg`` says and, with ``checkpoint_path``, write the final checkpoint there (rank 0).

    On N ranks (torchrun, or a process group initialised by the caller) each rank runs this on its shard; see
    the module docstring. ``stop_after``: raise :class:`TrainingStopped` right after global step ``stop_after``
    (1-based) as if the process had been killed there: no final checkpoint, no state beyond the last periodic one.
    """
    log = log or (lambda name, value, step: None)
    tune_malloc()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = distributed.init_from_env(cfg.device)
    if not ctx.is_main:
        log, progress = (lambda name, value, step: None), False
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    amp = device.type == "cuda" if cfg.amp == "auto" else cfg.amp == "on"
    if cfg.checkpoint_every < 0:
        raise ValueError(f"config checkpoint_every={cfg.checkpoint_every}: expected >= 0 (0 = no periodic train state)")

    release = require_dir(cfg.data.release, "SynthFace/insightface release")
    o = cfg.optim
    check_clip_scope(o)  # before the data are read
    source = SourceData(
        os.path.join(release, cfg.data.rec),
        cfg.data.input_size,
        cfg.optim.batch_size,
        cfg.seed,
        cfg.data.flip,
        cfg.data.cache,
        rank=ctx.rank,
        world_size=ctx.world_size,
        index_list=cfg.data.index_list,
        decode_cache=cfg.data.decode_cache,
    )
    backbone, head = build_model(cfg, source.num_classes, amp=amp)
    method = build_method(cfg.method, cfg.model.embedding_size, source.num_classes, cfg.hparams_seed, cfg.hparams)
    target = None
    if method.uses_target:
        troot = os.path.join(release, cfg.data.target)
        target = TargetData(
            os.path.join(troot, "crops"),
            os.path.join(troot, cfg.data.target_list),
            cfg.data.input_size,
            cfg.optim.batch_size,
            cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            decode_cache=cfg.data.decode_cache,
        )
    backbone.to(device), head.to(device), method.to(device)
    memory_format = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(memory_format=memory_format)

    optimizer = build_optimizer(o, backbone, head, method)
    scaler = build_scaler(o, device, amp)
    total_steps = max(1, int(round(o.epochs * source.steps_per_epoch)))
    method.total_steps = total_steps  # progress-based schedules (DANN's gradient-reversal warm-up)
    warmup_steps = int(round(o.warmup_epochs * source.steps_per_epoch))

    # ---- where the run starts: rank 0 decides (its paths), every rank loads the same state
    state_path = train_state_path(checkpoint_path) if checkpoint_path else None
    decision: dict[str, Any] = {}
    if ctx.is_main:
        try:
            if checkpoint_path and _locks is not None:  # this run holds its checkpoint path until it returns
                _locks.append(PathLock(checkpoint_path, "checkpoint").acquire())
            decision = resolve_resume(cfg, state_path, ctx.world_size)
        except (FileNotFoundError, ValueError, LockHeldError) as exc:
            decision = {"error": (type(exc).__name__, str(exc))}
        decision["save_states"] = bool(state_path) and cfg.checkpoint_every > 0
        decision["final"] = bool(checkpoint_path)
        decision["snapshots"] = bool(checkpoint_path) and cfg.snapshot_every > 0
    decision = distributed.broadcast_object(decision, ctx)
    if "error" in decision:
        kind, message = decision["error"]
        raise {"FileNotFoundError": FileNotFoundError, "LockHeldError": LockHeldError}.get(kind, ValueError)(message)
    if ctx.is_main and (state_path or decision["path"] or cfg.resume != "auto"):
        print(f"harness.engine.train: {decision['message']}", file=sys.stderr)
    start_step, running = 0, float("nan")
    saved_world = ctx.world_size
    if decision["path"]:
        state = load_torch(decision["path"], "train state")
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        source.load_state_dict(state["source"])
        if target is not None:
            target.load_state_dict(state["target"])
        start_step, running, saved_world = int(state["step"]), float(state["running_loss"]), int(state["world_size"])
        if ctx.rank < len(state["rng"]):
            _set_rng_state(state["rng"][ctx.rank], device)
        else:
            _seed_rank(cfg.seed + start_step, ctx.rank)
        if saved_world != ctx.world_size and ctx.is_main:
            print(
                f"harness.engine.train: the state was saved at world size {saved_world}, "
                f"this run has {ctx.world_size}: "
                "same data order and schedule, not bit-identical (reduction order, per-rank BatchNorm statistics, "
                "per-rank method randomness)",
                file=sys.stderr,
            )
        del state
    elif ctx.rank > 0:
        _seed_rank(cfg.seed, ctx.rank)

    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        distributed.broadcast_parameters([head, method])  # already equal (same seed); cheap insurance
        wrapped = DistributedDataParallel(backbone, device_ids=[device.index] if device.type == "cuda" else None)
        fr = FRModel(backbone=wrapped, raw=backbone, head=head)
    else:
        fr = FRModel(backbone=backbone, raw=backbone, head=head)
    take_step = TrainStep(fr, method, optimizer, scaler, o, ctx)

    def state_payload(done: int) -> dict:
        """The one checkpoint format (module docstring). Every rank calls it (the RNG states are gathered)."""
        rngs = distributed.gather_objects(_rng_state(device), ctx)
        return {
            "format": STATE_FORMAT,
            "config": cfg.to_dict(),
            "key": trajectory_key(cfg, ctx.world_size),
            "num_classes": source.num_classes,
            "step": done,
            "total_steps": total_steps,
            "epoch": source.epoch,
            "epoch_samples": source.position,
            "world_size": ctx.world_size,
            "batch_size": o.batch_size,
            "global_batch": source.global_batch,
            "backbone": backbone.state_dict(),
            "head": head.state_dict(),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "source": source.state_dict(),
            "target": target.state_dict() if target is not None else None,
            "rng": rngs,
            "running_loss": running,
        }

    def weights_payload(done: int, info: dict) -> dict:
        """The final checkpoint's format (``CHECKPOINT_FORMAT``: weights and metadata) after ``done`` steps."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.to_dict(),
            "num_classes": source.num_classes,
            "step": done,
            "total_steps": total_steps,
            "world_size": ctx.world_size,
            "global_batch": source.global_batch,
            "backbone": backbone.state_dict(),
            "train_info": info,
        }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    backbone.train(), head.train(), method.train()
    t0 = time.perf_counter()
    tty = progress and sys.stderr.isatty()
    bar = tqdm(
        range(start_step, total_steps),
        desc=f"train {cfg.method}",
        disable=not tty,
        mininterval=5.0,
        initial=start_step,
        total=total_steps,
    )
    plain = (
        ProgressLine(f"train {cfg.method}", start_step, total_steps, source.global_batch)
        if progress and not tty
        else None
    )
    for step in bar:
        if ctx.distributed:
            distributed.broadcast_buffers([backbone, head, method])
        lr = poly_lr(step, o.lr, warmup_steps, total_steps, o.poly_power)
        set_lr(optimizer, lr)
        x_u8, y = source.next_batch()
        batch = Batch(
            x=to_model_input(x_u8, cfg.data.channel_order).to(device, memory_format=memory_format),
            y=y.to(device),
            step=step,
        )
        if target is not None:
            batch.xt = to_model_input(target.next_batch(), cfg.data.channel_order).to(
                device, memory_format=memory_format
            )
        shown, scalars = take_step(batch)
        value = shown.item()
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        if step % cfg.log_every == 0 or step == total_steps - 1:
            log("train.loss", value, step)
            log("train.lr", lr, step)
            for k, v in scalars.items():
                log(f"train.{k}", float(v), step)
            for k, v in head.scalars().items():  # a head's own statistics (MagFace: the feature norms)
                log(f"train.head.{k}", float(v), step)
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.4f}")
            if plain is not None:
                plain.show(step + 1, {"loss": running, "lr": lr})
        done = step + 1
        if decision["save_states"] and done % cfg.checkpoint_every == 0 and done < total_steps:
            payload = state_payload(done)
            if ctx.is_main:
                save_checkpoint(state_path, payload)
        if decision["snapshots"] and ctx.is_main and done % cfg.snapshot_every == 0 and done < total_steps:
            # The weights after `done` steps in the final checkpoint's format, plus the margin head (additive: a
            # guidance probe needs the FR loss). Reads state dicts only: no random draw, no state change.
            snap = weights_payload(
                done, {"snapshot": True, "steps_done": done, "head": {"name": cfg.model.head, **head.constants()}}
            )
            snap["head"] = head.state_dict()
            save_checkpoint(snapshot_path(checkpoint_path, done), snap)
        if stop_after is not None and done >= stop_after:
            raise TrainingStopped(f"stopped after step {done} of {total_steps} (stop_after={stop_after})")
    seconds = time.perf_counter() - t0
    steps_run = total_steps - start_step
    ips = steps_run * source.global_batch / seconds if seconds > 0 else 0.0
    info: dict[str, Any] = {
        "steps": total_steps,
        "seconds": round(seconds, 3),
        "images_per_second": round(ips, 1),
        "final_loss": running,
        "device": str(device),
        "amp": amp,
        "world_size": ctx.world_size,
        "batch_size_per_rank": o.batch_size,
        "global_batch": source.global_batch,
        "resumed_from": start_step,
        "start": decision["message"],
        "train_images": len(source),
        "num_classes": source.num_classes,
        "grad_clip": o.grad_clip,
        "grad_clip_scope": o.grad_clip_scope,
        "head": {"name": cfg.model.head, **head.constants()},
        # speed levers, recorded in every run (none changes a number: docs/cpu_profile.md section 4)
        "decode_cache": {
            "source": source.decode_cache,
            **({"target": target.decode_cache} if target is not None else {}),
        },
    }
    if decision["snapshots"]:  # those on disk: a resumed run's earlier snapshots were written before the restart
        info["snapshot_every"] = cfg.snapshot_every
        info["snapshots"] = [
            p
            for p in (snapshot_path(checkpoint_path, n) for n in snapshot_steps(cfg.snapshot_every, total_steps))
            if os.path.isfile(p)
        ]
    if cfg.data.index_list:
        from harness.core.atomic import file_sha256

        info["index_list"] = {
            "path": cfg.data.index_list,
            "sha256": file_sha256(cfg.data.index_list),
            "length": len(source),
        }
    if target is not None:
        info["target_list"] = os.path.join(release, cfg.data.target, cfg.data.target_list)
    if start_step and saved_world != ctx.world_size:
        info["resumed_world_size"] = saved_world
    if amp:  # build_model(amp=True): the trunk runs under autocast (insightface's iresnet(fp16=True)), nothing else
        info["amp_backbone_trunk"] = bool(getattr(backbone, "fp16", False))
        info["amp_scope"] = AMP_SCOPE
        info["amp_dtype"] = autocast_dtype(device)
        if scaler.is_enabled():
            info["grad_scaler_growth_interval"] = o.amp_growth_interval
    if device.type == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            peak_gpu_memory_mib=round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        )
    else:
        info["cpu_threads"] = torch.get_num_threads()
    if ctx.distributed:
        info["backend"] = ctx.backend
    result = TrainResult(
        backbone=backbone,
        head=head,
        method=method,
        steps=total_steps,
        seconds=seconds,
        images_per_second=ips,
        final_loss=running,
        device=str(device),
        amp=amp,
        resumed_from=start_step,
        world_size=ctx.world_size,
        info=info,
    )
    if decision["final"] and ctx.is_main:
        save_checkpoint(checkpoint_path, weights_payload(total_steps, info))
        if state_path and os.path.isfile(state_path):
            os.remove(state_path)  # the run is complete: nothing is left to resume
    return result


def train(
    cfg: RunConfig,
    checkpoint_path: str | None = None,
    log: LogFn | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train as ``cfg`` says and, with ``checkpoint_path``, write the final checkpoint there (rank 0); see
    :func:`_train`. While it runs, rank 0 holds ``checkpoint_path`` (:class:`harness.core.runtime.PathLock`,
    ``<checkpoint>.lock``): a second run on the same path fails at once naming the holder."""
    locks: list[PathLock] = []
    try:
        return _train(cfg, checkpoint_path, log, progress, stop_after, _locks=locks)
    finally:
        for lock in locks:
            lock.release()
