"""``mmd``: multi-kernel MMD alignment of the FR embeddings (DAN).

Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep Adaptation Networks", ICML 2015.
Implementation after TLlib (``tllib/alignment/dan.py``, ``GaussianKernel``).

Source ``x`` and target ``xt`` go through the backbone as ONE batch (BatchNorm sees both domains, TLlib practice);
the margin loss is taken on the source half and MK-MMD^2 between the two halves' features:

    loss = L_FR(source) + trade_off * MK-MMD^2(f_s, f_t)

- **Kernels.** Gaussian, ``k_u(a, b) = exp(-||a - b||^2 / (2 * 2^u * base))`` for ``u`` in
  ``kernel_exp_lo..kernel_exp_hi`` (default -2..2: five kernels), ``base`` the mean squared pairwise distance of the
  joint batch (detached), equal weights: TLlib's ``GaussianKernel(alpha=2**u)`` family. TLlib's DAN example uses
  ``u`` in -3..1; the paper spreads bandwidths 2^-8..2^8 times the median distance and learns the kernel weights
  beta by a QP, which TLlib (and this code) replace with equal weights.
- **Estimator.** ``"unbiased"`` (default): the quadratic-time U-statistic (Gretton et al. 2012, Eq. 3); at FR batch
  sizes it costs nothing and has far less variance than the linear-time estimate. ``"linear"``: the linear-time
  unbiased estimate over disjoint quad-tuples the paper uses (its Eq. 5). See ``methods.da_losses.mk_mmd``.
- **Features.** ``features="normalized"`` (default): ``sqrt(d) * e / ||e||``, the direction the angular-margin head
  sees (the radius does not matter here: the bandwidth follows the data's scale); ``"raw"``: the embedding as is.
- **trade_off = 1.0**: TLlib's DAN default (``--trade-off 1``); DomainBed's MMD ``mmd_gamma`` is 1.0 too, searched
  over 10^U(-1, 1) (the sampler here).

Logged: ``mmd.fr_loss``, ``mmd.loss`` (the unweighted MK-MMD^2).
"""

from __future__ import annotations

from methods.base import Batch, FRModel, Method, register
from methods.da_losses import FEATURE_MODES, MMD_ESTIMATORS, da_features, joint_embeddings, mk_mmd


@register
class MMD(Method):
    name = "mmd"
    uses_target = True
    paper = "Long et al., DAN, ICML 2015"

    @staticmethod
    def hparams():
        return {
            "trade_off": (1.0, lambda r: float(10 ** r.uniform(-1, 1))),
            "kernel_exp_lo": (-2, lambda r: -2),
            "kernel_exp_hi": (2, lambda r: 2),
            "estimator": ("unbiased", lambda r: "unbiased"),
            "features": ("normalized", lambda r: "normalized"),
        }

    @classmethod
    def preflight(cls, hp) -> None:
        if hp["features"] not in FEATURE_MODES:
            raise ValueError(f"mmd: features={hp['features']!r}, expected one of {', '.join(FEATURE_MODES)}")
        if hp["estimator"] not in MMD_ESTIMATORS:
            raise ValueError(f"mmd: estimator={hp['estimator']!r}, expected one of {', '.join(MMD_ESTIMATORS)}")
        if int(hp["kernel_exp_lo"]) > int(hp["kernel_exp_hi"]):
            raise ValueError(f"mmd: kernel_exp_lo={hp['kernel_exp_lo']} > kernel_exp_hi={hp['kernel_exp_hi']}")

    def __init__(self, embedding_size, num_classes, hp):
        super().__init__(embedding_size, num_classes, hp)
        self.preflight(self.hp)
        self.trade_off = float(self.hp["trade_off"])
        self.scales = tuple(2.0**u for u in range(int(self.hp["kernel_exp_lo"]), int(self.hp["kernel_exp_hi"]) + 1))
        self.estimator = self.hp["estimator"]
        self.features = self.hp["features"]

    def loss(self, batch: Batch, fr: FRModel):
        es, et = joint_embeddings(fr.backbone, batch.x, batch.xt)
        fr_loss = fr.head(es, batch.y)
        d = mk_mmd(da_features(es, self.features), da_features(et, self.features), self.scales, self.estimator)
        return fr_loss + self.trade_off * d, {"mmd.fr_loss": fr_loss.detach(), "mmd.loss": d.detach()}
