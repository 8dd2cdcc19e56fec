"""Training methods, one file each, registered by name.

Import a new method here (an explicit list, so that a stray class is never a method by accident).
"""

from methods import (
    adv_degrade,  # noqa: F401
    augmix,  # noqa: F401
    autoaugment,  # noqa: F401
    cfsm_guided,  # noqa: F401
    cfsm_random,  # noqa: F401
    coral,  # noqa: F401
    dann,  # noqa: F401
    kornia_degrade,  # noqa: F401
    mmd,  # noqa: F401
    randaugment,  # noqa: F401
    source_only,  # noqa: F401  (registers itself)
    trivialaugment,  # noqa: F401
)
from methods.base import REGISTRY, Batch, FRModel, Method, build_method, get_method, register, resolve_hparams

__all__ = ["REGISTRY", "Batch", "FRModel", "Method", "build_method", "get_method", "register", "resolve_hparams"]
