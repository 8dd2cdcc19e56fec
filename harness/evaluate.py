"""``python -m harness.evaluate``: score precomputed features on every registered benchmark (IJB-B/C 1:1 and 1:N,
IJB-S, TinyFace, .bin sets). The parser, the feature-file readers and the runners are in :mod:`harness.eval.cli`;
``--help`` lists the commands and their flags."""

from __future__ import annotations

from harness.eval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
