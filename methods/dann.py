"""``dann``: domain-adversarial training (DANN) on the FR embeddings.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015; Ganin et al.,
"Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016. Implementation after TLlib
(``tllib/alignment/dann.py``, ``tllib/modules/{grl,domain_discriminator}.py``).

Each step, source ``x`` and target ``xt`` go through the backbone as ONE batch (BatchNorm sees both domains, as in
TLlib's examples); the margin loss is taken on the source half; a domain discriminator classifies every embedding
(source = 1, target = 0) through a gradient-reversal layer (GRL), so one optimiser step trains the discriminator to
separate the domains and the backbone to confuse it:

    loss = L_FR(source) + trade_off * 0.5 * (BCE(D(R(f_s)), 1) + BCE(D(R(f_t)), 0))

- **GRL coefficient.** ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``, gamma = 10, ``p = step / T`` the training
  progress (the papers' schedule). ``T`` is, in order: the ``schedule_steps`` hyperparameter if > 0; the run's total
  step count if the trainer sets ``method.total_steps`` (see below); else 10,000 with a warning: with gamma = 10
  that is exactly TLlib's default ``WarmStartGradientReverseLayer(alpha=1, lo=0, hi=1, max_iters=1000)``
  (``alpha * i / max_iters = gamma * i / 10000``). lambda scales only the reversed gradient reaching the backbone;
  the discriminator learns from the unscaled BCE (times ``trade_off``, as TLlib's ``transfer_loss * trade_off``).
- **Discriminator.** MLP ``d -> 1024 -> 1024 -> 1``: the papers' ``x -> 1024 -> 1024 -> 2`` domain classifier with one
  logit instead of a two-way softmax. Hidden layers: TLlib's default ``DomainDiscriminator(batch_norm=True)``
  (Linear-BN-ReLU); ``disc_bn=False`` gives TLlib's other form (Linear-ReLU-Dropout(0.5)). It outputs logits and
  the loss uses ``binary_cross_entropy_with_logits`` (TLlib's Sigmoid + BCE is refused under CUDA autocast). Its
  parameters are returned by ``param_groups()`` (learning-rate scale ``disc_lr_scale``, 1.0 as TLlib's
  ``get_parameters``); it is saved with the method's state in the checkpoint.
- **Features.** ``features="normalized"`` (default) feeds ``sqrt(d) * e / ||e||``: angular-margin heads only see
  directions, and aligning norms would fight AdaFace-style heads whose norm encodes quality. ``"raw"`` feeds the
  embedding as the papers do with their bottleneck features. See ``methods.da_losses.da_features``.

Logged: ``dann.fr_loss``, ``dann.domain_loss``, ``dann.domain_acc`` (0.5 at equilibrium, 1.0 when the domains
separate), ``dann.lambda``.

**Schedule horizon.** ``harness.engine.train.train`` sets ``method.total_steps`` before the first step, so ``p`` is the
true training progress; ``hparams.schedule_steps`` overrides it (the 10,000-step fallback only applies when the
method is driven by another loop).

Hyperparameter samplers follow DomainBed's DANN (``lambda`` 10^U(-2, 2); ``mlp_width``-like widths).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from methods.base import Batch, FRModel, Method, register
from methods.da_losses import (
    FEATURE_MODES,
    binary_domain_loss,
    da_features,
    grad_reverse,
    grl_coefficient,
    joint_embeddings,
)

FALLBACK_SCHEDULE_STEPS = 10_000  # gamma = 10 over 10k steps == TLlib's alpha = 1 over max_iters = 1000


def domain_discriminator(in_features: int, hidden: int = 1024, batch_norm: bool = True) -> nn.Sequential:
    """``in -> hidden -> hidden -> 1`` logits; Linear-BN-ReLU or Linear-ReLU-Dropout(0.5) hidden layers (TLlib)."""
    if batch_norm:
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, 1),
    )


@register
class DANN(Method):
    name = "dann"
    uses_target = True
    paper = "Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016"

    @staticmethod
    def hparams():
        return {
            "trade_off": (1.0, lambda r: float(10 ** r.uniform(-2, 2))),  # TLlib --trade-off 1; DomainBed lambda
            "gamma": (10.0, lambda r: 10.0),  # the papers' schedule constant
            "schedule_steps": (0, lambda r: 0),  # 0: the trainer's total steps (method.total_steps), else 10k
            "disc_hidden": (1024, lambda r: int(r.choice([256, 512, 1024]))),
            "disc_bn": (True, lambda r: bool(r.choice([True, False]))),
            "disc_lr_scale": (1.0, lambda r: float(10 ** r.uniform(-1, 1))),
            "features": ("normalized", lambda r: "normalized"),
        }

    @classmethod
    def preflight(cls, hp) -> None:
        if hp["features"] not in FEATURE_MODES:
            raise ValueError(f"dann: features={hp['features']!r}, expected one of {', '.join(FEATURE_MODES)}")
        if not isinstance(hp["disc_bn"], (bool, np.bool_)):
            raise ValueError(f"dann: disc_bn={hp['disc_bn']!r} is not a boolean")
        if int(hp["schedule_steps"]) < 0 or int(hp["disc_hidden"]) < 1:
            raise ValueError(
                f"dann: schedule_steps must be >= 0 and disc_hidden >= 1 "
                f"(got {hp['schedule_steps']}, {hp['disc_hidden']})"
            )

    def __init__(self, embedding_size, num_classes, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.preflight(self.hp)
        self.trade_off = float(self.hp["trade_off"])
        self.gamma = float(self.hp["gamma"])
        self.schedule_steps = int(self.hp["schedule_steps"])
        self.features = self.hp["features"]
        self.discriminator = domain_discriminator(embedding_size, int(self.hp["disc_hidden"]), bool(self.hp["disc_bn"]))
        self._warned = False

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.discriminator.parameters()), "lr_scale": float(self.hp["disc_lr_scale"])}]

    def horizon(self) -> int:
        """T in p = step / T."""
        if self.schedule_steps > 0:
            return self.schedule_steps
        if self.total_steps:
            return int(self.total_steps)
        if not self._warned:
            warnings.warn(
                "dann: the total number of training steps is unknown (the trainer did not set "
                f"method.total_steps and hparams.schedule_steps=0); the GRL warm-up uses T={FALLBACK_SCHEDULE_STEPS} "
                "(TLlib's default schedule)",
                RuntimeWarning,
                stacklevel=2,
            )
            self._warned = True
        return FALLBACK_SCHEDULE_STEPS

    def coefficient(self, step: int) -> float:
        return grl_coefficient(step / self.horizon(), self.gamma)

    def loss(self, batch: Batch, fr: FRModel):
        es, et = joint_embeddings(fr.backbone, batch.x, batch.xt)
        fr_loss = fr.head(es, batch.y)
        lam = self.coefficient(batch.step)
        f = da_features(torch.cat([es, et]), self.features)
        logits = self.discriminator(grad_reverse(f, lam))
        n = es.shape[0]
        d_loss, acc = binary_domain_loss(logits[:n], logits[n:])
        loss = fr_loss + self.trade_off * d_loss
        return loss, {
            "dann.fr_loss": fr_loss.detach(),
            "dann.domain_loss": d_loss.detach(),
            "dann.domain_acc": acc,
            "dann.lambda": lam,
        }
