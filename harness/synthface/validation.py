"""SynthFace's labelled validation release for model selection: ``IJB_release/VAL`` in insightface's IJB 1:1 layout
(``loose_crop/``, ``meta/ijbb_face_tid_mid.txt``, ``ijbb_name_5pts_score.txt``, ``ijbb_template_pair_label.txt``,
plus the 1:N CSVs), written into an existing release by ``python -m harness.synthface --out RELEASE
--validation``; the registered benchmark ``val11`` (:mod:`harness.eval.validation`) evaluates it.

Its identities share none with any test benchmark: a SynthFace identity is a function of (seed, domain, index)
(:func:`harness.synthface.common.identity_table`), and the validation identities have a domain of their own
(:data:`DOMAIN_VALIDATION`), distinct from the test sets' (IJB-B/C 3, IJB-S 4, TinyFace 5 and 6, the ``.bin`` set
7) and from the training source (1) and target (2). Same composition as the test IJB releases (a gallery template of
clean stills per subject, probe templates mixing stills and degraded video frames), smaller. DomainBed's lesson
(Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021): select hyperparameters on
validation data, never on the test sets.

It is not part of :func:`harness.synthface.generate.generate`: the default release (and every number computed from
it) stays as it is; the folder is written to a temporary name and renamed into place, with ``validation.json``
(the spec and counts) inside it.
"""

from __future__ import annotations

import dataclasses
import json
import os

from harness.core.atomic import StagedFolder, write_staged
from harness.synthface.generate import IJBSpec, SynthFaceConfig, write_ijb_release

__all__ = [
    "DOMAIN_VALIDATION",
    "STREAM_VALIDATION",
    "FOLDER",
    "PREFIX",
    "VALIDATION_SPECS",
    "validation_spec",
    "write_validation",
]

DOMAIN_VALIDATION = 8  # identities of their own: no test benchmark's identity
STREAM_VALIDATION = 19
FOLDER = os.path.join("IJB_release", "VAL")
PREFIX = "ijbb"  # the meta file names of insightface's IJB layout that the IJB readers accept
#: subjects per release size (the IJB-B spec's composition)
VALIDATION_SPECS = {
    "tiny": IJBSpec(subjects=6, gallery_stills=2, probe_templates=2),
    "default": IJBSpec(subjects=150),
    "large": IJBSpec(subjects=600, probe_templates=5, impostors_per_probe=400),
}


def validation_spec(cfg: SynthFaceConfig) -> IJBSpec:
    return VALIDATION_SPECS.get(cfg.size, VALIDATION_SPECS["default"])


def write_validation(cfg: SynthFaceConfig, release: str, spec: IJBSpec | None = None) -> dict:
    """Write ``<release>/IJB_release/VAL`` (replacing an old one) for the release's config ``cfg``; returns the
    counts (also in ``validation.json`` there)."""
    spec = spec or validation_spec(cfg)
    with StagedFolder(os.path.join(release, FOLDER)) as staged:  # a killed run's staging folder is removed later
        counts = write_ijb_release(cfg, staged.tmp, PREFIX, spec, STREAM_VALIDATION, DOMAIN_VALIDATION)
        info = {
            "domain": DOMAIN_VALIDATION,
            "seed": cfg.seed,
            "size": cfg.size,
            "spec": dataclasses.asdict(spec),
            "counts": counts,
        }
        write_staged(staged.path("validation.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
        staged.publish()
    return counts
