"""``python -m harness.target_fd --generator NAME=PATH ... --target FOLDER --out DIR``: stage-1 generators' FD to one
common target sample, on the held-out source images they share (runs on target folders of different sizes measure
their own FD on different, small held-out sets). The measure is in :mod:`harness.cfsm.target_fd`."""

from __future__ import annotations

from harness.cfsm.target_fd import main

if __name__ == "__main__":
    raise SystemExit(main())
