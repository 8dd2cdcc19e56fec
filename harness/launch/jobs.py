"""Running one sweep job, and telling what state each job is in (relaunch safety).

A job runs ``python -m harness.run --params <job>/params.yaml`` (under ``python -m torch.distributed.run
--standalone --nproc_per_node G`` when it has G > 1 GPUs) in the sweep's working directory, its output appended to
``<job>/log.txt``. While it runs, ``<job>/job.lock`` (:class:`harness.core.runtime.PathLock`) says who runs it.

States (:func:`job_state`):

- ``done``: the result document (:func:`result_path`) is there (``harness.run`` writes it last, atomically); a relaunch
  skips the job;
- ``running``: the lock is held by a live process on this host, or by a process on another host (a Slurm node);
- ``failed``: the last attempt exited non-zero; ``failed.json`` holds its exit code and its one error line (the
  ``harness.run: ...`` line, else the log's last line); a relaunch lists it and reruns it only with
  ``--retry-failed``;
- ``missing``: never started, or killed (no result, no live lock): a relaunch runs it, and ``harness.run``'s
  ``resume=auto`` continues a killed one from its train state (``model.train_state.pt``, saved every
  ``checkpoint_every`` steps; :mod:`harness.engine.train`: exact resume).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from harness.core.atomic import pid_alive, write_json_atomic
from harness.core.runtime import LockHeldError, PathLock

STATES = ("done", "running", "failed", "missing")


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def result_path(job_dir: str) -> str | None:
    """The job's result document: the file name of ``config.result`` in its ``job.json`` (``<method>-s<seed>.json``),
    in ``job_dir`` (so a sweep folder can be moved); None without a readable ``job.json``."""
    job = _read_json(os.path.join(job_dir, "job.json"))
    try:
        return os.path.join(job_dir, os.path.basename(job["config"]["result"]))
    except (TypeError, KeyError):
        return None


def job_state(job_dir: str) -> tuple[str, str]:
    """``(state, detail)`` of a job folder: detail is the error line (failed), the holder (running) or whether a
    killed run will resume (missing)."""
    result = result_path(job_dir)
    if result is not None and os.path.isfile(result):
        return "done", ""
    holder = _read_json(os.path.join(job_dir, "job.lock"))
    if holder is not None:
        same_host = holder.get("host") == socket.gethostname()
        if not same_host or pid_alive(int(holder.get("pid", 0) or 0)):
            return "running", f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('start')}"
    failed = _read_json(os.path.join(job_dir, "failed.json"))
    if failed is not None:
        return "failed", str(failed.get("error", ""))
    if os.path.isfile(os.path.join(job_dir, "model.train_state.pt")):
        return "missing", "killed; resumes from its train state"
    if os.path.isfile(os.path.join(job_dir, "log.txt")):
        return "missing", "killed before its first train state; starts again"
    return "missing", ""


#: ``python -m harness.run`` with SIGINT restored to Python's KeyboardInterrupt: a process started in the background
#: by a shell without job control (``cmd &``, ``nohup``) inherits SIGINT ignored, and then :meth:`JobRunner.interrupt`
#: could not stop the run cleanly (its ``finally`` blocks release its locks)
RUN_MODULE = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('harness.run', run_name='__main__', alter_sys=True)"
)


def job_command(job_dir: str, gpus: int = 1) -> list[str]:
    """The command of a job: ``harness.run`` on its params file; under torchrun on ``gpus`` processes when > 1."""
    params = os.path.join(job_dir, "params.yaml")
    if gpus > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(gpus),
            "-m",
            "harness.run",
            "--params",
            params,
        ]
    return [sys.executable, "-c", RUN_MODULE, "--params", params]


def error_line(log_path: str) -> str:
    """The one error line of a failed run's log: its last ``harness.run...: `` line, else its last line."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if ln.startswith(("harness.run:", "harness.run (rank")):
            return ln
    return lines[-1] if lines else "no output"


