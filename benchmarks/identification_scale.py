"""Time closed-set identification search at the real scales, from random features (no files read or written).

Two scales, each in its own subprocess so that the peak memory (``ru_maxrss``) is separate:

- **TinyFace** (AdaFace ``validate_tinyface.py``; ``docs/benchmark_formats.md`` section 3): 3,728 probes x
  157,871 gallery images (4,443 Gallery_Match + 153,428 distractors), 512-d float32, Rank-1/5/20 through
  :func:`harness.eval.tinyface.closed_set_cmc` (L2 normalisation, ``chunked_topk`` top-20 with AdaFace's tie order,
  CMC), i.e. what :meth:`TinyFaceEvaluation.evaluate_features` runs.
- **IJB-C 1:N** (``docs/benchmark_formats.md`` section 1.6 (a), galleries G1 ∪ G2): 19,593 probe templates x
  3,531 gallery templates, one mate per probe; ``chunked_topk`` top-10 gives Rank-1/5/10 and the max non-mated
  score of each probe (the best entry of the top list that is not the mate: with one mate, it is within the first
  two).

Features are Gaussian noise plus a weak identity direction (so the ranks are neither 0 nor 1). The time reported
is the search only; feature synthesis is timed separately. Target on 2 cores: < 20 s and < 4 GB per scale.

Each scale runs with ``harness.eval.identification.chunked_topk``, what the evaluators use (``--methods`` names the
top-k functions to compare, one row each; the metrics columns of the rows must agree).

    python benchmarks/identification_scale.py             # both scales
    python benchmarks/identification_scale.py --quick     # 1/10 of the probes and of the gallery
    python benchmarks/identification_scale.py --methods chunked_topk
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIM = 512
SCALES = {
    "TinyFace": dict(probes=3_728, match=4_443, distractors=153_428, identities=2_570, k=20),
    "IJB-C 1:N": dict(probes=19_593, gallery=3_531, k=10),
}
TARGET_S, TARGET_GB = 20.0, 4.0
SIGNAL = 0.5  # identity direction / noise: mated cosine ~0.2 against a non-mated spread of ~0.044


def _maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2  # Linux: KiB


def _features(rng: np.random.Generator, labels: np.ndarray, centres: np.ndarray, signal: float) -> np.ndarray:
    x = np.empty((labels.shape[0], DIM), dtype=np.float32)
    for s in range(0, labels.shape[0], 65536):
        e = min(labels.shape[0], s + 65536)
        rng.standard_normal((e - s, DIM), dtype=np.float32, out=x[s:e])
        has = labels[s:e] >= 0
        x[s:e][has] += np.float32(signal) * centres[labels[s:e][has]]
    return x


def _topk_fn(method: str):
    from harness.eval.identification import chunked_topk

    return chunked_topk


def run_tinyface(quick: bool, method: str, repeat: int = 1) -> dict:
    import harness.eval.tinyface as tf
    from harness.eval.identification import l2_normalize

    tf.chunked_topk = _topk_fn(method)  # the evaluator's own code path, with the chosen top-k
    sc = SCALES["TinyFace"]
    f = 10 if quick else 1
    n_p, n_m, n_d, n_id = sc["probes"] // f, sc["match"] // f, sc["distractors"] // f, sc["identities"] // f
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    centres = rng.standard_normal((n_id, DIM), dtype=np.float32)
    probe_labels = rng.integers(0, n_id, n_p)
    match_labels = np.concatenate([np.arange(n_id), rng.integers(0, n_id, n_m - n_id)])
    gallery_labels = np.concatenate([match_labels, np.full(n_d, -100)])
    probe = _features(rng, probe_labels, centres, SIGNAL)
    gallery = _features(rng, np.where(gallery_labels < 0, -1, gallery_labels), centres, SIGNAL)
    t_synth = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        # = TinyFaceEvaluation.evaluate_features: L2 normalisation, top-20 (AdaFace tie order), CMC
        res = tf.closed_set_cmc(l2_normalize(probe), l2_normalize(gallery), probe_labels, gallery_labels, (1, 5, 20))
        times.append(time.perf_counter() - t0)
    return {
        "scale": "TinyFace",
        "method": method,
        "probes": n_p,
        "gallery": n_m + n_d,
        "k": sc["k"],
        "synth_s": t_synth,
        "search_s": min(times),
        "search_median_s": statistics.median(times),
        "repeat": repeat,
        "metrics": {k: res[k] for k in ("rank1", "rank5", "rank20")},
        "peak_gb": _maxrss_gb(),
    }


def run_ijbc(quick: bool, method: str, repeat: int = 1) -> dict:
    from harness.eval.identification import l2_normalize

    topk = _topk_fn(method)
    sc = SCALES["IJB-C 1:N"]
    f = 10 if quick else 1
    n_p, n_g, k = sc["probes"] // f, sc["gallery"] // f, sc["k"]
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    centres = rng.standard_normal((n_g, DIM), dtype=np.float32)
    probe_subject = rng.integers(0, n_g, n_p)  # gallery template g holds subject g: one mate per probe
    probe = l2_normalize(_features(rng, probe_subject, centres, SIGNAL))
    gallery = l2_normalize(_features(rng, np.arange(n_g), centres, SIGNAL))
    t_synth = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        scores, idx = topk(probe, gallery, k)
        is_mate = idx == probe_subject[:, None]
        first = np.where(is_mate.any(1), is_mate.argmax(1), k)
        ranks = {f"rank{r}": float(np.mean(first < r)) for r in (1, 5, 10)}
        nonmate_pos = np.where(is_mate[:, 0], 1, 0)  # one mate: the best non-mated entry is top-1 or top-2
        max_nonmated = scores[np.arange(n_p), nonmate_pos]
        times.append(time.perf_counter() - t0)
    assert not is_mate[np.arange(n_p), nonmate_pos].any()
    # The real 1:N evaluator's code paths: both definitions, float64 exact mate ranks (IJB-C: galleries G1/G2).
    from harness.eval.ijb_identification import joined_identification, open_set_identification

    t0 = time.perf_counter()
    joined = joined_identification(probe, gallery, probe_subject)
    half = n_g // 2
    for lo, hi in ((0, half), (half, n_g)):
        in_gallery = (probe_subject >= lo) & (probe_subject < hi)
        open_set_identification(probe, gallery[lo:hi], np.where(in_gallery, probe_subject - lo, -1))
    t_eval = time.perf_counter() - t0
    return {
        "scale": "IJB-C 1:N",
        "method": method,
        "probes": n_p,
        "gallery": n_g,
        "k": k,
        "synth_s": t_synth,
        "search_s": min(times),
        "search_median_s": statistics.median(times),
        "repeat": repeat,
        "metrics": {
            **ranks,
            "mean_max_nonmated": float(max_nonmated.mean()),
            "evaluator_s(joined+open_set)": round(t_eval, 2),
            "evaluator_rank1": joined["rank1"],
        },
        "peak_gb": _maxrss_gb(),
    }


METHODS = ("chunked_topk",)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1/10 of the probes and of the gallery")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of top-k methods (chunked_topk)")
    ap.add_argument("--repeat", type=int, default=1, help="search runs per scale (best and median reported)")
    ap.add_argument("--scales", default=",".join(SCALES), help="comma list of scales (default: all)")
    ap.add_argument("--child", choices=list(SCALES), help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=METHODS, default="chunked_topk", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = (run_tinyface if args.child == "TinyFace" else run_ijbc)(args.quick, args.method, args.repeat)
        print(json.dumps(res))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    for name in [x for x in args.scales.split(",") if x]:
        for method in methods:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                name,
                "--method",
                method,
                "--repeat",
                str(args.repeat),
            ]
            cmd += ["--quick"] if args.quick else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    quick = " (quick: 1/10 size)" if args.quick else ""
    print(f"identification search, 512-d float32, {os.cpu_count()} CPUs{quick}")
    head = (
        f"{'scale':<10} {'top-k':<13} {'probes':>7} {'gallery':>8} {'k':>3} {'search s':>9} {'median':>7} "
        f"{'synth s':>8} {'peak GB':>8}  {'ok':<3} metrics"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = r["search_s"] < TARGET_S and r["peak_gb"] < TARGET_GB
        m = " ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items())
        print(
            f"{r['scale']:<10} {r['method']:<13} {r['probes']:>7} {r['gallery']:>8} {r['k']:>3} {r['search_s']:>9.2f} "
            f"{r['search_median_s']:>7.2f} "
            f"{r['synth_s']:>8.2f} {r['peak_gb']:>8.2f}  {'yes' if ok else 'NO':<3} {m}"
        )
    print(f"search s = best of {args.repeat}, median = median of {args.repeat}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"targets: search < {TARGET_S:.0f} s and peak < {TARGET_GB:.0f} GB per scale "
        "(peak = ru_maxrss of the scale's process)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
