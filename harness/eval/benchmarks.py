"""The built-in benchmarks, registered in :mod:`harness.eval.registry`: IJB-B and IJB-C (1:1 verification and 1:N
identification from one feature extraction), IJB-S and TinyFace.

The evaluators themselves are :class:`harness.eval.ijb_verification.IJBVerification`,
:class:`harness.eval.ijb_identification.IJBIdentification`, :class:`harness.eval.ijbs.IJBSEvaluation` and
:class:`harness.eval.tinyface.TinyFaceEvaluation`; this module says how each is built from the run config
(``eval.image_norm`` is the per-image L2 norm before pooling everywhere: ``image_norm`` of the IJB protocol,
``frame_norm`` of IJB-S, as in :mod:`harness.evaluate`; flip and faceness go to the evaluators whose protocol has
them: IJB-S has neither, TinyFace no faceness), the compact metric keys of their rows, their table columns and
the bootstrap metric of each column group, their ``harness.evaluate`` commands (runners in :mod:`harness.eval.cli`),
their plots and their ``harness.check_data`` entries.
"""

from __future__ import annotations

import os

from harness.eval.metric_keys import any_of, pattern, rank_key, tar_key, tpir_key, with_block
from harness.eval.registry import Benchmark, CliCommand, Column, Curve, DataEntry, Section, register_benchmark
from harness.eval.roc import DEFAULT_FARS, far_key

TABLE_FARS = (1e-6, 1e-5, 1e-4, 1e-3)
GAP_FAR = 0.001
IJBS_PROTOCOLS = ("V2S", "V2B", "V2V")


