"""CFSM stage 1, the training run: ``python -m harness.stage1 [key=value ...]`` (Sacred-logged, DVC stage ``stage1``).

Trains the controllable synthesis model :class:`harness.models.cfsm.CFSMGenerator` on labelled source faces (an
insightface RecordIO; labels unused) and unlabelled target faces (CFSM's crop folder + list), with a frozen
identity network ``f`` (a ``harness.run`` checkpoint, by default the trunk's ``source_only`` model), as released in
``CFSM/train.py`` (``../shared/reference/cfsm_method.md`` §2):

* G step on alternating iterations. Even: ``o ~ N(0, I_q)``, ``L_G = L_adv + lambda_id * L_id + L_ort`` with the
  magnitude-guided identity loss. Odd: ``o = 0``, ``L_G = w_rec * |x - G(x, 0)|_1 + L_ort``.
* D step every iteration: LSGAN, real target images against 1, the detached current ``G`` output against 0.
  Real and fake go through D as one concatenated batch (D normalises per sample, so this is the same loss).
* Adam ``betas (0.5, 0.999)`` for G and D, no decay; ``lambda_id`` 8 -> 5 -> 2 over the released three phases
  (epochs 0-4, 5-7, 8-19 of 20, i.e. from 25 % and 40 % of training). The released phases restart Adam from
  scratch at each reload; here the optimiser state continues (one run, not three commands).

The dataclass defaults are the released recipe; ``params.yaml`` (section ``stage1``) holds the CPU default, whose
deviations (feasibility study ``../shared/reference/cfsm_cpu_feasibility.md``) are listed by
:func:`deviations` and written into the generator's metadata and every metrics file.

Robustness: the run checkpoints its whole state (G, D, both optimisers, step, every RNG) atomically every
``checkpoint_every`` iterations to ``<out>/train_state.pt`` and resumes from it when the config matches. A NaN or
inf in any loss stops the run before the optimiser step with a one-line message; the last good state stays on
disk; a state whose weights are not finite is never saved. A state that cannot be read (truncated, foreign,
or pickling anything beyond tensors and plain data: files load with ``weights_only=True``) or holds non-finite
weights is set aside as ``train_state.pt.unreadable-<time>`` / ``.nonfinite-<time>`` and the run starts fresh,
saying so, as ``harness.run`` does. The target list is checked before training (the first missing crop is
named). While it runs, the stage holds ``out`` (``<out>.lock``; a second stage on it fails at once naming the
holder). Every error is one line ``harness.stage1: ...`` and exit code 2 (``CFSM_TRACEBACK=1``: traceback too).

Outputs under ``out``: ``generator.pt`` (what stage 2 loads, :func:`harness.models.cfsm.load_generator`),
``metrics.json`` (for ``dvc metrics``; the Sacred run keeps it as the artifact ``stage1_metrics.json``, since
Sacred's own ``metrics.json`` holds the logged series), ``analysis.json`` (every figure of
:mod:`harness.stage1_analysis`), and the two pictures under ``figures``.
"""

from __future__ import annotations

import dataclasses
import json
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

from harness.config import RunConfig, _plain, config_from_cli, from_dict
from harness.data.wider import CropFolderDataset, read_crop_list
from harness.errors import require_dir, require_file
from harness.atomic import load_torch
from harness.models.cfsm import (
    CFSMConfig, CFSMGenerator, MultiScaleDiscriminator, identity_loss, lsgan_d_loss, lsgan_g_loss,
    orthogonality_loss, reconstruction_loss, save_generator,
)
from harness.runtime import tune_malloc

STATE_FORMAT = "cfsm-stage1-state/1"


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Stage1Data:
    release: str = "datasets/synthface/default"
    rec: str = "faces_synthface"  # source RecordIO folder inside the release (MS1MV2: faces_emore)
    target: str = "target"  # <release>/<target>/crops + <target_list>
    target_list: str = "target_list.txt"  # CFSM ships target_list_wf_12k.txt; its model used a 70K list
    pairs: str = "stage1_pairs"  # SynthFace's clean/degraded analysis pairs; "" when absent (real data)
    cache: bool = True  # decode the source set into memory once (False streams it from the RecordIO)


