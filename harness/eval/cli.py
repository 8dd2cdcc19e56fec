"""The command line ``python -m harness.evaluate`` (:mod:`harness.evaluate` runs :func:`main`): score precomputed
features on every benchmark (IJB-B/C 1:1 and 1:N, IJB-S, TinyFace, .bin sets).

    python -m harness.evaluate [--benchmark ijb11] --release ROOT --features feats.npy [--prefix ijbb] [--flip-concat]
        [--no-faceness] [--image-norm] [--flip none|sum] [--exact] --out result.json
    python -m harness.evaluate --benchmark ijb1n --release ROOT --features feats.npy [--prefix ijbb] [--flip-concat]
        [--no-faceness] [--image-norm] [--flip none|sum] --out result.json
    python -m harness.evaluate --benchmark ijbs --release ROOT --features feats.npy --image-list images.txt
        [--image-norm] --out result.json
    python -m harness.evaluate --benchmark tinyface --release ROOT --features feats.npz
        [--ties high_index_first|low_index_first] [--l2-normalize] --out result.json
    python -m harness.evaluate --benchmark bin --release ROOT --bin-set lfw --features feats.npy [--flip-concat]
        [--flip none|sum] --out result.json
    python -m harness.evaluate --benchmark {ijb11,ijb1n,ijbs,tinyface,bin} --release ROOT [--prefix ijbb]
        --write-order FILE

Benchmarks and feature files (features from any framework; ``--write-order`` writes the order they must follow):

- ``ijb11`` (default): IJB-B / IJB-C 1:1 verification, TAR@FAR. ``ROOT`` is an IJB folder (``.../IJB_release/IJBB``,
  holding ``meta/`` and ``loose_crop/``), an ``IJB_release`` folder or a release holding ``IJB_release/`` (then
  ``--prefix`` picks IJBB or IJBC). ``feats.npy`` holds one row per line of ``<prefix>_face_tid_mid.txt``: (N, D)
  flip-fused features, or (N, 2D) ``[orig | flip]`` with ``--flip-concat`` (insightface's layout). Prints TAR@FAR as
  insightface does (``'%.2f' % (tar * 100)``). Write order: the loose crop (absolute path) of each face_tid_mid row.
- ``ijb1n``: IJB-B / IJB-C 1:N identification (:class:`harness.eval.ijb_identification.IJBIdentification`); the same
  ROOT, features and knobs as ``ijb11`` (no ``--exact``). Prints Rank-1/5/10 and TPIR@FAR of the joined-gallery
  definition (CFSM's and AdaFace's numbers) and the open-set TPIR@FPIR (mean of the two galleries).
- ``ijbs``: IJB-S V2S / V2B / V2V (:class:`harness.eval.ijbs.IJBSEvaluation`). ``ROOT`` is a folder holding
  ``IJB-S/`` or the IJB-S folder itself (with ``protocols/`` and ``aligned/``). ``feats.npy`` (N, D) holds one row per
  line of ``--image-list`` (paths relative to the aligned root, e.g. ``12/videos_5004_21750.jpg``; AdaFace uses the
  model's unnormalised output, ``--image-norm`` L2-normalises each frame first). Protocol images without a row count
  as alignment failures. Write order: the protocol's aligned crops present on disk (relative paths): that file is
  itself a valid ``--image-list``.
- ``tinyface``: TinyFace closed-set Rank-1/5/20 (:class:`harness.eval.tinyface.TinyFaceEvaluation`). ``ROOT`` holds
  ``tinyface/Testing_Set`` and ``aligned_pad_0.1_pad_high``. ``feats.npz`` holds two arrays, ``probe`` (P, D) and
  ``gallery`` (G, D) (flip-fused), in protocol order: probes, then Gallery_Match followed by Gallery_Distractor.
  They are scored as given, as AdaFace scores its L2-normalised features; ``--l2-normalize`` normalises each row
  first, for features that are not unit vectors. ``--write-order FILE`` writes two files, ``FILE.probe.txt`` and
  ``FILE.gallery.txt`` (absolute aligned image paths), the row orders of ``probe`` and ``gallery``.
- ``bin``: insightface's verification sets (:mod:`harness.eval.verification_bin`): 10-fold accuracy, mean ± std.
  ``ROOT`` holds ``NAME.bin`` (``--bin-set NAME``: lfw, cfp_fp, agedb_30, ...) or one subfolder holding it
  (``faces_emore/``). ``feats.npy`` holds one row per image of the set, in its order (pair i = rows 2i and 2i+1):
  (N, D) features, or (N, 2D) ``[orig | flip]`` with ``--flip-concat`` (``--flip sum`` adds the halves, as
  insightface's Accuracy-Flip). Write order: ``<bin path>:<index>`` per row.

The choices of ``--benchmark`` and their options come from the benchmark registry (:mod:`harness.eval.registry`).

Order files are plain text: one path per line, no header, no comments, UTF-8. Results are written atomically
(temporary file in the same folder, then ``os.replace``) and record the benchmark (``cli_benchmark`` and the
evaluator's ``benchmark``), the features path and the evaluator's knobs. Every error (missing or malformed input,
wrong row count, NaN, missing npz array, an argument the benchmark does not take) exits with status 2 and a
one-line message naming the file or field.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

import numpy as np

# The atomic writers live in harness.core.atomic (one module for every file the project writes); these names stay
# importable from here.
from harness.core.atomic import write_atomic as _write_atomic  # noqa: F401
from harness.core.atomic import write_json_atomic, write_lines_atomic  # noqa: F401
from harness.core.errors import DataFormatError, require_file
from harness.eval.ijb_verification import IJBVerification, VerificationProtocol
from harness.eval.metric_keys import display_name

_FOLDERS = {"ijbb": "IJBB", "ijbc": "IJBC"}
TINYFACE_ARRAYS = ("probe", "gallery")
_PRECOMPUTED_NOTE = (
    "precomputed features: the extraction knobs (channel order, input size, flip) "
    "describe the harness's own extractor and were not applied"
)


class UsageError(ValueError):
    """A bad command line (unknown option or value, an argument the chosen benchmark does not take)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2 from main(), instead of usage + SystemExit
        raise UsageError(f"{message} (see --help)")


