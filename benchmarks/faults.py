"""The catalogue of bad inputs and faults of issue 16, run against the command-line entry points on a tiny SynthFace
release; prints one Markdown table: case, exit code, the program's first line, whether a traceback was shown, and
the files left behind in the case's folder (beyond its inputs and Sacred's run records).

    python benchmarks/faults.py [--work DIR] [--only SUBSTRING] [--json PATH]

Every case runs in a fresh folder as a new user would: ``python -m harness.run|harness.stage1|harness.tables``
with a tiny model (32 px, widths 8-16-16-32, one epoch). "first line" is, for a failed case, the program's own
error line (``harness.run: ...``), else the first stderr line that is not Sacred's INFO log; expected outcomes are
in the "expect" column (2 = refused in one line; 0 = handled and said so). The crafted payload is a ``.pt`` whose
unpickling would create the file ``PWNED``: "PWNED" in the files column would mean code ran. Disk full uses a
private 64 KiB tmpfs (user + mount namespace) where the machine allows one, else the file-size limit (RLIMIT_FSIZE).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "data.input_size=32",
    "optim.batch_size=32",
    "optim.epochs=1",
    "log_every=1",
    "eval.benchmarks=TinyFace",
]
STAGE1 = [
    "model.image_size=16",
    "model.dim=8",
    "model.d_scales=2",
    "model.d_layers=2",
    "model.adain_scale=one_plus_gamma",
    "model.mlp_dim=32",
    "model.latent_dim=16",
    "train.batch_size=8",
    "train.iterations=4",
    "train.lr=5e-4",
    "log_every=2",
    "checkpoint_every=2",
    "analysis.holdout_target=10",
    "analysis.figure_inputs=3",
]
PAYLOAD_SRC = """
import sys, torch
class P:
    def __reduce__(self):
        return (open, (sys.argv[2], "w"))
