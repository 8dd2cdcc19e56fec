"""Domain-adaptation losses shared by the ``dann``, ``coral`` and ``mmd`` methods (plain torch, tested in
``tests/test_da_methods.py``).

- :func:`grad_reverse` / :func:`grl_coefficient`: the gradient-reversal layer and its warm-up schedule
  (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).
- :func:`coral_loss`: Deep CORAL (Sun & Saenko, ECCV-W 2016), ``||C_s - C_t||_F^2 / (4 d^2)``.
- :func:`mk_mmd`: multi-kernel MMD with Gaussian kernels (DAN, Long et al., ICML 2015), unbiased (quadratic) or
  linear-time estimator.
- :func:`joint_embeddings` / :func:`da_features`: the forward pass every DA method shares (source and target
  through the backbone as one batch) and the feature space the alignment losses see.

The statistics are computed in float32 with autocast disabled: covariances and kernel matrices in half precision
lose the small differences these losses are made of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

FEATURE_MODES = ("normalized", "raw")
MMD_ESTIMATORS = ("unbiased", "linear")


# ----------------------------------------------------------------------------------------------- shared forward
def joint_embeddings(backbone: torch.nn.Module, x: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
    """One forward of ``cat(x, xt)`` through ``backbone``, split back into (source, target) embeddings.

    One batch, as TLlib's examples do, so BatchNorm normalises with statistics of both domains (and under DDP
    there is one forward per backward)."""
    if xt is None:
        raise ValueError(
            "this method needs a target batch (batch.xt is None): is uses_target set and does the "
            "release have a target/ folder?"
        )
    n = x.shape[0]
    emb = backbone(torch.cat([x, xt], dim=0))
    return emb[:n], emb[n:]


def da_features(emb: Tensor, mode: str) -> Tensor:
    """The features the alignment losses see (float32).

    ``"normalized"``: the embedding projected onto the sphere of radius ``sqrt(d)``, i.e. ``sqrt(d) * e / ||e||``.
    Angular-margin heads only see the direction of the embedding, so aligning directions is what matters for
    recognition, and aligning norms would fight AdaFace-style heads, where the norm is a quality signal that *should*
    differ on low-quality target faces. The ``sqrt(d)`` radius gives each coordinate an RMS of 1, the scale of the
    backbone's BN-ed raw embedding (insightface ``features`` BatchNorm1d, weight frozen at 1), so the papers'
    normalisations (CORAL's ``1/(4 d^2)``) and trade-off weights mean the same in both modes. (MMD with a
    data-driven bandwidth and a BN-first discriminator are nearly scale-free anyway; CORAL scales with ``radius^4``.)

    ``"raw"``: the backbone's embedding as is (what TLlib and the papers align: the bottleneck/fc features).
    """
    if mode not in FEATURE_MODES:
        raise ValueError(f"features={mode!r}: expected one of {', '.join(FEATURE_MODES)}")
    emb = emb.float()
    if mode == "raw":
        return emb
    return F.normalize(emb, dim=1) * math.sqrt(emb.shape[1])


# ----------------------------------------------------------------------------------------------- DANN
class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.neg() * ctx.coeff, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Gradient-reversal layer R_lambda: identity forward, ``-coeff * grad`` backward (Ganin & Lempitsky 2015,
    Eq. 9)."""
    return _GradientReverse.apply(x, coeff)


def grl_coefficient(progress: float, gamma: float = 10.0, hi: float = 1.0) -> float:
    """DANN's warm-up ``lambda_p = hi * (2 / (1 + exp(-gamma * p)) - 1)``, ``p`` in [0, 1] the training progress.

    Ganin & Lempitsky (2015) and Ganin et al. (JMLR 2016) use gamma = 10 "in all experiments" and hi = 1: 0 at p = 0,
    0.987 at p = 0.5, 0.9999 at p = 1. TLlib's ``WarmStartGradientReverseLayer(alpha=1, lo=0, hi=1, max_iters=1000)`` is
    the same curve with ``gamma * p = alpha * i / max_iters``, i.e. it equals the paper only for a 10,000-step run.
    ``p`` is clamped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return hi * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def binary_domain_loss(logits_s: Tensor, logits_t: Tensor) -> tuple[Tensor, Tensor]:
    """(BCE loss, accuracy) of a domain discriminator's logits, source labelled 1 and target 0, each domain weighted
    1/2 (TLlib ``DomainAdversarialLoss``). Logits + ``binary_cross_entropy_with_logits`` instead of TLlib's sigmoid +
    BCE: the latter is refused under CUDA autocast and is less stable."""
    ls, lt = logits_s.float().view(-1), logits_t.float().view(-1)
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(ls, torch.ones_like(ls))
        + F.binary_cross_entropy_with_logits(lt, torch.zeros_like(lt))
    )
    with torch.no_grad():
        acc = 0.5 * ((ls > 0).float().mean() + (lt <= 0).float().mean())
    return loss, acc


# ----------------------------------------------------------------------------------------------- CORAL
def covariance(x: Tensor) -> Tensor:
    """Unbiased feature covariance ``(D^T D - (1^T D)^T (1^T D) / n) / (n - 1)`` (Sun & Saenko 2016, Eq. 2-3)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"covariance needs at least 2 samples, got {n}")
    xc = x - x.mean(dim=0, keepdim=True)
    return xc.T @ xc / (n - 1)


