"""One prepared check of the paper path on a CUDA machine: one table (printed, and written as JSON), under 8 minutes.

    python benchmarks/gpu_check.py [--out gpu_check.json]     # CUDA: the paper sizes below
    python benchmarks/gpu_check.py --tiny                     # CPU, about a minute: the same code on toy sizes (CI)

Rows (paper sizes; ``--tiny`` in brackets):

1. ``step``: IR-50 at 112 px with AMP, batch 256 [small backbone, 32 px, batch 4, fp32 on the CPU], 50 timed steps
   [2] after 3 warm-up steps [0] each of ``source_only`` and ``cfsm_guided`` (``synthesize=all``, the released
   behaviour, with a randomly initialised paper-size generator [a 32 px one]): images/s, the ratio to
   ``source_only`` and peak GPU memory. One step is the trainer's own (:class:`harness.engine.train.TrainStep`, through
   ``benchmarks/train_throughput.py``'s :class:`Stepper`: random batch on the device, no data loading).
2. ``torchrun``: the real trainer, ``torchrun --standalone --nproc_per_node 1 -m harness.run``, on a RecordIO of
   random 112 px JPEGs [32 px] written for the check (10 x batch images, 256 classes [20, 10]), the same
   model, AMP, batch and 50 steps [2] per method: images/s and peak GPU memory from the run's train info (decoding,
   host-to-device copies and the process group included).
3. ``stage1``: CFSM stage 1 (:func:`harness.cfsm.train.run_stage1`) at the released size, 112 px / dim 64 / 3 x 4
   discriminator, batch 32, 100 iterations [32 px / dim 8 / 2 x 3, batch 2, 3 iterations] on a tiny SynthFace
   release written at 112 px [64 px], with a randomly initialised identity network (IR-50 [small]): it/s.
4. ``evaluate``: :func:`harness.run.evaluate_model` of a randomly initialised r50 [small] on that SynthFace release
   (IJB-B, IJB-C, IJB-S, TinyFace; flip on): aligned faces per second (each face counted once, IJB-B/C rows,
   present IJB-S frames, TinyFace probe + gallery).

Each row says what it ran. A row that fails is reported with its one-line error, the others still run, and the
exit status is 1. Everything is written under a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from train_throughput import PAPER_MODEL, Stepper  # noqa: E402

from harness.core.atomic import write_json_atomic  # noqa: E402
from harness.core.config import RunConfig, apply_overrides  # noqa: E402
from harness.models.build import build_model  # noqa: E402
from harness.models.cfsm import PAPER, CFSMConfig, CFSMGenerator, save_generator  # noqa: E402

METHODS = ("source_only", "cfsm_guided")


@dataclass(frozen=True)
class Sizes:
    """What each row runs at (the paper sizes, or ``--tiny``)."""

    model: dict  # RunConfig overrides of the FR model
    generator: CFSMConfig  # stage-2 generator (random weights)
    amp: str  # "on" | "off"
    batch: int
    steps: int
    warmup: int
    num_classes: int
    rec_images: int
    rec_classes: int
    stage1_model: dict
    stage1_batch: int
    stage1_iterations: int
    synthface: dict  # --set overrides of the SynthFace tiny release
    eval_batch: int


PAPER_SIZES = Sizes(
    model=dict(PAPER_MODEL),
    generator=PAPER,
    amp="on",
    batch=256,
    steps=50,
    warmup=3,
    num_classes=1000,
    rec_images=2560,
    rec_classes=256,
    stage1_model={},
    stage1_batch=32,
    stage1_iterations=100,
    synthface={"aligned_size": 112, "loose_size": 144},
    eval_batch=512,
)
TINY_SIZES = Sizes(
    model={
        "model.backbone": "small",
        "model.widths": "[8, 16, 32, 64]",
        "model.layers": "[1, 1, 1, 1]",
        "model.stem_stride": "1",
        "model.embedding_size": "32",
        "data.input_size": "32",
    },
    generator=CFSMConfig(image_size=32, dim=8, mlp_dim=32, d_scales=2, d_layers=3),
    amp="off",
    batch=4,
    steps=2,
    warmup=0,
    num_classes=10,
    rec_images=20,
    rec_classes=10,
    stage1_model={"image_size": 32, "dim": 8, "mlp_dim": 32, "d_scales": 2, "d_layers": 3, "d_base": 8},
    stage1_batch=2,
    stage1_iterations=3,
    synthface={},
    eval_batch=64,
)


def run_config(sizes: Sizes, extra: dict | None = None) -> RunConfig:
    return apply_overrides(
        RunConfig(), {**sizes.model, "optim.batch_size": str(sizes.batch), "amp": sizes.amp, **(extra or {})}
    )


def random_generator(sizes: Sizes, tmp: str) -> dict:
    """A randomly initialised generator file and the cfsm_guided hyperparameters loading it (synthesize all)."""
    path = os.path.join(tmp, "generator.pt")
    if not os.path.isfile(path):
        torch.manual_seed(0)
        save_generator(path, CFSMGenerator(sizes.generator))
    g = sizes.generator
    return {
        "generator": path,
        "generator_size": g.image_size,
        "style_dim": g.style_dim,
        "latent_dim": g.latent_dim,
        "synthesize": "all",
    }


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------------------- rows
def step_rows(sizes: Sizes, device: torch.device, tmp: str) -> list[dict]:
    """Row 1: the training step alone (train_throughput's Stepper), per method."""
    cfg = run_config(sizes)
    amp = sizes.amp == "on"
    torch.manual_seed(0)
    backbone, head = build_model(cfg, sizes.num_classes, amp=amp)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(device).to(memory_format=fmt), head.to(device)
    S, B = cfg.data.input_size, sizes.batch
    x = (torch.rand(B, 3, S, S, device=device) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.randint(0, sizes.num_classes, (B,), device=device)
    hp = random_generator(sizes, tmp)
    rows = []
    for name in METHODS:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        s = Stepper(name, cfg, backbone, head, sizes.num_classes, device, amp, hp if name.startswith("cfsm_") else None)
        for r in range(sizes.warmup + sizes.steps):
            dt = s.step(x, y, x, step=r + 1)
            if r >= sizes.warmup:
                s.times.append(dt)
        med = statistics.median(s.times)
        rows.append(
            {
                "row": "step",
                "method": name,
                "images_per_second": round(B / med, 1),
                "peak_gpu_mib": _peak_mib(device),
                "steps": sizes.steps,
                "batch": B,
            }
        )
        del s
    return rows


def write_toy_rec(folder: str, images: int, classes: int, size: int) -> str:
    """A release folder with ``faces_toy/`` (insightface RecordIO) of random JPEGs, ``images`` over ``classes``
    (``images // classes`` each)."""
    if images % classes:
        raise ValueError(f"{images} images do not split evenly over {classes} classes")
    import numpy as np

    from harness.data.images import encode_jpeg
    from harness.data.recordio import write_face_rec

    rng = np.random.default_rng(0)

    def samples():  # grouped by class, ascending (the RecordIO writer's order)
        for c in range(classes):
            for _ in range(images // classes):
                yield c, encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))

    write_face_rec(os.path.join(folder, "faces_toy"), samples(), num_classes=classes, image_size=(size, size))
    return folder


def torchrun_rows(sizes: Sizes, device: torch.device, tmp: str) -> list[dict]:
    """Row 2: the real trainer under torchrun (1 process), reading a RecordIO; numbers from its train info."""
    cfg = run_config(sizes)
    release = write_toy_rec(os.path.join(tmp, "toy_release"), sizes.rec_images, sizes.rec_classes, cfg.data.input_size)
    epochs = sizes.steps * sizes.batch / sizes.rec_images
    hp = random_generator(sizes, tmp)
    rows = []
    for name in METHODS:
        result = os.path.join(tmp, f"torchrun-{name}.json")
        args = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            "-m",
            "harness.run",
            f"method={name}",
            "evaluate=false",
            "seed=0",
            f"device={device.type}",
            f"amp={sizes.amp}",
            f"data.release={release}",
            "data.rec=faces_toy",
            "data.cache=false",
            f"optim.batch_size={sizes.batch}",
            f"optim.epochs={epochs}",
            "optim.warmup_epochs=0",
            "out=",
            "resume=none",
            f"checkpoint={os.path.join(tmp, f'torchrun-{name}.pt')}",
            f"result={result}",
            "log_every=1000",
        ] + [f"{k}={v}" for k, v in sizes.model.items()]
        if name.startswith("cfsm_"):
            args += [f"hparams.{k}={v}" for k, v in hp.items() if k in ("generator", "generator_size", "synthesize")]
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-3:]
            raise RuntimeError(f"torchrun {name} exited {proc.returncode}: {' | '.join(tail)}")
        with open(result, encoding="utf-8") as f:
            info = json.load(f)["train"]
        rows.append(
            {
                "row": "torchrun",
                "method": name,
                "images_per_second": info["images_per_second"],
                "peak_gpu_mib": info.get("peak_gpu_memory_mib"),
                "steps": info["steps"],
                "batch": sizes.batch,
                "world_size": info["world_size"],
                "device": info["device"],
            }
        )
    return rows


