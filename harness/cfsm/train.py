"""CFSM stage 1, the training run: ``python -m harness.stage1 [key=value ...]`` (Sacred-logged, DVC stage ``stage1``).

Trains the controllable synthesis model :class:`harness.models.cfsm.CFSMGenerator` on labelled source faces (an
insightface RecordIO; labels unused) and unlabelled target faces (CFSM's crop folder + list), with a frozen
identity network ``f`` (a ``harness.run`` checkpoint, by default the trunk's ``source_only`` model), as released in
``CFSM/train.py`` (github.com/liufeng2915/CFSM):

* G step on alternating iterations. Even: ``o ~ N(0, I_q)``, ``L_G = L_adv + lambda_id * L_id + L_ort`` with the
  magnitude-guided identity loss. Odd: ``o = 0``, ``L_G = w_rec * |x - G(x, 0)|_1 + L_ort``.
* D step every iteration: LSGAN, real target images against 1, the detached current ``G`` output against 0.
  Real and fake go through D as one concatenated batch (D normalises per sample, so this is the same loss).
* Adam ``betas (0.5, 0.999)`` for G and D, no decay; ``lambda_id`` 8 -> 5 -> 2 in the released three phases of
  5 / 4 / 13 passes over the source list, 22 in all (``CFSM/README.md``: three ``train.py`` runs, ``--n_epochs 5``;
  ``--epoch 4 --n_epochs 8``; ``--epoch 7 --n_epochs 20``; each resumes from the checkpoint saved *after* epoch 4
  resp. 7 and starts its loop at that epoch, so epochs 4 and 7 run twice). Each run builds its Adam optimisers
  afresh (``CFSM/train.py:98-99``; the saved optimiser states are never reloaded), so G and D get fresh Adam states
  at each phase start (``train.reset_optimizers``). With ``train.iterations`` > 0 the run is that many iterations
  and the phases keep their 5 : 4 : 13 proportions (:func:`phase_bounds`). A resumed run behaves exactly as the
  uninterrupted one, at a phase boundary too (the reset happens at the boundary step itself).
* Saved generator: the release saves G's last iterate. With ``train.ema_decay`` > 0 (the CPU default, a declared
  deviation) an exponential moving average of G's weights over the G steps (:class:`ParameterEMA`, bias-corrected
  so the initialisation carries no weight) is saved and analysed instead: the last iterate of the short CPU run
  oscillates with the adversarial game and its quality depends on the seed. Training is unchanged; the last
  iterate's quality is recorded beside the average's (``metrics.json`` ``last_iterate`` and ``targets``).

The dataclass defaults are the released recipe; ``params.yaml`` (section ``stage1``) holds the CPU default. How a
run differs from the release (architecture, training values, run length, identity network, data) is listed by
:func:`deviations` (:func:`harness.engine.release.stage1_deviations`; each entry's reason follows from the value) and
written into the generator's metadata, ``analysis.json`` and the Sacred run.

Analysis on any data (:mod:`harness.cfsm.analysis`): ``analysis.holdout_source`` source images and
``analysis.holdout_target`` target crops (each at most a fifth of its set, seeded) are kept out of training; on
them the run measures the FD to the target and the identity cosine by magnitude, U's orthogonality, and draws the
magnitude and basis pictures. SynthFace's clean/degraded pairs (``data.pairs``) add the true degradation's FD and
identity cosine where present. ``metrics.json`` ``targets`` states the FD ratio and identity gap beside the quality
thresholds (:data:`harness.cfsm.analysis.FD_RATIO_MAX`, :data:`harness.cfsm.analysis.IDENTITY_GAP_MIN`) and whether
both were met.

Robustness: the run checkpoints its whole state (G, D, both optimisers, step, every RNG) atomically every
``checkpoint_every`` iterations (0: only when stopped early) to ``<out>/train_state.pt`` and resumes from it when the
config matches. A NaN or inf in any loss stops the run before the optimiser step with a one-line message; the last good
state stays on disk; a state whose weights are not finite is never saved. A state that cannot be read (truncated,
foreign, or pickling anything beyond tensors and plain data: files load with ``weights_only=True``) or holds non-finite
weights is set aside as ``train_state.pt.unreadable-<time>`` / ``.nonfinite-<time>`` and the run starts fresh,
saying so, as ``harness.run`` does. The target list is checked before training (the first missing crop is
named). While it runs, the stage holds ``out`` (``<out>.lock``; a second stage on it fails at once naming the
holder). Every error is one line ``harness.stage1: ...`` and exit code 2 (``CFSM_TRACEBACK=1``: traceback too).

Outputs under ``out``: ``generator.pt`` (what stage 2 loads, :func:`harness.models.cfsm.load_generator`),
``metrics.json`` (for ``dvc metrics``; the Sacred run keeps it as the artifact ``stage1_metrics.json``, since
Sacred's own ``metrics.json`` holds the logged series), ``analysis.json`` (every figure of
:mod:`harness.cfsm.analysis`), and the two pictures under ``figures``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.atomic import load_torch
from harness.core.config import RunConfig, from_dict, plain
from harness.core.errors import require_dir, require_file
from harness.core.resume import read_state, save_checkpoint
from harness.core.runtime import tune_malloc
from harness.data.wider import CropFolderDataset, read_crop_list
from harness.models.cfsm import (
    CFSMConfig,
    CFSMGenerator,
    MultiScaleDiscriminator,
    identity_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    orthogonality_loss,
    reconstruction_loss,
    save_generator,
)

STATE_FORMAT = "cfsm-stage1-state/1"


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Stage1Data:
    release: str = "datasets/synthface/default"
    rec: str = "faces_synthface"  # source RecordIO folder inside the release (MS1MV2: faces_emore)
    target: str = "target"  # <release>/<target>/crops + <target_list>
    target_list: str = "target_list.txt"  # CFSM ships target_list_wf_12k.txt; its model used a 70K list
    pairs: str = "stage1_pairs"  # SynthFace's clean/degraded analysis pairs (an extra); "" when absent (real data)
    cache: bool = True  # decode the source set into memory once (False streams it from the RecordIO)


@dataclass(frozen=True)
class Stage1Train:
    batch_size: int = 32  # the README's commands (train.py's default is 64)
    iterations: int = 0  # > 0: the run's length in iterations, phases scaled to it; 0: the phases' passes
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    lambda_id: tuple[float, ...] = (8.0, 5.0, 2.0)  # one value per phase
    phase_passes: tuple[float, ...] = (5.0, 4.0, 13.0)  # passes over the source list per phase (released: 22 in all)
    reset_optimizers: bool = True  # fresh Adam states for G and D at each phase start (released)
    recon_weight: float = 1.0
    ortho_weight: float = 1.0
    ortho_form: str = "squared_mean"  # released; "l1" is the paper's written norm as far as it can be read
    # identity loss target t(a) = lm + (a - la)(um - lm)/(ua - la) (MagFace's names, CFSM train.py defaults)
    la: float = 0.0
    ua: float = 6.0
    lm: float = 0.05
    um: float = 0.65
    # > 0: an exponential moving average of G's weights over the G steps (decay ema_decay, bias-corrected) is the
    # generator saved and analysed; the last iterate is analysed too. Released: 0, the last iterate is saved.
    ema_decay: float = 0.0


@dataclass(frozen=True)
class Stage1Analysis:
    holdout_target: int = 500  # target crops kept out of training (at most a fifth), for the analysis (0: none)
    holdout_source: int = 500  # source images kept out of training (at most a fifth), for the analysis (0: none)
    pairs: int = 512  # analysis pairs used (at most what the release has)
    magnitudes: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    basis_values: tuple[float, ...] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
    figure_inputs: int = 6
    basis_inputs: int = 2
    batch_size: int = 256


@dataclass(frozen=True)
class Stage1Config:
    seed: int = 123  # released
    device: str = "auto"
    threads: int = 0
    identity: str = "results/checkpoints/source_only-s0.pt"  # frozen FR model f (a harness.run checkpoint)
    out: str = "results/stage1"
    figures: str = "results/figures"
    sacred: str = "results/runs"  # Sacred FileStorageObserver root ("" = none)
    log_every: int = 50
    checkpoint_every: int = 250
    resume: bool = True
    data: Stage1Data = field(default_factory=Stage1Data)
    model: CFSMConfig = field(default_factory=CFSMConfig)
    train: Stage1Train = field(default_factory=Stage1Train)
    analysis: Stage1Analysis = field(default_factory=Stage1Analysis)

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))


def deviations(cfg: Stage1Config) -> list[dict[str, Any]]:
    """How this run differs from the released stage 1: ``[{key, ours, release, source, why}]``
    (:func:`harness.engine.release.stage1_deviations`; the reasons follow from the configured values)."""
    from harness.engine.release import stage1_deviations

    return stage1_deviations(cfg)


def phase_bounds(cfg: Stage1Train, n_source: int) -> list[int]:
    """``[0, start of phase 2, ..., start of the last phase, total iterations]``.

    Without ``iterations``: each phase is its passes over the ``n_source`` training images at ``batch_size``
    (``n_source // batch_size`` iterations a pass, drop_last), 5 / 4 / 13 passes released. With ``iterations`` > 0:
    that total, the boundaries at the same fractions of it (rounded half up), e.g. 220 iterations -> 50 / 40 / 130."""
    passes = [float(p) for p in cfg.phase_passes]
    if len(cfg.lambda_id) != len(passes) or not passes:
        raise ValueError(
            f"config train.lambda_id {list(cfg.lambda_id)} and train.phase_passes {passes} must have "
            "the same, non-zero length (one lambda_id value per phase)"
        )
    if any(p <= 0 for p in passes):
        raise ValueError(f"config train.phase_passes {passes}: every phase needs > 0 passes")
    cum = np.cumsum(passes)

    def half_up(x: float) -> int:
        return int(math.floor(x + 0.5))

    if cfg.iterations > 0:
        total = int(cfg.iterations)
        starts = [half_up(total * c / cum[-1]) for c in cum[:-1]]
    else:
        per_pass = n_source // cfg.batch_size
        total = max(1, half_up(cum[-1] * per_pass))
        starts = [half_up(c * per_pass) for c in cum[:-1]]
    return [0, *starts, total]


def phase_at(bounds: list[int], step: int) -> int:
    """The 0-based phase of iteration ``step`` (the last phase whose start is <= step)."""
    return max(i for i, start in enumerate(bounds[:-1]) if start <= step)


def lambda_id_at(cfg: Stage1Train, step: int, bounds: list[int]) -> float:
    """The identity-loss weight at iteration ``step`` (piecewise constant over the released phases)."""
    return float(cfg.lambda_id[phase_at(bounds, step)])


# ----------------------------------------------------------------------------------------------- data
class EpochSampler:
    """Endless batches of indices from epoch-wise permutations (drop_last), with an exact, resumable state."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"{n} items, fewer than one batch of {batch_size}")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._epoch_state = self.generator.get_state()
        self.position = 0
        self.perm = torch.randperm(n, generator=self.generator)

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self._epoch_state = self.generator.get_state()
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        idx = self.perm[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"epoch_state": self._epoch_state, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["epoch_state"])
        self._epoch_state = self.generator.get_state()
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.position = int(state["position"])


def load_target(cfg: Stage1Config) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train images, held-out images) uint8 at the model's size, and the list path. The list is checked first:
    a missing crop fails here, naming the list line and the file. The hold-out is a seeded random subset."""
    from harness.data.loaders import load_images

    root = os.path.join(require_dir(cfg.data.release, "stage-1 data release"), cfg.data.target)
    crops = read_crop_list(os.path.join(root, "crops"), os.path.join(root, cfg.data.target_list))
    images = load_images(CropFolderDataset(crops).__getitem__, len(crops.names), cfg.model.image_size)
    hold = min(cfg.analysis.holdout_target, len(images) // 5)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + 17))
    return images[perm[hold:]], images[perm[:hold]], crops.list_path


def load_pairs(cfg: Stage1Config) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SynthFace's ``stage1_pairs`` (clean, degraded) uint8 at the model's size, or None when not configured."""
    from harness.data.images import read_image
    from harness.data.loaders import load_images
    from harness.data.text import read_lines

    if not cfg.data.pairs:
        return None
    root = os.path.join(cfg.data.release, cfg.data.pairs)
    list_path = require_file(os.path.join(root, "pairs.txt"), "stage-1 analysis pair list")
    names = [line.split()[0] for line in read_lines(list_path) if line.strip()][: cfg.analysis.pairs]
    out = []
    for sub in ("clean", "degraded"):
        paths = [os.path.join(root, sub, n) for n in names]
        for i, p in enumerate(paths):
            if not os.path.isfile(p):
                from harness.core.errors import DataFormatError

                raise DataFormatError(list_path, f"line {i + 1}", f"pair image {p} does not exist")
        out.append(load_images(lambda i, paths=paths: read_image(paths[i]), len(paths), cfg.model.image_size))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------- identity net
