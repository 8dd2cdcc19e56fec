"""``python -m harness.sweep``: methods x seeds x hyperparameter draws as jobs, on this machine or on Slurm.

    python -m harness.sweep [launch] SWEEP_DIR [--sweep FILE] [--methods a,b] [--seeds 0,1,2] [--n-hparams N]
                            [--params FILE] [--observer STORE] [--launcher local|slurm] [--gpus auto|N]
                            [--dry-run] [--retry-failed] [--submitit-local] [key=value ...]
    python -m harness.sweep status SWEEP_DIR [--results [--hparams-seed K]]

``launch`` expands the sweep (the ``--sweep`` YAML file, then the flags, then ``key=value`` overrides of
``harness.run`` keys for every job; :mod:`harness.launch.plan` describes the file) into one folder per job,
``SWEEP_DIR/jobs/<hash of its full config>/``, and runs the jobs not done yet:

- ``local``: one after another, or one per GPU at a time on a multi-GPU machine (:mod:`harness.launch.local`);
- ``slurm``: one job array through submitit, ``torchrun`` inside each task when it has several GPUs, requeued on
  preemption and resumed exactly (:mod:`harness.launch.slurm`). ``--dry-run`` prints the sbatch script it would
  submit; ``--submitit-local`` runs the tasks through ``submitit.LocalExecutor`` here instead of Slurm.

Relaunching is safe: done jobs are skipped, killed ones resume from their train state, running ones are left alone,
failed ones are listed with their error line (and rerun with ``--retry-failed``). ``status`` prints one line per
job (done / running / failed / missing) and the counts; ``--results`` prints the done jobs' result paths instead
(``--hparams-seed K``: one draw's), for ``harness.tables``.

Each job's result document is ``SWEEP_DIR/jobs/<hash>/<method>-s<seed>.json`` (with its items file beside it), recording
the method, seed, hparams_seed and the resolved hparams: ``python -m harness.tables SWEEP_DIR/jobs/*/*-s*.json``
(one draw's table: ``python -m harness.tables $(python -m harness.sweep status SWEEP_DIR --results --hparams-seed
0)``).
Every job's run is also recorded in the Sacred store ``--observer`` (default ``results/runs``; a database URL
works: ``python -m harness.runs STORE`` lists them).

Exit codes: 0 all jobs done (or submitted / dry run), 1 some job failed or is still running, 2 bad input (one line
``<file>:<key>: what``).
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "harness.sweep"


def _list(text: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "integers" if kind is int else "names"
        raise ValueError(f"{text!r}: expected a comma-separated list of {what}") from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    ap.add_argument("sweep_dir", help="the sweep's folder (job folders, sweep.json, submitit logs)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="harness.run keys for every job")
    ap.add_argument("--sweep", help="the sweep file (YAML)")
    ap.add_argument("--methods", help="comma-separated methods (over the file's)")
    ap.add_argument("--seeds", help="comma-separated training seeds")
    ap.add_argument("--n-hparams", type=int, help="hyperparameter draws per method (hparams_seed 0..N-1)")
    ap.add_argument("--params", help="the base params file (default params.yaml)")
    ap.add_argument("--observer", help="the Sacred run store of every job: a folder or a database URL")
    ap.add_argument("--launcher", choices=("local", "slurm"), help="local (default) or slurm")
    ap.add_argument("--gpus", help="local launcher: auto (default) or the number of GPUs, one job each")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs (and the sbatch script) and stop")
    ap.add_argument("--retry-failed", action="store_true", help="rerun the jobs whose last attempt failed")
    ap.add_argument(
        "--submitit-local",
        action="store_true",
        help="slurm launcher: run the tasks through submitit.LocalExecutor on this machine",
    )
    return ap


def status(sweep_dir: str, results: bool = False, hparams_seed: int | None = None) -> int:
    from harness.launch.jobs import format_states, result_path, sweep_states
    from harness.launch.plan import read_plan

    rows = sweep_states(sweep_dir, read_plan(sweep_dir))
    if results:  # the result documents of the done jobs, one path a line (for harness.tables)
        for r in rows:
            if r["state"] == "done" and (hparams_seed is None or r["hparams_seed"] == hparams_seed):
                print(result_path(os.path.join(sweep_dir, "jobs", r["hash"])))
        return 0
    print(format_states(rows))
    return 0 if all(r["state"] == "done" for r in rows) else 1


def launch(args: argparse.Namespace) -> int:
    from harness.launch import jobs as joblib
    from harness.launch.plan import expand, read_sweep, write_jobs

    cli: dict = {"overrides": {}}
    for item in args.overrides:
        if "=" not in item or item.startswith("-"):
            raise ValueError(f"argument {item!r}: expected key=value (a harness.run key)")
        key, value = item.split("=", 1)
        cli["overrides"][key] = value
    if args.methods:
        cli["methods"] = _list(args.methods)
    if args.seeds:
        cli["seeds"] = _list(args.seeds, int)
    for key in ("n_hparams", "params", "observer", "launcher"):
        cli[key] = getattr(args, key)
    sweep = read_sweep(args.sweep, cli)
    if args.gpus is not None:
        gpus = args.gpus if args.gpus == "auto" else _list(args.gpus, int)[0]
        sweep = type(sweep)(**{**sweep.__dict__, "local": {**sweep.local, "gpus": gpus}})
    where = f"{args.sweep}:" if args.sweep else "sweep "
    jobs = expand(sweep, args.sweep_dir, where)
    states = {job["hash"]: joblib.job_state(job["dir"]) for job in jobs}
    todo = [
        job
        for job in jobs
        if states[job["hash"]][0] == "missing" or (states[job["hash"]][0] == "failed" and args.retry_failed)
    ]
    print(
        f"{len(jobs)} jobs ({len(sweep.methods)} methods x {sweep.n_hparams} draws x {len(sweep.seeds)} seeds): "
        f"{sum(s[0] == 'done' for s in states.values())} done, {len(todo)} to run, launcher {sweep.launcher}"
    )
    if args.dry_run:
        gpus = int(sweep.slurm.get("gpus_per_node", 1) or 1) if sweep.launcher == "slurm" else 1
        for job in todo:
            print(
                f"{job['hash']}  {job['method']} seed {job['seed']} hparams_seed {job['hparams_seed']}  "
                f"{' '.join(joblib.job_command(job['dir'], gpus))}"
            )
        if sweep.launcher == "slurm":
            from harness.launch.slurm import dry_run_script

            print(dry_run_script(os.path.abspath(args.sweep_dir), sweep.slurm, max(len(todo), 1)), end="")
        return 0
    os.makedirs(args.sweep_dir, exist_ok=True)
    write_jobs(sweep, args.sweep_dir, jobs)
    dirs = [job["dir"] for job in todo]
    if sweep.launcher == "local":
        from harness.launch.local import launch_local, visible_gpus

        def report(outcome: dict) -> None:
            print(f"{outcome['hash']}  {outcome['state']}  {outcome['detail']}".rstrip(), flush=True)

        launch_local(dirs, visible_gpus(sweep.local.get("gpus", "auto")), report)
    elif dirs:
        from harness.launch.slurm import submit

        submitted = submit(os.path.abspath(args.sweep_dir), sweep.slurm, dirs, local=args.submitit_local)
        print(
            f"submitted {len(submitted)} tasks (first job id {submitted[0].job_id}); "
            f"`python -m {PROG} status {args.sweep_dir}` shows their progress",
            flush=True,
        )
        if args.submitit_local:  # LocalExecutor's tasks are children of this process: wait for them
            for job in submitted:
                job.exception()  # a failed task has written its failed.json; the table below says so
        else:
            return 0
    return status(args.sweep_dir)


def main(argv: list[str] | None = None) -> int:
    from harness.core.runtime import report_error

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        ap = argparse.ArgumentParser(prog=f"python -m {PROG} status", description="the state of every job")
        ap.add_argument("sweep_dir")
        ap.add_argument("--results", action="store_true", help="print the result paths of the done jobs instead")
        ap.add_argument("--hparams-seed", type=int, help="with --results: only this draw's jobs")
        args = ap.parse_args(argv[1:])
        try:
            return status(args.sweep_dir, args.results, args.hparams_seed)
        except Exception as exc:  # noqa: BLE001 - one line, exit 2
            return report_error(PROG, exc)
    if argv[:1] == ["launch"]:
        argv = argv[1:]
    args = _parser().parse_intermixed_args(argv)
    try:
        return launch(args)
    except Exception as exc:  # noqa: BLE001 - one line, exit 2 (CFSM_TRACEBACK=1 shows the traceback)
        return report_error(PROG, exc)


if __name__ == "__main__":
    raise SystemExit(main())