def resolve_ijb_root(release: str, prefix: str | None) -> str:
    """The IJB folder (with ``meta/``) named by ``release``: itself, ``<release>/<IJBB|IJBC>`` or
    ``<release>/IJB_release/<IJBB|IJBC>``."""
    if os.path.isdir(os.path.join(release, "meta")):
        return release
    for base in (release, os.path.join(release, "IJB_release")):
        found = [p for p, d in _FOLDERS.items() if os.path.isdir(os.path.join(base, d, "meta"))]
        if not found:
            continue
        if prefix is not None:
            if prefix not in found:
                raise FileNotFoundError(f"{os.path.join(base, _FOLDERS[prefix])}: IJB folder not found (no meta/)")
            return os.path.join(base, _FOLDERS[prefix])
        if len(found) == 1:
            return os.path.join(base, _FOLDERS[found[0]])
        raise ValueError(f"{base}: holds both IJBB and IJBC; pass --prefix ijbb or --prefix ijbc")
    raise FileNotFoundError(f"{release}: no IJB release found (expected meta/, IJBB/ or IJB_release/IJBB, ...)")


def resolve_ijbs_root(release: str) -> str:
    """The IJB-S folder named by ``release``: ``<release>/IJB-S`` or ``release`` itself (holding ``protocols/``)."""
    for cand in (os.path.join(release, "IJB-S"), release):
        if os.path.isdir(os.path.join(cand, "protocols")):
            return cand
    raise FileNotFoundError(
        f"{release}: no IJB-S folder found (expected {os.path.join(release, 'IJB-S', 'protocols')} "
        f"or {os.path.join(release, 'protocols')})"
    )