class IdentityNet(torch.nn.Module):
    """The frozen FR model ``f`` as stage 1 sees it: takes images in [-1, 1] at the generator's size, resizes them
    (bilinear) to the FR model's input size and channel order, returns embeddings. Eval mode, no parameter
    gradients; gradients still flow to its input (into G), as released."""

    def __init__(self, checkpoint: str, device: torch.device):
        super().__init__()
        from harness.models.build import build_model

        require_file(checkpoint, "identity network checkpoint (a harness.run checkpoint, e.g. the source_only run)")
        state = load_torch(checkpoint, "identity network checkpoint")  # weights_only=True: no code runs
        if not isinstance(state, dict) or "backbone" not in state or "config" not in state:
            raise ValueError(f"{checkpoint}: not a harness.run checkpoint (needs 'backbone' and 'config')")
        run_cfg: RunConfig = from_dict(state["config"])
        backbone, _ = build_model(run_cfg, state["num_classes"])
        backbone.load_state_dict(state["backbone"])
        self.backbone = backbone.to(device).eval().requires_grad_(False)
        if run_cfg.model.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.input_size = run_cfg.data.input_size
        self.bgr = run_cfg.data.channel_order == "BGR"
        self.checkpoint = checkpoint
        self.method = state["config"].get("method")

    def train(self, mode: bool = True):  # always eval: BN uses its running statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.bgr:
            x = x.flip(1)
        return self.backbone(x)


