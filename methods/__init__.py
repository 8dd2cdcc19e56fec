"""Training methods, one file each, registered by name.

Import a new method here (an explicit list, so that a stray class is never a method by accident).
"""

from methods.base import REGISTRY, Batch, FRModel, Method, build_method, get_method, register, resolve_hparams
from methods import source_only  # noqa: F401  (registers itself)
from methods import cfsm_guided  # noqa: F401
from methods import cfsm_random  # noqa: F401

__all__ = ["REGISTRY", "Batch", "FRModel", "Method", "build_method", "get_method", "register", "resolve_hparams"]