@dataclass(frozen=True)
class Stage1Train:
    batch_size: int = 32  # the README's commands (train.py's default is 64)
    epochs: float = 20.0  # over the source list, as released
    iterations: int = 0  # > 0 overrides epochs (the CPU default fixes the budget in iterations)
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    lambda_id: tuple[float, ...] = (8.0, 5.0, 2.0)
    lambda_id_from: tuple[float, ...] = (0.0, 0.25, 0.40)  # fraction of training where each value starts
    recon_weight: float = 1.0
    ortho_weight: float = 1.0
    ortho_form: str = "squared_mean"  # released; "l1" is the paper's written norm as far as it can be read
    # identity loss target t(a) = lm + (a - la)(um - lm)/(ua - la) (MagFace's names, CFSM train.py defaults)
    la: float = 0.0
    ua: float = 6.0
    lm: float = 0.05
    um: float = 0.65


@dataclass(frozen=True)
class Stage1Analysis:
    holdout_target: int = 500  # target crops kept out of training, for the domain distance (0: none, no analysis)
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
        return _plain(dataclasses.asdict(self))


# Why each CPU-default value differs from the released one (shown next to the values in every metrics file).
DEVIATION_REASONS = {
    "model.image_size": "112 px does not train in ~10 min on 2 cores; 32 px did in the feasibility study",
    "model.dim": "G width 16 instead of 64 (2-core budget)",
    "model.d_scales": "at 32 px a third scale puts instance norm on 1x1 or empty maps",
    "model.d_layers": "3 blocks (64/128/256) at 32 px, for the same reason",
    "model.adain_scale": "1+gamma starts the decoder as an identity map; with gamma it did not learn on CPU",
    "train.lr": "5e-4: with 1e-4 the style code was ignored within the CPU budget",
    "train.recon_weight": "10: reconstruction weight that made the CPU run learn",
    "train.iterations": "the CPU budget is fixed in iterations (about 10 minutes)",
    "train.batch_size": "16: twice the updates in the same CPU time (32 x 1500 iterations: FD ratio 0.67; 16 x 3000: 0.60)",
    "train.epochs": "the CPU budget is fixed in iterations",
    "seed": "run seed",
}


