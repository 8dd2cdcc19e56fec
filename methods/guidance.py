"""Adversarial guidance shared by every method that takes FGSM steps on its augmentation parameters
(``cfsm_guided``: CFSM's style coefficients; ``adv_degrade``: degradation parameters), and the released
real/synthetic batch mixing.

From CFSM's released ``GuidedFaceRecognition/adversarial_regu.py`` and ``train.py`` (Liu et al., ECCV 2022;
github.com/liufeng2915/CFSM): ``z <- clip(z + alpha * sign(grad_z L_FR), z0 - eps, z0 + eps)`` for ``k``
steps, the gradient taken through the unwrapped backbone w.r.t. ``z`` only; then a batch of ``rs_ratio`` real and
``1 - rs_ratio`` augmented images drawn by two independent permutations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor

from harness.data.images import memory_format_of


def fgsm_step(o: Tensor, o0: Tensor, grad: Tensor, alpha: float, eps: float) -> Tensor:
    """One signed-gradient ascent step projected onto the box ``[o0 - eps, o0 + eps]`` (elementwise), detached:
    ``clip(o + alpha * sign(grad), o0 - eps, o0 + eps)`` (released ``adversarial_regu.py``)."""
    stepped = o.detach() + alpha * torch.sign(grad.detach())
    return torch.minimum(torch.maximum(stepped, o0 - eps), o0 + eps).detach()


def mix_sizes(batch_size: int, rs_ratio: float) -> tuple[int, int]:
    """``(n_real, n_syn)`` with ``n_real = round(rs_ratio * B)`` (half up) and ``n_syn = B - n_real``."""
    if not 0.0 <= rs_ratio <= 1.0:
        raise ValueError(f"rs_ratio must be in [0, 1], got {rs_ratio}")
    n_real = int(math.floor(rs_ratio * batch_size + 0.5))
    return n_real, batch_size - n_real


def mix_indices(batch_size: int, rs_ratio: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Indices of the real and of the synthetic rows, from two independent permutations (as released: a sample
    can be drawn as both, or as neither). CPU int64 tensors."""
    n_real, n_syn = mix_sizes(batch_size, rs_ratio)
    real = torch.randperm(batch_size, generator=generator)[:n_real]
    syn = torch.randperm(batch_size, generator=generator)[:n_syn]
    return real, syn


def mix_batch(x: Tensor, y: Tensor, x_syn: Tensor, real_idx: Tensor, syn_idx: Tensor) -> tuple[Tensor, Tensor]:
    """``(cat(x[real_idx], x_syn), cat(y[real_idx], y[syn_idx]))``, where ``x_syn[j]`` was synthesised from
    ``x[syn_idx[j]]``. Keeps ``x``'s dtype, device and memory format."""
    if x_syn.size(0) != syn_idx.numel():
        raise ValueError(f"{x_syn.size(0)} synthetic images for {syn_idx.numel()} synthetic indices")
    real_idx, syn_idx = real_idx.to(x.device), syn_idx.to(x.device)
    out = torch.cat([x[real_idx], x_syn.to(dtype=x.dtype)], 0)
    return out.contiguous(memory_format=memory_format_of(x)), torch.cat([y[real_idx], y[syn_idx]], 0)


@contextmanager
def eval_mode(*modules: torch.nn.Module):
    """Temporarily put ``modules`` (and every submodule) in eval mode; restore each one's own flag after."""
    saved = [(m, m.training) for mod in modules for m in mod.modules()]
    try:
        for mod in modules:
            mod.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def check_guidance(name: str, steps: int, eps: float, alpha: float, rs_ratio: float, monitor_every: int = 0) -> None:
    """One-line errors for the hyperparameters every guided method shares."""
    if steps < 0 or eps < 0 or alpha < 0 or monitor_every < 0:
        raise ValueError(
            f"{name}: steps, eps, alpha and monitor_every must be >= 0, got {steps}, {eps}, {alpha}, {monitor_every}"
        )
    mix_sizes(1, rs_ratio)  # validates rs_ratio


