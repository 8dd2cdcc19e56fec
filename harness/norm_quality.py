"""``python -m harness.norm_quality --model NAME=CHECKPOINT ... --release R [--benchmark IJB-C] --out DIR``: the
feature norm vs detector faceness relation on the IJB-B/C images, per model, as a figure and a JSON table (MagFace's
claim that the un-normalised feature magnitude tracks face quality). Everything is in
:mod:`harness.eval.norm_quality`."""

from __future__ import annotations

from harness.eval.norm_quality import main

if __name__ == "__main__":
    raise SystemExit(main())
