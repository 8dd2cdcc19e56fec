"""``val11``: 1:1 verification on a labelled validation release in the IJB layout, for model selection only.

The release is ``<data.release>/IJB_release/VAL`` (SynthFace writes one whose identities no test benchmark has:
:mod:`harness.synthface.validation`; on real data, put a held-out release in insightface's IJB 1:1 layout there,
e.g. one built from held-out source identities). It is scored exactly as IJB-B/C 1:1
(:class:`harness.eval.ijb_verification.IJBVerification`, the same protocol knobs) and its row is named
``Validation 1:1``; ``harness.tables --select validation`` picks each method's hyperparameter draw by it.

Not in the default ``eval.benchmarks``: add ``val11`` to evaluate it (e.g. ``eval.benchmarks=IJBB,IJBC,IJBS,
TinyFace,val11`` for a sweep's runs), so the default pipeline's numbers stay as they are.
"""

from __future__ import annotations

import os

from harness.eval.benchmarks import IJB11, TABLE_FARS, VERIFICATION_KEYS, far_label, verification_metrics
from harness.eval.metric_keys import tar_key
from harness.eval.registry import Benchmark, Column, DataEntry, Section, register_benchmark

__all__ = ["NAME", "ROW", "FOLDER", "SELECTION_KEY", "evaluate_validation"]

NAME = "val11"  # config name (eval.benchmarks)
ROW = "Validation 1:1"  # result-row name
FOLDER = "IJB_release/VAL"
PREFIX = "ijbb"  # its meta files are named as IJB-B's
SELECTION_KEY = tar_key(1e-3)  # the validation metric harness.tables --select validation ranks draws by (default)


def evaluate_validation(cfg, backbone, device: str, with_items: bool) -> list:
    """The 1:1 row of the validation release, as IJB-B/C's, named :data:`ROW`."""
    from harness.eval.benchmarks import ijb_protocol
    from harness.eval.ijb_verification import IJBVerification

    root = os.path.join(cfg.data.release, FOLDER)
    verification = IJBVerification(root, prefix=PREFIX, protocol=ijb_protocol(cfg))
    feats = verification.extract_features(backbone, batch_size=cfg.eval.batch_size, device=device)
    found = verification.evaluate_features(feats, return_items=with_items)
    row, items = found if with_items else (found, {})
    row["benchmark"] = ROW
    return [(row, items)]


_COLUMNS = tuple(Column(ROW, tar_key(x), far_label(x), None) for x in TABLE_FARS[2:] + (1e-2,))

register_benchmark(
    Benchmark(
        NAME,
        (ROW,),
        evaluate_validation,
        verification_metrics,
        (Section("validation", f"{ROW} (model selection only, not a test set): TAR@FAR, %", _COLUMNS),),
        (IJB11,),
        (),
        (
            DataEntry(
                "val11",
                "validation release (model selection)",
                tuple(
                    f"{FOLDER}/meta/{PREFIX}_{f}.txt"
                    for f in ("template_pair_label", "face_tid_mid", "name_5pts_score")
                )
                + (f"{FOLDER}/loose_crop",),
                "SynthFace: python -m harness.synthface --validation; real data: a labelled split of your own, "
                "disjoint from the test subjects, in insightface's IJB_release layout with IJB-B's file names",
                needed_by="model selection (eval.benchmarks=...,val11; harness.tables --select validation)",
                default=False,  # not part of the default runs' data: checked with --need val11
            ),
        ),
        "validation 1:1 verification for model selection (not evaluated by default)",
        data_files=lambda name, rec: {ROW: (FOLDER,)},
        metric_patterns={ROW: VERIFICATION_KEYS},
    )
)
