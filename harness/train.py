"""The one trainer, top to bottom (in the shape of insightface's ``arcface_torch/train_v2.py``).

Source data (an insightface RecordIO) -> a method's ``augment`` and ``loss`` hooks -> SGD (or AdamW) with linear
warm-up and polynomial decay (insightface ``PolyScheduler``), gradient-norm clipping, AMP on CUDA -> one
checkpoint. The recipe of CFSM's released FR training is SGD lr 0.1, momentum 0.9, weight decay 5e-4, 2 warm-up
epochs, poly power 2, clip 5 (``GuidedFaceRecognition/configs/arcface_ms1mv2_r50_ours.py``); every value is a
config knob.

Determinism: on CPU, the same seed gives the same weights (data order, flips, initialisation and the method's
randomness all come from generators seeded by the run seed). DDP: the loop is written for one rank; sharding the
sampler by rank, wrapping ``backbone`` in DDP (``FRModel.backbone``) while keeping ``FRModel.raw`` unwrapped, and
letting rank 0 alone write are the only additions ``torchrun`` needs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.config import RunConfig
from harness.data.recordio import FaceRecDataset
from harness.data.wider import CropFolderDataset, read_crop_list
from harness.errors import require_dir
from harness.runtime import tune_malloc
from harness.models import build_backbone, build_head
from methods import Batch, FRModel, Method, build_method

LogFn = Callable[[str, float, int], None]


# ----------------------------------------------------------------------------------------------- data
def to_model_input(images_u8: torch.Tensor, channel_order: str = "RGB") -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 normalised to [-1, 1] as insightface does: (x / 255 - 0.5) / 0.5."""
    x = images_u8.float().div_(255.0).sub_(0.5).div_(0.5)
    return x.flip(1) if channel_order == "BGR" else x


def _resize_u8(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) uint8, antialiased bilinear (identity when already that size)."""
    t = torch.from_numpy(images).permute(0, 3, 1, 2)
    if t.shape[-1] == size and t.shape[-2] == size:
        return t.contiguous()
    out = F.interpolate(t.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def load_images(get: Callable[[int], np.ndarray], n: int, size: int, chunk: int = 1024) -> torch.Tensor:
    """Decode ``n`` images through ``get(i)`` into one (n, 3, size, size) uint8 tensor."""
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = _resize_u8(np.stack([get(i) for i in range(start, stop)]), size)
    return out


class SourceData:
    """The labelled source set as an endless stream of shuffled batches (epoch-wise permutations, drop_last)."""

    def __init__(self, root: str, input_size: int, batch_size: int, seed: int, flip: bool, cache: bool = True):
        self.dataset = FaceRecDataset(root)
        self.labels = torch.from_numpy(self.dataset.labels().astype(np.int64))
        self.num_classes = self.dataset.num_classes
        self.input_size, self.batch_size, self.flip = input_size, batch_size, flip
        self.generator = torch.Generator().manual_seed(seed)
        if len(self.dataset) < batch_size:
            raise ValueError(f"{root}: {len(self.dataset)} images, fewer than one batch of {batch_size}")
        self.images = load_images(lambda i: self.dataset[i][0], len(self.dataset), input_size) if cache else None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def _get(self, idx: torch.Tensor) -> torch.Tensor:
        if self.images is not None:
            return self.images[idx]
        return load_images(lambda i: self.dataset[int(idx[i])][0], len(idx), self.input_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            perm = torch.randperm(len(self.dataset), generator=self.generator)
            for b in range(self.steps_per_epoch):
                idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
                x = self._get(idx)
                if self.flip:
                    mask = torch.rand(len(idx), generator=self.generator) < 0.5
                    x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
                yield x, self.labels[idx]


class TargetData:
    """Unlabelled target crops (CFSM's WIDER FACE folder + list) as an endless stream of random batches."""

    def __init__(self, crops_root: str, list_file: str, input_size: int, batch_size: int, seed: int):
        crops = read_crop_list(crops_root, list_file)
        ds = CropFolderDataset(crops)
        self.images = load_images(ds.__getitem__, len(ds), input_size)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed + 1_000_003)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.images[torch.randint(len(self.images), (self.batch_size,), generator=self.generator)]


