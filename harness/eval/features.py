"""The one embedding loop every evaluator uses: batches of uint8 images -> model -> float32 features.

Conventions (insightface ``eval_ijbc.py``, AdaFace ``validation_*``): RGB uint8 NCHW in, optional channel swap
to BGR, ``(x / 255 - 0.5) / 0.5`` (fed channels-last), the model in eval mode under ``torch.inference_mode`` (its
training mode is restored afterwards), optional flip fusion by *adding* the features of the mirrored batch. A model
returning ``(embedding, norm)`` (AdaFace) gives ``embedding * norm``, i.e. the unnormalised feature.

**Crop cache** (``data.crop_cache``; speed only, the inputs are bit-identical). Reading, decoding and aligning the
crops is the same work for every model evaluated on a release. Inside ``with crop_cache(folder, key):`` (entered
by :mod:`harness.eval.benchmarks` around one benchmark's evaluation), each :func:`embed_batches` call keeps the
uint8 batches its ``load`` returned and, at the end of the pass, writes them atomically to
``<folder>/<sha256>.npy`` (the digest of ``key``, which names everything the crops depend on, and of the call's
position and row count); a later evaluation with the same key reads its batches from that file (memory-mapped)
instead of calling ``load``. A file that is missing, unreadable or of another shape is (re)written.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CROP_CACHE_FORMAT = "cfsm-crops/1"


class CropCache:
    """The crop cache of one benchmark evaluation (see the module docstring); ``status`` lists, per feature pass,
    ``hit``, ``written`` or ``uncacheable`` (batches that are not uint8 of one shape are never cached)."""

    def __init__(self, folder: str, key: dict):
        self.folder, self.key = folder, {"format": CROP_CACHE_FORMAT, **key}
        self.status: list[str] = []

    def _path(self, n: int) -> str:
        part = {**self.key, "pass": len(self.status), "rows": int(n)}
        return os.path.join(self.folder, hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest() + ".npy")

    def wrap(self, n: int, load: Callable) -> tuple[Callable, Callable[[], None]]:
        """``(load, finish)`` for one feature pass of ``n`` rows: a cached file's reader (and a no-op), or ``load``
        recording its batches (and ``finish``, which writes them)."""
        import torch

        path = self._path(n)
        if os.path.isfile(path):
            try:
                crops = np.load(path, mmap_mode="r", allow_pickle=False)
                if crops.dtype != np.uint8 or crops.shape[0] != n:
                    raise ValueError(f"{crops.dtype} {crops.shape}, expected uint8 with {n} rows")
                self.status.append("hit")
                return (lambda start, stop: torch.from_numpy(np.array(crops[start:stop]))), (lambda: None)
            except (OSError, ValueError) as exc:
                print(f"{path}: unusable crop cache ({exc}); reading the crops afresh", file=sys.stderr)
        self.status.append("written")
        index = len(self.status) - 1
        kept: list = []

        def recording(start: int, stop: int):
            x = load(start, stop)
            if kept is not None and self.status[index] == "written":
                same = not kept or x.shape[1:] == kept[0].shape[1:]
                if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or not same:
                    self.status[index] = "uncacheable"
                    kept.clear()
                else:
                    kept.append(x.clone())
            return x

        def finish() -> None:
            if self.status[index] != "written" or sum(len(k) for k in kept) != n:
                self.status[index] = "uncacheable"
                return
            from harness.core.atomic import write_atomic, write_json_atomic

            os.makedirs(self.folder, exist_ok=True)
            write_json_atomic(self.key, path[:-4] + ".json")
            write_atomic(path, lambda f: np.save(f, torch.cat(kept).numpy(), allow_pickle=False), binary=True)
            kept.clear()

        return recording, finish


_ACTIVE: contextvars.ContextVar[CropCache | None] = contextvars.ContextVar("crop_cache", default=None)


@contextlib.contextmanager
def crop_cache(folder: str, key: dict) -> Iterator[CropCache | None]:
    """The crop cache for the :func:`embed_batches` calls inside the block (None, and no cache, when ``folder``
    is "")."""
    if not folder:
        yield None
        return
    cache = CropCache(folder, key)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def _as_feature(out):
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(
                f"model returned a {type(out).__name__} of {len(out)} items; expected a tensor or (emb, norm)"
            )
        return out[0] * out[1]
    return out


def embed_batches(
    model,
    n: int,
    load: Callable[[int, int], torch.Tensor],
    batch_size: int = 64,
    device="cpu",
    channel_order: str = "RGB",
    flip: str = "none",
) -> np.ndarray:
    """Features (n, D) float32 of images ``load(start, stop)`` -> (B, 3, H, W) uint8 RGB, in batches.

    ``flip``: ``"sum"`` adds the features of the horizontally mirrored batch; ``"none"`` does not.
    """
    import torch

    if flip not in ("sum", "none"):
        raise ValueError(f"flip must be 'sum' or 'none', got {flip!r}")
    bs = max(1, int(batch_size))
    out: np.ndarray | None = None
    cache = _ACTIVE.get()
    finish = None
    if cache is not None and n > 0:
        load, finish = cache.wrap(n, load)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                x = load(start, stop)
                if channel_order == "BGR":
                    x = x.flip(1)
                # channels_last: oneDNN / cuDNN convolutions run about 2x faster on it than on NCHW (measured on
                # the small IResNet, batch 256, 2 CPU cores: 0.23 s vs 0.47 s); the features are the same up to
                # float rounding.
                x = x.to(device=device).float().div_(255.0).sub_(0.5).div_(0.5)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                f = _as_feature(model(x))
                if flip == "sum":
                    f = f + _as_feature(model(torch.flip(x, dims=(3,))))
                if f.dim() != 2 or f.shape[0] != stop - start:
                    raise ValueError(f"model must map (B, 3, S, S) to (B, D); got output shape {tuple(f.shape)}")
                f = f.float().cpu().numpy()
                if out is None:
                    out = np.empty((n, f.shape[1]), dtype=np.float32)
                out[start:stop] = f
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    if out is None:
        raise ValueError("no images to embed")
    if finish is not None:
        finish()
    return out