def synthface_release(sizes: Sizes, tmp: str) -> str:
    from harness.synthface.generate import config_for, generate

    out = os.path.join(tmp, "synthface")
    if not os.path.isdir(out):
        generate(config_for("tiny", seed=0, **sizes.synthface), out, log=lambda *_: None)
    return out


def identity_checkpoint(sizes: Sizes, tmp: str) -> str:
    """A randomly initialised FR model in the harness.run checkpoint layout (stage 1's identity network)."""
    cfg = run_config(sizes)
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, sizes.num_classes)
    path = os.path.join(tmp, "identity.pt")
    torch.save({"backbone": backbone.state_dict(), "config": cfg.to_dict(), "num_classes": sizes.num_classes}, path)
    return path


def stage1_rows(sizes: Sizes, device: torch.device, tmp: str) -> list[dict]:
    """Row 3: stage 1 at the released size, on the SynthFace release."""
    from harness.cfsm.train import Stage1Config, run_stage1
    from harness.core.config import from_dict

    release = synthface_release(sizes, tmp)
    base = Stage1Config().to_dict()
    base.update(
        device=device.type,
        identity=identity_checkpoint(sizes, tmp),
        out=os.path.join(tmp, "stage1"),
        figures=os.path.join(tmp, "stage1", "figures"),
        sacred="",
        log_every=1000,
        checkpoint_every=10**9,
        resume=False,
    )
    base["data"].update(release=release, rec="faces_synthface")
    base["model"].update(sizes.stage1_model)
    base["train"].update(batch_size=sizes.stage1_batch, iterations=sizes.stage1_iterations)
    base["analysis"].update(holdout_target=8, pairs=8, batch_size=16)
    cfg = from_dict(base, Stage1Config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    doc = run_stage1(cfg)
    seconds = doc["train"]["seconds"]
    m = cfg.model
    return [
        {
            "row": "stage1",
            "method": f"{m.image_size} px / dim {m.dim} / D {m.d_scales}x{m.d_layers}",
            "iterations_per_second": round(doc["train"]["steps"] / seconds, 2),
            "batch": sizes.stage1_batch,
            "steps": doc["train"]["steps"],
            "peak_gpu_mib": _peak_mib(device),
        }
    ]


def count_faces(release: str) -> int:
    """Aligned faces the evaluation reads, each once: IJB-B/C rows, present IJB-S frames, TinyFace probe + gallery."""
    from harness.data.ijbs import image_list, read_ijbs
    from harness.data.tinyface import read_tinyface

    n = 0
    for t in ("IJBB", "IJBC"):
        with open(
            os.path.join(release, "IJB_release", t, "meta", f"{t.lower()}_name_5pts_score.txt"), encoding="utf-8"
        ) as f:
            n += sum(1 for line in f if line.strip())
    n += len(image_list(read_ijbs(os.path.join(release, "IJB-S")), os.path.join(release, "IJB-S", "aligned"))[0])
    tf = read_tinyface(release, check_mat_files=False)
    return n + len(tf.probe_paths) + len(tf.gallery_paths)


def evaluate_rows(sizes: Sizes, device: torch.device, tmp: str) -> list[dict]:
    """Row 4: the four benchmarks on the SynthFace release with a random FR model."""
    from harness.run import evaluate_model

    release = synthface_release(sizes, tmp)
    cfg = run_config(sizes, {"data.release": release, "eval.batch_size": str(sizes.eval_batch)})
    torch.manual_seed(0)
    backbone, _ = build_model(cfg, sizes.num_classes)
    backbone.to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rows = evaluate_model(cfg, backbone, str(device))
    seconds = time.perf_counter() - t0
    faces = count_faces(release)
    return [
        {
            "row": "evaluate",
            "method": f"{cfg.model.backbone}, {len(rows)} rows of IJB-B/C, IJB-S, TinyFace",
            "images_per_second": round(faces / seconds, 1),
            "faces": faces,
            "seconds": round(seconds, 2),
            "peak_gpu_mib": _peak_mib(device),
        }
    ]


# ----------------------------------------------------------------------------------------------------- table
def table(rows: list[dict]) -> str:
    base = {
        r["row"]: r["images_per_second"] for r in rows if r.get("method") == "source_only" and "images_per_second" in r
    }
    head = f"{'row':<9} {'what':<44} {'rate':>16} {'x source_only':>14} {'peak GPU MiB':>13}"
    out = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            out.append(f"{r['row']:<9} FAILED: {r['error']}")
            continue
        if "iterations_per_second" in r:
            rate = f"{r['iterations_per_second']:.2f} it/s"
        else:
            rate = f"{r['images_per_second']:.1f} img/s"
        ratio = ""
        if r["row"] in base and "images_per_second" in r and r["method"] in METHODS:
            ratio = f"{base[r['row']] / r['images_per_second']:.2f}"
        peak = "" if r.get("peak_gpu_mib") is None else f"{r['peak_gpu_mib']:.0f}"
        out.append(f"{r['row']:<9} {r['method']:<44} {rate:>16} {ratio:>14} {peak:>13}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (about a minute): what the test runs")
    ap.add_argument("--out", default="gpu_check.json", help="the table as JSON (written atomically)")
    ap.add_argument("--rows", default="step,torchrun,stage1,evaluate", help="comma-separated subset of the rows")
    args = ap.parse_args(argv)
    sizes = TINY_SIZES if args.tiny else PAPER_SIZES
    if args.tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    else:
        print("gpu_check: CUDA is not available (use --tiny for the CPU check)", file=sys.stderr)
        return 2
    funcs = {"step": step_rows, "torchrun": torchrun_rows, "stage1": stage1_rows, "evaluate": evaluate_rows}
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in funcs]
    if unknown:
        print(f"gpu_check: unknown row(s) {unknown}; valid: {', '.join(funcs)}", file=sys.stderr)
        return 2
    where = (
        f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    t_all = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cfsm_gpu_check_") as tmp:
        for name in wanted:
            t0 = time.perf_counter()
            try:
                new = funcs[name](sizes, device, tmp)
            except Exception as exc:  # noqa: BLE001 -- one line per failed row; the other rows still run
                new = [{"row": name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}]
            for r in new:
                r["row_seconds"] = round(time.perf_counter() - t0, 1)
            rows += new
    doc = {
        "device": where,
        "torch": torch.__version__,
        "tiny": args.tiny,
        "sizes": {
            "model": sizes.model,
            "amp": sizes.amp,
            "batch": sizes.batch,
            "steps": sizes.steps,
            "warmup": sizes.warmup,
            "stage1": {**sizes.stage1_model, "batch": sizes.stage1_batch, "iterations": sizes.stage1_iterations},
        },
        "rows": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    print(f"gpu_check on {where}, torch {torch.__version__}{' (--tiny)' if args.tiny else ''}: {doc['seconds']:.0f} s")
    print(table(rows))
    write_json_atomic(doc, args.out)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
