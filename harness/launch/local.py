"""The ``local`` launcher: the jobs one after another on this machine, or, with G GPUs, G at a time, one GPU each
(``CUDA_VISIBLE_DEVICES=<i>`` in the job's environment, so each ``harness.run`` sees one device as ``cuda``).
DomainBed's ``command_launchers.py`` does the same (its ``multi_gpu`` launcher), with a fixed GPU per slot."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from harness.launch.jobs import JobRunner


def visible_gpus(setting) -> int:
    """``auto``: the CUDA devices torch sees (0 without CUDA); a number: that many."""
    if setting == "auto":
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return int(setting)


def launch_local(job_dirs: list[str], gpus: int, report: Callable[[dict], None]) -> list[dict]:
    """Run every job folder; ``gpus`` 0 or 1: sequentially; G > 1: G at a time, each on its own GPU (the i-th of
    the launcher's own ``CUDA_VISIBLE_DEVICES`` when set, else GPU i). ``report`` is called with each job's
    outcome as it ends; returns the outcomes in job order."""
    outcomes: dict[str, dict] = {}
    if gpus <= 1:
        for job_dir in job_dirs:
            outcome = JobRunner(job_dir, 1).run()
            outcomes[job_dir] = outcome
            report(outcome)
        return [outcomes[d] for d in job_dirs]
    todo: queue.Queue = queue.Queue()
    for job_dir in job_dirs:
        todo.put(job_dir)
    lock = threading.Lock()
    parent = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    devices = [d.strip() for d in parent.split(",") if d.strip()] if parent else [str(g) for g in range(gpus)]
    errors: list[BaseException] = []

    def worker(gpu: int) -> None:
        while True:
            try:
                job_dir = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = JobRunner(job_dir, 1, {"CUDA_VISIBLE_DEVICES": devices[gpu]}).run()
            except BaseException as exc:  # noqa: BLE001 - raised again in the launching thread
                errors.append(exc)
                return
            outcome["gpu"] = devices[gpu]
            with lock:
                outcomes[job_dir] = outcome
                report(outcome)

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in range(min(gpus, len(devices)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [outcomes[d] for d in job_dirs]
