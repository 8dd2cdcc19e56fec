"""``coral``: Deep CORAL, second-order statistics alignment of the FR embeddings.

Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016 Workshops (TASK-CV).

Source ``x`` and target ``xt`` go through the backbone as ONE batch (BatchNorm sees both domains, TLlib practice);
the margin loss is taken on the source half and the CORAL loss between the two halves' features:

    loss = L_FR(source) + trade_off * ||C_s - C_t||_F^2 / (4 d^2)

with ``C`` the unbiased feature covariances (paper Eq. 1-3; ``methods.da_losses.coral_loss``). ``match_mean=True``
adds the ``||mu_s - mu_t||^2 / d`` term of DomainBed's / TLlib's CORAL (off: the paper matches covariances only).

- **Features.** ``features="normalized"`` (default): ``sqrt(d) * e / ||e||``. Angular-margin heads only see the
  direction of the embedding, so that is what is aligned (and the norm, AdaFace's quality signal, is left free);
  the ``sqrt(d)`` radius gives each coordinate an RMS of 1 like the backbone's BN-ed raw embedding, so the
  ``1/(4 d^2)`` normalisation and ``trade_off`` mean what they mean for raw features. (On unit vectors the loss
  would be another d^2 times smaller.) ``"raw"``: the embedding as is.
- **trade_off = 1.0.** The paper sets the weight "so that at the end of training the classification loss and the
  CORAL loss are roughly the same"; that needs a finished run per setting, so the default is the weight DomainBed
  (``mmd_gamma`` 1.0 for its CORAL) and TLlib's CORAL example (domain generalisation, ``--trade-off 1``) use. Magnitudes
  to keep in mind: on unit-RMS features the term's sampling-noise floor is about ``1 / (2n)`` (0.004 at batch 128,
  measured), and a coordinate-variance mismatch of 0.5x..1.5x adds only ~0.0006, while an ArcFace loss (s = 64) is
  O(10); the paper's rule would therefore pick weights of order 10^2..10^3. The sampler, 10^U(-1, 3), covers both
  conventions (DomainBed searches 10^U(-1, 1)).

Logged: ``coral.fr_loss``, ``coral.loss`` (the unweighted CORAL term).
"""

from __future__ import annotations

import numpy as np

from methods.base import Batch, FRModel, Method, register
from methods.da_losses import FEATURE_MODES, coral_loss, da_features, joint_embeddings


@register
class CORAL(Method):
    name = "coral"
    uses_target = True
    paper = "Sun & Saenko, Deep CORAL, ECCV-W 2016"

    @staticmethod
    def hparams():
        return {
            "trade_off": (1.0, lambda r: float(10 ** r.uniform(-1, 3))),  # DomainBed/TLlib 1.0; paper rule ~1e2-1e3
            "match_mean": (False, lambda r: bool(r.choice([False, True]))),
            "features": ("normalized", lambda r: "normalized"),
        }

    @classmethod
    def preflight(cls, hp) -> None:
        if hp["features"] not in FEATURE_MODES:
            raise ValueError(f"coral: features={hp['features']!r}, expected one of {', '.join(FEATURE_MODES)}")
        if not isinstance(hp["match_mean"], (bool, np.bool_)):
            raise ValueError(f"coral: match_mean={hp['match_mean']!r} is not a boolean")

    def __init__(self, embedding_size, num_classes, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.preflight(self.hp)
        self.trade_off = float(self.hp["trade_off"])
        self.match_mean = bool(self.hp["match_mean"])
        self.features = self.hp["features"]

    def loss(self, batch: Batch, fr: FRModel):
        es, et = joint_embeddings(fr.backbone, batch.x, batch.xt)
        fr_loss = fr.head(es, batch.y)
        c = coral_loss(da_features(es, self.features), da_features(et, self.features), self.match_mean)
        return fr_loss + self.trade_off * c, {"coral.fr_loss": fr_loss.detach(), "coral.loss": c.detach()}
