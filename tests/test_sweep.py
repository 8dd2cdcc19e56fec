"""`python -m harness.sweep`: the sweep file's checks, the expansion into hashed job folders, the local launcher
(sequential and one job per GPU), relaunch safety (done skipped, failed listed, killed resumed), the slurm
launcher's sbatch options (dry run) and its tasks run through submitit's LocalExecutor, on SynthFace `tiny`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.launch.jobs import result_path
from harness.launch.plan import expand, read_sweep
from harness.sweep import main as sweep_main
from methods import get_method, resolve_hparams

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the cheapest real run: a tiny backbone, 32 px, one epoch of tiny's 117 source images, IJB-B only
TINY = {
    "model.widths": [8, 16, 16, 32],
    "model.embedding_size": 32,
    "data.input_size": 32,
    "optim.batch_size": 32,
    "optim.epochs": 1,
    "eval.benchmarks": ["IJBB"],
    "threads": 1,
}


def _write_sweep(path, **data) -> str:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def empty_params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("{}\n")
    return str(p)


def _sweep_file(tmp_path, empty_params, release, **extra) -> str:
    data = {
        "params": empty_params,
        "methods": ["source_only"],
        "seeds": [0],
        "n_hparams": 1,
        "observer": str(tmp_path / "runs"),
        "overrides": {"data.release": release, **TINY},
    }
    data.update(extra)
    return _write_sweep(tmp_path / "sweep.yaml", **data)


def _json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"methods": ["source_only"], "launchr": "local"}, "sweep.yaml:launchr: unknown key"),
        ({"methods": ["source_only"], "slurm": {"gpus": 4}}, "sweep.yaml:slurm.gpus: unknown key"),
        ({"methods": ["source_only"], "seeds": "0,1"}, "sweep.yaml:seeds: expected a list"),
        ({"methods": ["source_only"], "n_hparams": 0}, "sweep.yaml:n_hparams: expected an integer >= 1"),
        ({"methods": ["no_such_method"]}, "sweep.yaml:methods: unknown method 'no_such_method'"),
        ({"seeds": [0]}, "sweep.yaml:methods: missing"),
        (
            {"methods": ["source_only"], "overrides": {"optim.lrr": 0.1}},
            "sweep.yaml:overrides: unknown config key 'optim.lrr'",
        ),
        ({"methods": ["source_only"], "overrides": {"seed": 3}}, "sweep.yaml:overrides.seed: set by the sweep"),
        (
            {"methods": ["dann"], "overrides": {"hparams.no_such": 1}},
            "sweep.yaml:overrides: unknown hyperparameter 'no_such'",
        ),
    ],
)
def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, empty_params, capsys, data, expected):
    path = _write_sweep(tmp_path / "sweep.yaml", params=empty_params, **data)
    assert sweep_main([str(tmp_path / "sw"), "--sweep", path, "--dry-run"]) == 2
    line = _error(capsys)
    assert line.startswith("harness.sweep: ") and expected in line, line
    assert not (tmp_path / "sw").exists(), "nothing is written for a bad sweep"


def test_expansion_draws_each_method_from_its_own_samplers_and_hashes_the_full_config(tmp_path, empty_params):
    sweep = read_sweep(
        None,
        {
            "methods": ["dann", "mmd"],
            "seeds": [0, 1],
            "n_hparams": 3,
            "params": empty_params,
            "overrides": {"optim.epochs": "1"},
        },
    )
    jobs = expand(sweep, str(tmp_path / "sw"))
    assert len(jobs) == 2 * 3 * 2 and len({j["hash"] for j in jobs}) == 12
    for job in jobs:
        assert job["config"]["hparams_seed"] == job["hparams_seed"] and job["config"]["optim"]["epochs"] == 1.0
        declared = {n: d for n, (d, _) in get_method(job["method"]).hparams().items()}
        if job["hparams_seed"] == 0:
            assert job["hparams"] == declared, "draw 0 is the declared defaults"
        else:
            assert job["hparams"] == resolve_hparams(job["method"], job["hparams_seed"])
            assert job["hparams"] != declared
        assert os.path.basename(job["dir"]) == job["hash"]
        assert job["config"]["result"] == os.path.join(job["dir"], f"{job['method']}-s{job['seed']}.json")
    by_draw = {}
    for job in jobs:  # the same draw for every seed: seeds repeat a configuration, draws change it
        by_draw.setdefault((job["method"], job["hparams_seed"]), []).append(job["hparams"])
    assert all(a == b for a, b in by_draw.values())
    # the same sweep gives the same folders; another observer too (where runs are recorded is not the config) ...
    again = expand(
        read_sweep(
            None,
            {
                "methods": ["dann", "mmd"],
                "seeds": [0, 1],
                "n_hparams": 3,
                "params": empty_params,
                "overrides": {"optim.epochs": "1"},
                "observer": "sqlite:///x.db",
            },
        ),
        str(tmp_path / "sw"),
    )
    assert [j["hash"] for j in again] == [j["hash"] for j in jobs]
    # ... a changed knob gives new ones
    other = expand(
        read_sweep(
            None,
            {
                "methods": ["dann", "mmd"],
                "seeds": [0, 1],
                "n_hparams": 3,
                "params": empty_params,
                "overrides": {"optim.epochs": "2"},
            },
        ),
        str(tmp_path / "sw"),
    )
    assert not {j["hash"] for j in other} & {j["hash"] for j in jobs}


def test_slurm_dry_run_prints_the_sbatch_options_and_torchrun_commands(tmp_path, empty_params, capsys):
    path = _write_sweep(
        tmp_path / "sweep.yaml",
        params=empty_params,
        methods=["source_only", "dann"],
        seeds=[0, 1, 2],
        n_hparams=2,
        launcher="slurm",
        slurm={
            "partition": "gpu",
            "gpus_per_node": 4,
            "cpus_per_task": 32,
            "time": 720,
            "mem_gb": 256,
            "array_parallelism": 5,
            "account": "face",
        },
    )
    assert sweep_main([str(tmp_path / "sw"), "--sweep", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for option in (
        "#SBATCH --array=0-11%5",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --time=720",
        "#SBATCH --mem=256GB",
        "#SBATCH --account=face",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --signal=USR2@90",
    ):
        assert option in out, (option, out)
    assert out.count("-m torch.distributed.run --standalone --nproc_per_node 4 -m harness.run --params") == 12
    assert not (tmp_path / "sw").exists(), "a dry run writes nothing"


def _log_headers(job_dir) -> list[str]:
    with open(os.path.join(job_dir, "log.txt")) as f:
        return [ln for ln in f if ln.startswith("=== ")]


def test_local_launcher_one_job_per_gpu_then_a_relaunch_skips_what_is_done(
    tiny_release, tmp_path, empty_params, capsys
):
    path = _sweep_file(
        tmp_path,
        empty_params,
        tiny_release,
        methods=["source_only", "dann"],
        n_hparams=1,
        local={"gpus": 2},
        overrides={"data.release": tiny_release, "device": "cpu", **TINY},
    )
    sw = str(tmp_path / "sw")
    assert sweep_main([sw, "--sweep", path]) == 0
    out = capsys.readouterr().out
    assert "2 jobs: 2 done, 0 running, 0 failed, 0 missing" in out
    plan = _json(os.path.join(sw, "sweep.json"))
    devices = set()
    for entry in plan["jobs"]:
        job_dir = os.path.join(sw, "jobs", entry["hash"])
        doc = _json(result_path(job_dir))
        assert (doc["method"], doc["seed"], doc["hparams_seed"]) == (entry["method"], 0, 0)
        assert doc["hparams"] == {n: d for n, (d, _) in get_method(entry["method"]).hparams().items()}
        assert doc["results"][0]["benchmark"] == "IJB-B" and os.path.isfile(os.path.join(job_dir, doc["items"]))
        headers = _log_headers(job_dir)
        assert len(headers) == 1
        devices |= {h.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for h in headers}
    assert devices == {"0", "1"}, "each concurrent job got its own GPU"
    # the runs are in the Sacred store the sweep named, and harness.runs lists them
    from harness.runs import main as runs_main

    assert runs_main([str(tmp_path / "runs")]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 3 and all(" COMPLETED " in ln for ln in listing[1:])
    assert sorted(ln.split()[1] for ln in listing[1:]) == ["dann", "source_only"]
    assert sweep_main(["status", sw, "--results", "--hparams-seed", "0"]) == 0
    paths = capsys.readouterr().out.split()
    assert sorted(paths) == sorted(
        os.path.join(sw, "jobs", e["hash"], f"{e['method']}-s{e['seed']}.json") for e in plan["jobs"]
    )
    assert sweep_main(["status", sw, "--results", "--hparams-seed", "1"]) == 0 and not capsys.readouterr().out
    # relaunch: nothing runs again
    assert sweep_main([sw, "--sweep", path]) == 0
    assert "2 jobs (2 methods x 1 draws x 1 seeds): 2 done, 0 to run" in capsys.readouterr().out
    assert all(len(_log_headers(os.path.join(sw, "jobs", e["hash"]))) == 1 for e in plan["jobs"])


def test_failed_jobs_are_listed_with_their_error_line_and_rerun_only_when_asked(tmp_path, empty_params, capsys):
    missing = str(tmp_path / "no_release")
    path = _sweep_file(tmp_path, empty_params, missing)
    sw = str(tmp_path / "sw")
    assert sweep_main([sw, "--sweep", path]) == 1
    out = capsys.readouterr().out
    assert out.count(f"failed  harness.run: config data.release={missing!r}: no such folder") == 2, out
    assert "1 jobs: 0 done, 0 running, 1 failed, 0 missing" in out
    assert sweep_main(["status", sw]) == 1
    assert "1 failed" in capsys.readouterr().out
    job_dirs = [os.path.join(sw, "jobs", d) for d in os.listdir(os.path.join(sw, "jobs"))]
    assert sweep_main([sw, "--sweep", path]) == 1  # listed, not rerun
    assert "0 to run" in capsys.readouterr().out
    assert all(len(_log_headers(d)) == 1 for d in job_dirs)
    assert sweep_main([sw, "--sweep", path, "--retry-failed"]) == 1
    assert "1 to run" in capsys.readouterr().out
    assert all(len(_log_headers(d)) == 2 for d in job_dirs)
    assert sweep_main(["status", str(tmp_path / "nothing")]) == 2
    assert "not a sweep folder" in _error(capsys)


def test_a_killed_job_resumes_from_its_train_state(tiny_release, tmp_path, empty_params, capsys):
    # 3 epochs of tiny's 117 images at batch 32 = 9 steps (3 per epoch, as a 1-epoch run counts), a train state after
    # each: killed once the first one is there
    path = _sweep_file(
        tmp_path,
        empty_params,
        tiny_release,
        overrides={"data.release": tiny_release, **TINY, "optim.epochs": 3, "checkpoint_every": 1},
    )
    sw = str(tmp_path / "sw")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "harness.sweep", sw, "--sweep", path],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = lock = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and launcher.poll() is None:
            jobs = os.path.join(sw, "jobs")
            if os.path.isdir(jobs) and os.listdir(jobs):
                job_dir = os.path.join(jobs, os.listdir(jobs)[0])
                state, lock = os.path.join(job_dir, "model.train_state.pt"), os.path.join(job_dir, "model.pt.lock")
                if os.path.isfile(state) and os.path.isfile(lock):
                    break
            time.sleep(0.05)
        assert state and os.path.isfile(state), "the run never saved a train state"
        run_pid = _json(lock)["pid"]  # the trainer holds its checkpoint: that is the harness.run process
        os.kill(run_pid, signal.SIGKILL)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    assert not os.path.isfile(result_path(job_dir))
    assert sweep_main(["status", sw]) == 1
    assert "missing  killed; resumes from its train state" in capsys.readouterr().out
    assert sweep_main([sw, "--sweep", path]) == 0
    doc = _json(result_path(job_dir))
    assert doc["train"]["resumed_from"] >= 1 and doc["train"]["steps"] == 9, doc["train"]
    assert len(_log_headers(job_dir)) == 2


def test_slurm_launcher_through_submitit_local_executor(tiny_release, tmp_path, empty_params, capsys):
    path = _sweep_file(
        tmp_path,
        empty_params,
        tiny_release,
        launcher="slurm",
        slurm={"partition": "gpu", "gpus_per_node": 1, "time": 10},
    )
    sw = str(tmp_path / "sw")
    assert sweep_main([sw, "--sweep", path, "--submitit-local"]) == 0
    out = capsys.readouterr().out
    assert "submitted 1 tasks" in out and "1 jobs: 1 done" in out
    (entry,) = _json(os.path.join(sw, "sweep.json"))["jobs"]
    doc = _json(result_path(os.path.join(sw, "jobs", entry["hash"])))
    assert doc["method"] == "source_only" and doc["hparams_seed"] == 0
    # submitit's own files: the pickled task, its log and its pickled outcome, in the sweep's submitit folder
    files = os.listdir(os.path.join(sw, "submitit"))
    assert [f for f in files if f.endswith("_submitted.pkl")] and [f for f in files if f.endswith("_result.pkl")], files


def test_a_requeue_stops_the_run_cleanly_and_the_requeued_task_resumes(tiny_release, tmp_path, empty_params):
    """What submitit does on a preemption, without Slurm: call the task's ``checkpoint`` while it runs (in the
    task's process, as submitit's signal handler does), then run the submission it returns."""
    import threading

    from harness.launch.plan import write_jobs
    from harness.launch.slurm import SweepTask

    sweep = read_sweep(
        None,
        {
            "methods": ["source_only"],
            "params": empty_params,
            "overrides": {"data.release": tiny_release, **TINY, "optim.epochs": 3, "checkpoint_every": 1},
            "observer": str(tmp_path / "runs"),
        },
    )
    (job,) = expand(sweep, str(tmp_path / "sw"))
    write_jobs(sweep, str(tmp_path / "sw"), [job], cwd=REPO)
    task, outcome = SweepTask(1), {}
    thread = threading.Thread(target=lambda: outcome.update(task(job["dir"])))
    thread.start()
    state = os.path.join(job["dir"], "model.train_state.pt")
    deadline = time.time() + 240
    while not os.path.isfile(state) and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.isfile(state), "the run never saved a train state"
    requeued = task.checkpoint(job["dir"])
    thread.join(120)
    assert outcome["state"] == "missing" and outcome["detail"] == "stopped for a requeue", outcome
    assert not os.path.exists(result_path(job["dir"]))
    for left in ("failed.json", "job.lock", "model.pt.lock"):  # the run released its locks
        assert not os.path.exists(os.path.join(job["dir"], left)), left
    assert os.path.isfile(state)
    assert requeued.function(*requeued.args, **requeued.kwargs)["state"] == "done"
    doc = _json(result_path(job["dir"]))
    assert doc["train"]["resumed_from"] >= 1 and doc["train"]["steps"] == 9, doc["train"]