def _magic(path: str) -> str:
    """ "npy", "npz" (a zip archive) or "other", from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(6)
    return "npy" if head == b"\x93NUMPY" else "npz" if head[:4] == b"PK\x03\x04" else "other"


def load_features(path: str) -> np.ndarray:
    """``np.load`` of a .npy feature matrix with one-line errors (missing file, not a .npy array)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: features file not found")
    if _magic(path) == "other":
        raise DataFormatError(path, None, "not a .npy array (unrecognised file format; save features with numpy.save)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # memory-mapped: the evaluators read each row once
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(
            path, None, f"not a readable .npy array ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DataFormatError(path, None, "expected a single .npy array, got an .npz archive")
    return arr


def load_npz_arrays(path: str, keys=TINYFACE_ARRAYS) -> list[np.ndarray]:
    """The arrays ``keys`` of an .npz archive, with one-line errors naming the file and the missing/bad array."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: features file not found")
    if _magic(path) == "other":
        raise DataFormatError(
            path,
            None,
            "not an .npz archive (unrecognised file format; "
            f"save features with numpy.savez({', '.join(f'{k}=...' for k in keys)}))",
        )
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(
            path, None, f"not a readable .npz archive ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None
    if isinstance(z, np.ndarray):
        raise DataFormatError(
            path, None, f"expected an .npz archive with arrays {', '.join(map(repr, keys))}, got a single .npy array"
        )
    with z:
        out = []
        for key in keys:
            if key not in z.files:
                held = ", ".join(map(repr, z.files)) or "no arrays"
                raise DataFormatError(
                    path,
                    key,
                    f"array {key!r} missing (the archive holds {held}; expected {', '.join(map(repr, keys))})",
                )
            try:
                out.append(z[key])
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataFormatError(
                    path, key, f"unreadable array ({type(exc).__name__}: {exc})".replace("\n", " ")
                ) from None
    return out


def read_image_list(path: str, aligned_root: str | None = None) -> list[str]:
    """One image path per line (relative to the aligned root; an absolute path under ``aligned_root`` is made
    relative), no blank lines inside, no repeats."""
    from harness.data.text import read_lines

    require_file(path, "image list")
    prefix = os.path.abspath(aligned_root) + os.sep if aligned_root is not None else None
    seen: dict[str, int] = {}
    out = []
    for i, line in enumerate(read_lines(path), 1):
        p = line.strip()
        if not p:
            raise DataFormatError(path, f"line {i}", "blank line (one image path per line)")
        if prefix is not None and os.path.isabs(p) and p.startswith(prefix):
            p = p[len(prefix) :]
        p = p.replace(os.sep, "/")
        if p in seen:
            raise DataFormatError(path, f"line {i}", f"image {p!r} repeats line {seen[p]}")
        seen[p] = i
        out.append(p)
    if not out:
        raise DataFormatError(path, None, "no image paths")
    return out


def format_table(result: dict) -> str:
    """TAR@FAR lines, ``'%.2f' % (tar * 100)`` as insightface prints them, with the probe-media split."""
    split = result.get("by_probe_media", {})

    def fmt(v):
        return "-" if v is None else "%.2f" % (v * 100)

    lines = [
        f"{result['benchmark']} {result['protocol']}, TAR (%) at FAR",
        f"  {'FAR':<8} {'all':>8} {'stills_only':>12} {'with_video':>11}",
    ]
    for key, tar in result["tar_at_far"].items():
        cols = [fmt(split[k]["tar_at_far"][key]) if k in split else "-" for k in ("stills_only", "with_video")]
        lines.append(f"  {key:<8} {fmt(tar):>8} {cols[0]:>12} {cols[1]:>11}")
    c = result["counts"]
    lines.append(
        f"  AUC {result['auc']:.6f}; {c['pairs']} pairs ({c['genuine']} genuine), "
        f"{c['templates']} templates, {c['rows']} images"
    )
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else "%.2f" % (v * 100)


def format_ijb1n(result: dict) -> str:
    """Joined-gallery Rank-1/5/10 and TPIR@FAR, then the open-set TPIR@FPIR (percent)."""
    j, o, c = result["joined"], result["open_set"], result["counts"]
    jk = [k for k in j if k.startswith(("rank", "tpir"))]
    ok = [k for k in o if k.startswith("tpir")]
    return "\n".join(
        [
            f"{result['benchmark']} identification (%)",
            "  joined galleries (CFSM / AdaFace):  " + "  ".join(f"{display_name(k)} {_pct(j[k])}" for k in jk),
            "  open set (mean of the galleries):   " + "  ".join(f"{display_name(k)} {_pct(o[k])}" for k in ok),
            f"  {c['probes']} probes, joined gallery {c['joined_gallery']} templates, "
            f"{c['templates']} templates, {c['rows']} images",
        ]
    )


def format_ijbs(result: dict) -> str:
    """One line per protocol (V2S, V2B, V2V), its metrics in percent."""
    keys = list(result["V2S"])
    lines = [
        f"{result['benchmark']} identification (%)",
        "  " + f"{'':<4}" + "".join(f"{display_name(k):>16}" for k in keys),
    ]
    for name in ("V2S", "V2B", "V2V"):
        lines.append("  " + f"{name:<4}" + "".join(f"{_pct(result[name].get(k)):>16}" for k in keys))
    c = result["counts"]
    lines.append(
        f"  {c['features_given']} features ({c['features_unused']} unused), {c['images_listed']} protocol images "
        f"({c['frames_missing'] + c['stills_missing']} without a feature), {c['templates']} templates"
    )
    return "\n".join(lines)


def format_tinyface(result: dict) -> str:
    ranks = [k for k in result if k.startswith("rank")]
    c = result["counts"]
    return "\n".join(
        [
            f"{result['benchmark']} closed-set identification (%)",
            "  " + "  ".join(f"{display_name(k)} {_pct(result[k])}" for k in ranks),
            f"  {c['probes']} probes ({c['mated_probes']} mated), "
            f"gallery {c['gallery_match']} + {c['distractors']} distractors",
        ]
    )


def _check_out_folder(path: str, what: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: folder of the {what} not found ({folder})")


# ---------------------------------------------------------------------------------------------- command line


def _commands():
    """The ``--benchmark`` commands, from the benchmark registry (:mod:`harness.eval.registry`), in its order."""
    from harness.eval.registry import cli_commands

    return cli_commands()


def _epilog() -> str:
    lines = ["feature row order (--write-order FILE writes it; one path per line, no header, no comments):"]
    lines += [f"  {c.order_help}" for c in _commands().values() if c.order_help]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    commands = _commands()
    ap = _Parser(
        prog="python -m harness.evaluate",
        description="Score precomputed features: "
        + ", ".join(f"{c.description} ({c.name})" for c in commands.values())
        + ".",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--benchmark", choices=tuple(commands), default="ijb11", help="the evaluator (default: ijb11)")
    ap.add_argument(
        "--release",
        required=True,
        help="ijb11/ijb1n: IJB folder, IJB_release folder, or a release holding IJB_release/; "
        "ijbs: a folder holding IJB-S/ or the IJB-S folder; tinyface: the folder holding tinyface/ "
        "and aligned_pad_0.1_pad_high/; bin: the folder holding the .bin sets, or a release holding it",
    )
    ap.add_argument(
        "--features",
        help="ijb11/ijb1n: .npy (N, D) in face_tid_mid row order; ijbs: .npy, one row per "
        "--image-list line; tinyface: .npz with arrays probe and gallery; bin: .npy, one "
        "row per image of the .bin set, in its order",
    )
    ap.add_argument("--out", help="result JSON path (written atomically)")
    ap.add_argument(
        "--write-order", metavar="FILE", help="write the feature row order (see below) instead of evaluating"
    )
    added = []
    for c in commands.values():  # each benchmark's own options, once per argument group
        if c.add_arguments is not None and c.add_arguments not in added:
            added.append(c.add_arguments)
            c.add_arguments(ap)
    return ap


def add_ijb_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("ijb11 / ijb1n")
    g.add_argument("--prefix", choices=sorted(_FOLDERS), help="ijbb or ijbc (default: inferred)")
    g.add_argument("--flip-concat", action="store_true", default=None, help="features are (N, 2D) [orig | flip]")
    g.add_argument(
        "--flip", choices=["sum", "none"], help="with --flip-concat: add the halves or keep the first (default sum)"
    )
    g.add_argument(
        "--no-faceness", action="store_true", default=None, help="do not weight image features by faceness (AdaFace)"
    )
    g.add_argument(
        "--image-norm",
        action="store_true",
        default=None,
        help="L2-normalise each image feature before pooling (N0); ijbs: each frame feature (frame_norm)",
    )
    g.add_argument(
        "--exact",
        action="store_true",
        default=None,
        help="ijb11 only: insightface's batched pair arithmetic instead of matmul (slow)",
    )


def add_ijbs_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("ijbs")
    g.add_argument("--image-list", metavar="FILE", help="one aligned image path per line, the row order of --features")


def add_tinyface_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("tinyface")
    g.add_argument(
        "--ties",
        choices=["high_index_first", "low_index_first"],
        help="order of exactly tied scores (default high_index_first: AdaFace's reversed argsort)",
    )
    g.add_argument(
        "--l2-normalize",
        action="store_true",
        default=None,
        help="L2-normalise each feature row before scoring (default: scored as given, as AdaFace scores its "
        "already normalised features)",
    )


def _only_for() -> dict[str, tuple[str, ...]]:
    """option -> the benchmarks that take it (from each command's ``options``)."""
    out: dict[str, list[str]] = {}
    for c in _commands().values():
        for dest in c.options:
            out.setdefault(dest, []).append(c.name)
    return {k: tuple(v) for k, v in out.items()}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for an argument combination the benchmark does not take."""
    b = args.benchmark
    command = _commands()[b]
    for dest, allowed in _only_for().items():
        if getattr(args, dest, None) is not None and b not in allowed:
            raise UsageError(f"{_option(dest)} is not an argument of --benchmark {b} (only {', '.join(allowed)})")
    needed = [d for c in _commands().values() for d, _ in c.required]
    if args.write_order is not None:
        for dest in ("features", "out", *dict.fromkeys(needed)):
            if getattr(args, dest, None) is not None:
                raise UsageError(
                    f"{_option(dest)} is not used with --write-order (it writes the row order, it does not evaluate)"
                )
        return
    for dest in ("features", "out"):
        if getattr(args, dest) is None:
            raise UsageError(f"--benchmark {b} needs {_option(dest)} (or --write-order FILE)")
    for dest, what in command.required:
        if getattr(args, dest, None) is None:
            raise UsageError(f"--benchmark {b} needs {_option(dest)} {what}")


def _ijb_protocol(args) -> VerificationProtocol:
    return VerificationProtocol(
        flip=args.flip or "sum", faceness=not args.no_faceness, image_norm=bool(args.image_norm)
    )


def write_order(args) -> list[str]:
    """Write the feature row order of ``args.benchmark``; returns the files written."""
    _check_out_folder(args.write_order, "order file")
    return _commands()[args.benchmark].write_order(args)


def write_order_ijb(args) -> list[str]:
    from harness.data.ijb import loose_crop_path, read_ijb

    meta = read_ijb(resolve_ijb_root(args.release, args.prefix), args.prefix, with_pairs=False)
    write_lines_atomic([os.path.abspath(loose_crop_path(meta, i)) for i in range(len(meta))], args.write_order)
    return [args.write_order]


def write_order_ijbs(args) -> list[str]:
    from harness.eval.ijbs import IJBSEvaluation

    present, _ = IJBSEvaluation(resolve_ijbs_root(args.release)).image_list()
    if not present:
        raise FileNotFoundError(f"{args.release}: no aligned crop of the IJB-S protocol found on disk")
    write_lines_atomic(present, args.write_order)
    return [args.write_order]


def write_order_tinyface(args) -> list[str]:
    from harness.data.tinyface import read_tinyface

    pr = read_tinyface(args.release)
    path = args.write_order
    files = [f"{path}.probe.txt", f"{path}.gallery.txt"]
    write_lines_atomic([os.path.abspath(p) for p in pr.probe_paths], files[0])
    write_lines_atomic([os.path.abspath(p) for p in pr.gallery_paths], files[1])
    return files


def run_ijb11(args) -> tuple[dict, str]:
    root = resolve_ijb_root(args.release, args.prefix)
    feats = load_features(args.features)
    ev = IJBVerification(root, args.prefix, _ijb_protocol(args), defer_pairs=True)  # pair file read while pooling
    result = ev.evaluate_features(
        feats, flip_concat=bool(args.flip_concat), features_path=args.features, exact=bool(args.exact)
    )
    result["ijb_root"] = os.path.abspath(root)
    return result, format_table(result)


def run_ijb1n(args) -> tuple[dict, str]:
    from harness.eval.ijb_identification import IJBIdentification

    root = resolve_ijb_root(args.release, args.prefix)
    feats = load_features(args.features)
    ev = IJBIdentification(root, args.prefix, _ijb_protocol(args))
    result = ev.evaluate_features(feats, flip_concat=bool(args.flip_concat), features_path=args.features)
    result["ijb_root"] = os.path.abspath(root)
    return result, format_ijb1n(result)


def run_ijbs(args) -> tuple[dict, str]:
    from harness.eval.ijbs import IJBSEvaluation, IJBSSettings

    root = resolve_ijbs_root(args.release)
    ev = IJBSEvaluation(root, IJBSSettings(frame_norm=bool(args.image_norm)))
    paths = read_image_list(args.image_list, ev.aligned_root)
    feats = load_features(args.features)
    if feats.ndim != 2:
        raise DataFormatError(
            args.features, "shape", f"features must be a 2-D (images, dim) array, got shape {feats.shape}"
        )
    if feats.shape[0] != len(paths):
        raise DataFormatError(
            args.features, "rows", f"{feats.shape[0]} feature rows but {args.image_list} lists {len(paths)} images"
        )
    listed = set(ev.protocol.images())
    if not any(p in listed for p in paths):
        raise DataFormatError(
            args.image_list,
            None,
            f"none of its {len(paths)} paths is an image of the IJB-S protocol "
            "(expected paths relative to the aligned root, e.g. 12/videos_5004_21750.jpg; --write-order writes them)",
        )
    result = ev.evaluate_features((paths, feats), features_path=args.features)
    result["input"]["note"] = _PRECOMPUTED_NOTE
    result["image_list"] = os.path.abspath(args.image_list)
    result["ijbs_root"] = os.path.abspath(root)
    return result, format_ijbs(result)


def run_tinyface(args) -> tuple[dict, str]:
    from harness.eval.tinyface import TinyFaceEvaluation, TinyFaceSettings

    settings = TinyFaceSettings(ties=args.ties or "high_index_first", l2_normalize=bool(args.l2_normalize))
    ev = TinyFaceEvaluation(args.release, settings=settings)
    probe, gallery = load_npz_arrays(args.features)
    result = ev.evaluate_features(probe, gallery, features_path=args.features)
    result["input"] = {"arrays": list(TINYFACE_ARRAYS), "dim": int(probe.shape[1]), "note": _PRECOMPUTED_NOTE}
    result["tinyface_root"] = os.path.abspath(ev.root)
    return result, format_tinyface(result)


def __getattr__(name: str):
    """``BENCHMARKS`` (the ``--benchmark`` choices) and ``RUNNERS`` (choice -> runner), from the registry."""
    if name == "BENCHMARKS":
        return tuple(_commands())
    if name == "RUNNERS":
        return {n: c.run for n, c in _commands().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_arguments(args)
        if args.write_order is not None:
            written = write_order(args)
        else:
            _check_out_folder(args.out, "result JSON")
            result, text = _commands()[args.benchmark].run(args)
            result["cli_benchmark"] = args.benchmark
            result["features"] = os.path.abspath(args.features)
            write_json_atomic(result, args.out)
    except (DataFormatError, OSError, ValueError) as exc:  # UsageError is a ValueError
        msg = " ".join(str(exc).splitlines())
        print(f"error: {msg}", file=sys.stderr)
        return 2
    if args.write_order is not None:
        for f in written:
            print(f"wrote {f}")
        return 0
    print(text)
    print(f"wrote {args.out}")
    return 0
