"""Command line: IJB-B / IJB-C 1:1 verification (TAR@FAR) from a saved feature matrix.

    python -m harness.evaluate --release ROOT --features feats.npy [--prefix ijbb] [--flip-concat]
        [--no-faceness] [--image-norm] [--flip none|sum] [--exact] --out result.json

``ROOT`` is an IJB folder (``.../IJB_release/IJBB``, holding ``meta/`` and ``loose_crop/``), an ``IJB_release``
folder or a release holding ``IJB_release/`` (then ``--prefix`` picks IJBB or IJBC). ``feats.npy`` holds one row per
line of ``<prefix>_face_tid_mid.txt``: (N, D) flip-fused features, or (N, 2D) ``[orig | flip]`` with
``--flip-concat`` (insightface's layout). Prints TAR@FAR as insightface does (``'%.2f' % (tar * 100)``) and writes
the result JSON atomically (temporary file in the same folder, then ``os.replace``). A missing or malformed input
exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from harness.errors import DataFormatError
from harness.eval.ijb_verification import IJBVerification, VerificationProtocol

_FOLDERS = {"ijbb": "IJBB", "ijbc": "IJBC"}


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


def load_features(path: str) -> np.ndarray:
    """``np.load`` of a .npy feature matrix with one-line errors (missing file, not a .npy array)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: features file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(path, None, f"not a readable .npy array ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if not isinstance(arr, np.ndarray):
        raise DataFormatError(path, None, "expected a single .npy array, got an .npz archive")
    return arr


def format_table(result: dict) -> str:
    """TAR@FAR lines, ``'%.2f' % (tar * 100)`` as insightface prints them, with the probe-media split."""
    split = result.get("by_probe_media", {})
    fmt = lambda v: "-" if v is None else "%.2f" % (v * 100)
    lines = [f"{result['benchmark']} {result['protocol']}, TAR (%) at FAR", f"  {'FAR':<8} {'all':>8} {'stills_only':>12} {'with_video':>11}"]
    for key, tar in result["tar_at_far"].items():
        cols = [fmt(split[k]["tar_at_far"][key]) if k in split else "-" for k in ("stills_only", "with_video")]
        lines.append(f"  {key:<8} {fmt(tar):>8} {cols[0]:>12} {cols[1]:>11}")
    c = result["counts"]
    lines.append(f"  AUC {result['auc']:.6f}; {c['pairs']} pairs ({c['genuine']} genuine), {c['templates']} templates, {c['rows']} images")
    return "\n".join(lines)


def write_json_atomic(obj, path: str) -> None:
    """Write JSON to a temporary file next to ``path``, fsync, then ``os.replace`` it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m harness.evaluate", description="IJB-B/IJB-C 1:1 verification from features")
    ap.add_argument("--release", required=True, help="IJB folder, IJB_release folder, or a release holding IJB_release/")
    ap.add_argument("--features", required=True, help=".npy (N, D) features in face_tid_mid row order")
    ap.add_argument("--prefix", choices=sorted(_FOLDERS), help="ijbb or ijbc (default: inferred)")
    ap.add_argument("--flip-concat", action="store_true", help="features are (N, 2D) [orig | flip]")
    ap.add_argument("--flip", choices=["sum", "none"], default="sum", help="with --flip-concat: add the halves or keep the first")
    ap.add_argument("--no-faceness", action="store_true", help="do not weight image features by faceness (AdaFace)")
    ap.add_argument("--image-norm", action="store_true", help="L2-normalise each image feature before pooling (N0)")
    ap.add_argument("--exact", action="store_true", help="insightface's batched pair arithmetic instead of matmul (slow)")
    ap.add_argument("--out", required=True, help="result JSON path (written atomically)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        root = resolve_ijb_root(args.release, args.prefix)
        protocol = VerificationProtocol(flip=args.flip, faceness=not args.no_faceness, image_norm=args.image_norm)
        feats = load_features(args.features)
        ev = IJBVerification(root, args.prefix, protocol)
        result = ev.evaluate_features(feats, flip_concat=args.flip_concat, features_path=args.features, exact=args.exact)
        result["features"] = os.path.abspath(args.features)
        result["ijb_root"] = os.path.abspath(root)
        write_json_atomic(result, args.out)
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
