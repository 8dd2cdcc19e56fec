"""CFSM stage 1, the command: ``python -m harness.stage1 [key=value ...]`` (Sacred-logged, DVC stage ``stage1``).

The configuration, the training loop, the resume state and the outputs are :mod:`harness.cfsm.train` (its
docstring is this command's ``--help``); the analysis is :mod:`harness.cfsm.analysis`. This module parses the
command line, runs the stage under Sacred while holding ``out`` (``<out>.lock``), and turns every error into one
line ``harness.stage1: ...`` with exit code 2 (``CFSM_TRACEBACK=1``: traceback too).
"""

from __future__ import annotations

import json
import os
import sys

from harness.cfsm import train as cfsm_train
from harness.cfsm.train import Stage1Config, run_stage1
from harness.core.config import config_from_cli


def make_config(argv: list[str]) -> Stage1Config:
    return config_from_cli(argv, Stage1Config(), section="stage1", doc=cfsm_train.__doc__)


#: Sacred artifact names of the stage's outputs. ``metrics.json`` is renamed: Sacred's FileStorageObserver keeps its
#: own ``metrics.json`` (the ``log_scalar`` series) in the run folder, and an artifact of that name collided with it.
ARTIFACTS = {"generator.pt": "generator.pt", "analysis.json": "analysis.json", "metrics.json": "stage1_metrics.json"}


def main(argv: list[str] | None = None) -> int:
    """The command line. Every error is one line ``harness.stage1: ...`` and exit code 2 (``CFSM_TRACEBACK=1``
    also prints the traceback); while it runs, the stage holds its ``out`` folder (``<out>.lock``)."""
    from harness.core.runtime import PathLock, quiet_sacred_failures, report_error, sacred_experiment

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = make_config(argv)
        from harness.models.build import check_device

        check_device(cfg.device)  # `device=cuda` without CUDA: one line before Sacred starts
    except Exception as exc:  # noqa: BLE001
        return report_error("harness.stage1", exc)

    try:
        ex = sacred_experiment("cfsm-stage1", cfg.sacred, cfg.to_dict())
        quiet_sacred_failures(ex)
        docs: list[dict] = []

        @ex.main
        def _main(_run):
            log = lambda name, value, step: _run.log_scalar(name, float(value), step)  # noqa: E731
            docs.append(run_stage1(cfg, log=log, progress=True))
            for name, artifact in ARTIFACTS.items():
                _run.add_artifact(os.path.join(cfg.out, name), artifact)
            return docs[0]["analysis"].get("summary", {})

        with PathLock(cfg.out, "stage-1 output folder"):
            ex.run(options={"--name": "cfsm_stage1"})
    except Exception as exc:  # noqa: BLE001
        return report_error("harness.stage1", exc)
    summary = docs[0]["analysis"].get("summary", {})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