def deviations(cfg: Stage1Config) -> dict[str, dict[str, Any]]:
    """Training-relevant values that differ from the released recipe: ``{key: {paper, used, why}}``."""
    paper = _flat(Stage1Config().to_dict())
    used = _flat(cfg.to_dict())
    out = {}
    for key in sorted(used):
        if key.split(".")[0] not in ("model", "train", "seed"):
            continue
        if used[key] != paper[key]:
            out[key] = {"paper": paper[key], "used": used[key], "why": DEVIATION_REASONS.get(key, "")}
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def lambda_id_at(cfg: Stage1Train, progress: float) -> float:
    """The identity-loss weight at ``progress`` in [0, 1) of training (piecewise constant, released phases)."""
    if len(cfg.lambda_id) != len(cfg.lambda_id_from) or not cfg.lambda_id:
        raise ValueError("train.lambda_id and train.lambda_id_from must have the same, non-zero length")
    value = cfg.lambda_id[0]
    for start, lam in zip(cfg.lambda_id_from, cfg.lambda_id):
        if progress >= start:
            value = lam
    return float(value)


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
        idx = self.perm[self.position:self.position + self.batch_size]
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
    from harness.train import load_images

    root = os.path.join(require_dir(cfg.data.release, "stage-1 data release"), cfg.data.target)
    crops = read_crop_list(os.path.join(root, "crops"), os.path.join(root, cfg.data.target_list))
    images = load_images(CropFolderDataset(crops).__getitem__, len(crops.names), cfg.model.image_size)
    hold = min(cfg.analysis.holdout_target, len(images) // 5)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + 17))
    return images[perm[hold:]], images[perm[:hold]], crops.list_path


def load_pairs(cfg: Stage1Config) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SynthFace's ``stage1_pairs`` (clean, degraded) uint8 at the model's size, or None when not configured."""
    from harness.data.images import read_image
    from harness.data.text import read_lines
    from harness.train import load_images

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
                from harness.errors import DataFormatError

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
        from harness.train import build_model

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
    identity: "IdentityNet"


def total_iterations(cfg: Stage1Config, n_source: int) -> int:
    if cfg.train.iterations > 0:
        return cfg.train.iterations
    return max(1, int(round(cfg.train.epochs * (n_source // cfg.train.batch_size))))


def _state_key(cfg: Stage1Config) -> dict:
    """The part of the config a resumed run must share with the saved state (not paths, logging or analysis)."""
    d = cfg.to_dict()
    return {"seed": d["seed"], "identity": d["identity"], "data": d["data"], "model": d["model"], "train": d["train"]}


def _atomic_save(obj: Any, path: str) -> None:
    """:func:`harness.train.save_checkpoint`: atomic, and never a state whose weights are not finite."""
    from harness.train import save_checkpoint

    save_checkpoint(path, obj)


def _load_state(path: str, cfg: "Stage1Config") -> dict | None:
    """The resumable state at ``path`` when it can continue this run; else None, saying why on stderr. A file that
    cannot be read (truncated, foreign, pickled code) or holds non-finite weights is set aside as
    ``<path>.unreadable-<time>`` / ``<path>.nonfinite-<time>`` (kept, out of the way), as ``harness.run`` does."""
    from harness.train import NonFiniteStateError, check_finite_state, set_aside

    try:
        state = load_torch(path, "stage-1 train state")
    except Exception as exc:  # noqa: BLE001
        aside = set_aside(path, "unreadable")
        print(f"stage1: unreadable train state ({exc}): set aside as {aside}; starting fresh", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("key") != _state_key(cfg):
        print(f"stage1: ignoring {path} (saved with another config)", file=sys.stderr)
        return None
    try:
        check_finite_state(state, path)
    except NonFiniteStateError as exc:
        aside = set_aside(path, "nonfinite")
        print(f"stage1: {exc}: not resumed, set aside as {aside}; starting fresh", file=sys.stderr)
        return None
    return state


def train_stage1(cfg: Stage1Config, log: Callable[[str, float, int], None] | None = None,
                 progress: bool = False, stop_after: int | None = None) -> Stage1Result:
    """Train G and D as configured; returns the trained generator. ``stop_after`` ends the loop early after that
    many iterations (state saved), as a kill would, for resume tests."""
    from harness.train import SourceData, resolve_device, to_model_input

    log = log or (lambda name, value, step: None)
    tune_malloc()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    t = cfg.train
    if t.ortho_form not in ("squared_mean", "l1"):
        raise ValueError(f"config train.ortho_form={t.ortho_form!r}: expected 'squared_mean' or 'l1'")
    lambda_id_at(t, 0.0)  # validates the schedule

    # Data and f first: every input problem fails before any training.
    target_train, held_out, _ = load_target(cfg)
    release = require_dir(cfg.data.release, "stage-1 data release")
    source = SourceData(os.path.join(release, cfg.data.rec), cfg.model.image_size, t.batch_size, cfg.seed,
                        flip=False, cache=cfg.data.cache)
    f = IdentityNet(cfg.identity, device)

    torch.manual_seed(cfg.seed)
    G = CFSMGenerator(cfg.model).to(device)
    D = MultiScaleDiscriminator(cfg.model).to(device)
    initial_basis = G.subspace.U.detach().clone()  # before any resume: the seeded initialisation
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=tuple(t.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=tuple(t.betas))
    src_sampler = EpochSampler(len(source.dataset), t.batch_size, cfg.seed)
    tgt_sampler = EpochSampler(len(target_train), t.batch_size, cfg.seed + 1)
    o_gen = torch.Generator().manual_seed(cfg.seed + 2)
    total = total_iterations(cfg, len(source.dataset))

    state_path = os.path.join(cfg.out, "train_state.pt")
    start = 0
    state = _load_state(state_path, cfg) if cfg.resume and os.path.isfile(state_path) else None
    if state is not None:
        G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
        src_sampler.load_state_dict(state["source"]), tgt_sampler.load_state_dict(state["target"])
        o_gen.set_state(state["o_gen"])
        start = int(state["step"])
        print(f"stage1: resuming from {state_path} at step {start}/{total}", file=sys.stderr)

    def save_state(step: int) -> None:
        _atomic_save({
            "format": STATE_FORMAT, "key": _state_key(cfg), "step": step,
            "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "source": src_sampler.state_dict(), "target": tgt_sampler.state_dict(), "o_gen": o_gen.get_state(),
        }, state_path)

    def get_source() -> torch.Tensor:
        idx = src_sampler.next()
        return to_model_input(source._get(idx)).to(device)

    G.train(), D.train()
    q = cfg.model.style_dim
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    for step in range(start, end):
        lam = lambda_id_at(t, step / total)
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
            for k in sums:
                last[k] = sums[k] / counts[k]
                log(f"stage1.loss_{k}", last[k], step)
            log("stage1.lambda_id", lam, step)
            if progress:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                shown = " ".join(f"{k} {v:.4f}" for k, v in sorted(last.items()))
                print(f"stage1 step {step + 1}/{total} ({rate:.2f} it/s) {shown}", file=sys.stderr, flush=True)
            sums, counts = {}, {}
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_state(step + 1)
    seconds = time.perf_counter() - t0
    if end < total:
        save_state(end)
    G.eval()
    return Stage1Result(generator=G, steps=end, seconds=seconds, resumed_from=start, losses=last,
                        initial_basis=initial_basis, held_out=held_out, identity=f)


def _check_finite(losses: dict[str, torch.Tensor], step: int, state_path: str, start: int) -> None:
    for name, value in losses.items():
        v = float(value.detach())
        if not math.isfinite(v):
            kept = f"last good state kept at {state_path}" if os.path.isfile(state_path) else (
                "no state saved yet (lower checkpoint_every to keep one)")
            raise Stage1Diverged(f"stage 1 step {step}: loss {name} is {v}; training stopped, {kept}; "
                                 "lower train.lr or check the data")


# ----------------------------------------------------------------------------------------------- entry point
def run_stage1(cfg: Stage1Config, log=None, progress: bool = False) -> dict:
    """Train, analyse, write ``generator.pt``, ``analysis.json``, ``metrics.json`` and the figures; returns the
    metrics document. The resume state is removed once everything is written."""
    from harness.atomic import write_json_atomic
    from harness.stage1_analysis import analyse, write_figures

    result = train_stage1(cfg, log=log, progress=progress)
    G = result.generator
    device = next(G.parameters()).device
    devs = deviations(cfg)
    train_info = {"steps": result.steps, "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from,
                  "final_losses": result.losses, "device": str(device)}
    analysis: dict[str, Any] = {}
    figures: dict[str, str] = {}
    held_out, f = result.held_out, result.identity
    pairs = load_pairs(cfg)
    if pairs is not None and len(held_out) >= 2:
        t0 = time.perf_counter()
        analysis = analyse(G, f, pairs[0], pairs[1], held_out, cfg.analysis, seed=cfg.seed,
                           initial_basis=result.initial_basis, train=cfg.train)
        analysis["seconds"] = round(time.perf_counter() - t0, 1)
        figures = write_figures(G, pairs[0], cfg.analysis, cfg.figures, seed=cfg.seed)
    meta = {"config": cfg.to_dict(), "deviations": devs, "train": train_info, "identity": cfg.identity,
            "analysis": analysis.get("summary", {})}
    save_generator(os.path.join(cfg.out, "generator.pt"), G, meta)
    doc = {"format": 1, "stage": "cfsm_stage1", "config": cfg.to_dict(), "deviations": devs, "train": train_info,
           "figures": figures, "analysis": analysis}
    write_json_atomic(doc, os.path.join(cfg.out, "analysis.json"))
    metrics = {"train": {"seconds": train_info["seconds"], "steps": result.steps,
                         **{f"loss_{k}": v for k, v in result.losses.items()}},
               **analysis.get("summary", {})}
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


def make_config(argv: list[str]) -> Stage1Config:
    return config_from_cli(argv, Stage1Config(), section="stage1", doc=__doc__)


#: Sacred artifact names of the stage's outputs. ``metrics.json`` is renamed: Sacred's FileStorageObserver keeps its
#: own ``metrics.json`` (the ``log_scalar`` series) in the run folder, and an artifact of that name collided with it.
ARTIFACTS = {"generator.pt": "generator.pt", "analysis.json": "analysis.json", "metrics.json": "stage1_metrics.json"}


def main(argv: list[str] | None = None) -> int:
    """The command line. Every error is one line ``harness.stage1: ...`` and exit code 2 (``CFSM_TRACEBACK=1``
    also prints the traceback); while it runs, the stage holds its ``out`` folder (``<out>.lock``)."""
    from harness.runtime import PathLock, quiet_sacred_failures, report_error, sacred_experiment

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = make_config(argv)
    except Exception as exc:  # noqa: BLE001
        return report_error("harness.stage1", exc)

    try:
        ex = sacred_experiment("cfsm-stage1", cfg.sacred, cfg.to_dict())
        quiet_sacred_failures(ex)
        docs: list[dict] = []

        @ex.main
        def _main(_run):
            log = lambda name, value, step: _run.log_scalar(name, float(value), step)  # noqa: E731
            docs.append(run_stage1(cfg, log=log, progress=True))
            for name, artifact in ARTIFACTS.items():
                _run.add_artifact(os.path.join(cfg.out, name), artifact)
            return docs[0]["analysis"].get("summary", {})

        with PathLock(cfg.out, "stage-1 output folder"):
            ex.run(options={"--name": "cfsm_stage1"})
    except Exception as exc:  # noqa: BLE001
        return report_error("harness.stage1", exc)
    summary = docs[0]["analysis"].get("summary", {})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
