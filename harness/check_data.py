"""Check a data root before a long run: every dataset a profile needs, where it was looked for, where to get it.

``python -m harness.check_data --root /data/cfsm [--rec faces_emore] [--target target] [--need ms1m,wider,ijbb,...]
[--device auto|cpu|cuda]``

The harness reads the real datasets in their released layouts (insightface's RecordIO and ``IJB_release``
packaging, PFE's IJB-S protocol files, AdaFace's TinyFace layout) under one root; symbolic links are the easy way
to assemble it from wherever the data already lives::

    <root>/faces_emore/{train.rec,train.idx,property}           MS1MV2, insightface RecordIO (source, stage 1 + 2)
    <root>/target/crops/ + <root>/target/target_list.txt         WIDER FACE face crops (stage 1 target), written by
                                                                 ``python -m harness.prepare_target wider ...``
    <root>/IJB_release/IJBB/{meta,loose_crop}                    IJB-B, insightface's IJB_release packaging
    <root>/IJB_release/IJBC/{meta,loose_crop}                    IJB-C, the same
    <root>/IJB-S/protocols/cs6_*.csv                             IJB-S protocol files (PFE's)
    <root>/IJB-S/aligned/<subject>/videos_<vid>_<frame>.jpg      IJB-S aligned crops (112x112), stills as
                                                    .../<subject>/img_<id>.jpg; frames the aligner dropped are absent
    <root>/tinyface/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}   TinyFace test set
    <root>/aligned_pad_0.1_pad_high/                             its aligned copy (AdaFace's layout)

Nothing is downloaded: every one of these is gated or licensed. A missing dataset is one line naming it, the path
that was looked for and where to obtain it; the exit status is 2 when any needed dataset is missing. Beyond the
paths, everything evaluation reads is checked before training starts, on a sample where the full set is large:
IJB-B/C loose crops named by ``<t>_name_5pts_score.txt`` (:data:`SAMPLE` rows, evenly spaced), IJB-S protocol
files parsed and the aligned crops of :data:`SAMPLE` protocol images (at least half must be present: a dropped
frame is normal, a naming mismatch leaves none), and the TinyFace lists read as the evaluator reads them (every
test image must have its aligned copy). ``--device cuda`` on a machine without CUDA is one line too.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from harness.core.atomic import write_lines_atomic
from harness.eval.registry import data_entries


@dataclass(frozen=True)
class Dataset:
    key: str
    name: str
    needed_by: str
    paths: tuple[str, ...]  # relative to the root; ``{rec}`` / ``{target}`` / ``{target_list}`` are filled in
    obtain: str


DATASETS = (
    Dataset(
        "ms1m",
        "MS1MV2 (source, RecordIO)",
        "stage 1 and FR training",
        ("{rec}/train.rec", "{rec}/train.idx", "{rec}/property"),
        "insightface's dataset zoo (recognition/_datasets_: 'MS1M-ArcFace', faces_emore); licence terms apply",
    ),
    Dataset(
        "wider",
        "WIDER FACE target crops",
        "stage 1 (unlabelled target domain)",
        ("{target}/crops", "{target}/{target_list}"),
        "WIDER FACE train images + wider_face_train_bbx_gt.txt from http://shuoyang1213.me/WIDERFACE/, then "
        "`python -m harness.prepare_target wider --annotations ... --images ... --out <root>/{target}/crops "
        "--list <root>/{target}/{target_list}`",
    ),
)
# the evaluation sets: each benchmark's data-check entries (harness.eval.registry)
EVAL_ENTRIES = {e.key: e for e in data_entries()}
DATASETS += tuple(Dataset(e.key, e.name, e.needed_by, e.paths, e.obtain) for e in EVAL_ENTRIES.values())
BY_KEY = {d.key: d for d in DATASETS}
SAMPLE = 200  # rows / images sampled per evaluation set
PRESENT_FRACTION = 0.5  # IJB-S: at least this share of the sampled protocol images must have an aligned crop


def _spaced(items: list, n: int = SAMPLE) -> list:
    """At most ``n`` evenly spaced items (first and last included)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _ijb_crops(root: str, t: str) -> str | None:
    """IJB-B/C: the loose crops of a sample of the rows of ``<t>_name_5pts_score.txt`` (what the evaluator reads)."""
    base = os.path.join(root, "IJB_release", t.upper())
    names_file = os.path.join(base, "meta", f"{t}_name_5pts_score.txt")
    with open(names_file, encoding="utf-8") as f:
        names = [line.split(None, 1)[0] for line in f if line.strip()]
    if not names:
        return f"{names_file}: no rows"
    crops = os.path.join(base, "loose_crop")
    sample = _spaced(names)
    gone = [n for n in sample if not os.path.isfile(os.path.join(crops, n))]
    if gone:
        return (
            f"{os.path.join(crops, gone[0])} not found ({len(gone)} of {len(sample)} sampled crops named by "
            f"{names_file} missing)"
        )
    return None