def coral_loss(fs: Tensor, ft: Tensor, match_mean: bool = False) -> Tensor:
    """Deep CORAL: ``||C_s - C_t||_F^2 / (4 d^2)`` (Sun & Saenko, ECCV-W 2016, Eq. 1).

    ``match_mean`` adds ``||mu_s - mu_t||^2 / d`` (the mean term that DomainBed's and TLlib's CORAL add to the
    covariance term); off by default, as in the paper."""
    if fs.ndim != 2 or ft.ndim != 2 or fs.shape[1] != ft.shape[1]:
        raise ValueError(f"coral_loss expects (n, d) and (m, d) features, got {tuple(fs.shape)} and {tuple(ft.shape)}")
    with torch.autocast(device_type=fs.device.type, enabled=False):
        fs, ft = fs.float(), ft.float()
        d = fs.shape[1]
        loss = (covariance(fs) - covariance(ft)).pow(2).sum() / (4.0 * d * d)
        if match_mean:
            loss = loss + (fs.mean(0) - ft.mean(0)).pow(2).sum() / d
    return loss


# ----------------------------------------------------------------------------------------------- MK-MMD
def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (exact zeros on the diagonal)."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    return d2 * (1.0 - torch.eye(len(x), device=x.device, dtype=x.dtype))


def gaussian_kernel_sum(d2: Tensor, scales: Sequence[float], bandwidth: float | Tensor | None = None) -> Tensor:
    """``sum_u exp(-d2 / (2 * scale_u * base))`` for squared distances ``d2``.

    ``base`` is ``bandwidth`` when given, else the mean of ``d2`` over the whole joint matrix, detached (TLlib
    ``GaussianKernel(alpha=scale, track_running_stats=True)``: ``sigma^2 = alpha * mean(||z_i - z_j||^2)``)."""
    base = d2.detach().mean() if bandwidth is None else torch.as_tensor(bandwidth, dtype=d2.dtype, device=d2.device)
    base = base.clamp_min(1e-12)
    return sum(torch.exp(-d2 / (2.0 * s * base)) for s in scales)


def mk_mmd(
    zs: Tensor,
    zt: Tensor,
    scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    estimator: str = "unbiased",
    bandwidth: float | None = None,
) -> Tensor:
    """Multi-kernel MMD^2 between source ``zs`` (m, d) and target ``zt`` (n, d), equal kernel weights.

    Kernels: Gaussian, bandwidths ``scale * base`` (``base`` the mean squared pairwise distance of the joint batch
    unless ``bandwidth`` fixes it; see :func:`gaussian_kernel_sum`).

    - ``"unbiased"``: the U-statistic of Gretton et al. (JMLR 2012, Eq. 3), quadratic time:
      ``sum_{i!=j} k(s_i, s_j) / (m(m-1)) + sum_{i!=j} k(t_i, t_j) / (n(n-1)) - 2 sum_{i,j} k(s_i, t_j) / (mn)``.
      It can be slightly negative when the distributions match (TLlib's non-linear DAN adds the constant
      ``2 / (n-1)`` to hide that; a constant changes no gradient, so it is left out here).
    - ``"linear"``: the linear-time unbiased estimate DAN (Long et al. 2015, Eq. 5) uses, after Gretton et al. 2012
      Lemma 14: mean over disjoint quad-tuples ``(s_{2i}, s_{2i+1}, t_{2i}, t_{2i+1})`` of
      ``k(s,s') + k(t,t') - k(s,t') - k(s',t)``; needs ``m == n`` (extra rows are dropped) and ``n >= 2``.
      (TLlib's "linear" variant pairs ``i`` with ``i+1 mod n`` instead, overlapping tuples.) The full kernel matrix
      is still built, for the bandwidth; at FR batch sizes that costs nothing next to the backbone.
    """
    if estimator not in MMD_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: expected one of {', '.join(MMD_ESTIMATORS)}")
    if zs.ndim != 2 or zt.ndim != 2 or zs.shape[1] != zt.shape[1]:
        raise ValueError(f"mk_mmd expects (m, d) and (n, d) features, got {tuple(zs.shape)} and {tuple(zt.shape)}")
    with torch.autocast(device_type=zs.device.type, enabled=False):
        zs, zt = zs.float(), zt.float()
        if estimator == "linear":
            n = min(len(zs), len(zt)) // 2 * 2
            if n < 2:
                raise ValueError("the linear-time MMD estimator needs at least 2 samples per domain")
            zs, zt = zs[:n], zt[:n]
        m, n = len(zs), len(zt)
        if m < 2 or n < 2:
            raise ValueError(f"mk_mmd needs at least 2 samples per domain, got {m} and {n}")
        k = gaussian_kernel_sum(squared_distances(torch.cat([zs, zt])), scales, bandwidth)
        kss, ktt, kst = k[:m, :m], k[m:, m:], k[:m, m:]
        if estimator == "unbiased":
            return (
                (kss.sum() - kss.diagonal().sum()) / (m * (m - 1))
                + (ktt.sum() - ktt.diagonal().sum()) / (n * (n - 1))
                - 2.0 * kst.sum() / (m * n)
            )
        a, b = torch.arange(0, n, 2, device=zs.device), torch.arange(1, n, 2, device=zs.device)
        h = kss[a, b] + ktt[a, b] - kst[a, b] - kst[b, a]
        return h.mean()
