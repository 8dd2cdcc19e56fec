"""insightface's verification sets (LFW, CFP-FP, AgeDB-30, ... as ``.bin`` files): 10-fold accuracy, registered as
the benchmark ``VerificationBins`` (one result row per set of ``eval.bin_sets``).

Protocol (insightface ``recognition/arcface_torch/eval/verification.py``: ``test``, ``evaluate``,
``calculate_roc``, ``calculate_accuracy``; the definition is re-implemented here):

- each image's embedding is the model's output for the image plus its output for the horizontally flipped image
  (unnormalised, summed), then L2-normalised (``sklearn.preprocessing.normalize``): ``flip="sum"``; ``flip="none"``
  uses the image alone (insightface's ``acc1``, no longer reported by it);
- pair ``i`` = images ``2i`` and ``2i + 1``; its distance is the squared L2 distance of the two embeddings;
- thresholds ``np.arange(0, 4, 0.01)``; a pair is predicted "same" when ``dist < threshold``; accuracy =
  (true accepts + true rejects) / pairs;
- the pairs are split into 10 contiguous folds in file order (``KFold(n_splits=10, shuffle=False)``: the first
  ``n % 10`` folds hold one pair more); for each fold, the threshold with the best accuracy on the other 9 folds
  (the first best, ``np.argmax``) gives the accuracy on this fold;
- the result is the mean and the (population, ``np.std``) standard deviation of the 10 fold accuracies, which
  insightface logs as ``Accuracy-Flip: mean+-std``.

The sets live in the training RecordIO folder of the release (``<release>/<data.rec>/<set>.bin``, as insightface's
``faces_emore/{lfw,cfp_fp,agedb_30}.bin``); SynthFace writes ``faces_synthface/synth_lfw.bin``
(:mod:`harness.synthface.verification_bin`). The per-item arrays of a row (``<set>/dist``, ``<set>/issame``,
``<set>/fold``) are saved with the run's items.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError
from harness.data.verification_bin import VerificationBin, read_bin
from harness.eval.registry import Benchmark, CliCommand, Column, DataEntry, Section, register_benchmark

__all__ = [
    "THRESHOLDS",
    "FOLDS",
    "KNOWN_SETS",
    "fold_slices",
    "ten_fold_accuracy",
    "fuse_embeddings",
    "BinSettings",
    "VerificationBinEvaluation",
    "find_bin",
]

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface evaluate(): np.arange(0, 4, 0.01)
FOLDS = 10
#: The sets a result row may be named after: insightface's dataset zoo (``faces_emore`` and friends ship lfw,
#: cfp_fp, cfp_ff, agedb_30, calfw, cplfw, vgg2_fp) and SynthFace's stand-in.
KNOWN_SETS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp", "synth_lfw")
_LABELS = {
    "lfw": "LFW",
    "cfp_fp": "CFP-FP",
    "cfp_ff": "CFP-FF",
    "agedb_30": "AgeDB-30",
    "calfw": "CALFW",
    "cplfw": "CPLFW",
    "vgg2_fp": "VGG2-FP",
    "synth_lfw": "SynthFace LFW",
}


def fold_slices(n: int, folds: int = FOLDS) -> list[slice]:
    """The contiguous test folds of ``KFold(n_splits=folds, shuffle=False)`` over ``n`` items: the first
    ``n % folds`` hold ``n // folds + 1`` items, the rest ``n // folds``."""
    if n < folds:
        raise ValueError(f"{n} pairs cannot be split into {folds} folds")
    sizes = [n // folds + (1 if k < n % folds else 0) for k in range(folds)]
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def _accuracy(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy of ``dist < t`` as the "same" decision, for every threshold t (vectorised over thresholds)."""
    order = np.argsort(dist, kind="stable")
    d, same = dist[order], issame[order]
    below = np.searchsorted(d, thresholds, side="left")  # pairs with dist < t
    tp = np.concatenate([[0], np.cumsum(same)])[below]  # genuine pairs accepted
    fp = below - tp
    tn = int((~same).sum()) - fp
    return (tp + tn) / len(dist)


def ten_fold_accuracy(dist, issame, thresholds=THRESHOLDS, folds: int = FOLDS) -> dict:
    """insightface's ``calculate_roc`` accuracy: per fold, the first threshold of best accuracy on the other folds,
    applied to the fold. Returns ``{"accuracy": mean, "accuracy_std": np.std, "fold_accuracy": [...],
    "fold_threshold": [...], "fold": (pairs,) fold index}``."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if dist.ndim != 1 or dist.shape != issame.shape:
        raise ValueError(f"dist {dist.shape} and issame {issame.shape} must be 1-D of the same length")
    if not np.all(np.isfinite(dist)):
        raise ValueError("distances must be finite")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    fold = np.empty(len(dist), dtype=np.int64)
    accs, best = [], []
    for k, test in enumerate(fold_slices(len(dist), folds)):
        fold[test] = k
        train = np.ones(len(dist), dtype=bool)
        train[test] = False
        t = thresholds[int(np.argmax(_accuracy(dist[train], issame[train], thresholds)))]
        accs.append(float(_accuracy(dist[test], issame[test], np.array([t]))[0]))
        best.append(float(t))
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracy": accs,
        "fold_threshold": best,
        "fold": fold,
    }


def fuse_embeddings(feats: np.ndarray, flip_concat: bool = False, flip: str = "sum") -> np.ndarray:
    """L2-normalised embeddings (float64) of (N, D) features, or of (N, 2D) ``[orig | flip]`` with
    ``flip_concat`` (``flip="sum"`` adds the halves, ``"none"`` keeps the first), as insightface's
    ``sklearn.preprocessing.normalize(embeddings_list[0] + embeddings_list[1])``."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (images, dim) array, got shape {x.shape}")
    if flip_concat:
        if x.shape[1] % 2:
            raise ValueError(f"--flip-concat features need an even width, got {x.shape[1]}")
        h = x.shape[1] // 2
        x = x[:, :h] + x[:, h:] if flip == "sum" else x[:, :h]
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)  # sklearn leaves a zero row as zeros


@dataclass(frozen=True)
class BinSettings:
    flip: str = "sum"  # "sum": image + mirrored image (insightface's Accuracy-Flip); "none": the image alone
    channel_order: str = "RGB"
    input_size: int = 112

    def knobs(self) -> dict:
        return {
            "flip": self.flip,
            "channel_order": self.channel_order,
            "input_size": self.input_size,
            "folds": FOLDS,
            "thresholds": "arange(0, 4, 0.01)",
            "distance": "squared L2 of L2-normalised embeddings",
            "decision": "dist < threshold",
            "protocol": "insightface verification.py 10-fold accuracy",
        }


class VerificationBinEvaluation:
    """One ``.bin`` set: embeds its images (or takes precomputed features) and scores the 10-fold accuracy."""

    def __init__(self, path: str, settings: BinSettings = BinSettings()):
        self.data: VerificationBin = read_bin(path)
        self.settings = settings

    @property
    def name(self) -> str:
        return self.data.name

    def extract_features(self, model, batch_size: int = 64, device="cpu") -> np.ndarray:
        import torch

        from harness.eval.features import embed_batches

        s = self.settings
        load = lambda a, b: torch.from_numpy(self.data.decode(s.input_size, a, b))  # noqa: E731
        return embed_batches(model, len(self.data.images), load, batch_size, device, s.channel_order, s.flip)

    def evaluate_features(
        self, feats, flip_concat: bool = False, features_path: str | None = None, return_items: bool = False
    ):
        feats = np.asarray(feats)
        n = len(self.data.images)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise DataFormatError(
                features_path or self.data.path,
                "rows",
                f"features of shape {feats.shape}, expected ({n}, D): one row per image of {self.data.path}",
            )
        if not np.all(np.isfinite(feats)):
            raise DataFormatError(features_path or self.data.path, "values", "features hold NaN or infinite values")
        emb = fuse_embeddings(feats, flip_concat, self.settings.flip)
        dist = np.sum(np.square(emb[0::2] - emb[1::2]), axis=1)
        res = ten_fold_accuracy(dist, self.data.issame)
        knobs = self.settings.knobs()
        if features_path is not None:
            knobs["flip"] = self.settings.flip if flip_concat else "as given"
        row = {
            "benchmark": self.name,
            "protocol": "10-fold accuracy",
            "bin": os.path.abspath(self.data.path),
            "accuracy": res["accuracy"],
            "accuracy_std": res["accuracy_std"],
            "fold_accuracy": res["fold_accuracy"],
            "fold_threshold": res["fold_threshold"],
            "counts": {"pairs": len(self.data), "genuine": int(self.data.issame.sum()), "images": n},
            "knobs": knobs,
        }
        if not return_items:
            return row
        return row, {"dist": dist, "issame": self.data.issame.copy(), "fold": res["fold"]}

    def evaluate(self, model, batch_size: int = 64, device="cpu", return_items: bool = False):
        return self.evaluate_features(self.extract_features(model, batch_size, device), return_items=return_items)


def find_bin(root: str, name: str) -> str:
    """``<root>/<name>.bin``, or the one ``<root>/*/<name>.bin`` (a release holding ``faces_emore/``)."""
    direct = os.path.join(root, f"{name}.bin")
    if os.path.isfile(direct):
        return direct
    found = sorted(glob.glob(os.path.join(glob.escape(root), "*", f"{name}.bin")))
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{root}: several {name}.bin ({', '.join(found)}); pass the folder that holds the one to use")
    raise FileNotFoundError(f"{direct}: verification set not found (nor in a subfolder of {root})")


# ---------------------------------------------------------------------------------------------- registration


def _evaluate(cfg, backbone, device: str, with_items: bool) -> list:
    settings = BinSettings(flip=cfg.eval.flip, channel_order=cfg.data.channel_order, input_size=cfg.data.input_size)
    out = []
    for name in cfg.eval.bin_sets:
        ev = VerificationBinEvaluation(os.path.join(cfg.data.release, cfg.data.rec, f"{name}.bin"), settings)
        found = ev.evaluate(backbone, cfg.eval.batch_size, device, return_items=with_items)
        out.append(found if with_items else (found, {}))
    return out


def _check(eval_cfg) -> None:
    if not eval_cfg.bin_sets:
        raise ValueError("config eval.bin_sets=(): expected one or more of " + ", ".join(KNOWN_SETS))
    for name in eval_cfg.bin_sets:
        if name not in KNOWN_SETS:
            raise ValueError(f"config eval.bin_sets={name!r}: expected one of {', '.join(KNOWN_SETS)}")


def _data_files(name: str, rec: str) -> dict:
    """The ``.bin`` of each set (``VerificationBins``: every known set; a row name: its own)."""
    sets = KNOWN_SETS if name == "VerificationBins" else (name,)
    return {s: (os.path.join(rec, f"{s}.bin"),) for s in sets}


def _metrics(row: dict) -> dict:
    """``accuracy`` and ``accuracy_std`` (over the 10 folds)."""
    return {k: row[k] for k in ("accuracy", "accuracy_std") if k in row}


def run_bin(args) -> tuple[dict, str]:
    """``python -m harness.evaluate --benchmark bin --release ROOT --bin-set lfw --features feats.npy``."""
    from harness.eval.cli import load_features

    if args.bin_set is None:
        raise ValueError("--benchmark bin needs --bin-set NAME (e.g. lfw: ROOT/lfw.bin)")
    ev = VerificationBinEvaluation(find_bin(args.release, args.bin_set), BinSettings(flip=args.flip or "sum"))
    row = ev.evaluate_features(load_features(args.features), bool(args.flip_concat), args.features)
    row["input"] = {
        "note": "precomputed features: the extraction knobs (channel order, input size) describe the "
        "harness's own extractor and were not applied"
    }
    text = (
        f"{row['benchmark']} 10-fold accuracy (%): {100 * row['accuracy']:.2f} +- {100 * row['accuracy_std']:.2f}\n"
        f"  {row['counts']['pairs']} pairs ({row['counts']['genuine']} genuine), {row['counts']['images']} images"
    )
    return row, text


def write_order_bin(args) -> list[str]:
    """One line per image of the set, ``<bin path>:<index>``: the row order of ``--features``."""
    from harness.core.atomic import write_files_atomic

    if args.bin_set is None:
        raise ValueError("--benchmark bin needs --bin-set NAME (e.g. lfw: ROOT/lfw.bin)")
    path = os.path.abspath(find_bin(args.release, args.bin_set))
    n = len(read_bin(path).images)
    return write_files_atomic({args.write_order: "".join(f"{path}:{i}\n" for i in range(n))})


def add_bin_arguments(ap) -> None:
    g = ap.add_argument_group("bin")
    g.add_argument(
        "--bin-set",
        metavar="NAME",
        help="the verification set: ROOT/NAME.bin (lfw, cfp_fp, agedb_30, ...); also takes --flip-concat and --flip",
    )


def _probe(root: str, rec: str) -> str | None:
    for path in sorted(glob.glob(os.path.join(glob.escape(os.path.join(root, rec)), "*.bin"))):
        try:
            read_bin(path)
        except (ValueError, OSError) as exc:
            return str(exc)
    return None


_SECTION = Section(
    "bins",
    "Verification sets (insightface .bin): 10-fold accuracy (flip-fused, best threshold of 9 folds applied to "
    "the 10th), mean over folds, %",
    tuple(Column(s, "accuracy", _LABELS[s], None) for s in KNOWN_SETS),
)

BIN_CLI = CliCommand(
    "bin",
    "insightface .bin verification sets",
    run_bin,
    write_order_bin,
    ("bin_set", "flip_concat", "flip"),
    add_arguments=add_bin_arguments,
    order_help="bin           .npy, one row per image of --bin-set NAME (pair i = rows 2i, 2i+1); FILE = "
    "<bin path>:<index> per row",
)

register_benchmark(
    Benchmark(
        "VerificationBins",
        KNOWN_SETS,
        _evaluate,
        _metrics,
        (_SECTION,),
        (BIN_CLI,),
        (),
        (
            DataEntry(
                "bins",
                "verification sets (.bin)",
                ("{rec}",),
                "insightface's dataset zoo (recognition/_datasets_): lfw.bin, cfp_fp.bin, agedb_30.bin in faces_emore",
                probe=_probe,
                default=False,
            ),
        ),
        "insightface .bin verification sets, 10-fold accuracy",
        _check,
        _data_files,
        {s: re.compile(r"accuracy(?:_std)?") for s in KNOWN_SETS},
    )
)
