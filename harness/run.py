"""``python -m harness.run method=source_only [key=value ...]``: one Sacred-logged run that trains and evaluates.

Values come from the dataclass defaults (``harness.core.config``), then the ``run`` section of ``params.yaml`` (when
present in the working directory, or ``--params FILE``), then the command line. Dotted keys reach nested values
(``optim.lr=0.05``, ``model.backbone=r18``); ``hparams.<name>=...`` sets a method hyperparameter, over the params
file's ``method_hparams.<method>`` (:func:`harness.core.config.with_method_hparams`). An unknown key or method is a
one-line error listing the valid ones.

Sacred records the full config, host info (with the torch device), metrics (``log_scalar``, Python numbers
only) and the result rows as an artifact, under ``results/runs/<id>/``; the checkpoint is recorded by path and
sha256 (``info["checkpoint"]``), not copied; a run that raises is recorded as FAILED.

Errors: every error, in the first config checks (unknown or out-of-range values, a missing release or checkpoint,
a missing stage-1 generator) or later (a corrupt data file, a diverged loss, a full disk, a held checkpoint), is
one line ``harness.run: ...`` on stderr and exit code 2; ``CFSM_TRACEBACK=1`` in the environment also prints the
traceback. Under torchrun, rank 0 prints the line and the other ranks exit 2 silently.

Each result row carries every protocol knob. The train info (Sacred ``info["train"]`` and the result document's
``train``) records steps, seconds, global images/s, the final loss, device, AMP, world size,
per-rank and global batch, the step resumed from, and on CUDA the GPU name, CUDA and cuDNN versions and peak GPU
memory (on CPU the thread count).

Data parallel: ``torchrun --nproc_per_node N -m harness.run key=value ...`` runs the same trainer on N processes
(:mod:`harness.engine.distributed`, :mod:`harness.engine.train`); ``optim.batch_size`` is per process; rank 0 alone
records, writes and evaluates. Resume: ``resume=auto`` (default) continues a killed run from the train state beside
``checkpoint`` when its config matches; ``resume=PATH`` / ``resume=none`` (see :mod:`harness.engine.train`).

With ``result=PATH``, the evaluators' per-item arrays (per IJB pair, per probe: what the subject-level bootstrap of
:mod:`harness.report.bootstrap` resamples) are saved next to it, compressed, as ``<stem>.items.npz`` (keys
``<benchmark>/<array>``, e.g. ``IJB-B/scores``, ``IJB-C 1:N/joined/rank``, ``IJB-S/V2S/mate_rank``), written
atomically before the result document, which names it (``"items": "<stem>.items.npz"``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from typing import Any

import torch

from harness.core.atomic import file_sha256, write_json_atomic
from harness.core.config import RunConfig, config_from_cli
from harness.eval.provenance import data_provenance
from harness.eval.results import RESULT_FORMAT, compact_metrics, items_path
from harness.models.build import load_checkpoint  # the one checkpoint reader (kept importable from here)

ALIGNMENT = "arcface-5pt-umeyama-similarity"


def make_config(argv: list[str]) -> RunConfig:
    from methods import get_method

    return config_from_cli(
        argv, RunConfig(), section="run", doc=__doc__, hparams_of=lambda method: get_method(method).hparams()
    )  # + method_hparams.<method>


def result_knobs(cfg: RunConfig) -> dict[str, Any]:
    """The run-level facts added to every result row: what the evaluators are not told (the release they read, as
    configured). The protocol knobs (flip, faceness, image/frame norm, pooling, score, alignment, channel order, ...)
    come from the evaluator that produced the row, and only from it (:func:`evaluate_model`); a run-level fact never
    overwrites a knob the evaluator stated."""
    return {"release": cfg.data.release}


def evaluate_model(cfg: RunConfig, backbone: torch.nn.Module, device: str, items: dict | None = None) -> list[dict]:
    """Every benchmark of ``cfg.eval.benchmarks`` on the release, through the benchmark registry
    (:func:`harness.eval.registry.evaluate_all`): IJBB / IJBC give a 1:1 verification row and a 1:N identification
    row (one feature extraction for both), IJBS an IJB-S row, TinyFace a TinyFace row, VerificationBins one row per
    ``eval.bin_sets`` entry.

    Each evaluator gets the config's knobs in its own terms (``eval.image_norm`` is the per-image L2 norm before
    pooling everywhere: ``image_norm`` of the IJB protocol, ``frame_norm`` of IJB-S, as in :mod:`harness.evaluate`;
    flip and faceness go to the evaluators whose protocol has them: IJB-S has neither, TinyFace no faceness) and
    states them in its row's ``knobs``.

    With ``items`` (a dict), the evaluators' per-item arrays for the subject-level bootstrap
    (:mod:`harness.report.bootstrap`) are added to it, keyed ``<row benchmark>/<array>`` (``IJB-B/scores``,
    ``IJB-B 1:N/joined/rank``, ``IJB-S/V2S/mate_rank``, ``TinyFace/first_mate``, ...; the arrays each evaluator's
    ``return_items`` documents)."""
    from harness.eval.registry import evaluate_all

    return evaluate_all(cfg, backbone, device, items)


def write_npz_atomic(arrays: dict, path: str) -> None:
    """``np.savez_compressed`` written atomically (:func:`harness.core.atomic.write_npz_atomic`; kept importable
    here)."""
    from harness.core.atomic import write_npz_atomic as write

    write(arrays, path)


def run(cfg: RunConfig, _run=None) -> dict:
    """Train and/or evaluate as the config says; returns the result document (also written to ``cfg.result``).

    Under torchrun every rank trains its shard; only rank 0 writes (checkpoint, train state, result, metrics, the
    Sacred run) and evaluates; the other ranks return a document with their train info and no results."""
    from harness.engine import distributed, release
    from harness.engine.train import train
    from harness.models.build import build_model, resolve_device
    from methods import resolve_hparams

    ctx = distributed.current()
    log = (lambda name, value, step: _run.log_scalar(name, float(value), step)) if _run is not None else None
    hparams = resolve_hparams(cfg.method, cfg.hparams_seed, cfg.hparams)
    device = str(resolve_device(cfg.device))
    train_info: dict[str, Any] = {}
    if not ctx.is_main:  # a worker rank: train its shard, write and evaluate nothing
        if cfg.train:
            train_info = train(cfg, checkpoint_path=cfg.checkpoint or None, log=None, progress=False).info
        return {
            "format": RESULT_FORMAT,
            "method": cfg.method,
            "seed": cfg.seed,
            "rank": ctx.rank,
            "train": train_info,
            "results": [],
        }
    # A model trained without `checkpoint=` goes to a temporary folder that is kept (named on stderr; the Sacred run
    # records its path); nothing else of a run is left in the temporary folders.
    model_dir = tempfile.mkdtemp(prefix="cfsm-run-") if cfg.train and not cfg.checkpoint else None
    ckpt = cfg.checkpoint or os.path.join(model_dir, "model.pt")
    if cfg.train:
        try:
            result = train(cfg, checkpoint_path=ckpt, log=log, progress=True)  # tqdm on a tty, else plain lines
        except BaseException:
            if model_dir:  # a failed run leaves no empty folder behind (a train state in it is kept)
                with contextlib.suppress(OSError):
                    os.rmdir(model_dir)
            raise
        backbone = result.backbone
        train_info = dict(result.info)
        if _run is not None:  # the checkpoint is recorded by path and hash, not copied into the run folder
            _run.info["checkpoint"] = {"path": os.path.abspath(ckpt), "sha256": file_sha256(ckpt)}
            _run.info["train"] = train_info
    else:
        if not cfg.checkpoint or not os.path.isfile(cfg.checkpoint):
            raise FileNotFoundError(
                f"{cfg.checkpoint or '<empty>'}: checkpoint not found (train=false needs checkpoint=PATH)"
            )
        state = load_checkpoint(cfg.checkpoint)
        backbone, _ = build_model(cfg, state["num_classes"])
        backbone.load_state_dict(state["backbone"])
        if _run is not None:
            _run.info["checkpoint"] = {"path": os.path.abspath(cfg.checkpoint), "sha256": file_sha256(cfg.checkpoint)}
        train_info = {"checkpoint": cfg.checkpoint, **state.get("train_info", {})}
    doc: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "method": cfg.method,
        "seed": cfg.seed,
        "hparams_seed": cfg.hparams_seed,
        "hparams": hparams,
        "train": train_info,
        "knobs": result_knobs(cfg),  # run-level facts; each row's protocol knobs are its evaluator's
        "data": data_provenance(cfg.data.release, cfg.data.rec, cfg.eval.benchmarks if cfg.evaluate else ()),
        # vs CFSM's released recipe, at the world size and device it was trained with (a checkpoint's when train=false)
        "deviations": release.deviations(
            cfg,
            hparams,
            world_size=train_info.get("world_size", ctx.world_size),
            device=train_info.get("device", device),
        ),
        "config": cfg.to_dict(),
        "host": {
            "device": device,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        },
        "results": [],
    }
    items: dict | None = {} if cfg.result else None  # per-item arrays, saved next to the result document
    if cfg.evaluate:
        rows = evaluate_model(cfg, backbone, device, items)
        for row in rows:
            row["knobs"] = {**result_knobs(cfg), **row.get("knobs", {})}  # the evaluator's knobs win, always
        doc["results"] = rows
        if log is not None:
            for bench, values in compact_metrics(doc).items():
                for key, value in values.items():
                    if value is not None and bench != "train":
                        log(f"{bench.replace('-', '').replace(' ', '').lower()}.{key}", value, 0)
    if cfg.result or model_dir:
        _write_result(cfg, doc, cfg.result or os.path.join(model_dir, "result.json"), items, _run)
    else:  # the result goes to the Sacred run (and `metrics=`) only: staged in a folder removed afterwards
        with tempfile.TemporaryDirectory(prefix="cfsm-run-") as tmp:
            _write_result(cfg, doc, os.path.join(tmp, "result.json"), items, _run)
    if model_dir:
        print(f"harness.run: no checkpoint= given; the model is {ckpt}", file=sys.stderr)
    return doc


def _write_result(cfg: RunConfig, doc: dict, path: str, items: dict | None, _run) -> None:
    """The result document (and its per-item arrays) at ``path``, the compact metrics at ``cfg.metrics``, and both
    as artifacts of the Sacred run."""
    for target in (path, cfg.metrics):
        if target:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if items:  # first, so the result document never names a file that is not there
        write_npz_atomic(items, items_path(path))
        doc["items"] = os.path.basename(items_path(path))
    write_json_atomic(doc, path)
    if cfg.metrics:
        write_json_atomic(compact_metrics(doc), cfg.metrics)
    if _run is not None:
        _run.add_artifact(path, "result.json")
        if items:
            _run.add_artifact(items_path(path), os.path.basename(items_path(path)))
        _run.info["result"] = compact_metrics(doc)
        _run.info["deviations"] = doc["deviations"]


def main(argv: list[str] | None = None) -> int:
    """The command line; under ``torchrun --nproc_per_node N -m harness.run ...`` every rank runs this, rank 0 with
    Sacred, the others without (see :mod:`harness.engine.distributed`)."""
    from harness.core.runtime import report_error
    from harness.engine import distributed

    argv = sys.argv[1:] if argv is None else argv
    try:
        env = distributed.env_context() if "WORLD_SIZE" in os.environ else distributed.DistContext()
    except ValueError as exc:
        return report_error("harness.run", exc)
    try:
        cfg = make_config(argv)
        from harness.models.build import check_device
        from methods import get_method, resolve_hparams

        check_device(cfg.device)  # `device=cuda` without CUDA: one line before Sacred or any training starts

        if cfg.train:  # e.g. a CFSM method whose stage-1 generator is missing: say so before anything starts
            get_method(cfg.method).preflight(resolve_hparams(cfg.method, cfg.hparams_seed, cfg.hparams))
            if cfg.resume not in ("auto", "none", ""):  # resume=PATH: a missing or mismatching state fails here
                from harness.engine.train import resolve_resume

                resolve_resume(cfg, None, env.world_size)
        else:
            resolve_hparams(cfg.method, cfg.hparams_seed, cfg.hparams)
            if not cfg.checkpoint or not os.path.isfile(cfg.checkpoint):
                raise FileNotFoundError(
                    f"config checkpoint={cfg.checkpoint!r}: no such file (train=false evaluates "
                    "the checkpoint it names)"
                )
        if (cfg.train or cfg.evaluate) and not os.path.isdir(cfg.data.release):
            raise FileNotFoundError(
                f"config data.release={cfg.data.release!r}: no such folder (a SynthFace or "
                "insightface release; `python -m harness.synthface` makes one)"
            )
    except Exception as exc:  # noqa: BLE001 - every error is one line (CFSM_TRACEBACK=1 shows the traceback)
        if env.is_main:
            return report_error("harness.run", exc)
        return 2

    # Everything after the first checks: one line on rank 0, exit 2; worker ranks exit 2 without a word (rank 0
    # names the error; a worker's own error, e.g. a collective that lost rank 0, is said once, on one line).
    try:
        ctx = distributed.init_from_env(cfg.device)
    except Exception as exc:  # noqa: BLE001
        return report_error("harness.run", exc) if env.is_main else 2
    try:
        if not ctx.is_main:
            try:
                run(cfg, None)
            except Exception as exc:  # noqa: BLE001
                if os.environ.get("CFSM_TRACEBACK"):
                    report_error(f"harness.run (rank {ctx.rank})", exc)
                return 2
            return 0
        try:
            return _main_rank0(cfg)
        except Exception as exc:  # noqa: BLE001
            return report_error("harness.run", exc)
    finally:
        try:
            distributed.shutdown()
        except Exception:  # noqa: BLE001 - a group already broken by the error above
            pass


def _main_rank0(cfg: RunConfig) -> int:
    from harness.core.runtime import quiet_sacred_failures, sacred_experiment

    ex = sacred_experiment("cfsm-bench", cfg.out, cfg.to_dict())
    quiet_sacred_failures(ex)

    documents: list[dict] = []

    @ex.main
    def _main(_run):
        documents.append(run(cfg, _run))
        # Sacred logs the return value: keep it to the headline numbers (the full document is an artifact).
        return {k: v for k, v in compact_metrics(documents[0]).items() if k != "train"}

    ex.run(options={"--name": f"{cfg.method}-s{cfg.seed}"})
    doc = documents[0]
    for bench, values in compact_metrics(doc).items():
        if bench == "train":
            continue
        headline = {
            k: v
            for k, v in values.items()
            if v is not None and not k.startswith(("stills_only", "with_video", "open_set"))
        }
        shown = "  ".join(f"{k}: {100 * v:.2f}" for k, v in headline.items())
        print(f"{doc['method']} seed {doc['seed']} {bench}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