class JobRunner:
    """Runs one job folder to completion (or failure) as a child process; :meth:`interrupt` stops the child
    cleanly (SIGINT: ``harness.run`` releases its locks; its last train state stays) for a requeue."""

    def __init__(self, job_dir: str, gpus: int = 1, env: dict | None = None):
        self.job_dir = job_dir
        self.gpus = gpus
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.lock: PathLock | None = None
        self.interrupted = False

    def run(self) -> dict:
        """``{"hash", "state", "detail", "rc"}``; a job already done or held by another process is not run."""
        digest = os.path.basename(self.job_dir)
        if job_state(self.job_dir)[0] == "done":
            return {"hash": digest, "state": "done", "detail": "already done", "rc": 0}
        job = _read_json(os.path.join(self.job_dir, "job.json"))
        if job is None:
            return {
                "hash": digest,
                "state": "failed",
                "detail": f"{self.job_dir}/job.json: missing or unreadable",
                "rc": 2,
            }
        self.lock = PathLock(os.path.join(self.job_dir, "job"), "sweep job")
        try:
            self.lock.acquire()
        except LockHeldError:
            return {"hash": digest, "state": "running", "detail": job_state(self.job_dir)[1], "rc": None}
        try:
            # The job lock is held: no other attempt of this job runs, so a checkpoint lock left in its folder is a
            # killed attempt's (possibly on another node, which PathLock never judges stale): remove it.
            for left in ("failed.json", "model.pt.lock"):
                try:
                    os.unlink(os.path.join(self.job_dir, left))
                except FileNotFoundError:
                    pass
            env = {**os.environ, **self.env}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (job["cwd"], env.get("PYTHONPATH", "")) if p)
            cmd = job_command(self.job_dir, self.gpus)
            log_path = os.path.join(self.job_dir, "log.txt")
            with open(log_path, "a", encoding="utf-8") as log:
                shown = " ".join(f"{k}={v}" for k, v in self.env.items())
                log.write(
                    f"=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {socket.gethostname()} pid {os.getpid()}: "
                    f"{shown + ' ' if shown else ''}{' '.join(cmd)}\n"
                )
                log.flush()
                # its own session: a signal meant for the launcher (Ctrl-C, Slurm's USR2) reaches the run only
                # through interrupt(), which asks it to stop cleanly
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=job["cwd"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    while (rc := self.proc.poll()) is None:  # polling, never a blocking wait: interrupt() may
                        time.sleep(0.2)  # run in a signal handler meanwhile (see there)
                except BaseException:
                    self.interrupt()
                    raise
            if rc == 0 and job_state(self.job_dir)[0] == "done":
                return {"hash": digest, "state": "done", "detail": "", "rc": 0}
            if self.interrupted:  # stopped for a requeue: not a failure; the next attempt resumes
                return {"hash": digest, "state": "missing", "detail": "stopped for a requeue", "rc": rc}
            line = error_line(log_path) if rc != 0 else "exited 0 without a result document"
            write_json_atomic(
                {"rc": rc, "error": line, "host": socket.gethostname(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                os.path.join(self.job_dir, "failed.json"),
            )
            return {"hash": digest, "state": "failed", "detail": line, "rc": rc}
        finally:
            self.lock.release()

    def interrupt(self, wait_s: float = 60.0) -> None:
        """Stop the child (SIGINT, then SIGKILL after ``wait_s``) and release the job lock. Safe inside a signal
        handler (submitit calls :meth:`harness.launch.slurm.SweepTask.checkpoint` from one): only non-blocking
        ``poll``, so it never waits on a lock the interrupted :meth:`run` holds."""
        proc = self.proc
        self.interrupted = True
        if proc is not None and proc.poll() is None:
            for sig, patience in ((signal.SIGINT, wait_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                end = time.time() + patience
                while proc.poll() is None and time.time() < end:
                    time.sleep(0.1)
                if proc.poll() is not None:
                    break
        if self.lock is not None:
            self.lock.release()

    def __getstate__(self) -> dict:  # pickled by submitit for a requeue: the child and the lock stay behind
        return {
            "job_dir": self.job_dir,
            "gpus": self.gpus,
            "env": self.env,
            "proc": None,
            "lock": None,
            "interrupted": False,
        }


def sweep_states(sweep_dir: str, plan: dict) -> list[dict]:
    """One row per planned job: its plan entry plus ``state`` and ``detail``."""
    rows = []
    for job in plan["jobs"]:
        state, detail = job_state(os.path.join(sweep_dir, "jobs", job["hash"]))
        rows.append({**job, "state": state, "detail": detail})
    return rows


def format_states(rows: list[dict]) -> str:
    """The status table (one line per job) and a count per state."""
    head = ["job", "method", "seed", "hp", "state", "detail"]
    body = [[r["hash"], r["method"], str(r["seed"]), str(r["hparams_seed"]), r["state"], r["detail"]] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
