"""CFSM stage 1: the controllable face synthesis model (generator, multi-scale discriminator, losses).

Re-implements the synthesis network of Liu, Kim, Jain & Liu, "Controllable and Guided Face Synthesis for
Unconstrained Face Recognition" (ECCV 2022, arXiv 2207.10180). The facts come from the released code
(``CFSM/synthesis_network.py``, ``CFSM/train.py``, ``CFSM/id_loss.py``, ``CFSM/interface.py``), which forks the
MUNIT of eriklindernoren ``PyTorch-GAN`` (``implementations/munit/models.py``); NVlabs ``MUNIT`` (Huang et al.,
ECCV 2018) and AdaIN (Huang & Belongie, ICCV 2017) are the origins. The code here is written from those facts
(github.com/liufeng2915/CFSM; eriklindernoren/PyTorch-GAN; NVlabs/MUNIT), not copied.

Architecture (paper profile :data:`PAPER`, 112 px):

* content encoder: reflect-pad 3, 7x7 conv 3->64, IN, ReLU; 2 x [4x4 s2 conv, IN, ReLU] (64->128->256);
  3 residual blocks [pad, 3x3 conv, IN, ReLU, pad, 3x3 conv, IN] + skip. IN has no affine parameters.
* style path: coefficients ``o`` (q = 10) -> :class:`SubspaceLayer` ``z = o U + mu`` (U q x d orthogonal init,
  mu zeros, d = 128) -> :class:`StyleMLP` 128->256->256->3072 (ReLU between, no norm) -> AdaIN parameters.
* decoder: 3 AdaIN residual blocks; 2 x [nearest x2, 5x5 conv, LayerNorm (per sample over CxHxW, gamma ~ U(0,1),
  beta = 0), ReLU]; reflect-pad 3, 7x7 conv -> 3, tanh.
* discriminator: 3 PatchGAN scales (4x4 s2 convs 64/128/256/512, first without norm, LeakyReLU 0.2, final 3x3
  conv to 1), AvgPool2d(3, 2, 1, count_include_pad=False) between scales; LSGAN.

Parameter counts of :data:`PAPER` (computed from the layer shapes and matched by this implementation):
encoder 4,205,696; decoder 4,574,467; MLP 888,320; subspace 1,408; G 9,669,891; D 3 x 2,761,153 = 8,283,459.

CPU deviations (``docs/cpu_profile.md`` section 1) are fields of :class:`CFSMConfig` and are
reported by :meth:`CFSMConfig.deviations`: 32 px images with G width 16, a 2-scale 3-block discriminator, and
AdaIN scale ``1 + gamma``. The other two CPU deviations (Adam lr 5e-4, reconstruction weight 10) belong to the
training loop, not to the model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CFSMConfig",
    "PAPER",
    "CPU_DEFAULT",
    "SubspaceLayer",
    "AdaptiveInstanceNorm2d",
    "InstanceNorm2dAnySize",
    "LayerNorm",
    "ResidualBlock",
    "ContentEncoder",
    "AdaINDecoder",
    "StyleMLP",
    "assign_adain_params",
    "num_adain_params",
    "CFSMGenerator",
    "MultiScaleDiscriminator",
    "weights_init_normal",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "magnitude_target",
    "identity_loss",
    "orthogonality_loss",
    "reconstruction_loss",
    "subspace_similarity",
    "count_parameters",
    "STAGE1_FORMAT",
    "save_generator",
    "load_generator",
]

ADAIN_SCALES = ("gamma", "one_plus_gamma")
D_NORMS = ("instance", "none")


@dataclass(frozen=True)
class CFSMConfig:
    """Stage-1 model hyperparameters. The defaults are the released (paper) profile (``CFSM/utils.py``,
    ``CFSM/train.py`` arguments, ``CFSM/synthesis_network.py``)."""

    image_size: int = 112  # released: aligned 112x112 faces. CPU deviation: 32 px (feasibility study)
    dim: int = 64  # G base width (encoder stem). CPU deviation: 16 (G width 16 / D base 64 fits 2 cores)
    n_downsample: int = 2
    n_residual: int = 3  # CFSM uses 3 (NVlabs MUNIT uses 4)
    style_dim: int = 10  # q, number of subspace coefficients o
    latent_dim: int = 128  # d, style code z = o U + mu
    mlp_dim: int = 256
    mlp_layers: int = 3  # number of Linear layers in the AdaIN-parameter MLP
    d_scales: int = 3  # CPU deviation: 2 (at 32 px, 3 scales put IN on 1x1 or empty maps)
    d_layers: int = 4  # 4x4 stride-2 convs (64,128,256,512 at base 64). CPU deviation: 3 (64/128/256)
    d_base: int = 64
    d_final_kernel: int = 3  # eriklindernoren/CFSM: 3x3 final conv (NVlabs MUNIT uses 1x1)
    d_norm: str = "instance"  # IN in D blocks 2..n (eriklindernoren/CFSM); "none" is NVlabs MUNIT's choice
    # released: AdaIN output = gamma * IN(x) + beta. CPU deviation "one_plus_gamma": (1 + gamma) * IN(x) + beta,
    # so a near-zero MLP output makes the decoder start close to an identity map (it learned only this way on CPU).
    adain_scale: str = "gamma"

    def __post_init__(self):
        if self.adain_scale not in ADAIN_SCALES:
            raise ValueError(f"adain_scale must be one of {ADAIN_SCALES}, got {self.adain_scale!r}")
        if self.d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {D_NORMS}, got {self.d_norm!r}")
        if self.mlp_layers < 2:
            raise ValueError("mlp_layers must be >= 2")
        if self.image_size % (2**self.n_downsample):
            raise ValueError("image_size must be divisible by 2**n_downsample")

    def deviations(self) -> dict:
        """Fields that differ from the paper profile: ``{name: {"paper": value, "used": value}}``."""
        paper = CFSMConfig()
        return {
            f.name: {"paper": getattr(paper, f.name), "used": getattr(self, f.name)}
            for f in fields(self)
            if getattr(self, f.name) != getattr(paper, f.name)
        }


PAPER = CFSMConfig()
CPU_DEFAULT = CFSMConfig(image_size=32, dim=16, d_scales=2, d_layers=3, adain_scale="one_plus_gamma")


# ----------------------------------------------------------------------------------------------- init / helpers


def weights_init_normal(m: nn.Module) -> None:
    """Released init (``CFSM/train.py`` ``weights_init_normal``, from eriklindernoren MUNIT): conv weights
    ~ N(0, 0.02); conv biases and Linear layers keep PyTorch's defaults. U's orthogonal init lives in
    :class:`SubspaceLayer`, which this function does not touch."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (buffers excluded); works on meta-device modules."""
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------ building blocks


