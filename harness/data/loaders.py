"""The training streams: the labelled source set (an insightface RecordIO, or the records an index list names) and the
unlabelled target crops (CFSM's WIDER FACE folder + list), decoded once into uint8 tensors and served as seeded,
resumable, rank-sharded batches; and the uint8 -> model input conversion insightface uses. The trainer
(:mod:`harness.engine.train`), CFSM stage 1 (:mod:`harness.cfsm.train`) and the benchmarks read their data through
these."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.recordio import FaceRecDataset
from harness.data.wider import CropFolderDataset, read_crop_list

#: Bumped when what a decoded-image cache file holds changes in a way its key does not see.
DECODE_CACHE_FORMAT = "cfsm-decoded/1"


def to_model_input(images_u8: torch.Tensor, channel_order: str = "RGB") -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 normalised to [-1, 1] as insightface does: (x / 255 - 0.5) / 0.5."""
    x = images_u8.float().div_(255.0).sub_(0.5).div_(0.5)
    return x.flip(1) if channel_order == "BGR" else x


def resize_u8(images: np.ndarray, size: int) -> torch.Tensor:
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
        out[start:stop] = resize_u8(np.stack([get(i) for i in range(start, stop)]), size)
    return out


def _sha256_files(paths: Iterable[str]) -> str:
    """One SHA-256 over the bytes of ``paths``, in order (each file's length and bytes, so no two lists collide)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def decoder_code_sha256() -> str:
    """The SHA-256 of the source of the modules that turn stored images into uint8 tensors (this module, the image
    decoder, the RecordIO and crop-folder readers): a cache written by other decoding code is never read."""
    from harness.data import images, recordio, wider

    return _sha256_files([sys.modules[__name__].__file__, images.__file__, recordio.__file__, wider.__file__])


def cached_decode(cache_dir: str, key: dict, decode: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """``decode()`` (a uint8 tensor) read from, or written once to, the decoded-image cache ``cache_dir``.

    The file is ``<cache_dir>/<sha256 of key>.npy`` (``np.save`` of the tensor; ``key`` is a JSON-able mapping of
    everything the images depend on: the stored bytes' content hash, the size, the decoding code, see
    :func:`decoder_code_sha256`), written atomically (:func:`harness.core.atomic.write_atomic`) beside a
    ``<sha256>.json`` holding ``key``, so concurrent runs never read a partial file; a file that does not load as
    uint8 is decoded afresh and rewritten (said on stderr). The tensor returned is the same, bit for bit, either
    way: the cache stores the decoded array itself. ``cache_dir`` "" decodes without a cache. Returns the tensor
    and what happened (``{"folder", "file", "status": "hit" | "written" | "off"}``) for the run's record."""
    if not cache_dir:
        return decode(), {"status": "off"}
    from harness.core.atomic import write_atomic, write_json_atomic

    key = {"format": DECODE_CACHE_FORMAT, **key}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = os.path.join(cache_dir, f"{digest}.npy")
    info = {"folder": cache_dir, "file": os.path.basename(path)}
    if os.path.isfile(path):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.dtype != np.uint8:
                raise ValueError(f"dtype {arr.dtype}, expected uint8")
            return torch.from_numpy(np.array(arr)), {**info, "status": "hit"}
        except (OSError, ValueError) as exc:
            print(f"{path}: unreadable decoded-image cache ({exc}); decoding afresh", file=sys.stderr)
    images = decode()
    os.makedirs(cache_dir, exist_ok=True)
    write_json_atomic(key, os.path.join(cache_dir, f"{digest}.json"))
    write_atomic(path, lambda f: np.save(f, images.numpy(), allow_pickle=False), binary=True)
    return images, {**info, "status": "written"}