def guided_search(
    render: Callable[[Tensor], Tensor],
    z0: Tensor,
    y: Tensor,
    fr,
    *,
    steps: int,
    alpha: float,
    eps: float,
    inner_bn_train: bool,
    prefix: str,
    name: str,
    project: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict]:
    """``steps`` FGSM ascent steps on ``z`` from ``z0`` against ``fr.head(fr.raw(render(z)), y)``; returns
    ``(z_adv, scalars)``. ``steps == 0`` returns ``z0`` without a forward pass. ``project`` maps each step into the
    valid range (after the eps box). With ``inner_bn_train`` (released) the inner pass is an ordinary
    training-mode forward (BatchNorm running statistics and a head's running state see it); otherwise backbone
    and head run in eval mode for it, restored after. The gradient is taken w.r.t. ``z`` alone, so no parameter
    ``.grad`` is touched; under CUDA AMP the inner loss is not scaled (as released), and an underflowing gradient
    has sign 0 (``<prefix>.grad_zero`` counts those coordinates)."""
    z, scalars = z0, {}
    if steps == 0:
        return z, scalars
    if inner_bn_train and fr.raw.training and z0.size(0) < 2:
        raise ValueError(
            f"{name}: the inner pass has {z0.size(0)} sample; BatchNorm cannot train on one sample "
            "(use a larger batch or inner_bn_train=false)"
        )
    mode = nullcontext() if inner_bn_train else eval_mode(fr.raw, fr.head)
    with torch.enable_grad(), mode:
        for k in range(steps):
            z = z.detach().requires_grad_(True)
            loss = fr.head(fr.raw(render(z)), y)
            (grad,) = torch.autograd.grad(loss, [z])
            z = fgsm_step(z, z0, grad, alpha, eps)
            if project is not None:
                z = project(z)
            if k == 0:
                scalars[f"{prefix}.inner_loss"] = loss.detach()
        scalars[f"{prefix}.grad_zero"] = (grad == 0).float().mean().detach()
    return z, scalars


def probe_losses(
    render: Callable[[Tensor], Tensor],
    points: dict[str, Tensor],
    y: Tensor,
    fr,
    distances: dict[str, str] | None = None,
    reference: Tensor | None = None,
) -> dict:
    """The FR loss at each named parameter point, with backbone and head in eval mode (no running statistic
    changes, no randomness consumed), so monitoring never changes training. With ``distances`` (point key -> the key
    to record under) and ``reference`` (the images the rendered ones derive from, same shape), also the mean
    absolute pixel difference ``mean |render(z) - reference|``: how far the augmentation moved the images."""
    out = {}
    with torch.no_grad(), eval_mode(fr.raw, fr.head):
        for key, z in points.items():
            images = render(z)
            out[key] = fr.head(fr.raw(images), y).detach()
            if distances and key in distances:
                out[distances[key]] = (images.float() - reference.float()).abs().mean()
    return out


#: The quantiles of :func:`norm_summary`.
NORM_QUANTILES = (0.1, 0.5, 0.9)


def norm_summary(prefix: str, z: Tensor) -> dict[str, Tensor]:
    """The distribution of the per-sample L2 norms ``||z_i||`` of a (B, q) batch of coefficients: ``<prefix>.mean``,
    ``.std`` (unbiased; 0 for one sample), ``.min``, ``.max`` and ``.q10`` / ``.q50`` / ``.q90`` (linear
    interpolation, ``torch.quantile``'s default). Computed under ``no_grad`` and drawing no random numbers."""
    with torch.no_grad():
        n = torch.linalg.vector_norm(z.detach().float().reshape(z.size(0), -1), dim=1)
        out = {
            f"{prefix}.mean": n.mean(),
            f"{prefix}.std": n.std() if n.numel() > 1 else n.new_zeros(()),
            f"{prefix}.min": n.min(),
            f"{prefix}.max": n.max(),
        }
        qs = torch.quantile(n, torch.tensor(NORM_QUANTILES, dtype=n.dtype, device=n.device))
        for q, v in zip(NORM_QUANTILES, qs):
            out[f"{prefix}.q{round(100 * q)}"] = v
    return out
