"""Data-parallel plumbing for the one trainer: ``torchrun --nproc_per_node N -m harness.run key=value ...``.

One process per device; each runs the same :func:`harness.engine.train.train` loop on its shard of every global batch.
Conventions, after insightface ``recognition/arcface_torch/train_v2.py`` and the torch documentation
("Getting started with distributed data parallel", ``torch.distributed.init_process_group``, torchrun's
environment variables):

* **Environment.** torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
  :func:`init_from_env` reads them and initialises the default process group with the ``env://`` method. Without
  them (or with ``WORLD_SIZE=1``) nothing is initialised and the trainer is the single-process trainer, bit for
  bit.
* **Backend and device.** ``nccl`` when the run's device resolves to CUDA (then ``cuda:LOCAL_RANK``, set with
  ``torch.cuda.set_device`` before the group starts, as insightface does), else ``gloo`` on the CPU.
* **Batch.** ``optim.batch_size`` is per process, as insightface's ``cfg.batch_size`` ("batch size per GPU"):
  the global batch is ``world_size x optim.batch_size``; the learning rate is not rescaled.
* **What is synchronised.** The backbone is wrapped in ``DistributedDataParallel`` (its gradients averaged during
  backward, its buffers broadcast from rank 0 at each forward: the torch defaults). The margin head and the
  method's own trainable modules (a DANN discriminator) stay replicated plain modules: their gradients are
  averaged by :func:`allreduce_gradients` (one flat all-reduce per step, the same mean DDP computes), and their
  buffers (AdaFace's norm statistics, a discriminator's BatchNorm statistics) are broadcast from rank 0 at the
  start of every step by :func:`broadcast_buffers`, which also re-broadcasts the backbone's, so that a method's
  inner pass through the unwrapped backbone (CFSM's FGSM step) sees rank 0's statistics too. insightface
  shards the head instead (model-parallel PartialFC); a replicated head is simpler, exact, and keeps
  ``FRModel.head`` free of any DDP reducer, which an inner ``torch.autograd.grad`` probe could otherwise arm.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_OWNED: dict[str, bool] = {}  # set when init_from_env started the group (shutdown() then ends it)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank ``rank`` of ``world_size``, on local device ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def env_context() -> DistContext:
    """The context torchrun's environment variables describe (rank 0 of 1 when they are not set)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def current() -> DistContext:
    """The context of the initialised default process group, else that of a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", dist.get_rank()),
            backend=str(dist.get_backend()),
        )
    return DistContext()


def wants_cuda(device: str) -> bool:
    """Whether the config's ``device`` resolves to CUDA (``auto`` does when CUDA is available)."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(device: str = "auto", timeout: datetime.timedelta | None = None) -> DistContext:
    """Initialise the default process group from torchrun's environment when ``WORLD_SIZE > 1`` (idempotent:
    an already initialised group is used as it is). ``timeout``: of collectives (torch's default when None).
    Returns the context."""
    if dist.is_available() and dist.is_initialized():
        return current()
    env = env_context()
    if not env.distributed:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={env.world_size} but this torch build has no torch.distributed")
    backend = "nccl" if wants_cuda(device) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    kw = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size, **kw)
    _OWNED["group"] = True
    return current()


def shutdown() -> None:
    """Destroy the default process group if :func:`init_from_env` created it (no barrier: rank 0 may still be
    evaluating while the others leave)."""
    if _OWNED.pop("group", False) and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random streams, 32 bits (numpy's limit): rank 0 keeps ``seed``, so one
    process is unchanged; rank r > 0 gets a hash of ``(seed, r)`` (numpy ``SeedSequence``), so ranks draw
    independent augmentations, as insightface's per-rank ``worker_init_fn`` seeds do."""
    if rank == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([abs(int(seed)), int(rank)]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------- collectives
def _comm_device(tensors: list[torch.Tensor]) -> torch.device:
    return tensors[0].device


def allreduce_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of replicated ``params`` over all ranks in one flat all-reduce, as DDP does for the
    modules it wraps (divide by the world size, then sum). A parameter whose gradient is None on some ranks
    counts as zero there; it stays None only if it has no gradient on any rank (so every rank takes the same
    optimiser step)."""
    params = [p for p in params if p.requires_grad]
    if not params or world_size <= 1:
        return
    by_key: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        by_key.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), group in by_key.items():
        grads = [
            p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=device)
            for p in group
        ]
        present = torch.tensor([float(p.grad is not None) for p in group], dtype=dtype, device=device)
        flat = torch.cat([*grads, present])
        flat.div_(world_size)
        dist.all_reduce(flat)
        counts = flat[-len(group) :].tolist()
        offset = 0
        for p, count in zip(group, counts):
            n = p.numel()
            if count > 0:
                g = flat[offset : offset + n].view_as(p)
                if p.grad is None:
                    p.grad = g.clone(memory_format=torch.preserve_format)
                else:
                    p.grad.copy_(g)
            offset += n


def _broadcast_tensors(tensors: list[torch.Tensor], src: int) -> None:
    """Copy rank ``src``'s values of ``tensors`` into every rank's, one flat broadcast per (device, dtype)."""
    by_key: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        by_key.setdefault((t.device, t.dtype), []).append(t)
    with torch.no_grad():
        for group in by_key.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_buffers(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Copy rank ``src``'s buffers of ``modules`` to every rank (one broadcast per device and dtype)."""
    _broadcast_tensors([b for m in modules for b in m.buffers()], src)


def broadcast_parameters(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Copy rank ``src``'s parameters (and buffers) of ``modules`` to every rank (what DDP does at construction)."""
    mods = list(modules)
    _broadcast_tensors([p for m in mods for p in m.parameters()], src)
    broadcast_buffers(mods, src)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]
