"""The effect of guidance during ``cfsm_guided`` training, from the scalars its runs logged (issue 20, item 2).

CFSM (Liu, Kim, Jain & Liu, ECCV 2022, arXiv 2207.10180) observes that the adversarially guided syntheses
``G(x, o_adv)`` are less degraded than random ones ``G(x, o0)``, yet more useful for training. Every
``monitor_every`` steps ``methods/cfsm_guided.py`` records (and the trainer logs as ``train.<name>`` into the run's
Sacred ``metrics.json``):

- ``cfsm.o0_norm.*`` / ``cfsm.oadv_norm.*``: the distribution of ``||o||`` before and after the FGSM step
  (:func:`methods.guidance.norm_summary`: mean, std, min, max, q10, q50, q90 over the batch);
- ``cfsm.probe_loss_o0`` / ``cfsm.probe_loss_adv``: the FR loss at ``o0`` and at ``o_adv``, in eval mode;
- ``cfsm.probe_l1_o0`` / ``cfsm.probe_l1_adv``: the mean ``|G(x, o) - x|`` (pixels in [-1, 1]): how far the
  synthesis moved from its source face.

:func:`summarise` reduces each run to the means of these over its logged monitor steps and two shares of monitor
steps: ``less_degraded`` (``probe_l1_adv < probe_l1_o0``) and ``harder`` (``probe_loss_adv > probe_loss_o0``);
``over_seeds`` is the mean of the per-run values. :func:`curves_png` draws them against the training step.
"""

from __future__ import annotations

import os
from typing import Any

from harness.core.errors import DataFormatError
from harness.core.figures import png_bytes
from harness.core.runtime import store_kind
from harness.report.runstore import file_run_metrics, list_runs

CURVES_FORMAT = "cfsm-guidance-curves/1"
PREFIX = "train.cfsm."
NORM_STATS = ("mean", "std", "min", "max", "q10", "q50", "q90")
PROBES = ("probe_loss_o0", "probe_loss_adv", "probe_l1_o0", "probe_l1_adv")
#: every logged quantity a run must hold (without the ``train.cfsm.`` prefix)
QUANTITIES = tuple(f"{c}_norm.{s}" for c in ("o0", "oadv") for s in NORM_STATS) + PROBES
DPI = 120


def guidance_runs(
    store: str, method: str = "cfsm_guided", statuses: tuple[str, ...] | None = ("COMPLETED",)
) -> tuple[list[dict], list[dict]]:
    """``(runs, skipped)``: every run of ``method`` in the FileStorage run store ``store`` whose Sacred status is in
    ``statuses`` (None: any status), by seed then run id, as ``{"id", "seed", "release", "steps", "series"}`` with
    ``series[quantity]`` the values at ``steps`` (the logged steps that hold every quantity); ``skipped``: the runs
    of ``method`` left out for their status (``{"run", "seed", "status"}``). One-line errors: no such run, a run
    without a guidance scalar (naming its ``metrics.json`` and the key)."""
    if store_kind(store) != "file":
        raise ValueError(f"{store}: the guidance curves read a FileStorage run folder (metrics.json), not a database")
    every = list_runs(store)  # by run id
    rows = [r for r in every if r["method"] == method]
    skipped = [
        {"run": r["id"], "seed": r["seed"], "status": r["status"], "reason": f"status {r['status']}"}
        for r in rows
        if statuses is not None and r["status"] not in statuses
    ]
    rows = [r for r in rows if statuses is None or r["status"] in statuses]
    # an evaluation-only run (train=false: the pipeline's evaluate stages) logged no training scalar
    evaluation_only = [r for r in rows if not r["train"]]
    skipped += [
        {"run": r["id"], "seed": r["seed"], "status": r["status"], "reason": "evaluation only (train=false)"}
        for r in evaluation_only
    ]
    rows = [r for r in rows if r not in evaluation_only]
    if not rows:
        found = sorted({str(r["method"]) for r in every})
        status = f" with status {'/'.join(statuses)}" if statuses is not None else ""
        raise ValueError(
            f"{store}: no run of method {method!r}{status} (methods found: {', '.join(found) or 'none'}"
            f"{f'; {len(skipped)} {method} run(s) of another status' if skipped else ''})"
        )
    rows.sort(key=lambda r: r["seed"] if isinstance(r["seed"], int) else 0)  # stable: run id within a seed
    runs = []
    for row in rows:
        path = os.path.join(store, row["id"], "metrics.json")
        metrics = file_run_metrics(store, row["id"])
        for q in QUANTITIES:
            if PREFIX + q not in metrics:
                raise DataFormatError(
                    path,
                    PREFIX + q,
                    "missing: not a cfsm_guided run that logged its guidance statistics "
                    "(hparams.monitor_every > 0, steps > 0; logged at the steps that are multiples of log_every)",
                )
        steps = sorted(set.intersection(*(set(metrics[PREFIX + q]) for q in QUANTITIES)))
        if not steps:
            raise DataFormatError(path, PREFIX + "probe_loss_o0", "no logged step holds every guidance scalar")
        runs.append(
            {
                "id": row["id"],
                "seed": row["seed"],
                "release": row["release"],
                "steps": steps,
                "series": {q: [metrics[PREFIX + q][s] for s in steps] for q in QUANTITIES},
            }
        )
    return runs, skipped


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def summarise(
    runs: list[dict], store: str = "", method: str = "cfsm_guided", skipped: list[dict] | None = None
) -> dict[str, Any]:
    """The JSON summary (module docstring): per run, and the mean over runs (seeds); ``skipped`` as
    :func:`guidance_runs` returns it."""
    per_run = []
    for r in runs:
        s = r["series"]
        n = len(r["steps"])
        per_run.append(
            {
                "run": r["id"],
                "seed": r["seed"],
                "monitor_steps": n,
                "first_step": r["steps"][0],
                "last_step": r["steps"][-1],
                "means": {q: _mean(s[q]) for q in QUANTITIES},
                "less_degraded": sum(a < b for a, b in zip(s["probe_l1_adv"], s["probe_l1_o0"])) / n,
                "harder": sum(a > b for a, b in zip(s["probe_loss_adv"], s["probe_loss_o0"])) / n,
            }
        )
    return {
        "format": CURVES_FORMAT,
        "store": store,
        "method": method,
        "definitions": {
            "means": "mean over the run's logged monitor steps of train.cfsm.<quantity>",
            "less_degraded": "share of monitor steps with probe_l1_adv < probe_l1_o0 (mean |G(x,o) - x|)",
            "harder": "share of monitor steps with probe_loss_adv > probe_loss_o0 (FR loss, eval mode)",
            "over_seeds": "mean over runs of the per-run values",
        },
        "runs": per_run,
        "skipped": skipped or [],
        "over_seeds": {
            "n_runs": len(per_run),
            "seeds": [r["seed"] for r in per_run],
            "means": {q: _mean(r["means"][q] for r in per_run) for q in QUANTITIES},
            "less_degraded": _mean(r["less_degraded"] for r in per_run),
            "harder": _mean(r["harder"] for r in per_run),
        },
    }


