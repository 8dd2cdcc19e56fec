"""The quality targets a stage-1 CFSM generator must reach on SynthFace, defined here and nowhere else: stage 1
writes them into its ``metrics.json`` (:mod:`harness.cfsm.analysis`) and the tables read them back
(:mod:`harness.report.generators`). They are this repository's acceptance targets for its CPU re-implementation of
CFSM's stage 1 (Liu et al., ECCV 2022), not numbers of the paper:

- **FD ratio** = FD(G(source), target) / FD(source, target) (``fd.synth_over_source``) at most :data:`FD_RATIO_MAX`:
  the synthesized images are much closer to the target domain than the raw sources;
- **identity gap** = cos(clean, G(clean)) - cos(clean, degraded) (``identity.gap``; SynthFace only: the same clean
  faces through the true camera model) at least :data:`IDENTITY_GAP_MIN`: G keeps identity about as well as the real
  degradation does (keeping more is no miss).

Kept free of heavy imports: the tables import it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FD_RATIO_MAX", "IDENTITY_GAP_MIN", "quality_targets"]

#: FD to the target at most this fraction of the raw source's (``fd.synth_over_source``) ...
FD_RATIO_MAX = 0.6
#: ... and an identity cosine at most this much below the true degradation's on the same images (``identity.gap``).
IDENTITY_GAP_MIN = -0.05


def quality_targets(fd_ratio: float, identity_gap: float | None) -> dict[str, Any]:
    """``{fd_ratio, fd_ratio_max, identity_gap, identity_gap_min, met}``: ``met`` is whether ``fd_ratio <=``
    :data:`FD_RATIO_MAX` and ``identity_gap >=`` :data:`IDENTITY_GAP_MIN` (both bounds inclusive); None when the gap
    was not measured (data without clean/degraded pairs): the targets are then not assessed. A NaN ratio (no
    source-target distance) is not met."""
    met = None
    if identity_gap is not None:
        met = bool(math.isfinite(fd_ratio) and fd_ratio <= FD_RATIO_MAX) and bool(identity_gap >= IDENTITY_GAP_MIN)
    return {
        "fd_ratio": fd_ratio,
        "fd_ratio_max": FD_RATIO_MAX,
        "identity_gap": identity_gap,
        "identity_gap_min": IDENTITY_GAP_MIN,
        "met": met,
    }