def read_index_list(path: str, dataset: FaceRecDataset) -> np.ndarray:
    """The item positions of ``dataset`` named by an index list: one RecordIO record key per line (the insightface
    image index of ``train.idx``, as ``MXFaceDataset.imgidx`` holds it; anything after the first whitespace is
    ignored, blank lines and ``#`` comments are skipped). Returned in the list's order. A line that is not an
    integer, a key that is not an image of the RecordIO, a repeated key or an empty list is a one-line
    :class:`~harness.core.errors.DataFormatError` naming the file and line."""
    from harness.core.errors import DataFormatError, require_file
    from harness.data.text import read_lines

    require_file(path, "data.index_list (record keys to train on)")
    position = {int(k): i for i, k in enumerate(dataset.image_keys)}
    out: list[int] = []
    seen: dict[int, int] = {}
    for n, line in enumerate(read_lines(path), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        token = text.split()[0]
        try:
            key = int(token)
        except ValueError:
            raise DataFormatError(path, f"line {n}", f"{token!r} is not a record key (an integer)") from None
        if key not in position:
            raise DataFormatError(path, f"line {n}", f"record {key} is not an image of {dataset.rec_path}")
        if key in seen:
            raise DataFormatError(path, f"line {n}", f"record {key} repeats line {seen[key]}")
        seen[key] = n
        out.append(position[key])
    if not out:
        raise DataFormatError(path, None, "the index list names no record")
    return np.asarray(out, dtype=np.int64)


class SourceData:
    """The labelled source set as an endless stream of shuffled batches (epoch-wise permutations, drop_last),
    sharded over ``world_size`` ranks.

    Every rank draws the same seeded global permutation per epoch; a step takes the next ``world_size x
    batch_size`` samples of it (the global batch) and rank ``r`` keeps the ``r``-th contiguous slice of
    ``batch_size`` (the role of torch's ``DistributedSampler``, but sliced per global batch, so the union over the
    ranks of one step is exactly the one-process batch of ``world_size x batch_size``). The flip mask is drawn for
    the whole global batch from the same generator and sliced the same way, so the generator stays in step on
    every rank. With one rank this is the original stream, draw for draw.

    The position is resumable (:meth:`state_dict`): the epoch, the generator state at the epoch's start (to
    redraw its permutation), the current generator state, and the number of global samples consumed in the epoch.
    """

    def __init__(
        self,
        root: str,
        input_size: int,
        batch_size: int,
        seed: int,
        flip: bool,
        cache: bool = True,
        rank: int = 0,
        world_size: int = 1,
        index_list: str = "",
        decode_cache: str = "",
    ):
        self.dataset = FaceRecDataset(root)
        # the items trained on: every image, or the records an index list names (``data.index_list``)
        self.items = (
            read_index_list(index_list, self.dataset) if index_list else np.arange(len(self.dataset), dtype=np.int64)
        )
        self.index_list = index_list
        self.labels = torch.from_numpy(
            np.fromiter((self.dataset.label(int(i)) for i in self.items), dtype=np.int64, count=len(self.items))
        )
        self.num_classes = self.dataset.num_classes
        self.input_size, self.batch_size, self.flip = input_size, batch_size, flip
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.generator = torch.Generator().manual_seed(seed)
        if len(self) < self.global_batch:
            per = f" ({world_size} x {batch_size})" if world_size > 1 else ""
            where = (
                f"{index_list} ({len(self)} of {len(self.dataset)} images of {root})"
                if index_list
                else f"{root}: {len(self)} images"
            )
            raise ValueError(f"{where}, fewer than one batch of {self.global_batch}{per}")
        self.decode_cache: dict = {"status": "off"}  # what the decoded-image cache did (data.decode_cache)
        self.images = None
        if cache:

            def decode() -> torch.Tensor:
                return load_images(lambda i: self.dataset[int(self.items[i])][0], len(self), input_size)

            key = {
                "kind": "source RecordIO",
                "input_size": int(input_size),
                "records": _sha256_files([self.dataset.rec_path, self.dataset.idx_path, self.dataset.property_path]),
                "items": hashlib.sha256(self.items.tobytes()).hexdigest(),
                "code": decoder_code_sha256(),
            }
            if decode_cache:
                self.images, self.decode_cache = cached_decode(decode_cache, key, decode)
            else:
                self.images = decode()
        self.epoch = -1  # incremented when an epoch's permutation is drawn
        self.position = 0  # global samples consumed in the current epoch
        self.perm: torch.Tensor | None = None
        self._epoch_state: torch.Tensor | None = None

    def __len__(self) -> int:
        """Images trained on (the index list's length when one is given)."""
        return len(self.items)

    @property
    def steps_per_epoch(self) -> int:
        return len(self) // self.global_batch

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images of positions ``idx`` (into :attr:`items`)."""
        if self.images is not None:
            return self.images[idx]
        return load_images(lambda i: self.dataset[int(self.items[int(idx[i])])][0], len(idx), self.input_size)

    def _new_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()
        self.perm = torch.randperm(len(self), generator=self.generator)
        self.epoch += 1
        self.position = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's ``(uint8 images, labels)`` of the next global batch."""
        if self.perm is None or self.position + self.global_batch > len(self):
            self._new_epoch()
        lo = self.position + self.rank * self.batch_size
        idx = self.perm[lo : lo + self.batch_size]
        x = self.get(idx)
        if self.flip:
            mask = torch.rand(self.global_batch, generator=self.generator) < 0.5
            mask = mask[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        self.position += self.global_batch
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "epoch_samples": self.position,
            "epoch_state": self._epoch_state,
            "state": self.generator.get_state(),
            "global_batch": self.global_batch,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["epoch_state"] is None:  # saved before the first batch
            self.generator.set_state(state["state"])
            self.epoch, self.position, self.perm, self._epoch_state = -1, 0, None, None
            return
        self.generator.set_state(state["epoch_state"])
        self._epoch_state = self.generator.get_state()
        self.perm = torch.randperm(len(self), generator=self.generator)
        self.generator.set_state(state["state"])
        self.epoch, self.position = int(state["epoch"]), int(state["epoch_samples"])


class TargetData:
    """Unlabelled target crops (CFSM's WIDER FACE folder + list) as an endless stream of random batches, sharded
    as :class:`SourceData`: every rank draws the same global batch of indices and keeps its slice. The stream's
    position is its generator's state."""

    def __init__(
        self,
        crops_root: str,
        list_file: str,
        input_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        decode_cache: str = "",
    ):
        crops = read_crop_list(crops_root, list_file)
        ds = CropFolderDataset(crops)
        self.decode_cache: dict = {"status": "off"}  # what the decoded-image cache did (data.decode_cache)
        if decode_cache:
            key = {
                "kind": "target crops",
                "input_size": int(input_size),
                "names": list(ds.names),
                "crops": _sha256_files(os.path.join(ds.root, n) for n in ds.names),
                "code": decoder_code_sha256(),
            }
            self.images, self.decode_cache = cached_decode(
                decode_cache, key, lambda: load_images(ds.__getitem__, len(ds), input_size)
            )
        else:
            self.images = load_images(ds.__getitem__, len(ds), input_size)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.generator = torch.Generator().manual_seed(seed + 1_000_003)

    def next_batch(self) -> torch.Tensor:
        idx = torch.randint(len(self.images), (self.global_batch,), generator=self.generator)
        return self.images[idx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]]

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])
