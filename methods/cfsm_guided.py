"""``cfsm_guided``: CFSM stage 2, FR training on real images mixed with adversarially guided syntheses.

Liu, Kim, Jain & Liu, "Controllable and Guided Face Synthesis for Unconstrained Face Recognition", ECCV 2022
(arXiv 2207.10180). The facts come from the released code, ``GuidedFaceRecognition/adversarial_regu.py``
(``adversarial_img_augmentation``) and ``GuidedFaceRecognition/train.py`` (github.com/liufeng2915/CFSM,
``adversarial_regu.py`` lines 11-34); the code here is written from those facts, not copied.

Every training step, for the frozen stage-1 generator ``G(x, o)`` (:mod:`harness.models.cfsm`):

1. draw ``o0 ~ N(0, I_q)`` per sample, afresh for every batch;
2. ``steps`` times (released: k = 1, i.e. one FGSM step; the code comment calls it PGD): synthesise
   ``G(x, o)``, compute the FR margin loss of the backbone on it with the true labels, take its gradient with
   respect to ``o`` only, ``o <- clip(o + alpha * sign(grad), o0 - eps, o0 + eps)`` (released
   ``epsilon = alpha = 0.314``);
3. the final synthetic images are ``G(x, o_adv)``;
4. the training batch is a random ``rs_ratio`` (0.75) of the real images followed by a random ``1 - rs_ratio``
   of the synthetic ones, labels carried along; the two subsets come from independent permutations, so a
   sample can be in both or in neither, and the batch size is unchanged.

The generator is frozen and in eval mode; the FR backbone stays in training mode during the inner pass
(released: the DDP backbone is never switched to eval), so BatchNorm's running statistics also see the inner
forward (``inner_bn_train``). The inner gradient goes through ``fr.raw``, the unwrapped backbone, so no DDP
reducer is armed, and it is taken with ``torch.autograd.grad`` w.r.t. ``o`` alone, so no parameter gradient
accumulates. The released code also lets the last synthesis build a graph into the generator's parameters;
here it runs under ``no_grad`` (same values, no wasted backward).

Choices of this re-implementation (all hyperparameters, so they are in every result row):

* ``generator_size``: the generator runs at its own resolution (32 px CPU profile, 112 px paper profile);
  the FR input (64 px on SynthFace) is downsampled to it (bilinear, antialiased) and the synthesis upsampled
  back (bilinear). Released: both are 112 px, no resizing.
* ``synthesize``: ``"all"`` synthesises ``G(x, o)`` for the whole batch, as released, and then keeps a random
  25%; ``"selected"`` (default) draws the 25% first and synthesises only those. Because ``G`` is per-sample
  (instance/AdaIN/layer norms only) and the synthetic subset is drawn independently of ``o``, the images have
  the same distribution; the difference is the inner FR pass: with ``inner_bn_train`` its BatchNorm batch
  statistics (and an AdaFace head's norm statistics) come from the selected samples instead of the whole
  batch, and it costs about 4x less generator and inner-FR work.
* the content code ``encoder(x)`` does not depend on ``o``; it is computed once per batch and reused by every
  decoding (exactly ``G.forward`` split in two).
* ``n_real = round(rs_ratio * B)``, ``n_syn = B - n_real`` (released: ``int(B * r)`` and ``int(B * (1 - r))``,
  the same for B = 256 or 128, but one short when ``B * r`` is fractional).
* logged scalars (``batch.extras``, returned by ``loss``): ``cfsm.inner_loss`` (the inner FR loss at ``o0``, the
  quantity the step ascends), ``cfsm.grad_zero`` (share of zero gradient coordinates), ``cfsm.o_abs`` (mean
  ``|o_adv|``), ``cfsm.o_shift`` (mean ``|o_adv - o0|``: alpha when eps >= alpha); every ``monitor_every`` steps
  also ``cfsm.probe_loss_o0`` / ``cfsm.probe_loss_adv``, the FR loss at ``o0`` and at ``o_adv`` measured again with
  the backbone and head in eval mode (no running statistic changes, no random numbers drawn, so monitoring never
  changes training). The same monitor steps record the guidance statistics the paper's analysis asks for (its
  observation: guided samples are less degraded than random ones, yet more useful; issue 20): the distribution of
  ``||o||`` before and after the FGSM step (``cfsm.o0_norm.*`` and ``cfsm.oadv_norm.*``: mean, std, min, max,
  q10, q50, q90 over the synthesised rows: :func:`methods.guidance.norm_summary`) and how far each synthesis is
  from its source image (``cfsm.probe_l1_o0`` / ``cfsm.probe_l1_adv``: mean ``|G(x, o) - x|`` at the FR input
  size, in [-1, 1] pixel units). The trainer logs a method's scalars every ``log_every`` steps, so a monitor step
  reaches the run's metrics when it is also a logging step (both 50 by default).
* randomness: both permutations and ``o0`` are drawn on the CPU from torch's global generator (seeded by the
  trainer), then moved to the batch's device, so a CPU and a GPU run draw the same values.

``cfsm_random`` (:mod:`methods.cfsm_random`) is the same with ``steps = 0`` (the paper's "Ours*").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.core.config import parse_bool
from harness.data.images import memory_format_of
from harness.models.cfsm import CFSMGenerator, assign_adain_params, load_generator
from methods.base import Batch, FRModel, Method, register
from methods.guidance import (  # noqa: F401  (re-exported: the step and the mixing are part of this method)
    check_guidance,
    eval_mode,
    fgsm_step,
    guided_search,
    mix_batch,
    mix_indices,
    mix_sizes,
    norm_summary,
    probe_losses,
)

SYNTHESIZE = ("selected", "all")


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` x ``size`` (antialiased when shrinking); identity if equal."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def fr_input(images: Tensor, like: Tensor) -> Tensor:
    """Generator output -> FR input: upsampled to ``like``'s size, in its dtype and memory format. The trainer
    runs the generator in float32 (no autocast around the step, as released: the backbone autocasts its own trunk);
    a caller that wraps the step in autocast gets half precision from the generator, cast back here to the batch's
    float32, which a backbone running its own autocast context expects."""
    return resize(images, like.shape[-1]).to(dtype=like.dtype).contiguous(memory_format=memory_format_of(like))


def encode(generator: CFSMGenerator, x: Tensor) -> Tensor:
    """The content code of ``G`` (the part of ``G(x, o)`` that does not depend on ``o``)."""
    return generator.encoder(x)


def decode(generator: CFSMGenerator, content: Tensor, o: Tensor) -> Tensor:
    """``G(x, o)`` from ``content = encode(G, x)``: style code, AdaIN parameters, decoder (``G.forward``'s
    second half)."""
    q = generator.config.style_dim
    if o.dim() != 2 or o.size(0) != content.size(0) or o.size(1) != q:
        raise ValueError(f"o must be (B={content.size(0)}, q={q}), got {tuple(o.shape)}")
    assign_adain_params(generator.mlp(generator.subspace(o)), generator.decoder)
    return generator.decoder(content)


# ------------------------------------------------------------------------------------------------ the method
def cfsm_hparams(steps: int, steps_sampler) -> dict[str, tuple[Any, Any]]:
    """The declaration shared by ``cfsm_guided`` (steps 1) and ``cfsm_random`` (steps 0)."""

    def fixed(value):
        return lambda rng: value

    return {
        "generator": ("results/stage1/generator.pt", fixed("results/stage1/generator.pt")),  # stage-1 artefact
        "generator_size": (32, fixed(32)),  # must match the checkpoint: 32 CPU profile, 112 paper profile
        "style_dim": (10, fixed(10)),  # q
        "latent_dim": (128, fixed(128)),  # d
        "eps": (0.314, lambda r: float(10 ** r.uniform(-1.0, 0.0))),  # L_inf box around o0 (inert if steps 0)
        "alpha": (0.314, lambda r: float(10 ** r.uniform(-1.0, 0.0))),  # FGSM step size (inert if steps 0)
        "steps": (steps, steps_sampler),  # k: 1 = FGSM (released), 0 = random o ("Ours*")
        "rs_ratio": (0.75, lambda r: float(r.uniform(0.5, 0.9))),  # share of real images in a batch
        "inner_bn_train": (True, fixed(True)),  # released True: the inner pass is a training-mode forward
        "synthesize": ("selected", fixed("selected")),  # "all" = released (synthesise all, keep 25%)
        "monitor_every": (50, fixed(50)),  # eval-mode probe of the inner loss at o0 and o_adv; 0 = off
    }


@register
class CFSMGuided(Method):
    name = "cfsm_guided"
    paper = "Liu et al., CFSM, ECCV 2022"

    @staticmethod
    def hparams():
        return cfsm_hparams(1, lambda r: int(r.integers(1, 4)))

    @classmethod
    def preflight(cls, hp) -> None:
        """A missing or incompatible stage-1 generator fails here, before any data is read."""
        cls._load(hp)

    @classmethod
    def _load(cls, h) -> tuple[CFSMGenerator, dict]:
        try:
            return load_generator(
                str(h["generator"]),
                image_size=int(h["generator_size"]),
                style_dim=int(h["style_dim"]),
                latent_dim=int(h["latent_dim"]),
            )
        except ValueError as exc:
            if "incompatible" not in str(exc):  # unreadable, refused (pickled code) or not a generator
                raise ValueError(f"{cls.name}: hparams.generator: {exc}") from None
            raise ValueError(
                f"{cls.name}: {exc} (hparams.generator_size / style_dim / latent_dim must match the stage-1 checkpoint)"
            ) from None

    def __init__(self, embedding_size: int, num_classes: int, hp):
        super().__init__(embedding_size, num_classes, hp)
        h = self.hp
        self.steps = int(h["steps"])
        self.eps, self.alpha, self.rs_ratio = float(h["eps"]), float(h["alpha"]), float(h["rs_ratio"])
        self.inner_bn_train = parse_bool(h["inner_bn_train"], "hyperparameter inner_bn_train")
        self.synthesize = str(h["synthesize"])
        self.monitor_every = int(h["monitor_every"])
        self.generator_size = int(h["generator_size"])
        check_guidance(self.name, self.steps, self.eps, self.alpha, self.rs_ratio, self.monitor_every)
        if self.synthesize not in SYNTHESIZE:
            raise ValueError(f"{self.name}: synthesize must be one of {SYNTHESIZE}, got {self.synthesize!r}")
        generator, meta = self._load(h)
        # A plain list keeps the frozen generator out of the registered submodules: it is not in state_dict(),
        # method.train() does not switch it to training mode, the trainer's optimiser never sees it, and
        # method.to(device) does not move it (augment moves it to the batch's device lazily).
        self._frozen: list[CFSMGenerator] = [generator]
        self.generator_meta: dict = meta

    @property
    def generator(self) -> CFSMGenerator:
        return self._frozen[0]

    def _generator_on(self, device: torch.device) -> CFSMGenerator:
        g = self._frozen[0]
        if g.subspace.U.device != device:
            self._frozen[0] = g = g.to(device)
        return g

    # ------------------------------------------------------------------------------------------ the step
    def adversarial_coefficients(
        self, generator: CFSMGenerator, content: Tensor, o0: Tensor, y: Tensor, fr: FRModel, like: Tensor
    ) -> tuple[Tensor, dict]:
        """``steps`` FGSM steps on ``o`` from ``o0`` against the FR loss (through ``fr.raw``); returns
        ``(o_adv, scalars)``. With ``steps == 0`` returns ``o0`` without any forward pass. The FR input has
        ``like``'s size, dtype and memory format (``like`` = the batch's images)."""
        return guided_search(
            lambda o: fr_input(decode(generator, content, o), like),
            o0,
            y,
            fr,
            steps=self.steps,
            alpha=self.alpha,
            eps=self.eps,
            inner_bn_train=self.inner_bn_train,
            prefix="cfsm",
            name=self.name,
        )

    def augment(self, batch: Batch, fr: FRModel) -> Batch:
        x, y = batch.x, batch.y
        B, device = x.size(0), x.device
        real_idx, syn_idx = mix_indices(B, self.rs_ratio)
        if syn_idx.numel() == 0:
            real_idx = real_idx.to(device)
            return batch.replace(x=x[real_idx].contiguous(memory_format=memory_format_of(x)), y=y[real_idx])
        generator = self._generator_on(device)
        # "selected": synthesise only the rows that enter the batch; "all": the whole batch (released).
        src = syn_idx if self.synthesize == "selected" else torch.arange(B)
        o0 = torch.randn(src.numel(), generator.config.style_dim).to(device)
        src_dev = src.to(device)
        with torch.no_grad():
            content = encode(generator, resize(x[src_dev].float(), self.generator_size).contiguous())
        o, scalars = self.adversarial_coefficients(generator, content, o0, y[src_dev], fr, x)
        keep = slice(None) if self.synthesize == "selected" else syn_idx.to(device)
        with torch.no_grad():
            x_syn = fr_input(decode(generator, content[keep], o[keep]), x)
            if self.steps and self.monitor_every and batch.step % self.monitor_every == 0:
                scalars.update(self._probe(generator, content, o0, o, y[src_dev], fr, x, x[src_dev]))
                scalars.update(norm_summary("cfsm.o0_norm", o0) | norm_summary("cfsm.oadv_norm", o))
        x_mix, y_mix = mix_batch(x, y, x_syn, real_idx, syn_idx)
        scalars["cfsm.o_abs"] = o[keep].abs().mean()
        scalars["cfsm.o_shift"] = (o[keep] - o0[keep]).abs().mean()
        return batch.replace(x=x_mix, y=y_mix, extras={**batch.extras, **scalars})

    def _probe(self, generator, content, o0, o, y, fr, like, source) -> dict:
        """The FR loss at ``o0`` and at ``o_adv`` in eval mode (monitoring never changes training), and each
        synthesis's mean absolute difference from its ``source`` image (the FR-size real images)."""
        return probe_losses(
            lambda c: fr_input(decode(generator, content, c), like),
            {"cfsm.probe_loss_o0": o0, "cfsm.probe_loss_adv": o},
            y,
            fr,
            distances={"cfsm.probe_loss_o0": "cfsm.probe_l1_o0", "cfsm.probe_loss_adv": "cfsm.probe_l1_adv"},
            reference=source,
        )

    def loss(self, batch: Batch, fr: FRModel):
        scalars = {k: v for k, v in batch.extras.items() if k.startswith("cfsm.")}
        return fr.loss(batch.x, batch.y), scalars