torch.save({"format": "cfsm-train-state/1", "backbone": P(), "num_classes": 3}, sys.argv[1])
"""


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CFSM_TRACEBACK", None)
    return env


def sh(
    argv: list[str], cwd: str, env: dict | None = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(wrap or []), *argv], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=900
    )


def py(*args: str) -> list[str]:
    return [sys.executable, *args]


def payload(path: str, marker: str) -> str:
    subprocess.run(py("-c", PAYLOAD_SRC, path, marker), check=True, env=_env())
    return path


def snapshot(folder: str) -> set[str]:
    out = set()
    for root, _dirs, files in os.walk(folder):
        if os.path.relpath(root, folder).split(os.sep)[0] in ("runs", "rel"):
            continue
        out |= {os.path.relpath(os.path.join(root, f), folder) for f in files}
    return out


def tmpfs_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    return (
        subprocess.run(
            ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs $d"], capture_output=True
        ).returncode
        == 0
    )


class Catalogue:
    def __init__(self, work: str, only: str | None):
        self.work, self.only = work, only
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.release = os.path.join(work, "release")
        self.params = os.path.join(work, "empty.yaml")
        with open(self.params, "w") as f:
            f.write("{}\n")

    # ------------------------------------------------------------------------------------------- plumbing
    def case(self, name: str, expect: int, setup, argv_fn, wrap=None, env=None) -> None:
        if self.only and self.only not in name:
            return
        d = os.path.join(self.work, "cases", f"{len(self.rows) + 1:02d}")
        os.makedirs(d)
        argv = argv_fn(d, setup(d) if setup else None)
        before = snapshot(d)
        t0 = time.perf_counter()
        r = sh(argv, cwd=d, env=env, wrap=wrap(d) if callable(wrap) else wrap)
        seconds = time.perf_counter() - t0
        lines = [
            ln
            for ln in r.stderr.splitlines()
            if ln.strip()
            and not ln.startswith(("INFO - ", "WARNING - "))
            and "DeprecationWarning" not in ln
            and "import pkg_resources" not in ln
        ]
        prog = argv[2] if len(argv) > 2 and argv[1] == "-m" else ""
        said = [ln for ln in lines if prog and ln.startswith(f"{prog}: ")]
        # a failed run: the program's own error line; else the first thing it said (a set-aside, a take-over)
        first = said[0] if r.returncode and said else lines[0] if lines else (r.stdout.strip().splitlines() or [""])[0]
        left = sorted(snapshot(d) - before)
        row = {
            "case": name,
            "expect": expect,
            "exit": r.returncode,
            "first_line": first,
            "traceback": "Traceback (most recent call last)" in r.stderr,
            "left": left,
            "seconds": round(seconds, 1),
        }
        self.rows.append(row)
        ok = "ok" if r.returncode == expect and not row["traceback"] else "UNEXPECTED"
        print(f"[{ok}] {name}: exit {r.returncode} ({seconds:.1f} s) {first[:160]}", file=sys.stderr, flush=True)

    def run_argv(self, *extra: str, release: str | None = None) -> list[str]:
        return py(
            "-m",
            "harness.run",
            "--params",
            self.params,
            "method=source_only",
            f"data.release={release or self.release}",
            "out=runs",
            *SMALL,
            *extra,
        )

    def stage1_argv(self, *extra: str, release: str | None = None) -> list[str]:
        return py(
            "-m",
            "harness.stage1",
            "--params",
            self.params,
            f"data.release={release or self.release}",
            f"identity={self.ckpt}",
            "out=s1",
            "figures=fig",
            "sacred=runs",
            *STAGE1,
            *extra,
        )

    def copy_release(self, d: str) -> str:
        dst = os.path.join(d, "rel")
        shutil.copytree(self.release, dst)
        return dst

    # ------------------------------------------------------------------------------------------- catalogue
    def prepare(self) -> None:
        t0 = time.perf_counter()
        subprocess.run(
            py("-m", "harness.synthface", "--size", "tiny", "--out", self.release),
            check=True,
            env=_env(),
            capture_output=True,
        )
        self.ckpt = os.path.join(self.work, "source_only.pt")
        r = sh(self.run_argv(f"checkpoint={self.ckpt}", "evaluate=false"), cwd=self.work)
        if r.returncode:
            raise SystemExit(f"faults: preparing the checkpoint failed:\n{r.stderr}")
        print(f"faults: tiny release and checkpoint ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    def all(self) -> None:
        pt = lambda d: payload(os.path.join(d, "payload.pt"), os.path.join(d, "PWNED"))  # noqa: E731
        # ---- security
        self.case(
            "payload: train=false checkpoint=", 2, pt, lambda d, p: self.run_argv("train=false", f"checkpoint={p}")
        )
        self.case("payload: resume=PATH", 2, pt, lambda d, p: self.run_argv("checkpoint=m.pt", f"resume={p}"))
        self.case(
            "payload: automatic resume state",
            0,
            lambda d: payload(os.path.join(d, "m.train_state.pt"), os.path.join(d, "PWNED")),
            lambda d, p: self.run_argv("checkpoint=m.pt", "evaluate=false"),
        )
        self.case("payload: stage1 identity=", 2, pt, lambda d, p: self.stage1_argv(f"identity={p}"))
        self.case(
            "payload: stage1 own train state",
            0,
            lambda d: (
                os.makedirs(os.path.join(d, "s1")),
                payload(os.path.join(d, "s1", "train_state.pt"), os.path.join(d, "PWNED")),
            ),
            lambda d, p: self.stage1_argv(),
        )
        self.case(
            "payload: hparams.generator=",
            2,
            pt,
            lambda d, p: self.run_argv(
                "method=cfsm_guided", f"hparams.generator={p}", "hparams.generator_size=16", "hparams.latent_dim=16"
            ),
        )

        def traversal(d):
            rel = self.copy_release(d)
            lst = os.path.join(rel, "target", "target_list.txt")
            names = open(lst).read().splitlines()
            with open(lst, "w") as f:
                f.write("\n".join(["../../faces_synthface/property", *names]) + "\n")
            return rel

        self.case("target list names ../", 2, traversal, lambda d, rel: self.run_argv("method=dann", release=rel))

        # ---- one line
        def corrupt(d):
            rel = self.copy_release(d)
            rec = os.path.join(rel, "faces_synthface", "train.rec")
            data = bytearray(open(rec, "rb").read())
            data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
            open(rec, "wb").write(bytes(data))
            return rel

        self.case("corrupt train.rec record", 2, corrupt, lambda d, rel: self.run_argv(release=rel))
        broken = "run:\n  optim:\n    lr: 0.1\n   batch_size: [1, 2\n"

        def yaml_file(d):
            p = os.path.join(d, "params.yaml")
            open(p, "w").write(broken)
            return p

        self.case("YAML syntax error: harness.run", 2, yaml_file, lambda d, p: py("-m", "harness.run", "--params", p))
        self.case(
            "YAML syntax error: harness.stage1", 2, yaml_file, lambda d, p: py("-m", "harness.stage1", "--params", p)
        )
        self.case(
            "YAML syntax error: harness.tables",
            2,
            lambda d: (os.makedirs(os.path.join(d, "eval")), yaml_file(d))[1],
            lambda d, p: py("-m", "harness.tables", "eval", "--params", p, "--out-dir", "t", "--report", "R.md"),
        )
        for arg in (
            "model.head=foo",
            "model.backbone=r7",
            "eval.benchmarks=IJBX",
            "eval.flip=foo",
            "checkpoint_every=-1",
            "optim.lr=-0.1",
            "optim.epochs=0",
            "optim.epochs=-1",
            "data.channel_order=XYZ",
            "optim.batch_size=0",
            "optim.batch_size=-2",
            "data.input_size=0",
        ):
            self.case(f"config {arg}", 2, None, lambda d, _, arg=arg: self.run_argv("checkpoint=m.pt", arg))
        self.case(
            "config train=false, checkpoint missing",
            2,
            None,
            lambda d, _: self.run_argv("train=false", "checkpoint=missing.pt"),
        )
        self.case(
            "config data.release missing", 2, None, lambda d, _: self.run_argv(release=os.path.join(d, "nowhere"))
        )
        self.case(
            "NaN loss (optim.lr=1e9)",
            2,
            None,
            lambda d, _: self.run_argv(
                "checkpoint=m.pt", "optim.lr=1e9", "checkpoint_every=1", "optim.epochs=3", "optim.grad_clip_scope=all"
            ),
        )
        if tmpfs_ok():
            self.case(
                "disk full while saving (64 KiB tmpfs)",
                2,
                lambda d: os.makedirs(os.path.join(d, "small")),
                lambda d, _: self.run_argv(f"checkpoint={d}/small/m.pt", "checkpoint_every=1"),
                wrap=lambda d: [
                    "unshare",
                    "-rm",
                    "sh",
                    "-c",
                    f'mount -t tmpfs -o size=64k tmpfs {d}/small && exec "$@"',
                    "sh",
                ],
            )
        else:
            self.case(
                "disk full while saving (RLIMIT_FSIZE 64 KiB)",
                2,
                None,
                lambda d, _: [
                    "sh",
                    "-c",
                    'ulimit -f 64 && exec "$@"',
                    "sh",
                    *self.run_argv("checkpoint=m.pt", "checkpoint_every=1"),
                ],
            )

        # ---- wrong sizes
        def odd_target(d):
            import numpy as np
            from PIL import Image

            rel = self.copy_release(d)
            names = open(os.path.join(rel, "target", "target_list.txt")).read().split()
            p = os.path.join(rel, "target", "crops", names[3])
            w, h = Image.open(p).size
            Image.fromarray(np.zeros((h + 5, w + 3, 3), np.uint8)).save(p, format="JPEG")
            return rel

        self.case(
            "target crop of another size", 2, odd_target, lambda d, rel: self.run_argv("method=dann", release=rel)
        )

        def odd_tinyface(d):
            import numpy as np
            from PIL import Image

            rel = self.copy_release(d)
            folder = os.path.join(rel, "aligned_pad_0.1_pad_high", "Probe")
            p = os.path.join(folder, sorted(os.listdir(folder))[1])
            w, h = Image.open(p).size
            Image.fromarray(np.zeros((h // 2, w // 2, 3), np.uint8)).save(p, format="JPEG")
            return rel

        self.case(
            "TinyFace aligned crop of another size",
            2,
            odd_tinyface,
            lambda d, rel: self.run_argv("train=false", f"checkpoint={self.ckpt}", release=rel),
        )

        def odd_ijbs(d):
            import numpy as np
            from PIL import Image

            rel = self.copy_release(d)
            for root, _, files in sorted(os.walk(os.path.join(rel, "IJB-S"))):
                jpgs = sorted(f for f in files if f.endswith(".jpg"))
                if "aligned" in root.lower() and jpgs:
                    p = os.path.join(root, jpgs[0])
                    w, h = Image.open(p).size
                    Image.fromarray(np.zeros((h // 2, w // 2, 3), np.uint8)).save(p, format="JPEG")
                    break
            return rel

        self.case(
            "IJB-S aligned frame of another size",
            2,
            odd_ijbs,
            lambda d, rel: self.run_argv("train=false", f"checkpoint={self.ckpt}", "eval.benchmarks=IJBS", release=rel),
        )

        # ---- nothing lost, nothing hijacked
        def held(d):
            p = subprocess.Popen(py("-c", "import time; time.sleep(600)"))
            self._sleepers.append(p)
            json.dump(
                {"pid": p.pid, "host": socket.gethostname(), "start": "now", "argv": "another run"},
                open(os.path.join(d, "m.pt.lock"), "w"),
            )

        def stale(d):
            p = subprocess.Popen(py("-c", "pass"))
            p.wait()
            json.dump(
                {"pid": p.pid, "host": socket.gethostname(), "start": "then", "argv": "a killed run"},
                open(os.path.join(d, "m.pt.lock"), "w"),
            )

        self._sleepers: list[subprocess.Popen] = []
        self.case("checkpoint held by a live run", 2, held, lambda d, _: self.run_argv("checkpoint=m.pt"))
        self.case(
            "stale lock of a killed run", 0, stale, lambda d, _: self.run_argv("checkpoint=m.pt", "evaluate=false")
        )

        def held_s1(d):
            held(d)
            os.replace(os.path.join(d, "m.pt.lock"), os.path.join(d, "s1.lock"))

        self.case("stage1 output held by a live run", 2, held_s1, lambda d, _: self.stage1_argv())

        def poisoned(d):
            import torch

            r = sh(
                self.run_argv(
                    "checkpoint=m.pt",
                    "optim.lr=1e9",
                    "checkpoint_every=1",
                    "optim.epochs=3",
                    "optim.grad_clip_scope=all",
                ),
                cwd=d,
            )
            assert r.returncode == 2, r.stderr
            s = torch.load(os.path.join(d, "m.train_state.pt"), weights_only=True)
            k = next(k for k in s["backbone"] if k.endswith("running_var"))
            s["backbone"][k] = s["backbone"][k] * float("inf")
            torch.save(s, os.path.join(d, "m.train_state.pt"))

        # the rerun of the diverged run finds its state poisoned by hand: set aside, fresh start (which diverges again)
        self.case(
            "resume from a state with inf weights",
            2,
            poisoned,
            lambda d, _: self.run_argv(
                "checkpoint=m.pt", "optim.lr=1e9", "checkpoint_every=1", "optim.epochs=3", "optim.grad_clip_scope=all"
            ),
        )
        self.case(
            "stage1 state unreadable (truncated)",
            0,
            lambda d: (
                os.makedirs(os.path.join(d, "s1")),
                open(os.path.join(d, "s1", "train_state.pt"), "wb").write(b"PK\x03\x04 truncated"),
            ),
            lambda d, _: self.stage1_argv(),
        )
        for p in self._sleepers:
            p.kill()
            p.wait()
        if not self.only or "stage1 output held" in self.only or "stage1 state" in self.only:
            self.stage1_record()

    def stage1_record(self) -> None:
        """The stage-1 Sacred record of the last stage-1 case: are the final ``stage1.*`` metrics there?"""
        for row in reversed(self.rows):
            if row["case"].startswith("stage1 state unreadable"):
                d = os.path.join(self.work, "cases", f"{self.rows.index(row) + 1:02d}", "runs")
                ids = [x for x in os.listdir(d) if x.isdigit()] if os.path.isdir(d) else []
                if ids:
                    m = json.load(open(os.path.join(d, ids[0], "metrics.json")))
                    final = sorted(k for k in m if k.startswith("stage1.train."))
                    arts = json.load(open(os.path.join(d, ids[0], "run.json")))["artifacts"]
                    self.notes.append(
                        f'Stage-1 Sacred record of case "{row["case"]}": {len(final)} final stage1.train.* '
                        f"metrics ({', '.join(final)}); artifacts {', '.join(arts)}"
                    )

    def table(self) -> str:
        out = ["| case | expect | exit | first line | traceback | files left behind |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            first = r["first_line"].replace("|", "\\|").replace(self.work + "/", "")
            left = ", ".join(r["left"]) or "-"
            out.append(
                f"| {r['case']} | {r['expect']} | {r['exit']} | `{first[:230]}` | "
                f"{'yes' if r['traceback'] else 'no'} | {left} |"
            )
        return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="cfsm-faults-")
    os.makedirs(work, exist_ok=True)
    random.seed(0)
    t0 = time.perf_counter()
    try:
        cat = Catalogue(os.path.abspath(work), args.only)
        cat.prepare()
        cat.all()
        print(cat.table())
        for note in cat.notes:
            print(f"\n{note}")
        bad = [r["case"] for r in cat.rows if r["exit"] != r["expect"] or r["traceback"] or "PWNED" in r["left"]]
        print(
            f"\n{len(cat.rows)} cases in {time.perf_counter() - t0:.0f} s; "
            f"{'all as expected' if not bad else 'UNEXPECTED: ' + ', '.join(bad)}"
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(cat.rows, f, indent=1)
        return 1 if bad else 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
