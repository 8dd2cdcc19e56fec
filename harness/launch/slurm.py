"""The ``slurm`` launcher, through submitit (``facebookincubator/submitit``; the engine DomainBed points its users
to for Slurm): one job array for the sweep's jobs to run, its parameters from the sweep file's ``slurm`` mapping.

Each array task runs :class:`SweepTask` on one job folder: one Slurm task with ``gpus_per_node`` GPUs, in which
the job runs ``harness.run``, under ``torch.distributed.run --nproc_per_node <gpus_per_node>`` when that is > 1
(:func:`harness.launch.jobs.job_command`). Preemption and time limits: submitit asks Slurm for a signal before the
end (``--signal=USR2@<signal_delay_s>``), calls :meth:`SweepTask.checkpoint`, which stops the run cleanly (its last
periodic train state stays) and hands submitit the same task to requeue (at most ``max_requeue`` times); the
requeued task runs ``harness.run`` again, whose ``resume=auto`` continues exactly from that train state
(:mod:`harness.engine.train`).

``status`` reads the job folders, not Slurm's queue: a queued task's job is ``missing`` until it starts. Relaunch
once the array has ended (``squeue``); a task submitted twice finds its job done or held by the other one and ends
at once.

submitit pickles the task (cloudpickle) into its own job folder (``<sweep dir>/submitit/``) and unpickles it on the
node: those are submitit's own job files, written and read by this launcher, never a file a user supplies.

``--dry-run`` prints the sbatch script submitit would submit (its ``#SBATCH`` options) without submitting;
``--submitit-local`` runs the same tasks through ``submitit.LocalExecutor`` on this machine (how CI tests this
launcher, and a way to try a sweep file before a cluster).
"""

from __future__ import annotations

import os
from typing import Any

from harness.launch.jobs import JobRunner

#: sweep file ``slurm.<key>`` -> submitit ``SlurmExecutor.update_parameters`` name
SLURM_PARAMETERS = {
    "partition": "partition",
    "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task",
    "time": "time",
    "array_parallelism": "array_parallelism",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "setup": "setup",
    "additional": "additional_parameters",
    "job_name": "job_name",
}


class SweepTask:
    """What one array task runs (submitit's ``helpers.Checkpointable`` protocol: ``__call__`` + ``checkpoint``)."""

    def __init__(self, gpus: int = 1):
        self.gpus = gpus
        self.runner: JobRunner | None = None

    def __call__(self, job_dir: str) -> dict:
        self.runner = JobRunner(job_dir, self.gpus)
        outcome = self.runner.run()
        if outcome["state"] == "failed":  # the Slurm job fails too (sacct shows it); failed.json has the line
            raise RuntimeError(f"{job_dir}: {outcome['detail']}")
        return outcome

    def checkpoint(self, job_dir: str):
        """Called by submitit in the task's process before a preemption or the time limit: stop the run cleanly
        and requeue this task (its ``harness.run`` resumes from the last train state)."""
        import submitit

        if self.runner is not None:
            self.runner.interrupt()
        return submitit.helpers.DelayedSubmission(SweepTask(self.gpus), job_dir)

    def __getstate__(self) -> dict:
        return {"gpus": self.gpus, "runner": None}


def slurm_parameters(slurm: dict, n_jobs: int) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords from the sweep file's ``slurm`` mapping: one node, one task
    (torchrun starts the per-GPU processes inside it), ``--gpus-per-node``, ``--cpus-per-task``, ``--time`` in
    minutes, ``--mem``, partition / account / qos / constraint, the array's parallelism; the job name says what
    runs."""
    params: dict[str, Any] = {
        "nodes": 1,
        "ntasks_per_node": 1,
        "job_name": "cfsm-sweep",
        "time": 60,
        "array_parallelism": min(n_jobs, 256) or 1,
    }
    for key, value in slurm.items():
        if key in SLURM_PARAMETERS and value not in ("", None, [], {}):
            params[SLURM_PARAMETERS[key]] = value
    if slurm.get("mem_gb"):
        params["mem"] = f"{int(slurm['mem_gb'])}GB"
    return params


def _submitit():
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency of the project
        raise ValueError("the slurm launcher needs submitit (pip install submitit)") from None
    return submitit


def dry_run_script(folder: str, slurm: dict, n_jobs: int) -> str:
    """The sbatch script submitit would submit for ``n_jobs`` array tasks (nothing is submitted; no ``srun``
    needed: submitit's own script writer, on an executor that skips its cluster check)."""
    submitit = _submitit()

    class PlanningExecutor(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # submitit checks for `srun` here; a dry run only writes the script
            return 1

    executor = PlanningExecutor(
        folder=os.path.join(folder, "submitit"), max_num_timeout=int(slurm.get("max_requeue", 3))
    )
    executor.update_parameters(**slurm_parameters(slurm, n_jobs))
    executor.parameters["map_count"] = n_jobs  # what submitit sets for an array of n_jobs
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")  # submitit's writer


def submit(folder: str, slurm: dict, job_dirs: list[str], local: bool = False) -> list:
    """Submit one array (or, ``local``, run through ``submitit.LocalExecutor``); returns submitit's jobs."""
    submitit = _submitit()
    gpus = int(slurm.get("gpus_per_node", 1) or 1)
    folder = os.path.join(folder, "submitit")
    requeue = int(slurm.get("max_requeue", 3))
    if local:
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=requeue)
        executor.update_parameters(timeout_min=int(slurm.get("time", 60)), tasks_per_node=1)
    else:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=requeue)
        executor.update_parameters(**slurm_parameters(slurm, len(job_dirs)))
    return executor.map_array(SweepTask(gpus if not local else 1), job_dirs)
