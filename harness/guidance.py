"""The effect of CFSM's guidance (issue 20, item 2): ``python -m harness.guidance curves|faces``.

``curves --runs results/runs [--method cfsm_guided] --out DIR [--any-status]``: from the scalars every completed
``cfsm_guided`` run (Sacred status COMPLETED; ``--any-status``: every run, a killed one included) logged into its
FileStorage run folder (``<runs>/<id>/metrics.json``), ``guidance_curves.png`` (against the training step:
(a) ``||o||`` median and q10-q90 band, random ``o0`` vs guided ``o_adv``; (b) the FR loss at each; (c) the mean
``|G(x, o) - x|`` at each) and ``guidance_curves.json`` (per run and over seeds: the means over the logged monitor
steps and the shares of monitor steps where the guided synthesis is less degraded / harder). Definitions:
:mod:`harness.report.guidance`.

``faces --generator G.pt --checkpoint FR.pt [--checkpoint FR2.pt ...] --release R --out DIR [--faces 8]
[--seed 0]``: ``guidance_faces.png``, the same source faces of the release, then ``G(x, o0)`` for one fixed random
``o0`` per face, then per FR checkpoint ``G(x, o_adv)`` after one FGSM step of ``cfsm_guided``'s own code against
that checkpoint's FR model. A checkpoint must hold the margin head: the trainer's weight snapshots do
(``snapshot_every=N`` leaves ``<checkpoint stem>.step<N>.pt``). See :mod:`harness.engine.guidance`.

Every file is written atomically; bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PROG = "harness.guidance"


def curves(runs: str, method: str, out: str, any_status: bool = False) -> list[str]:
    from harness.core.atomic import write_files_atomic
    from harness.report.guidance import curves_png, guidance_runs, summarise

    found, skipped = guidance_runs(runs, method, None if any_status else ("COMPLETED",))
    for s in skipped:
        print(
            f"{PROG}: skipped run {s['run']} (seed {s['seed']}, {s['reason']}"
            + ("; --any-status reads it)" if s["reason"].startswith("status") else ")"),
            file=sys.stderr,
        )
    summary = summarise(found, runs, method, skipped)
    return write_files_atomic(
        {
            os.path.join(out, "guidance_curves.png"): curves_png(found, method),
            os.path.join(out, "guidance_curves.json"): json.dumps(summary, indent=1) + "\n",
        }
    )


def faces(generator: str, checkpoints: list[str], release: str, out: str, n_faces: int, seed: int) -> str:
    from harness.cfsm.analysis import tile
    from harness.core.atomic import write_atomic
    from harness.engine.guidance import face_rows

    grid, labels, idx = face_rows(generator, checkpoints, release, n_faces, seed)
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max(draw.textlength(s) for s in labels)) + 8
    img = tile(grid, col_labels=[f"#{i}" for i in idx], row_labels=labels, label_width=width)
    path = os.path.join(out, "guidance_faces.png")
    write_atomic(path, lambda f: img.save(f, format="PNG", optimize=True), binary=True)
    return path


def main(argv: list[str] | None = None) -> int:
    from harness.core.runtime import report_error

    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curves", help="random vs guided o: ||o||, FR loss, distance from the source, vs step")
    c.add_argument("--runs", default="results/runs", help="a FileStorage run folder (default results/runs)")
    c.add_argument("--method", default="cfsm_guided", help="the method whose runs are read (default cfsm_guided)")
    c.add_argument("--out", required=True, help="output folder (guidance_curves.png, guidance_curves.json)")
    c.add_argument(
        "--any-status", action="store_true", help="also read runs that did not complete (default: COMPLETED only)"
    )
    f = sub.add_parser("faces", help="the same faces with random and guided o, per FR checkpoint")
    f.add_argument("--generator", required=True, help="the stage-1 generator (results/stage1/generator.pt)")
    f.add_argument(
        "--checkpoint", action="append", required=True, help="an FR checkpoint with its head (repeatable, in order)"
    )
    f.add_argument("--release", required=True, help="the data release whose source faces are shown")
    f.add_argument("--out", required=True, help="output folder (guidance_faces.png)")
    f.add_argument("--faces", type=int, default=8, help="number of source faces (default 8)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random o0 (default 0)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "curves":
            written = curves(args.runs, args.method, args.out, args.any_status)
        else:
            written = [faces(args.generator, args.checkpoint, args.release, args.out, args.faces, args.seed)]
    except Exception as exc:  # noqa: BLE001 - one line, exit 2 (CFSM_TRACEBACK=1 shows the traceback)
        return report_error(PROG, exc)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