# ----------------------------------------------------------------------------------------------- training
class Stage1Diverged(FloatingPointError):
    pass


@dataclass
class Stage1Result:
    generator: CFSMGenerator
    steps: int
    seconds: float
    resumed_from: int
    losses: dict[str, float]
    initial_basis: torch.Tensor  # U at initialisation (for how far the subspace moved)
    held_out: torch.Tensor  # target crops kept out of training, for the analysis
    identity: IdentityNet
    held_out_source: torch.Tensor | None = None  # source images kept out of training, for the analysis
    phase_bounds: list[int] = field(default_factory=list)
    last_iterate: CFSMGenerator | None = None  # with train.ema_decay > 0: G's last iterate (``generator`` is the EMA)


class ParameterEMA:
    """An exponential moving average of a module's parameters over the optimiser steps (averaging GAN generator
    weights: Yazici et al., "The Unusual Effectiveness of Averaging in GAN Training", ICLR 2019; Karras et al.,
    ProGAN, ICLR 2018), bias-corrected as Adam's moments are (Kingma & Ba, ICLR 2015, Sec. 3): after step ``n`` the
    average is ``sum_k (1 - d) d^(n-k) p_k / (1 - d^n)`` over the iterates ``p_1 .. p_n``, so the initial weights
    carry no weight however short the run. Buffers are not averaged (the generator has none that training
    changes)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.names = [n for n, _ in module.named_parameters()]
        self.shadow = [torch.zeros_like(p.detach()) for _, p in module.named_parameters()]
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for avg, p in zip(self.shadow, module.parameters()):
            avg.lerp_(p.detach(), 1.0 - self.decay)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": dict(zip(self.names, self.shadow))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["shadow"]) != self.names:
            raise ValueError("stage-1 train state: the EMA holds other parameters than the generator")
        for avg, value in zip(self.shadow, state["shadow"].values()):
            avg.copy_(value)
        self.updates = int(state["updates"])

    def averaged(self) -> dict[str, torch.Tensor]:
        """The bias-corrected average (no update yet: empty, the module's own weights stand)."""
        if self.updates == 0:
            return {}
        scale = 1.0 - self.decay**self.updates
        return {n: avg / scale for n, avg in zip(self.names, self.shadow)}

    def generator(self, G: CFSMGenerator) -> CFSMGenerator:
        """A new generator like ``G`` (eval mode, same device) holding the averaged parameters (built on the meta
        device, so no random initialisation runs and no RNG state changes)."""
        with torch.device("meta"):
            out = CFSMGenerator(G.config)
        device = next(G.parameters()).device
        out = out.to_empty(device=device)
        out.load_state_dict({**G.state_dict(), **self.averaged()})
        return out.eval()


def total_iterations(cfg: Stage1Config, n_source: int) -> int:
    """The run's length for ``n_source`` training images (:func:`phase_bounds`' last entry)."""
    return phase_bounds(cfg.train, n_source)[-1]


def split_source(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training positions, held-out positions)`` of ``n`` source images: a seeded random ``min(holdout, n // 5)``
    kept out (as the target hold-out), both sorted."""
    hold = min(max(0, holdout), n // 5)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 19))
    return perm[hold:].sort().values, perm[:hold].sort().values


def _state_key(cfg: Stage1Config) -> dict:
    """The part of the config a resumed run must share with the saved state (not paths, logging or analysis)."""
    d = cfg.to_dict()
    return {"seed": d["seed"], "identity": d["identity"], "data": d["data"], "model": d["model"], "train": d["train"]}


def _load_state(path: str, cfg: Stage1Config) -> dict | None:
    """The resumable state at ``path`` when it can continue this run; else None, saying why on stderr
    (:func:`harness.core.resume.read_state`: a file that cannot be read or holds non-finite weights is set aside as
    ``<path>.unreadable-<time>`` / ``<path>.nonfinite-<time>``, as ``harness.run`` does)."""
    state, why = read_state(path, STATE_FORMAT, _state_key(cfg), label="stage-1 train state")
    if state is None:
        print(f"stage1: {why}", file=sys.stderr)
    return state


def train_stage1(
    cfg: Stage1Config,
    log: Callable[[str, float, int], None] | None = None,
    progress: bool = False,
    stop_after: int | None = None,
) -> Stage1Result:
    """Train G and D as configured; returns the trained generator. ``stop_after`` ends the loop early after that
    many iterations (state saved), as a kill would, for resume tests."""
    from harness.data.loaders import SourceData, to_model_input
    from harness.engine.train import ProgressLine
    from harness.models.build import resolve_device

    log = log or (lambda name, value, step: None)
    tune_malloc()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    t = cfg.train
    if t.ortho_form not in ("squared_mean", "l1"):
        raise ValueError(f"config train.ortho_form={t.ortho_form!r}: expected 'squared_mean' or 'l1'")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ValueError(f"config train.ema_decay={t.ema_decay!r}: expected 0 (off) or a decay in (0, 1)")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"config checkpoint_every={cfg.checkpoint_every}: expected >= 0 (0 = no periodic train state)")
    phase_bounds(t, t.batch_size)  # validates the schedule before any data is read

    # Data and f first: every input problem fails before any training.
    target_train, held_out, _ = load_target(cfg)
    release = require_dir(cfg.data.release, "stage-1 data release")
    source = SourceData(
        os.path.join(release, cfg.data.rec),
        cfg.model.image_size,
        t.batch_size,
        cfg.seed,
        flip=False,
        cache=cfg.data.cache,
    )
    f = IdentityNet(cfg.identity, device)

    torch.manual_seed(cfg.seed)
    G = CFSMGenerator(cfg.model).to(device)
    D = MultiScaleDiscriminator(cfg.model).to(device)
    initial_basis = G.subspace.U.detach().clone()  # before any resume: the seeded initialisation
    ema = ParameterEMA(G, t.ema_decay) if t.ema_decay > 0 else None
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=tuple(t.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=tuple(t.betas))
    train_idx, held_idx = split_source(len(source), cfg.analysis.holdout_source, cfg.seed)
    held_source = source.get(held_idx)
    src_sampler = EpochSampler(len(train_idx), t.batch_size, cfg.seed)
    tgt_sampler = EpochSampler(len(target_train), t.batch_size, cfg.seed + 1)
    o_gen = torch.Generator().manual_seed(cfg.seed + 2)
    bounds = phase_bounds(t, len(train_idx))
    total = bounds[-1]

    def fresh_optimizers() -> tuple[torch.optim.Adam, torch.optim.Adam]:
        return (
            torch.optim.Adam(G.parameters(), lr=t.lr, betas=tuple(t.betas)),
            torch.optim.Adam(D.parameters(), lr=t.lr, betas=tuple(t.betas)),
        )

    state_path = os.path.join(cfg.out, "train_state.pt")
    start = 0
    state = _load_state(state_path, cfg) if cfg.resume and os.path.isfile(state_path) else None
    if state is not None:
        G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
        src_sampler.load_state_dict(state["source"]), tgt_sampler.load_state_dict(state["target"])
        o_gen.set_state(state["o_gen"])
        if ema is not None:
            ema.load_state_dict(state["G_ema"])
        start = int(state["step"])
        print(f"stage1: resuming from {state_path} at step {start}/{total}", file=sys.stderr)

    def save_state(step: int) -> None:
        save_checkpoint(
            state_path,
            {
                "format": STATE_FORMAT,
                "key": _state_key(cfg),
                "step": step,
                "G": G.state_dict(),
                "D": D.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "source": src_sampler.state_dict(),
                "target": tgt_sampler.state_dict(),
                "o_gen": o_gen.get_state(),
                **({"G_ema": ema.state_dict()} if ema is not None else {}),
            },
            hint="lower train.lr or check the data",
        )

    def get_source() -> torch.Tensor:
        idx = train_idx[src_sampler.next()]
        return to_model_input(source.get(idx)).to(device)

    G.train(), D.train()
    q = cfg.model.style_dim
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    t0 = time.perf_counter()
    line = ProgressLine("stage1", start, total) if progress else None
    end = total if stop_after is None else min(total, start + stop_after)
    for step in range(start, end):
        phase = phase_at(bounds, step)
        lam = float(t.lambda_id[phase])
        if t.reset_optimizers and step > 0 and step in bounds[1:-1]:
            # a phase starts: fresh Adam states for G and D, as each released train.py run builds its own. A run
            # resumed exactly here resets here too (the loaded states belong to the phase that ended).
            opt_g, opt_d = fresh_optimizers()
            if progress:
                print(
                    f"stage1: phase {phase + 1}/{len(bounds) - 1} (lambda_id {lam:g}) from step {step}: fresh "
                    "Adam states for G and D",
                    file=sys.stderr,
                    flush=True,
                )
        x = get_source()
        xt = to_model_input(target_train[tgt_sampler.next()]).to(device)
        losses: dict[str, torch.Tensor] = {}
        D.requires_grad_(False)  # the G step needs no D parameter gradients
        l_ort = orthogonality_loss(G.subspace.U, t.ortho_form)
        if step % 2 == 0:  # adversarial + identity
            o = torch.randn(x.size(0), q, generator=o_gen).to(device)
            fake = G(x, o)
            with torch.no_grad():
                f_x = f(x)
            losses["id"] = identity_loss(f_x, f(fake), o, la=t.la, ua=t.ua, lm=t.lm, um=t.um)
            losses["g_adv"] = lsgan_g_loss(D(fake))
            losses["g"] = losses["g_adv"] + lam * losses["id"] + t.ortho_weight * l_ort
        else:  # reconstruction with o = 0
            fake = G(x, x.new_zeros(x.size(0), q))
            losses["rec"] = reconstruction_loss(x, fake)
            losses["g"] = t.recon_weight * losses["rec"] + t.ortho_weight * l_ort
        losses["ort"] = l_ort
        _check_finite(losses, step, state_path, start)
        opt_g.zero_grad(set_to_none=True)
        losses["g"].backward()
        opt_g.step()
        if ema is not None:
            ema.update(G)

        D.requires_grad_(True)
        out = D(torch.cat([xt, fake.detach()]))
        b = xt.size(0)
        losses["d"] = lsgan_d_loss([s[:b] for s in out], [s[b:] for s in out])
        _check_finite({"d": losses["d"]}, step, state_path, start)
        opt_d.zero_grad(set_to_none=True)
        losses["d"].backward()
        opt_d.step()

        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
            counts[k] = counts.get(k, 0) + 1
        if (step + 1) % cfg.log_every == 0 or step == end - 1:
            window = {k: sums[k] / counts[k] for k in sums}  # only what was computed in this window
            for k, v in window.items():
                last[k] = v
                log(f"stage1.loss_{k}", v, step)
            log("stage1.lambda_id", lam, step)
            log("stage1.phase", phase, step)
            if line is not None:
                line.show(step + 1, {**dict(sorted(window.items())), "lambda_id": lam})
            sums, counts = {}, {}
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_state(step + 1)
    seconds = time.perf_counter() - t0
    if end < total:
        save_state(end)
    G.eval()
    saved, last_iterate = (ema.generator(G), G) if ema is not None else (G, None)
    return Stage1Result(
        generator=saved,
        steps=end,
        seconds=seconds,
        resumed_from=start,
        losses=last,
        initial_basis=initial_basis,
        held_out=held_out,
        identity=f,
        held_out_source=held_source,
        phase_bounds=bounds,
        last_iterate=last_iterate,
    )


def _check_finite(losses: dict[str, torch.Tensor], step: int, state_path: str, start: int) -> None:
    for name, value in losses.items():
        v = float(value.detach())
        if not math.isfinite(v):
            kept = (
                f"last good state kept at {state_path}"
                if os.path.isfile(state_path)
                else ("no state saved yet (lower checkpoint_every to keep one)")
            )
            raise Stage1Diverged(
                f"stage 1 step {step}: loss {name} is {v}; training stopped, {kept}; lower train.lr or check the data"
            )


# ----------------------------------------------------------------------------------------------- the run
def run_stage1(cfg: Stage1Config, log=None, progress: bool = False) -> dict:
    """Train, analyse, write ``generator.pt``, ``analysis.json``, ``metrics.json`` and the figures; returns the
    metrics document. The resume state is removed once everything is written."""
    from harness.cfsm.analysis import analyse, quality_targets, write_figures
    from harness.core.atomic import write_json_atomic

    result = train_stage1(cfg, log=log, progress=progress)
    G = result.generator
    device = next(G.parameters()).device
    devs = deviations(cfg)
    bounds = result.phase_bounds
    train_info = {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "final_losses": result.losses,
        "device": str(device),
        "phases": [
            {"lambda_id": float(lam), "from": a, "to": b}
            for lam, a, b in zip(cfg.train.lambda_id, bounds[:-1], bounds[1:])
        ],
        "reset_optimizers": cfg.train.reset_optimizers,
        "ema_decay": cfg.train.ema_decay,
        "saved": "ema" if result.last_iterate is not None else "last_iterate",
    }
    analysis: dict[str, Any] = {}
    figures: dict[str, str] = {}
    held_out, f = result.held_out, result.identity
    held_source = result.held_out_source if result.held_out_source is not None else held_out[:0]
    pairs = load_pairs(cfg)
    if len(held_source) >= 2 and len(held_out) >= 2:
        t0 = time.perf_counter()
        analysis = analyse(
            G,
            f,
            held_source,
            held_out,
            cfg.analysis,
            seed=cfg.seed,
            initial_basis=result.initial_basis,
            train=cfg.train,
            pairs=pairs,
        )
        if result.last_iterate is not None:  # what the run would have saved without the EMA, for comparison
            last = analyse(
                result.last_iterate,
                f,
                held_source,
                held_out,
                dataclasses.replace(cfg.analysis, magnitudes=()),
                seed=cfg.seed,
                pairs=pairs,
            )["summary"]
            analysis["summary"]["last_iterate"] = quality_targets(
                last["fd"]["synth_over_source"], last["identity"].get("gap")
            )
        analysis["seconds"] = round(time.perf_counter() - t0, 1)
        figures = write_figures(G, held_source, cfg.analysis, cfg.figures, seed=cfg.seed)
    else:
        analysis = {
            "skipped": f"needs >= 2 held-out source images and target crops, has {len(held_source)} and "
            f"{len(held_out)} (analysis.holdout_source / analysis.holdout_target, at most a fifth "
            "of each set)"
        }
        print(f"stage1: analysis skipped: {analysis['skipped']}", file=sys.stderr)
    meta = {
        "config": cfg.to_dict(),
        "deviations": devs,
        "train": train_info,
        "identity": cfg.identity,
        "analysis": analysis.get("summary", {}),
    }
    save_generator(os.path.join(cfg.out, "generator.pt"), G, meta)
    doc = {
        "format": 1,
        "stage": "cfsm_stage1",
        "config": cfg.to_dict(),
        "deviations": devs,
        "train": train_info,
        "figures": figures,
        "analysis": analysis,
    }
    write_json_atomic(doc, os.path.join(cfg.out, "analysis.json"))
    metrics = {
        "train": {
            "seconds": train_info["seconds"],
            "steps": result.steps,
            **{f"loss_{k}": v for k, v in result.losses.items()},
        },
        **analysis.get("summary", {}),
    }
    write_json_atomic(metrics, os.path.join(cfg.out, "metrics.json"))
    state_path = os.path.join(cfg.out, "train_state.pt")
    if os.path.isfile(state_path):
        os.remove(state_path)
    if log is not None:
        for section, values in metrics.items():
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    log(f"stage1.{section}.{k}", v, result.steps)
    return doc
