"""``python -m harness.subspaces --generator NAME=PATH ... --out DIR``: the subspace similarity ``S(A, B)`` of CFSM
between stage-1 generators (e.g. one per target camera), as a JSON matrix and a figure with each generator's FD to
its own target beside it. The measure, its two checks and the figure are in :mod:`harness.cfsm.subspace`."""

from __future__ import annotations

from harness.cfsm.subspace import main

if __name__ == "__main__":
    raise SystemExit(main())