def _over_seeds(runs: list[dict], quantity: str) -> tuple[list[int], list[float]]:
    """The mean over runs at the steps every run logged."""
    common = sorted(set.intersection(*(set(r["steps"]) for r in runs)))
    at = [dict(zip(r["steps"], r["series"][quantity])) for r in runs]
    return common, [_mean(a[s] for a in at) for s in common]


def curves_png(runs: list[dict], method: str = "cfsm_guided") -> bytes:
    """Three panels against the training step, random ``o0`` (grey-blue) vs guided ``o_adv`` (red): (a) ``||o||``
    median with the q10-q90 band, (b) the FR probe loss, (c) the L1 distance of the synthesis from its source. Thin
    lines: each run; thick: the mean over runs (with one run, that run)."""
    from matplotlib.figure import Figure

    colours = {"o0": "tab:blue", "adv": "tab:red"}
    names = {"o0": "random o0", "adv": "guided o_adv"}
    fig = Figure(figsize=(13.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 3)
    ax = axes[0]
    for tag, norm in (("o0", "o0_norm"), ("adv", "oadv_norm")):
        steps, med = _over_seeds(runs, f"{norm}.q50")
        _, lo = _over_seeds(runs, f"{norm}.q10")
        _, hi = _over_seeds(runs, f"{norm}.q90")
        ax.fill_between(steps, lo, hi, color=colours[tag], alpha=0.2, linewidth=0)
        ax.plot(steps, med, color=colours[tag], linewidth=2, label=f"{names[tag]}: median, q10-q90")
    ax.set_title("(a) ||o|| per sample")
    ax.set_ylabel("||o||")
    for ax, (title, ylabel, key) in zip(
        axes[1:],
        (
            ("(b) FR loss on the syntheses (eval mode)", "margin loss", "probe_loss"),
            ("(c) distance from the source face", "mean |G(x, o) - x|", "probe_l1"),
        ),
    ):
        for tag in ("o0", "adv"):
            q = f"{key}_{tag}"
            if len(runs) > 1:
                for r in runs:
                    ax.plot(r["steps"], r["series"][q], color=colours[tag], linewidth=0.8, alpha=0.35)
            steps, mean = _over_seeds(runs, q)
            ax.plot(steps, mean, color=colours[tag], linewidth=2, label=names[tag])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    seeds = ", ".join(str(r["seed"]) for r in runs)
    release = {os.path.basename(os.path.normpath(r["release"])) for r in runs if r["release"]}
    data = f" on {', '.join(sorted(release))}" if release else ""
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{method}{data}: random vs guided style coefficients "
        f"({len(runs)} run{'s' if len(runs) > 1 else ''}, seed {seeds}; thick = mean over runs)",
        fontsize=10,
    )
    return png_bytes(fig, DPI)