class SubspaceLayer(nn.Module):
    """Linear style subspace ``z = o U + mu`` (CFSM ``synthesis_network.py`` ``SubspaceLayer``).

    ``U`` is stored q x d (rows are the basis vectors) with orthogonal init, so ``U U^T = I_q`` at start;
    ``mu`` (d) starts at zero. With ``o = 0`` the style code is ``mu``.
    """

    def __init__(self, style_dim: int = 10, latent_dim: int = 128):
        super().__init__()
        self.U = nn.Parameter(torch.empty(style_dim, latent_dim))
        self.mu = nn.Parameter(torch.zeros(latent_dim))
        if self.U.device.type != "meta":
            nn.init.orthogonal_(self.U)

    def forward(self, o: Tensor) -> Tensor:
        return o @ self.U + self.mu


class AdaptiveInstanceNorm2d(nn.Module):
    """AdaIN (Huang & Belongie 2017; MUNIT ``AdaptiveInstanceNorm2d``): per-sample, per-channel normalisation
    (biased variance, eps 1e-5) followed by ``scale * x_hat + beta``. ``beta`` and ``gamma`` (B x C) are
    written by :func:`assign_adain_params` before each forward; they are plain attributes, not parameters.
    ``scale = gamma`` (released) or ``1 + gamma`` (CPU deviation)."""

    def __init__(self, num_features: int, eps: float = 1e-5, scale_mode: str = "gamma"):
        super().__init__()
        if scale_mode not in ADAIN_SCALES:
            raise ValueError(f"scale_mode must be one of {ADAIN_SCALES}")
        self.num_features, self.eps, self.scale_mode = num_features, eps, scale_mode
        self.beta: Tensor | None = None
        self.gamma: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.beta is None or self.gamma is None:
            raise RuntimeError("AdaIN parameters not assigned: call assign_adain_params first")
        x_hat = F.instance_norm(x, eps=self.eps)
        scale = self.gamma if self.scale_mode == "gamma" else 1.0 + self.gamma
        return x_hat * scale[:, :, None, None] + self.beta[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, scale={self.scale_mode}"


class LayerNorm(nn.Module):
    """MUNIT's custom LayerNorm (eriklindernoren/NVlabs ``LayerNorm``): per sample over C x H x W,
    ``(x - mean) / (std + eps)`` with the unbiased std as in the released code, then a per-channel affine with
    ``gamma ~ U(0, 1)`` and ``beta = 0``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(num_features).uniform_())
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.size(0), -1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        x = (x - flat.mean(1).view(shape)) / (flat.std(1).view(shape) + self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class InstanceNorm2dAnySize(nn.Module):
    """Affine-free instance norm ``(x - mean) / sqrt(var + eps)`` (biased variance, per sample and channel) that,
    unlike ``nn.InstanceNorm2d`` in training mode, accepts a 1x1 map and returns its mathematical value 0 there.
    Needed by the discriminator: at 112 px the released third scale applies IN after its fourth conv to a 1x1
    map (28 -> 14 -> 7 -> 3 -> 1), so that scale's features are constant and its patch output is just the
    final conv's bias path; current PyTorch raises on that input instead. Parameter-free, so counts are
    unchanged."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] * x.shape[3] > 1:
            return F.instance_norm(x, eps=self.eps)  # same value, faster kernel
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """``x + [pad1, 3x3 conv, norm, ReLU, pad1, 3x3 conv, norm](x)`` with norm = IN (encoder) or AdaIN
    (decoder), as in MUNIT's ``ResidualBlock``."""

    def __init__(self, features: int, norm: str = "in", adain_scale: str = "gamma"):
        super().__init__()

        def make_norm():
            if norm == "adain":
                return AdaptiveInstanceNorm2d(features, scale_mode=adain_scale)
            return nn.InstanceNorm2d(features)

        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            make_norm(),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            make_norm(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ContentEncoder(nn.Module):
    """MUNIT content encoder (CFSM ``Encoder``): 7x7 stem, ``n_downsample`` 4x4 stride-2 convs doubling the
    width, ``n_residual`` IN residual blocks. Output: ``dim * 2**n_downsample`` channels at S / 2**n_downsample."""

    def __init__(self, in_channels: int = 3, dim: int = 64, n_downsample: int = 2, n_residual: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, dim, 7),
            nn.InstanceNorm2d(dim),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n_downsample):
            layers += [
                nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1),
                nn.InstanceNorm2d(dim * 2),
                nn.ReLU(inplace=True),
            ]
            dim *= 2
        layers += [ResidualBlock(dim, norm="in") for _ in range(n_residual)]
        self.model = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class AdaINDecoder(nn.Module):
    """MUNIT decoder (CFSM ``Decoder``): ``n_residual`` AdaIN residual blocks, ``n_upsample`` x [nearest x2,
    5x5 conv halving the width, :class:`LayerNorm`, ReLU], reflect-pad 3, 7x7 conv to 3 channels, tanh."""

    def __init__(
        self,
        out_channels: int = 3,
        dim: int = 256,
        n_upsample: int = 2,
        n_residual: int = 3,
        adain_scale: str = "gamma",
    ):
        super().__init__()
        layers: list[nn.Module] = [ResidualBlock(dim, norm="adain", adain_scale=adain_scale) for _ in range(n_residual)]
        for _ in range(n_upsample):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(dim, dim // 2, 5, padding=2),
                LayerNorm(dim // 2),
                nn.ReLU(inplace=True),
            ]
            dim //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(dim, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, content: Tensor) -> Tensor:
        return self.model(content)


class StyleMLP(nn.Module):
    """AdaIN-parameter MLP (MUNIT ``MLP``): ``latent_dim -> mlp_dim x (mlp_layers - 1) -> out_dim``, ReLU between
    the Linear layers, no normalisation, no output activation."""

    def __init__(self, latent_dim: int, out_dim: int, mlp_dim: int = 256, mlp_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(latent_dim, mlp_dim), nn.ReLU(inplace=True)]
        for _ in range(mlp_layers - 2):
            layers += [nn.Linear(mlp_dim, mlp_dim), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(mlp_dim, out_dim))
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)


