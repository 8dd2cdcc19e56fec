"""Every registered method, through the plugin interface, on one tiny batch: a new method is tested by existing.

Checks per method: augment keeps the batch size, dtype and label alignment shape; the loss is finite; gradients
reach the backbone; methods that use the target domain get (and depend on) the target batch; extra trainable
modules (param_groups) receive gradients too.
"""

from __future__ import annotations

import sys

import pytest
import torch

from harness.models import build_backbone, build_head
from methods import REGISTRY, Batch, FRModel, build_method

SIZE, B, EMB, CLASSES = 32, 8, 16, 5


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def _overrides(name: str, generator_path: str) -> dict:
    if name.startswith("cfsm_"):
        return {"generator": generator_path, "generator_size": 16, "latent_dim": 16}
    return {}


def test_the_registry_holds_the_issue_methods():
    assert set(REGISTRY) >= {
        "source_only",
        "cfsm_random",
        "cfsm_guided",
        "kornia_degrade",
        "adv_degrade",
        "autoaugment",
        "randaugment",
        "trivialaugment",
        "augmix",
        "dann",
        "coral",
        "mmd",
    }
    for name, cls in REGISTRY.items():
        assert cls.paper, f"{name} cites no paper"
        module = sys.modules[cls.__module__]
        assert cls.__module__.startswith("methods.") and module.__doc__ and len(module.__doc__) > 200, (
            f"{name}: no docstring"
        )


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_method_trains_one_step_on_a_tiny_batch(name, generator_path):
    torch.manual_seed(0)
    backbone = build_backbone("small", input_size=SIZE, widths=(8, 16, 16, 32), layers=(1, 1, 1, 1), num_features=EMB)
    head = build_head("arcface", EMB, CLASSES)
    method = build_method(name, EMB, CLASSES, overrides=_overrides(name, generator_path))
    method.total_steps = 10
    fr = FRModel(backbone=backbone, raw=backbone, head=head)
    x = torch.rand(B, 3, SIZE, SIZE) * 2 - 1
    y = torch.arange(B) % CLASSES
    xt = (torch.rand(B, 3, SIZE, SIZE) * 2 - 1).requires_grad_(method.uses_target)
    batch = Batch(x=x, y=y, xt=xt if method.uses_target else None, step=3)
    backbone.train(), head.train(), method.train()

    out = method.augment(batch, fr)
    assert out.x.shape == x.shape and out.x.dtype == x.dtype and out.y.shape == y.shape
    assert out.x.abs().max() <= 1.0 + 1e-5  # still in the normalised range
    loss, scalars = method.loss(out, fr)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in scalars.values())
    loss.backward()
    grads = [p.grad for p in backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the backbone"
    for group in method.param_groups():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in group["params"]), (
            f"{name}: extra module gets no gradient"
        )
    if method.uses_target:
        assert xt.grad is not None and xt.grad.abs().sum() > 0, f"{name} ignores the target batch"