# ----------------------------------------------------------------------------------------------- schedule
def poly_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, power: float) -> float:
    """insightface ``PolyScheduler``: linear warm-up from 0, then base * (1 - progress) ** power."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * max(0.0, 1.0 - progress) ** power


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def build_model(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    m = cfg.model
    kw = dict(input_size=cfg.data.input_size, num_features=m.embedding_size, dropout=m.dropout, stem_stride=m.stem_stride)
    if m.backbone == "small":
        kw.update(widths=tuple(m.widths), layers=tuple(m.layers))
    backbone = build_backbone(m.backbone, **kw)
    head = build_head(m.head, m.embedding_size, num_classes, s=m.s, m=m.m)
    return backbone, head


@dataclass
class TrainResult:
    backbone: torch.nn.Module
    head: torch.nn.Module
    method: Method
    steps: int
    seconds: float
    images_per_second: float
    final_loss: float
    device: str
    amp: bool


def save_checkpoint(path: str, payload: dict) -> None:
    """Atomic: write to a temporary file in the same folder, then rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- train
def train(cfg: RunConfig, checkpoint_path: str | None = None, log: LogFn | None = None, progress: bool = True) -> TrainResult:
    log = log or (lambda name, value, step: None)
    tune_malloc()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    amp = device.type == "cuda" if cfg.amp == "auto" else cfg.amp == "on"

    release = require_dir(cfg.data.release, "SynthFace/insightface release")
    source = SourceData(os.path.join(release, cfg.data.rec), cfg.data.input_size, cfg.optim.batch_size, cfg.seed, cfg.data.flip, cfg.data.cache)
    backbone, head = build_model(cfg, source.num_classes)
    method = build_method(cfg.method, cfg.model.embedding_size, source.num_classes, cfg.hparams_seed, cfg.hparams)
    target = None
    if method.uses_target:
        troot = os.path.join(release, cfg.data.target)
        target = iter(TargetData(os.path.join(troot, "crops"), os.path.join(troot, "target_list.txt"), cfg.data.input_size, cfg.optim.batch_size, cfg.seed))
    backbone.to(device), head.to(device), method.to(device)
    memory_format = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(memory_format=memory_format)
    fr = FRModel(backbone=backbone, raw=backbone, head=head)

    params = [{"params": [p for p in backbone.parameters() if p.requires_grad]}, {"params": list(head.parameters())}]
    params += method.param_groups()
    o = cfg.optim
    if o.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    elif o.name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        raise ValueError(f"config optim.name={o.name!r}: expected 'sgd' or 'adamw'")
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    total_steps = max(1, int(round(o.epochs * source.steps_per_epoch)))
    method.total_steps = total_steps  # progress-based schedules (DANN's gradient-reversal warm-up)
    warmup_steps = int(round(o.warmup_epochs * source.steps_per_epoch))
    all_params = [p for g in optimizer.param_groups for p in g["params"]]

    backbone.train(), head.train(), method.train()
    stream = iter(source)
    t0 = time.perf_counter()
    running = float("nan")
    bar = tqdm(range(total_steps), desc=f"train {cfg.method}", disable=not progress, mininterval=5.0)
    for step in bar:
        lr = poly_lr(step, o.lr, warmup_steps, total_steps, o.poly_power)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        x_u8, y = next(stream)
        batch = Batch(x=to_model_input(x_u8, cfg.data.channel_order).to(device, memory_format=memory_format), y=y.to(device), step=step)
        if target is not None:
            batch.xt = to_model_input(next(target), cfg.data.channel_order).to(device, memory_format=memory_format)
        with torch.autocast(device_type=device.type, enabled=amp):
            batch = method.augment(batch, fr)
            loss, scalars = method.loss(batch, fr)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the training loss is {loss.item()} (lr {lr:g}); lower optim.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(all_params, o.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        if step % cfg.log_every == 0 or step == total_steps - 1:
            log("train.loss", value, step)
            log("train.lr", lr, step)
            for k, v in scalars.items():
                log(f"train.{k}", float(v), step)
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.4f}")
    seconds = time.perf_counter() - t0
    result = TrainResult(
        backbone=backbone, head=head, method=method, steps=total_steps, seconds=seconds,
        images_per_second=total_steps * o.batch_size / seconds, final_loss=running, device=str(device), amp=amp,
    )
    if checkpoint_path:
        save_checkpoint(checkpoint_path, {
            "backbone": backbone.state_dict(), "head": head.state_dict(), "method": method.state_dict(),
            "optimizer": optimizer.state_dict(), "step": total_steps, "config": cfg.to_dict(),
            "num_classes": source.num_classes,
            "train_info": {"steps": total_steps, "seconds": round(seconds, 3), "images_per_second": round(result.images_per_second, 1),
                           "final_loss": running, "device": str(device), "amp": amp},
        })
    return result