def _ijbs_frames(root: str) -> str | None:
    """IJB-S: the protocol files parse, and most sampled protocol images have an aligned crop."""
    from harness.data.ijbs import read_ijbs

    base = os.path.join(root, "IJB-S")
    try:
        images = read_ijbs(base).images()
    except (ValueError, FileNotFoundError) as exc:  # DataFormatError is a ValueError: path:where: what
        return str(exc)
    aligned = os.path.join(base, "aligned")
    sample = _spaced(images)
    found = sum(os.path.isfile(os.path.join(aligned, p)) for p in sample)
    if not sample or found < PRESENT_FRACTION * len(sample):
        first = os.path.join(aligned, next((p for p in sample if not os.path.isfile(os.path.join(aligned, p))), ""))
        return (
            f"{first} not found: {found} of {len(sample)} sampled aligned crops the protocol names are present "
            f"(expected <subject>/videos_<vid>_<frame>.jpg and <subject>/img_<id>.jpg under {aligned})"
        )
    return None


def _tinyface(root: str) -> str | None:
    """TinyFace: the test lists and the aligned copy, read as the evaluator reads them."""
    from harness.data.tinyface import read_tinyface

    try:
        read_tinyface(root, check_mat_files=False)  # the evaluator's reader: <root>/tinyface/Testing_Set + aligned copy
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)
    return None


CONTENT_CHECKS = {
    "ijbb": lambda root: _ijb_crops(root, "ijbb"),
    "ijbc": lambda root: _ijb_crops(root, "ijbc"),
    "ijbs": _ijbs_frames,
    "tinyface": _tinyface,
}


def missing_paths(
    root: str, dataset: Dataset, rec: str = "faces_emore", target: str = "target", target_list: str = "target_list.txt"
) -> list[str]:
    """The paths of ``dataset`` that do not exist under ``root`` (empty: present)."""
    out = []
    for rel in dataset.paths:
        path = os.path.join(root, rel.format(rec=rec, target=target, target_list=target_list))
        if not os.path.exists(path):
            out.append(path)
    return out


def check(
    root: str, need: list[str], rec: str = "faces_emore", target: str = "target", target_list: str = "target_list.txt"
) -> list[str]:
    """One line per missing dataset of ``need`` (dataset keys); empty when everything is there."""
    unknown = [k for k in need if k not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown dataset key(s) {unknown}; valid: {', '.join(BY_KEY)}")
    problems = []
    for key in need:
        d = BY_KEY[key]
        gone = missing_paths(root, d, rec, target, target_list)
        if gone:
            more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
            obtain = d.obtain.format(target=target, target_list=target_list)
            problems.append(f"{d.name} (needed by {d.needed_by}): {gone[0]} not found{more}; obtain it from {obtain}")
        elif key in CONTENT_CHECKS or (key in EVAL_ENTRIES and EVAL_ENTRIES[key].probe):
            problem = CONTENT_CHECKS[key](root) if key in CONTENT_CHECKS else EVAL_ENTRIES[key].probe(root, rec)
            if problem:
                problems.append(f"{d.name} (needed by {d.needed_by}): {problem}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.check_data", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="the data root holding every dataset (see the layout above)")
    ap.add_argument("--rec", default="faces_emore", help="RecordIO folder of the source set inside the root")
    ap.add_argument("--target", default="target", help="target crop folder inside the root")
    ap.add_argument("--target-list", default="target_list.txt")
    default_need = [k for k in BY_KEY if k not in EVAL_ENTRIES or EVAL_ENTRIES[k].default]
    ap.add_argument(
        "--need",
        default=",".join(default_need),
        help=f"comma-separated dataset keys ({', '.join(BY_KEY)}; default {', '.join(default_need)})",
    )
    ap.add_argument("--device", help="also check that this training device exists (auto | cpu | cuda)")
    ap.add_argument(
        "--record",
        help="when everything is found, also write the summary line here (atomically), so "
        "that pipeline stages can depend on a passed check",
    )
    args = ap.parse_args(argv)
    need = [k.strip() for k in args.need.split(",") if k.strip()]
    try:
        from harness.models.build import check_device

        device = check_device(args.device) if args.device else None
        problems = check(args.root, need, args.rec, args.target, args.target_list)
    except ValueError as exc:
        print(f"harness.check_data: {exc}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.root):
        print(
            f"harness.check_data: {args.root}: data root not found (set `root` in the profile's params.yaml)",
            file=sys.stderr,
        )
        return 2
    for line in problems:
        print(f"harness.check_data: {line}", file=sys.stderr)
    if problems:
        return 2
    line = f"{os.path.abspath(args.root)}: {', '.join(BY_KEY[k].name for k in need)} found"
    if device:
        line += f"; device {args.device} -> {device}"
    print(f"harness.check_data: {line}")
    if args.record:
        try:
            write_lines_atomic([line], args.record)
        except OSError as exc:  # a full disk names the file (DiskFullError); others as the OS says them
            from harness.core.runtime import report_error

            return report_error("harness.check_data", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