def far_label(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


# ---------------------------------------------------------------------------------------------- compact metrics


def verification_metrics(row: dict) -> dict:
    """``tar@<far>`` for every FAR of the row, and ``<stills_only|with_video>.tar@0.001`` of the probe-media split."""
    m = {tar_key(far): tar for far, tar in row.get("tar_at_far", {}).items()}
    for part, sub in row.get("by_probe_media", {}).items():
        m[tar_key(GAP_FAR, part)] = sub["tar_at_far"].get(far_key(GAP_FAR))
    return m


def _block_metrics(row: dict, blocks: tuple[str, ...]) -> dict:
    return {with_block(key, b): value for b in blocks for key, value in row.get(b, {}).items()}


def identification_metrics(row: dict) -> dict:
    """``joined.<metric>`` and ``open_set.<metric>`` (``joined.rank1``, ``open_set.tpir@fpir=0.01``, ...)."""
    return _block_metrics(row, ("joined", "open_set"))


def ijbs_metrics(row: dict) -> dict:
    """``<V2S|V2B|V2V>.<metric>`` (``V2S.rank1``, ``V2B.tpir@fpir=0.01``, ...)."""
    return _block_metrics(row, IJBS_PROTOCOLS)


def tinyface_metrics(row: dict) -> dict:
    """``rank1``, ``rank5``, ``rank20``."""
    return {k: row[k] for k in (rank_key(1), rank_key(5), rank_key(20)) if k in row}


# the keys the published-number CSVs may name (harness.eval.metric_keys writes them)
VERIFICATION_KEYS = pattern((None, "stills_only", "with_video"), tar=DEFAULT_FARS)
IDENTIFICATION_KEYS = any_of(
    pattern(("joined",), rank=True, tpir=[("far", x) for x in (0.01, 0.1)]),
    pattern(("open_set",), rank=True, tpir=[("fpir", x) for x in (1e-4, 1e-3, 0.01, 0.1, 1.0)]),
)
IJBS_KEYS = pattern(IJBS_PROTOCOLS, rank=True, tpir=[("fpir", x) for x in (0.01, 0.1)])
TINYFACE_KEYS = pattern(rank=True)


def ijb_metrics(row: dict) -> dict:
    return identification_metrics(row) if row["benchmark"].endswith(" 1:N") else verification_metrics(row)


# ---------------------------------------------------------------------------------------------- bootstrap metrics
# metric(run, columns) -> (per-item subject ids, metric); ``run`` is a harness.report.documents.ResultDocument
# (``array``, ``array_names``, ``rows``, ``items_path``, ``name``), ``columns`` the group's columns this run reports
# (their ``arg`` below).


class Prefixed:
    """``metric`` with ``prefix`` added to every key it returns (the domain-gap columns are ``<split>.tar@...``)."""

    def __init__(self, metric, prefix: str):
        self.metric, self.prefix = metric, prefix

    def bind(self, groups):
        f = self.metric.bind(groups)
        return lambda counts: {self.prefix + k: v for k, v in f(counts).items()}


def _tar_metric(bench: str, part: str | None = None):
    def metric(run, cols):
        from harness.report.bootstrap import TopTarAtFar

        fars = [c.arg for c in cols]
        if part is None:
            return run.array(f"{bench}/probe_subject"), TopTarAtFar(
                run.array(f"{bench}/scores"), run.array(f"{bench}/labels"), fars
            )
        if not all(f"{b}/probe_video" in run.array_names() for b in ("IJB-B", "IJB-C") if b in run.rows):
            return None  # an items file from before probe_video: no CI for the gap cells
        mask = run.array(f"{bench}/probe_video").astype(bool) == (part == "with_video")
        tar = TopTarAtFar(run.array(f"{bench}/scores")[mask], run.array(f"{bench}/labels")[mask], fars)
        return run.array(f"{bench}/probe_subject")[mask], Prefixed(tar, f"{part}.")

    return metric


def _joined_rank_metric(row: str):
    def metric(run, cols):
        from harness.report.bootstrap import RankK

        return run.array(f"{row}/probe_subject"), RankK(
            run.array(f"{row}/joined/rank"), [c.arg for c in cols], prefix="joined."
        )

    return metric


def _ijbs_metric(proto: str):
    def metric(run, cols):
        from harness.core.errors import DataFormatError
        from harness.report.bootstrap import Combined, IJBSTpirAtFpir, RankK

        base = f"IJB-S/{proto}"
        ks = [c.arg[1] for c in cols if c.arg[0] == "rank"]
        fpirs = [c.arg[1] for c in cols if c.arg[0] == "fpir"]
        metrics = []
        if ks:
            metrics.append(RankK(run.array(f"{base}/mate_rank"), ks, prefix=f"{proto}."))
        if fpirs:
            gals = sorted(
                {k.split("/")[2] for k in run.array_names() if k.startswith(f"{base}/") and k.endswith("/top1_score")}
            )
            if not gals:
                raise DataFormatError(
                    run.items_path, f"array {base}/G1/top1_score", f"missing (needed for the IJB-S rows of {run.name})"
                )
            metrics.append(
                IJBSTpirAtFpir(
                    [
                        tuple(run.array(f"{base}/{g}/{a}") for a in ("mated", "top1_correct", "top1_score"))
                        for g in gals
                    ],
                    fpirs,
                    prefix=f"{proto}.",
                )
            )
        return run.array(f"{base}/probe_subject"), Combined(*metrics)

    return metric


def _tinyface_metric(run, cols):
    from harness.report.bootstrap import RankK

    return run.array("TinyFace/probe_subject"), RankK(run.array("TinyFace/first_mate"), [c.arg for c in cols])


# ---------------------------------------------------------------------------------------------- sections


def _col(benchmark: str, key: str, label: str, group: str | None, metric, arg) -> Column:
    return Column(benchmark, key, label, group, metric, arg)


def _ijb_sections(b: str) -> tuple[Section, ...]:
    tar = _tar_metric(b)
    cols = [_col(b, tar_key(x), far_label(x), b, tar, x) for x in TABLE_FARS]
    rank = _joined_rank_metric(f"{b} 1:N")
    cols += [_col(f"{b} 1:N", rank_key(k, "joined"), f"R{k}", f"{b} 1:N", rank, k) for k in (1, 5)]
    own = Section(
        b,
        f"{b}: 1:1 TAR@FAR and 1:N Rank-1/5 (joined gallery), %",
        tuple(cols),
        tuple(c.key for c in cols[: len(TABLE_FARS)]),
    )
    gap = tuple(
        _col(b, tar_key(GAP_FAR, part), f"{b} {label}", f"{b}/{part}", _tar_metric(b, part), GAP_FAR)
        for part, label in (("stills_only", "stills only"), ("with_video", "with video"))
    )
    return own, Section(
        "gap",
        f"Domain gap: IJB TAR@FAR={far_label(GAP_FAR)} for probe templates of clean stills "
        "only vs templates holding degraded video frames, %",
        gap,
        shared=True,
    )


def _ijbs_sections() -> tuple[Section, ...]:
    cols = tuple(
        _col("IJB-S", with_block(key, p), f"{p} {label}", f"IJB-S/{p}", _ijbs_metric(p), arg)
        for p in IJBS_PROTOCOLS
        for label, key, arg in (
            ("R1", rank_key(1), ("rank", 1)),
            ("R5", rank_key(5), ("rank", 5)),
            ("1%", tpir_key(0.01), ("fpir", 0.01)),
            ("10%", tpir_key(0.1), ("fpir", 0.1)),
        )
    )
    return (
        Section(
            "IJB-S",
            "IJB-S: Rank-1, Rank-5, TPIR at FPIR 1% and 10%; surveillance video to single image (V2S), "
            "to booking (V2B), to surveillance video (V2V), %",
            cols,
            tuple(c.key for c in cols),
        ),
    )


def _tinyface_sections() -> tuple[Section, ...]:
    cols = tuple(_col("TinyFace", rank_key(k), f"R{k}", "TinyFace", _tinyface_metric, k) for k in (1, 5, 20))
    return (
        Section("TinyFace", "TinyFace: closed-set Rank-1/5/20 with distractors, %", cols, tuple(c.key for c in cols)),
    )


# ---------------------------------------------------------------------------------------------- evaluation


def files_fingerprint(release: str, rels) -> str:
    """A SHA-256 over every file at or under ``<release>/<rel>`` for each ``rel`` (sorted relative path, size and
    modification time in ns; a missing path counts as missing): what identifies a benchmark's stored files for the
    crop cache without reading them (``data.crop_cache``)."""
    import hashlib

    h = hashlib.sha256()
    for rel in rels:
        top = os.path.join(release, rel)
        found = []
        if os.path.isfile(top):
            found.append((rel, os.stat(top)))
        for folder, dirs, files in os.walk(top, followlinks=True):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                found.append((os.path.relpath(full, release), os.stat(full)))
        if not found:
            h.update(f"missing {rel}\n".encode())
        for name, st in found:
            h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _crop_key(release: str, benchmark: str, rels: tuple[str, ...], loading: dict, modules: tuple[str, ...]) -> dict:
    """Everything a benchmark's crops depend on: its files (:func:`files_fingerprint` of its folders ``rels`` in
    the release), the release folder, the loading knobs and the source of the modules that read and align them."""
    import hashlib
    import importlib

    code = hashlib.sha256()
    for name in ("harness.eval.features", "harness.data.images", "harness.data.align") + modules:
        with open(importlib.import_module(name).__file__, "rb") as f:
            code.update(f.read())
    return {
        "benchmark": benchmark,
        "release": os.path.realpath(release),
        "files": files_fingerprint(release, rels),
        "loading": loading,
        "code": code.hexdigest(),
    }


def _with_crop_cache(cfg, benchmark: str, rels: tuple[str, ...], loading: dict, modules: tuple[str, ...], run) -> list:
    """``run()`` (a benchmark's ``(row, items)`` pairs) inside the crop cache of ``data.crop_cache``; every row
    records it (``crop_cache``: the folder and, per feature pass, ``hit`` / ``written``), or ``off``."""
    from harness.eval.features import crop_cache

    key = _crop_key(cfg.data.release, benchmark, rels, loading, modules) if cfg.data.crop_cache else {}
    with crop_cache(cfg.data.crop_cache, key) as cache:
        found = run()
    record = {"folder": cfg.data.crop_cache, "passes": list(cache.status)} if cache is not None else "off"
    for row, _ in found:
        row["crop_cache"] = record
    return found


def ijb_protocol(cfg):
    from harness.eval.ijb_verification import VerificationProtocol

    return VerificationProtocol(
        flip=cfg.eval.flip,
        faceness=cfg.eval.faceness,
        image_norm=cfg.eval.image_norm,
        align_size=cfg.data.input_size,
        channel_order=cfg.data.channel_order,
    )


def _evaluate_ijb(name: str):
    def evaluate(cfg, backbone, device: str, with_items: bool) -> list:
        """A 1:1 verification row and a 1:N identification row from one feature extraction."""
        from harness.eval.ijb_identification import IJBIdentification
        from harness.eval.ijb_verification import IJBVerification

        root = os.path.join(cfg.data.release, "IJB_release", name)
        protocol = ijb_protocol(cfg)

        def run() -> list:
            verification = IJBVerification(root, protocol=protocol)
            feats = verification.extract_features(backbone, batch_size=cfg.eval.batch_size, device=device)
            found = [
                verification.evaluate_features(feats, return_items=with_items),
                IJBIdentification(root, protocol=protocol).evaluate_features(feats, return_items=with_items),
            ]
            return found if with_items else [(row, {}) for row in found]

        return _with_crop_cache(cfg, name, *_ijb_crops(name, protocol.align_size), run)

    return evaluate


def _ijb_crops(name: str, align_size: int) -> tuple[tuple[str, ...], dict, tuple[str, ...]]:
    """``(folders in the release, loading knobs, modules)`` of the crop cache key of IJB benchmark ``name``."""
    return (os.path.join("IJB_release", name),), {"align_size": align_size}, IJB_CROP_MODULES


#: the modules that read and align the IJB-B/C crops (:meth:`IJBVerification.extract_features`)
IJB_CROP_MODULES = ("harness.eval.ijb_verification", "harness.data.ijb")


def ijb_crop_cache(folder: str, release: str, name: str, align_size: int):
    """The crop cache (:func:`harness.eval.features.crop_cache`, "" = none) of IJB benchmark ``name`` (``IJBB`` /
    ``IJBC``) of ``release`` at ``align_size``, with the key ``harness.run``'s evaluation of that benchmark uses: a
    command that embeds the same crops (``harness.norm_quality``) reads the crops a run wrote, and the other way."""
    from harness.eval.features import crop_cache

    key = _crop_key(release, name, *_ijb_crops(name, align_size)) if folder else {}
    return crop_cache(folder, key)


def _evaluate_ijbs(cfg, backbone, device: str, with_items: bool) -> list:
    from harness.eval.ijbs import IJBSEvaluation, IJBSSettings

    settings = IJBSSettings(
        channel_order=cfg.data.channel_order, input_size=cfg.data.input_size, frame_norm=cfg.eval.image_norm
    )

    def run() -> list:
        found = IJBSEvaluation(os.path.join(cfg.data.release, "IJB-S"), settings).evaluate(
            backbone, batch_size=cfg.eval.batch_size, device=device, return_items=with_items
        )
        return [found if with_items else (found, {})]

    return _with_crop_cache(
        cfg, "IJBS", ("IJB-S",), {"input_size": settings.input_size}, ("harness.eval.ijbs", "harness.data.ijbs"), run
    )


def _evaluate_tinyface(cfg, backbone, device: str, with_items: bool) -> list:
    from harness.eval.tinyface import TinyFaceEvaluation, TinyFaceSettings

    settings = TinyFaceSettings(
        flip=cfg.eval.flip, channel_order=cfg.data.channel_order, input_size=cfg.data.input_size
    )

    def run() -> list:
        found = TinyFaceEvaluation(cfg.data.release, settings=settings).evaluate(
            backbone, batch_size=cfg.eval.batch_size, device=device, return_items=with_items
        )
        return [found if with_items else (found, {})]

    from harness.data.tinyface import DEFAULT_ALIGNED, TESTING_SET

    return _with_crop_cache(
        cfg,
        "TinyFace",
        (TESTING_SET, DEFAULT_ALIGNED),
        {"input_size": settings.input_size},
        ("harness.eval.tinyface", "harness.data.tinyface"),
        run,
    )


# ---------------------------------------------------------------------------------------------- command line


def _cli(name: str):
    """A function of :mod:`harness.eval.cli` (the feature-file runners of the built-in benchmarks), imported when
    called."""

    def call(*args):
        from harness.eval import cli as evaluate

        return getattr(evaluate, name)(*args)

    return call


_IJB_OPTIONS = ("prefix", "flip_concat", "flip", "no_faceness", "image_norm")
_IJB_ARGUMENTS = _cli("add_ijb_arguments")  # one argument group for both IJB commands
IJB11 = CliCommand(
    "ijb11",
    "IJB-B/C 1:1",
    _cli("run_ijb11"),
    _cli("write_order_ijb"),
    _IJB_OPTIONS + ("exact",),
    add_arguments=_IJB_ARGUMENTS,
    order_help="ijb11, ijb1n  one .npy row per line of <prefix>_face_tid_mid.txt; "
    "FILE = its loose crops (absolute paths)",
)
IJB1N = CliCommand(
    "ijb1n", "IJB-B/C 1:N", _cli("run_ijb1n"), _cli("write_order_ijb"), _IJB_OPTIONS, add_arguments=_IJB_ARGUMENTS
)
IJBS_CLI = CliCommand(
    "ijbs",
    "IJB-S",
    _cli("run_ijbs"),
    _cli("write_order_ijbs"),
    ("image_norm", "image_list"),
    required=(("image_list", "FILE (one aligned image path per feature row; --write-order writes one)"),),
    add_arguments=_cli("add_ijbs_arguments"),
    order_help="ijbs          one .npy row per line of --image-list; "
    "FILE = the protocol's aligned crops on disk, relative\n"
    "                to the aligned root (e.g. 12/videos_5004_21750.jpg): FILE is itself a valid --image-list",
)
TINYFACE_CLI = CliCommand(
    "tinyface",
    "TinyFace",
    _cli("run_tinyface"),
    _cli("write_order_tinyface"),
    ("ties", "l2_normalize"),
    add_arguments=_cli("add_tinyface_arguments"),
    order_help="tinyface      .npz with arrays 'probe' and 'gallery'; writes FILE.probe.txt (probe rows) and\n"
    "                FILE.gallery.txt (gallery rows: Gallery_Match then Gallery_Distractor), absolute aligned paths",
)


# ---------------------------------------------------------------------------------------------- data check

_IJB_OBTAIN = {
    "ijbb": "NIST (gated: https://www.nist.gov/programs-projects/face-challenges), in insightface's IJB_release "
    "packaging (recognition/_evaluation_/ijb)",
    "ijbc": "NIST (gated), in insightface's IJB_release packaging, as IJB-B",
}


def _ijb_data(t: str, title: str) -> DataEntry:
    up = t.upper()
    return DataEntry(
        t,
        title,
        (
            f"IJB_release/{up}/meta/{t}_template_pair_label.txt",
            f"IJB_release/{up}/meta/{t}_face_tid_mid.txt",
            f"IJB_release/{up}/meta/{t}_name_5pts_score.txt",
            f"IJB_release/{up}/loose_crop",
        ),
        _IJB_OBTAIN[t],
    )


# ---------------------------------------------------------------------------------------------- registration

_IJBB_SECTIONS = _ijb_sections("IJB-B")
_IJBC_SECTIONS = _ijb_sections("IJB-C")
register_benchmark(
    Benchmark(
        "IJBB",
        ("IJB-B", "IJB-B 1:N"),
        _evaluate_ijb("IJBB"),
        ijb_metrics,
        _IJBB_SECTIONS,
        (IJB11, IJB1N),
        (Curve("roc", "IJB-B", "roc_ijbb"),),
        (_ijb_data("ijbb", "IJB-B"),),
        "IJB-B 1:1 verification (TAR@FAR) and 1:N identification",
        metric_patterns={"IJB-B": VERIFICATION_KEYS, "IJB-B 1:N": IDENTIFICATION_KEYS},
    )
)
register_benchmark(
    Benchmark(
        "IJBC",
        ("IJB-C", "IJB-C 1:N"),
        _evaluate_ijb("IJBC"),
        ijb_metrics,
        _IJBC_SECTIONS,
        (IJB11, IJB1N),
        (Curve("roc", "IJB-C", "roc_ijbc"),),
        (_ijb_data("ijbc", "IJB-C"),),
        "IJB-C 1:1 verification (TAR@FAR) and 1:N identification",
        metric_patterns={"IJB-C": VERIFICATION_KEYS, "IJB-C 1:N": IDENTIFICATION_KEYS},
    )
)
register_benchmark(
    Benchmark(
        "IJBS",
        ("IJB-S",),
        _evaluate_ijbs,
        ijbs_metrics,
        _ijbs_sections(),
        (IJBS_CLI,),
        (Curve("cmc", "IJB-S", "cmc_ijbs"),),
        (
            DataEntry(
                "ijbs",
                "IJB-S",
                ("IJB-S/protocols", "IJB-S/aligned"),
                "the IJB-S authors / NIST (gated); "
                "protocol files as used by PFE (seasonSH/Probabilistic-Face-Embeddings)",
            ),
        ),
        "IJB-S V2S / V2B / V2V identification",
        metric_patterns={"IJB-S": IJBS_KEYS},
    )
)
register_benchmark(
    Benchmark(
        "TinyFace",
        ("TinyFace",),
        _evaluate_tinyface,
        tinyface_metrics,
        _tinyface_sections(),
        (TINYFACE_CLI,),
        (Curve("cmc", "TinyFace", "cmc_tinyface"),),
        (
            DataEntry(
                "tinyface",
                "TinyFace",
                (
                    "tinyface/Testing_Set/Probe",
                    "tinyface/Testing_Set/Gallery_Match",
                    "tinyface/Testing_Set/Gallery_Distractor",
                    "aligned_pad_0.1_pad_high",
                ),
                "https://qmul-tinyface.github.io/ (Testing_Set) "
                "and the aligned copy of AdaFace's validation_lq instructions",
            ),
        ),
        "TinyFace closed-set Rank-1/5/20",
        metric_patterns={"TinyFace": TINYFACE_KEYS},
    )
)