def num_adain_params(module: nn.Module) -> int:
    """2 x channels for every AdaIN layer (MUNIT ``get_num_adain_params``)."""
    return sum(2 * m.num_features for m in module.modules() if isinstance(m, AdaptiveInstanceNorm2d))


def assign_adain_params(params: Tensor, module: nn.Module) -> None:
    """Slice ``params`` (B x n_adain_params) over the AdaIN layers in module order, exactly as MUNIT's
    ``assign_adain_params``: for a layer with C channels the next 2C values are taken, the first C become
    ``beta`` (the "mean", bias) and the second C become ``gamma`` (the "std", weight)."""
    offset = 0
    for m in module.modules():
        if isinstance(m, AdaptiveInstanceNorm2d):
            c = m.num_features
            m.beta = params[:, offset : offset + c]
            m.gamma = params[:, offset + c : offset + 2 * c]
            offset += 2 * c
    if offset != params.size(1):
        raise ValueError(f"expected {offset} AdaIN parameters, got {params.size(1)}")


# --------------------------------------------------------------------------------------------------- generator


class CFSMGenerator(nn.Module):
    """CFSM generator ``G(x, o)`` (CFSM ``synthesis_network.py`` ``Generator``): content encoder on x, style code
    ``z = o U + mu``, MLP -> AdaIN parameters, AdaIN decoder. x in [-1, 1] (B, 3, S, S); o (B, q); output in
    [-1, 1]. Conv weights are initialised with :func:`weights_init_normal`."""

    def __init__(self, config: CFSMConfig = PAPER):
        super().__init__()
        self.config = c = config
        self.encoder = ContentEncoder(3, c.dim, c.n_downsample, c.n_residual)
        self.decoder = AdaINDecoder(3, self.encoder.out_channels, c.n_downsample, c.n_residual, c.adain_scale)
        self.subspace = SubspaceLayer(c.style_dim, c.latent_dim)
        self.mlp = StyleMLP(c.latent_dim, num_adain_params(self.decoder), c.mlp_dim, c.mlp_layers)
        self.apply(weights_init_normal)

    @property
    def style_dim(self) -> int:
        return self.config.style_dim

    def forward(self, x: Tensor, o: Tensor) -> Tensor:
        if o.dim() != 2 or o.size(0) != x.size(0) or o.size(1) != self.config.style_dim:
            raise ValueError(f"o must be (B={x.size(0)}, q={self.config.style_dim}), got {tuple(o.shape)}")
        content = self.encoder(x)
        assign_adain_params(self.mlp(self.subspace(o)), self.decoder)
        return self.decoder(content)

    # ---- control API (stage 2 and the pictures) -------------------------------------------------------------
    def synthesize(self, x: Tensor, o: Tensor) -> Tensor:
        """``G(x, o)`` for explicit coefficients (same as ``forward``)."""
        return self(x, o)

    def along_basis(self, x: Tensor, index: int, value: float) -> Tensor:
        """Move along one basis vector: ``o = value * e_index`` for every sample (``CFSM/interface.py`` shows each
        basis with a one-hot times a value in [-3, 3])."""
        if not 0 <= index < self.config.style_dim:
            raise IndexError(f"basis index {index} out of range [0, {self.config.style_dim})")
        o = x.new_zeros(x.size(0), self.config.style_dim)
        o[:, index] = value
        return self(x, o)

    def sample_coefficients(
        self,
        batch: int,
        magnitude: float,
        generator: torch.Generator | None = None,
        demo_scaling: bool = False,
        device=None,
    ) -> Tensor:
        """``o ~ N(0, I_q)`` scaled to unit length, then times ``magnitude`` so ``||o|| = magnitude``.

        With ``demo_scaling=True`` the factor is ``magnitude / 2``, as the official demo (``CFSM/interface.py``,
        slider 0..6, default 3) does; the default follows the training semantics, where ``a = ||o||`` is the
        magnitude fed to the identity target ``t(a)``.
        """
        o = torch.randn(batch, self.config.style_dim, generator=generator)
        o = o / o.norm(dim=1, keepdim=True).clamp_min(1e-12)
        o = o * (magnitude / 2.0 if demo_scaling else magnitude)
        return o.to(device if device is not None else self.subspace.U.device)

    def with_magnitude(
        self,
        x: Tensor,
        magnitude: float,
        generator: torch.Generator | None = None,
        demo_scaling: bool = False,
        return_o: bool = False,
    ):
        """Random direction at a fixed magnitude (see :meth:`sample_coefficients`); returns the image, or
        ``(image, o)`` with ``return_o=True``."""
        o = self.sample_coefficients(x.size(0), magnitude, generator, demo_scaling, device=x.device).to(x.dtype)
        out = self(x, o)
        return (out, o) if return_o else out

    def basis(self) -> tuple[Tensor, Tensor]:
        """The learned subspace ``(U (q x d), mu (d))``, detached."""
        return self.subspace.U.detach(), self.subspace.mu.detach()


