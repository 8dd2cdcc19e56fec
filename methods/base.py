"""The method plugin interface, the registry, and DomainBed-style per-name seeded hyperparameters.

Ownership (the split of TLlib, thuml/Transfer-Learning-Library, where a method is a loss module, and of
insightface ``recognition/arcface_torch/train_v2.py``, which owns the loop): the trainer owns the
data, the FR model (backbone + margin head), the optimiser, AMP, gradient clipping, the schedule and the
checkpoints. A method only

- transforms the batch, possibly using the FR model (``augment``: CFSM's guided synthesis takes the gradient of
  the FR loss w.r.t. its own style coefficients through ``fr.raw``, the unwrapped backbone),
- returns the loss (``loss``: domain adaptation adds terms on the unlabelled target batch ``batch.xt``),
- may own extra trainable modules (``param_groups``: a domain discriminator) that the trainer adds to its
  optimiser, and frozen ones (a generator) that it keeps out of it.

Hyperparameters are declared next to the method as ``name -> (default, sampler)``. ``resolve_hparams`` returns
the defaults for ``hparams_seed == 0`` and otherwise draws every value from its own generator seeded by
``(hparams_seed, method, name)`` (DomainBed's ``hparams_registry``), so adding a hyperparameter never changes the
draws of the others. Unlike DomainBed (#111), the trial seed does not enter the draw: the same hparams_seed
gives the same point for every trial seed.

Where a run's values come from, lowest first: the declared defaults (or the seeded draws); ``method_hparams.<method>``
of ``params.yaml`` (each value that differs from the declared default; ``harness.core.config.with_method_hparams``);
``run.hparams`` of ``params.yaml``; ``hparams.<name>=`` on the command line. The last three reach
``resolve_hparams`` as its ``overrides``, so an explicit value always beats a draw, as DomainBed's ``--hparams``
does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

Sampler = Callable[[np.random.Generator], Any]


@dataclass
class Batch:
    """One training step's data on this rank: labelled source images and, for DA methods, unlabelled target ones.

    Images are float tensors, normalised to [-1, 1], NCHW, on the training device.
    """

    x: Tensor
    y: Tensor
    xt: Tensor | None = None
    step: int = 0
    extras: dict[str, Tensor] = field(default_factory=dict)

    def replace(self, **changes) -> Batch:
        return replace(self, **changes)


@dataclass
class FRModel:
    """The FR model as a method sees it.

    ``backbone`` is what the returned loss must go through (DDP-wrapped under torchrun); ``raw`` is the same
    network unwrapped, for inner ``torch.autograd.grad`` probes that must not arm DDP's reducer; ``head`` maps
    (embeddings, labels) to the margin loss.
    """

    backbone: nn.Module
    raw: nn.Module
    head: nn.Module

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.head(self.backbone(x), y)


class Method(nn.Module):
    """Base class of every training method. Subclasses set ``name`` and are decorated with ``@register``."""

    name: ClassVar[str] = ""
    uses_target: ClassVar[bool] = False  # the trainer draws an unlabelled target batch only when True
    paper: ClassVar[str] = ""  # citation shown in tables and docs

    @staticmethod
    def hparams() -> dict[str, tuple[Any, Sampler]]:
        return {}

    def __init__(self, embedding_size: int, num_classes: int, hp: Mapping[str, Any]):
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.hp = dict(hp)
        self.total_steps: int | None = None  # set by the trainer before the first step

    @classmethod
    def preflight(cls, hp: Mapping[str, Any]) -> None:
        """Check the method's inputs (files it loads, their compatibility) before a run starts; raise
        FileNotFoundError / ValueError with a one-line message. Called by ``harness.run`` before Sacred starts."""

    def param_groups(self) -> list[dict]:
        """Extra trainable modules' parameter groups, added to the trainer's optimiser (e.g. a discriminator)."""
        return []

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        """Transform the batch before the loss (CFSM synthesis, degradation or policy augmentation)."""
        return batch

    def loss(self, batch: Batch, fr: FRModel) -> tuple[Tensor, dict[str, float]]:
        """The training loss and named scalars to log."""
        return fr.loss(batch.x, batch.y), {}


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(
            f"method name {cls.name!r} registered twice ({REGISTRY[cls.name].__qualname__}, {cls.__qualname__})"
        )
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _seed_for(hparams_seed: int, method: str, name: str) -> int:
    digest = hashlib.md5(f"{hparams_seed}/{method}/{name}".encode()).hexdigest()
    return int(digest[:8], 16)


def resolve_hparams(method: str, hparams_seed: int = 0, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (hparams_seed 0) or a random-search point, then explicit overrides; unknown names are errors.

    ``overrides`` is the run config's ``hparams``: ``method_hparams.<method>`` of the params file beneath
    ``run.hparams`` and the command line's ``hparams.<name>`` (module docstring). An unknown name says where a value
    for one method only belongs, since ``run.hparams`` applies to every method."""
    declared = get_method(method).hparams()
    out = {}
    for name, (default, sampler) in declared.items():
        out[name] = (
            default if hparams_seed == 0 else sampler(np.random.default_rng(_seed_for(hparams_seed, method, name)))
        )
    for name, value in (overrides or {}).items():
        if name not in declared:
            valid = ", ".join(sorted(declared)) or "none"
            raise KeyError(
                f"unknown hyperparameter {name!r} for method {method!r}; valid: {valid} (a value for one "
                f"method only goes under params.yaml method_hparams.<method>)"
            )
        out[name] = value
    return out


def build_method(name: str, embedding_size: int, num_classes: int, hparams_seed: int = 0, overrides=None) -> Method:
    hp = resolve_hparams(name, hparams_seed, overrides)
    return get_method(name)(embedding_size, num_classes, hp)


def to_builtin(value: Any) -> Any:
    """numpy scalars -> Python numbers, for JSON and Sacred configs."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value
