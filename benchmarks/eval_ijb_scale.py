"""Time the IJB-B / IJB-C 1:1 verification evaluator at the real scales, from features (no files written).

Synthesises meta arrays in memory with the real counts (insightface IJB_release):

- IJB-B: 227,630 image rows, 12,115 templates (1,845 gallery + 10,270 probe), 8,010,270 pairs
  (10,270 genuine + 8,000,000 impostor);
- IJB-C: 469,375 rows, 23,124 templates (3,531 gallery + 19,593 probe), 15,658,489 pairs (19,557 genuine);

distinct pairs, media groups of 1-10 rows (60 % stills), random 512-d float32 features with a weak identity signal,
faceness in [0.1, 1]. Times template pooling, pair scoring (fast matmul path), TAR@FAR (ROC on all pairs and on the two
probe-media subsets) and the end-to-end ``evaluate_verification`` separately (best and median of ``--repeat``
runs), with peak memory. Each scale runs in its own subprocess so the peaks are separate.

    python benchmarks/eval_ijb_scale.py            # both scales, full size
    python benchmarks/eval_ijb_scale.py --quick    # 1/10 of rows, templates, genuine and impostor pairs
                                                   # (impostors capped at 90 % of the gallery x probe combinations)
    python benchmarks/eval_ijb_scale.py --from-files [--quick] [--scale IJB-C] [--repeat 5] [--workdir DIR]

``--from-files`` writes one scale as an insightface ``IJB_release`` folder (``meta/<t>_face_tid_mid.txt``,
``meta/<t>_name_5pts_score.txt``, ``meta/<t>_template_pair_label.txt``, an empty ``loose_crop/``) plus a
``feats.npy`` into a temporary folder once (default IJB-C), then times, on those same files:

- the CLI end to end, ``python -m harness.evaluate --benchmark ijb11 --release ... --features feats.npy --out ...``
  in a fresh interpreter each run (start-up and imports included): meta parsing, the memory-mapped ``.npy``,
  pooling, scoring, ROC, JSON;
- a straightforward port of insightface's own ``recognition/_evaluation_/ijb/ijb_11.py`` on the same files
  (:func:`insightface_ijb11`, written from its published definition: ``read_template_media_list`` and
  ``read_template_pair_list`` with ``pd.read_csv``, faceness from the ``name_5pts_score`` lines,
  ``image2template_feature``'s per-template loop, ``verification`` in batches of 100,000 pairs,
  ``sklearn.metrics.roc_curve`` and its nearest-vertex TAR@FAR pick), timed in-process without imports;

prints the ratio and asserts that the TAR@FAR of both (and of the CLI's JSON) are identical.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCALES = {
    "IJB-B": dict(rows=227_630, gallery=1_845, probes=10_270, genuine=10_270, impostor=8_000_000, max_tid=190_000),
    "IJB-C": dict(rows=469_375, gallery=3_531, probes=19_593, genuine=19_557, impostor=15_638_932, max_tid=190_000),
}
DIM = 512


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def synthesise(rows: int, gallery: int, probes: int, genuine: int, impostor: int, max_tid: int, seed: int = 0):
    """Meta arrays + features for one scale (everything in memory)."""
    rng = np.random.default_rng(seed)
    n_t = gallery + probes
    tids = np.sort(rng.choice(np.arange(1, max_tid), n_t, replace=False)).astype(np.int64)
    gal_t, probe_t = tids[:gallery], tids[gallery:]
    n_subj = gallery
    subj = np.concatenate([np.arange(gallery), rng.integers(0, n_subj, probes)])  # subject of each template
    # media sizes: 60 % single stills, else video media of 2-10 frames; exactly `rows` rows in all
    sizes = np.where(rng.uniform(size=rows) < 0.6, 1, rng.integers(2, 11, rows))
    cut = int(np.searchsorted(np.cumsum(sizes), rows))
    sizes = sizes[: cut + 1].copy()
    sizes[-1] -= int(sizes.sum()) - rows
    if sizes[-1] <= 0:  # pragma: no cover - defensive
        sizes = sizes[:-1]
        sizes[-1] += rows - int(sizes.sum())
    n_media = sizes.shape[0]
    assert n_media >= n_t, "too few media for the templates"
    media_template = np.concatenate([np.arange(n_t), rng.integers(0, n_t, n_media - n_t)])
    media_template.sort()  # rows grouped by template as in the real files
    media_ids = rng.permutation(np.arange(10_000, 10_000 + n_media)).astype(np.int64)
    templates = np.repeat(tids[media_template], sizes)
    medias = np.repeat(media_ids, sizes)
    row_subj = np.repeat(subj[media_template], sizes)
    # features: noise + 0.12 * subject direction, built in chunks (float32)
    centres = rng.standard_normal((n_subj, DIM), dtype=np.float32)
    feats = np.empty((rows, DIM), dtype=np.float32)
    for s in range(0, rows, 65536):
        e = min(rows, s + 65536)
        rng.standard_normal((e - s, DIM), dtype=np.float32, out=feats[s:e])
        feats[s:e] += np.float32(0.12) * centres[row_subj[s:e]]
    faceness = rng.uniform(0.1, 1.0, rows).astype(np.float32)
    # pairs (gallery tid, probe tid), all distinct as in the real files: `genuine` probes with their mate, and
    # `impostor` distinct non-mated (gallery, probe) combinations drawn uniformly (Bernoulli, then trimmed)
    gen_probe = rng.choice(probes, genuine, replace=False)
    gen = np.stack([gal_t[subj[gallery + gen_probe]], probe_t[gen_probe]], axis=1)
    p_keep = impostor / (probes * (gallery - 1)) * 1.003 + 1e-4
    chunks = []
    for s in range(0, probes, 512):
        e = min(probes, s + 512)
        m = rng.random((e - s, gallery), dtype=np.float32) < p_keep
        m[np.arange(e - s), subj[gallery + s : gallery + e]] = False  # never the probe's own subject
        pi, gi = np.nonzero(m)
        chunks.append(np.stack([gal_t[gi], probe_t[pi + s]], axis=1))
    imp = np.concatenate(chunks)
    del chunks
    if imp.shape[0] < impostor:  # pragma: no cover - 8 sigma away
        raise RuntimeError("drew too few impostor pairs; raise p_keep")
    imp = np.delete(imp, rng.choice(imp.shape[0], imp.shape[0] - impostor, replace=False), axis=0)
    pairs = np.concatenate([gen, imp])
    labels = np.concatenate([np.ones(genuine, np.int8), np.zeros(impostor, np.int8)])
    perm = rng.permutation(pairs.shape[0])
    pairs, labels = pairs[perm], labels[perm]
    return feats, templates, medias, faceness, pairs, labels


def _times(fn, repeat: int):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts), out


def run_scale(name: str, frac: float, repeat: int) -> dict:
    from harness.eval.ijb_verification import (
        VerificationProtocol,
        _image_row_fn,
        _pool,
        evaluate_verification,
        pair_scores,
    )
    from harness.eval.roc import roc_curve, tar_at_far_from_roc

    spec = _spec(name, frac)
    t0 = time.perf_counter()
    feats, templates, medias, faceness, pairs, labels = synthesise(**spec)
    synth_s = time.perf_counter() - t0
    rss_inputs = _maxrss_mb()
    protocol = VerificationProtocol()
    res = {
        "scale": name,
        "frac": frac,
        "rows": spec["rows"],
        "templates": spec["gallery"] + spec["probes"],
        "pairs": int(pairs.shape[0]),
        "genuine": int(labels.sum()),
        "dim": DIM,
        "synth_s": synth_s,
        "inputs_mb": (feats.nbytes + templates.nbytes + medias.nbytes + faceness.nbytes + pairs.nbytes + labels.nbytes)
        / 2**20,
        "maxrss_after_synth_mb": rss_inputs,
    }

    get_rows = _image_row_fn(feats, faceness, protocol, False)
    res["pool"] = _times(lambda: _pool(get_rows, templates, medias, DIM), repeat)[:2]
    tids, tf, max_media = _pool(get_rows, templates, medias, DIM)
    # functools.partial rather than closures over ``tf`` / ``scores``: the ``del`` below frees them before the
    # end-to-end runs, and no function object is left holding them.
    b, m, scores = _times(functools.partial(pair_scores, tids, tf, pairs), repeat)
    res["score"] = (b, m)
    video = max_media[np.searchsorted(tids, pairs[:, 1])] > 1

    def tar(scores):
        out = []
        for mask in (None, ~video, video):
            s, lab = (scores, labels) if mask is None else (scores[mask], labels[mask])
            fpr, tpr, _ = roc_curve(lab, s)
            out.append(tar_at_far_from_roc(fpr, tpr, protocol.fars))
        return out

    b, m, tars = _times(functools.partial(tar, scores), repeat)
    res["tar"] = (b, m)
    del scores, tf

    def run():
        return evaluate_verification(feats, templates, medias, faceness, pairs, labels, protocol, benchmark=name)

    b, m, result = _times(run, repeat)
    res["end_to_end"] = (b, m)
    res["maxrss_mb"] = _maxrss_mb()
    tracemalloc.start()
    run()
    res["eval_traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    res["tar_at_far"] = result["tar_at_far"]
    return res


# ------------------------------------------------------------------------------------------- from files


def write_release(folder: str, name: str, frac: float, seed: int = 0) -> dict:
    """Write one scale as an insightface ``IJB_release/<IJBB|IJBC>`` folder + ``feats.npy`` under ``folder``.

    Text layout as the insightface release: single spaces, LF, no header; image names ``<k>.jpg``; landmarks with
    3 decimals, faceness with 6 (as ``0.999`` / ``0.987654`` in the real files). Features are (N, 512) float32,
    flip-fused (what ``--features`` takes without ``--flip-concat``).
    """
    import pandas as pd

    spec = _spec(name, frac)
    feats, templates, medias, _, pairs, labels = synthesise(**spec, seed=seed)
    prefix = "ijbb" if name == "IJB-B" else "ijbc"
    root = os.path.join(folder, "IJB_release", prefix.upper())
    meta = os.path.join(root, "meta")
    os.makedirs(meta, exist_ok=True)
    os.makedirs(os.path.join(root, "loose_crop"), exist_ok=True)
    n = templates.shape[0]
    img = pd.Series(np.arange(1, n + 1)).astype(str) + ".jpg"
    pd.DataFrame({"n": img, "t": templates, "m": medias}).to_csv(
        os.path.join(meta, f"{prefix}_face_tid_mid.txt"), sep=" ", header=False, index=False, lineterminator="\n"
    )
    rng = np.random.default_rng(seed + 1)
    lmk = rng.uniform(20.0, 140.0, (n, 10))
    cols = {"n": img}
    for j in range(10):
        cols[f"l{j}"] = pd.Series(lmk[:, j]).map("{:.3f}".format)
    cols["f"] = pd.Series(rng.uniform(0.1, 1.0, n)).map("{:.6f}".format)
    pd.DataFrame(cols).to_csv(
        os.path.join(meta, f"{prefix}_name_5pts_score.txt"), sep=" ", header=False, index=False, lineterminator="\n"
    )
    pd.DataFrame({"a": pairs[:, 0], "b": pairs[:, 1], "l": labels}).to_csv(
        os.path.join(meta, f"{prefix}_template_pair_label.txt"), sep=" ", header=False, index=False, lineterminator="\n"
    )
    feats_path = os.path.join(folder, "feats.npy")
    np.save(feats_path, feats)
    return {
        "root": root,
        "prefix": prefix,
        "features": feats_path,
        "rows": n,
        "pairs": int(pairs.shape[0]),
        "templates": spec["gallery"] + spec["probes"],
        "genuine": int(labels.sum()),
    }


def insightface_ijb11(root: str, prefix: str, features: str, flip_concat: bool = False) -> dict:
    """A straightforward port of insightface ``recognition/_evaluation_/ijb/ijb_11.py`` (defaults: N1, D1), reading
    the same files as the CLI. Written from its published definition, step by step:

    - ``read_template_media_list`` / ``read_template_pair_list``: ``pd.read_csv(path, sep=' ', header=None).values``,
      columns cast with ``astype(int)`` (``np.int`` there, removed from NumPy);
    - ``get_image_feature``: per line of ``<t>_name_5pts_score.txt``, ``line.strip().split(' ')``, the last field
      kept as a string, then ``np.array(strings).astype(np.float32)``; the image features come from ``features``
      (``np.load``) instead of the network;
    - ``use_flip_test``: halves added (``flip_concat``; else the features are already flip-fused), no image norm
      (``use_norm_score=True``), times faceness (``use_detector_score=True``);
    - ``image2template_feature``: per unique template, per unique media, the row (one image) or ``np.mean`` of the
      rows, ``np.sum`` over medias into a float64 matrix, ``sklearn.preprocessing.normalize``;
    - ``verification``: ``template2id`` lookup, ``np.sum(feat1 * feat2, -1)`` in batches of 100,000 pairs;
    - ``roc_curve(label, score)`` (sklearn), arrays flipped, and per FAR ``min(zip(abs(fpr - x), range(len(fpr))))``.
    """
    import pandas as pd
    import sklearn.preprocessing
    from sklearn.metrics import roc_curve

    meta = os.path.join(root, "meta")
    ijb_meta = pd.read_csv(os.path.join(meta, f"{prefix}_face_tid_mid.txt"), sep=" ", header=None).values
    templates = ijb_meta[:, 1].astype(int)
    medias = ijb_meta[:, 2].astype(int)
    pairs = pd.read_csv(os.path.join(meta, f"{prefix}_template_pair_label.txt"), sep=" ", header=None).values
    p1, p2, label = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2].astype(int)
    with open(os.path.join(meta, f"{prefix}_name_5pts_score.txt")) as f:
        faceness_scores = [line.strip().split(" ")[-1] for line in f.readlines()]
    faceness_scores = np.array(faceness_scores).astype(np.float32)
    img_feats = np.load(features).astype(np.float32)
    if flip_concat:
        img_input_feats = img_feats[:, 0 : img_feats.shape[1] // 2] + img_feats[:, img_feats.shape[1] // 2 :]
    else:
        img_input_feats = img_feats
    img_input_feats = img_input_feats * faceness_scores[:, np.newaxis]

    # image2template_feature
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_input_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_input_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    template_norm_feats = sklearn.preprocessing.normalize(template_feats)

    # verification
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count_template, uqt in enumerate(unique_templates):
        template2id[uqt] = count_template
    score = np.zeros((len(p1),))
    total_pairs = np.array(range(len(p1)))
    batchsize = 100000
    for s in [total_pairs[i : i + batchsize] for i in range(0, len(p1), batchsize)]:
        feat1 = template_norm_feats[template2id[p1[s]]]
        feat2 = template_norm_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()

    fpr, tpr, _ = roc_curve(label, score)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = {}
    for x in [10**-6, 10**-5, 10**-4, 10**-3, 10**-2, 10**-1]:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        out[str(float(x))] = float(tpr[min_index])
    return out


def run_from_files(name: str, frac: float, repeat: int, workdir: str | None, ref_repeat: int) -> int:
    import shutil
    import tempfile

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)  # a --workdir that does not exist yet is created
    folder = tempfile.mkdtemp(prefix="ijb_files_", dir=workdir)
    try:
        t = time.perf_counter()
        rel = write_release(folder, name, frac)
        write_s = time.perf_counter() - t
        sizes = {
            os.path.basename(p): os.path.getsize(p) / 2**20
            for p in [
                rel["features"],
                *(os.path.join(rel["root"], "meta", f) for f in os.listdir(os.path.join(rel["root"], "meta"))),
            ]
        }
        print(
            f"{name} {'1/10 scale' if frac != 1 else 'full scale'} from files: {rel['rows']} rows, "
            f"{rel['templates']} templates, "
            f"{rel['pairs']} pairs ({rel['genuine']} genuine); written in {write_s:.1f} s: "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()),
            flush=True,
        )
        out = os.path.join(folder, "result.json")
        cmd = [
            sys.executable,
            "-m",
            "harness.evaluate",
            "--benchmark",
            "ijb11",
            "--release",
            rel["root"],
            "--prefix",
            rel["prefix"],
            "--features",
            rel["features"],
            "--out",
            out,
        ]
        env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cli = []
        for _ in range(repeat):
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
            cli.append(time.perf_counter() - t)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                return proc.returncode
        with open(out) as f:
            cli_tars = json.load(f)["tar_at_far"]
        ref = []
        ref_tars = None
        for _ in range(ref_repeat):
            t = time.perf_counter()
            ref_tars = insightface_ijb11(rel["root"], rel["prefix"], rel["features"])
            ref.append(time.perf_counter() - t)
        print(
            f"CLI end to end (python -m harness.evaluate, fresh interpreter): best {min(cli):.2f} s, median "
            f"{statistics.median(cli):.2f} s of {repeat}: " + " ".join(f"{x:.2f}" for x in cli)
        )
        print(
            f"insightface ijb_11.py port (in-process, no imports):          best {min(ref):.2f} s, median "
            f"{statistics.median(ref):.2f} s of {ref_repeat}"
        )
        print(f"ratio (port best / CLI best): {min(ref) / min(cli):.1f}x; load average {os.getloadavg()[0]:.2f}")
        print("TAR@FAR CLI:         " + " ".join(f"{k}:{cli_tars.get(k)!r}" for k in ref_tars))
        print("TAR@FAR insightface: " + " ".join(f"{k}:{v!r}" for k, v in ref_tars.items()))
        assert cli_tars == ref_tars, "TAR@FAR of the CLI and of the insightface port differ"
        print("TAR@FAR identical (CLI JSON == insightface port)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _spec(name: str, frac: float) -> dict:
    spec = dict(SCALES[name])
    if frac != 1.0:
        for k in ("rows", "gallery", "probes", "genuine", "impostor"):
            spec[k] = max(2, int(round(spec[k] * frac)))
        # combinations shrink with frac**2: keep at most 90 % of the non-mated (gallery, probe) combinations
        spec["impostor"] = min(spec["impostor"], int(0.9 * spec["probes"] * (spec["gallery"] - 1)))
    return spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/10 of the real sizes")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (best and median reported)")
    ap.add_argument(
        "--scale",
        choices=sorted(SCALES),
        help="run one scale in this process (internal; with --from-files: the scale written, default IJB-C)",
    )
    ap.add_argument(
        "--from-files",
        action="store_true",
        help="write the release files once and time the CLI against the insightface ijb_11.py port on them",
    )
    ap.add_argument("--ref-repeat", type=int, default=1, help="--from-files: runs of the insightface port (default 1)")
    ap.add_argument(
        "--workdir", help="--from-files: where the temporary release folder goes (default: the system temp)"
    )
    args = ap.parse_args(argv)
    frac = 0.1 if args.quick else 1.0
    if args.from_files:
        return run_from_files(args.scale or "IJB-C", frac, args.repeat, args.workdir, args.ref_repeat)
    if args.scale:
        print(json.dumps(run_scale(args.scale, frac, args.repeat)))
        return 0
    rows = []
    for name in SCALES:
        cmd = [sys.executable, os.path.abspath(__file__), "--scale", name, "--repeat", str(args.repeat)]
        cmd += ["--quick"] if args.quick else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"IJB 1:1 verification evaluator, {'1/10 scale' if args.quick else 'full scale'}, "
        f"{os.cpu_count()} CPUs, best / median of {args.repeat} runs (s)"
    )
    hdr = (
        f"{'scale':6} {'rows':>8} {'tmpl':>6} {'pairs':>10} {'pool':>11} {'score':>11} {'tar@far':>11} "
        f"{'end2end':>11} {'inputs':>8} {'synthRSS':>8} {'maxRSS':>8} {'evalpk':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:

        def f(k, r=r):
            return f"{r[k][0]:.2f}/{r[k][1]:.2f}"

        print(
            f"{r['scale']:6} {r['rows']:>8} {r['templates']:>6} {r['pairs']:>10} {f('pool'):>11} {f('score'):>11} "
            f"{f('tar'):>11} {f('end_to_end'):>11} {r['inputs_mb']:>6.0f}MB {r['maxrss_after_synth_mb']:>6.0f}MB "
            f"{r['maxrss_mb']:>6.0f}MB {r['eval_traced_peak_mb']:>6.0f}MB"
        )
    print(
        "inputs = features + meta arrays; synthRSS / maxRSS = process peak RSS after synthesis / after all runs "
        "(inputs included); evalpk = tracemalloc peak of one "
        "end-to-end evaluation above its inputs"
    )
    for r in rows:
        print(
            f"{r['scale']} TAR@FAR (random features): "
            + " ".join(f"{k}:{v * 100:.2f}" for k, v in r["tar_at_far"].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