# ----------------------------------------------------------------------------------------------- discriminator


class MultiScaleDiscriminator(nn.Module):
    """Multi-scale PatchGAN (eriklindernoren MUNIT / CFSM ``MultiDiscriminator``): ``d_scales`` networks of
    ``d_layers`` 4x4 stride-2 convs (width ``d_base * 2**i``; the first without norm, the others with IN when
    ``d_norm == "instance"``; LeakyReLU 0.2) and a final ``d_final_kernel`` conv (pad k//2) to 1 channel. The
    input is downsampled by AvgPool2d(3, 2, 1, count_include_pad=False) between scales (kernel 3 in the release
    because ``in_channels=3`` is reused as the kernel size). ``forward(x)`` returns the list of patch maps."""

    def __init__(self, config: CFSMConfig = PAPER, in_channels: int = 3):
        super().__init__()
        self.config = c = config
        self.models = nn.ModuleList([self._one_scale(in_channels, c) for _ in range(c.d_scales)])
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.apply(weights_init_normal)

    @staticmethod
    def _one_scale(in_channels: int, c: CFSMConfig) -> nn.Sequential:
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(c.d_layers):
            cout = c.d_base * 2**i
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
            if i > 0 and c.d_norm == "instance":
                layers.append(InstanceNorm2dAnySize(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, c.d_final_kernel, padding=c.d_final_kernel // 2))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for i, model in enumerate(self.models):
            if i > 0:
                x = self.downsample(x)
            outputs.append(model(x))
        return outputs


# ------------------------------------------------------------------------------------------------------- losses


def lsgan_d_loss(d_real: list[Tensor], d_fake: list[Tensor]) -> Tensor:
    """LSGAN discriminator loss ``sum_s [mean((D_s(real) - 1)^2) + mean(D_s(fake)^2)]`` (CFSM ``train.py`` /
    eriklindernoren MUNIT ``compute_loss`` with targets 1 and 0, summed over scales; no 1/2 factor)."""
    return sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(d_real, d_fake, strict=True))


def lsgan_g_loss(d_fake: list[Tensor]) -> Tensor:
    """LSGAN generator loss ``sum_s mean((D_s(G(x, o)) - 1)^2)`` (same source)."""
    return sum(((f - 1) ** 2).mean() for f in d_fake)


def magnitude_target(a: Tensor, la: float = 0.0, ua: float = 6.0, lm: float = 0.05, um: float = 0.65) -> Tensor:
    """Target cosine distance ``t(a) = (a - la)(um - lm)/(ua - la) + lm`` (CFSM ``train.py``, MagFace's linear
    margin and argument names); with the defaults ``t(a) = 0.05 + 0.1 a``. Not clipped, as released."""
    return (a - la) * (um - lm) / (ua - la) + lm


def identity_loss(f_x: Tensor, f_gx: Tensor, o: Tensor, **magnitude_kw) -> Tensor:
    """Magnitude-guided identity loss (CFSM ``id_loss.py`` / ``train.py``): with ``d = 1 - cos(f(x), f(G(x, o)))``
    (both embeddings L2-normalised here) and ``a = ||o||_2``, ``L_id = mean_batch (d - t(a))^2``."""
    d = 1.0 - (F.normalize(f_x, dim=1) * F.normalize(f_gx, dim=1)).sum(1)
    return ((d - magnitude_target(o.norm(dim=1), **magnitude_kw)) ** 2).mean()


def orthogonality_loss(U: Tensor, form: str = "squared_mean") -> Tensor:
    """Orthogonality of the basis (U stored q x d, so ``U U^T`` is the q x q Gram matrix = ``U^T U`` of a d x q
    basis). ``"squared_mean"`` (released ``train.py``): ``mean((U U^T - I_q)^2)`` = ||.||_F^2 / q^2.
    ``"l1"``: ``mean(|U U^T - I_q|)``, the paper's written norm as far as it can be read (unverified); record
    which form ran."""
    gram = U @ U.t()
    diff = gram - torch.eye(U.size(0), dtype=U.dtype, device=U.device)
    if form == "squared_mean":
        return (diff**2).mean()
    if form == "l1":
        return diff.abs().mean()
    raise ValueError(f"form must be 'squared_mean' or 'l1', got {form!r}")


def reconstruction_loss(x: Tensor, x_rec: Tensor) -> Tensor:
    """L1 reconstruction ``mean |x - G(x, 0)|`` (CFSM ``train.py`` odd steps, weight 1 as released; the CPU
    default weights it 10 in the training loop)."""
    return (x - x_rec).abs().mean()


def subspace_similarity(U_a: Tensor, mu_a: Tensor, U_b: Tensor, mu_b: Tensor) -> float:
    """Subspace similarity ``S(A, B) = (1/q) sum_i cos(u_A^i + mu_A, u_B^i + mu_B)`` with ``u^i`` the i-th basis
    row (q x d storage), as used in the paper to compare learned subspaces."""
    a = U_a.detach() + mu_a.detach()
    b = U_b.detach() + mu_b.detach()
    if a.shape != b.shape:
        raise ValueError(f"subspaces differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float(F.cosine_similarity(a, b, dim=1).mean())


# ------------------------------------------------------------------------------------------- stage-1 artefact

STAGE1_FORMAT = "cfsm-stage1/1"


def save_generator(path: str, generator: CFSMGenerator, meta: dict | None = None) -> None:
    """Write the trained generator (what stage 2 loads) atomically: ``{"format", "model_config", "generator",
    "meta"}``; ``meta`` holds the training config, the deviations and the analysis figures."""
    from harness.core.atomic import save_torch_atomic

    save_torch_atomic(
        {
            "format": STAGE1_FORMAT,
            "model_config": asdict(generator.config),
            "generator": generator.state_dict(),
            "meta": meta or {},
        },
        path,
    )


def load_generator(path: str, map_location: str | torch.device = "cpu", **expect) -> tuple[CFSMGenerator, dict]:
    """Load a stage-1 generator (eval mode, frozen). ``expect`` names :class:`CFSMConfig` fields the caller needs
    (``image_size=32, style_dim=10``); any difference is one ValueError that lists every differing field.
    Returns ``(generator, meta)``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: stage-1 generator not found (run `dvc repro stage1` or `python -m harness.stage1`)"
        )
    from harness.core.atomic import load_torch

    state = load_torch(path, "stage-1 generator")  # weights_only=True: a crafted file cannot run code
    if not isinstance(state, dict) or state.get("format") != STAGE1_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a CFSM stage-1 generator (format {found!r}, expected {STAGE1_FORMAT!r})")
    known = {f.name for f in fields(CFSMConfig)}
    unknown = sorted(set(expect) - known)
    if unknown:
        raise TypeError(f"load_generator: unknown CFSMConfig fields {unknown}")
    config = CFSMConfig(**state["model_config"])
    differs = [f"{k}={getattr(config, k)!r} (expected {v!r})" for k, v in expect.items() if getattr(config, k) != v]
    if differs:
        raise ValueError(f"{path}: incompatible stage-1 generator: " + ", ".join(differs))
    generator = CFSMGenerator(config)
    generator.load_state_dict(state["generator"])
    generator.to(map_location)
    generator.eval().requires_grad_(False)
    return generator, state.get("meta", {})
