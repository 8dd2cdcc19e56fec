"""Training methods, one file each, registered by name.

Import a new method here (an explicit list, so that a stray class is never a method by accident).
"""

from methods.base import REGISTRY, Batch, FRModel, Method, build_method, get_method, register, resolve_hparams
from methods import source_only  # noqa: F401  (registers itself)
from methods import cfsm_guided  # noqa: F401
from methods import cfsm_random  # noqa: F401
from methods import kornia_degrade  # noqa: F401
from methods import adv_degrade  # noqa: F401
from methods import autoaugment  # noqa: F401
from methods import randaugment  # noqa: F401
from methods import trivialaugment  # noqa: F401
from methods import augmix  # noqa: F401
from methods import dann  # noqa: F401
from methods import coral  # noqa: F401
from methods import mmd  # noqa: F401

__all__ = ["REGISTRY", "Batch", "FRModel", "Method", "build_method", "get_method", "register", "resolve_hparams"]
