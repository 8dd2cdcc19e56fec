"""Command line: ``python -m harness.synthface --size default --seed 0 --out datasets/synthface/default``.

Scale up with a named size (``tiny``, ``default``, ``large``) and per-field overrides, e.g.
``--set source_identities=5000 --set aligned_size=112 --set loose_size=144``.

``--validation`` writes only the labelled validation release for model selection (``IJB_release/VAL``, identities
disjoint from every test set: :mod:`harness.synthface.validation`) into the existing release ``--out`` of the same
size and seed; the rest of the release is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

import torch

from harness.core.runtime import tune_malloc
from harness.synthface.generate import SIZES, SynthFaceConfig, config_for, generate, write_digest


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(SynthFaceConfig)}
    if not sep or key not in fields or key in ("size", "seed", "ijbb", "ijbc"):
        settable = sorted(k for k in fields if k not in ("size", "seed", "ijbb", "ijbc"))
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE with KEY one of {settable}")
    default = getattr(SIZES["default"], key)
    try:
        if isinstance(default, tuple):
            parsed = tuple(type(default[0])(v) for v in value.split(","))
        else:
            parsed = type(default)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {text!r}: {value!r} is not a valid {type(default).__name__}") from None
    return key, parsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.synthface", description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="default", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="release folder (written atomically)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override, metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--validation",
        action="store_true",
        help="only write the validation release IJB_release/VAL "
        "(model selection; no test identity) into the existing release --out",
    )
    args = ap.parse_args(argv)
    tune_malloc()
    # SIGTERM (a killed `dvc repro`) unwinds like Ctrl-C, so the temporary release folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_for(args.size, args.seed, **dict(args.overrides))
    t0 = time.perf_counter()
    if args.validation:
        return _validation(cfg, args.out, t0)
    manifest = generate(cfg, args.out)
    print(f"synthface[{cfg.size}] written to {args.out} in {time.perf_counter() - t0:.1f} s: {manifest['counts']}")
    return 0


def _validation(cfg: SynthFaceConfig, out: str, t0: float) -> int:
    from harness.synthface.validation import write_validation

    path = os.path.join(out, "synthface.json")
    try:
        with open(path, encoding="utf-8") as f:
            made = json.load(f).get("config", {})
    except (OSError, ValueError, AttributeError) as exc:
        print(f"harness.synthface: {path}: not a SynthFace release ({' '.join(str(exc).split())})", file=sys.stderr)
        return 2
    if (made.get("size"), made.get("seed")) != (cfg.size, cfg.seed):
        print(
            f"harness.synthface: {path}: the release is size {made.get('size')} seed {made.get('seed')}, not "
            f"--size {cfg.size} --seed {cfg.seed}",
            file=sys.stderr,
        )
        return 2
    counts = write_validation(cfg, out)
    write_digest(out)  # the release's files changed: its digest follows
    print(
        f"synthface[{cfg.size}] validation release written to {os.path.join(out, 'IJB_release', 'VAL')} in "
        f"{time.perf_counter() - t0:.1f} s: {counts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
