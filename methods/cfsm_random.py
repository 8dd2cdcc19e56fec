"""``cfsm_random``: CFSM stage 2 with random, unguided style coefficients (the paper's "Ours*" rows).

Liu, Kim, Jain & Liu, "Controllable and Guided Face Synthesis for Unconstrained Face Recognition", ECCV 2022.
In the released ``GuidedFaceRecognition/adversarial_regu.py`` this is ``k = 0``: the FGSM loop does not run, so
the synthetic images are ``G(x, o0)`` with ``o0 ~ N(0, I_q)`` drawn per batch, mixed with the real ones exactly
as in ``cfsm_guided`` (``GuidedFaceRecognition/train.py``). The release has no named switch for it; here it is
:class:`methods.cfsm_guided.CFSMGuided` with ``steps = 0`` (no inner FR pass, no autograd call, so BatchNorm
statistics see only the training forward). ``eps``, ``alpha`` and ``inner_bn_train`` are declared (one shared
declaration) but inert.
"""

from __future__ import annotations

from methods.base import register
from methods.cfsm_guided import CFSMGuided, cfsm_hparams


@register
class CFSMRandom(CFSMGuided):
    name = "cfsm_random"
    paper = "Liu et al., CFSM (random o, Ours*), ECCV 2022"

    @staticmethod
    def hparams():
        return cfsm_hparams(0, lambda r: 0)

    def __init__(self, embedding_size: int, num_classes: int, hp):
        if int(hp.get("steps", 0)) != 0:
            raise ValueError(f"cfsm_random is CFSM with steps=0; got steps={hp['steps']} (use method=cfsm_guided)")
        super().__init__(embedding_size, num_classes, hp)
