"""Time one full training step of ``cfsm_guided`` and ``cfsm_random`` relative to ``source_only``, and break the
guided overhead into its pieces.

A step is the trainer's own (:class:`harness.engine.train.TrainStep`, through ``train_throughput.Stepper``):
``method.augment`` + ``method.loss`` + ``zero_grad`` + ``backward`` + gradient-norm clipping over
``optim.grad_clip_scope`` + the optimiser step, at a fixed learning rate of 0.01 (float32 on the CPU, no AMP).
All methods run in one process on the same batch (``optim.batch_size`` = 128 random images,
``data.input_size`` = 64 px, channels_last) and the default model of :class:`harness.core.config.RunConfig` (small
IResNet, ArcFace head, 1000 classes as SynthFace ``default``), each from the same initial weights. Steps are
interleaved across methods (round-robin) so that a change in machine load hits all of them alike; after warm-up
the median step time is reported.

The stage-1 generator is ``results/stage1/generator.pt`` when it exists (its own image size, q and d), otherwise
a randomly initialised :data:`harness.models.cfsm.CPU_DEFAULT` generator written to a temporary file (the cost
does not depend on the weights). Target: ``cfsm_guided`` <= 1.7x ``source_only``.

    python benchmarks/train_step_overhead.py                 # 2 warm-up + 15 timed steps per method
    python benchmarks/train_step_overhead.py --threads 1 --steps 30
    python benchmarks/train_step_overhead.py --methods all --no-pieces   # every registered method (pipeline budget)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import Stepper  # noqa: E402

from harness.core.atomic import load_torch  # noqa: E402
from harness.core.config import RunConfig  # noqa: E402
from harness.core.runtime import tune_malloc  # noqa: E402
from harness.models.build import build_model  # noqa: E402
from harness.models.cfsm import CPU_DEFAULT, CFSMGenerator, save_generator  # noqa: E402
from methods import REGISTRY  # noqa: E402
from methods.cfsm_guided import decode, encode, fgsm_step, mix_batch, mix_indices, resize  # noqa: E402

TARGET = 1.7
NUM_CLASSES = 1000
METHODS = ("source_only", "cfsm_random", "cfsm_guided")


def generator_hparams(path: str) -> tuple[dict, str]:
    """The method hparams for the generator, and a line saying which one is used."""
    if os.path.isfile(path):
        state = load_torch(path, "stage-1 generator")  # weights_only=True
        c = state["model_config"]
        hp = {
            "generator": path,
            "generator_size": c["image_size"],
            "style_dim": c["style_dim"],
            "latent_dim": c["latent_dim"],
        }
        return hp, f"generator: {path} (trained stage-1 checkpoint, {c['image_size']} px, width {c['dim']})"
    tmp = os.path.join(tempfile.mkdtemp(prefix="cfsm_bench_"), "generator.pt")
    torch.manual_seed(0)
    save_generator(tmp, CFSMGenerator(CPU_DEFAULT))
    hp = {
        "generator": tmp,
        "generator_size": CPU_DEFAULT.image_size,
        "style_dim": CPU_DEFAULT.style_dim,
        "latent_dim": CPU_DEFAULT.latent_dim,
    }
    return hp, (
        f"generator: {path} not found; a randomly initialised CPU_DEFAULT generator "
        f"({CPU_DEFAULT.image_size} px, width {CPU_DEFAULT.dim}) in {tmp}"
    )


def pieces(stepper: Stepper, x: torch.Tensor, y: torch.Tensor, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each part of cfsm_guided's augment (steps = 1), run piece by piece on the same batch."""
    m, fr = stepper.method, stepper.fr
    gen = m._generator_on(x.device)
    size, fmt, B = x.shape[-1], torch.channels_last, x.size(0)
    out: dict[str, list[float]] = {}

    def tick(key, t):
        out.setdefault(key, []).append(time.perf_counter() - t)
        return time.perf_counter()

    for r in range(warmup + repeats):
        t = time.perf_counter()
        real_idx, syn_idx = mix_indices(B, m.rs_ratio)
        o0 = torch.randn(syn_idx.numel(), gen.config.style_dim)
        t = tick("draws (permutations, o0)", t)
        with torch.no_grad():
            content = encode(gen, resize(x[syn_idx], m.generator_size).contiguous())
        t = tick("G: downsample + content encoder", t)
        o = o0.clone().requires_grad_(True)
        img = resize(decode(gen, content, o), size).contiguous(memory_format=fmt)
        t = tick("G: style MLP + decoder (graph) + upsample", t)
        loss = fr.head(fr.raw(img), y[syn_idx])
        t = tick("inner FR forward", t)
        (g_img,) = torch.autograd.grad(loss, [img])
        t = tick("inner FR backward to the image", t)
        (g_o,) = torch.autograd.grad(img, [o], g_img)
        o_adv = fgsm_step(o, o0, g_o, m.alpha, m.eps)
        t = tick("G backward to o + FGSM step", t)
        with torch.no_grad():
            x_syn = resize(decode(gen, content, o_adv), size)
        t = tick("G: final decode + upsample (no grad)", t)
        mix_batch(x, y, x_syn, real_idx, syn_idx)
        tick("mixing", t)
        if r < warmup:
            out.clear()
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    ap.add_argument("--batch-size", type=int, default=RunConfig().optim.batch_size)
    ap.add_argument("--generator", default="results/stage1/generator.pt")
    ap.add_argument("--no-pieces", action="store_true", help="skip the per-piece breakdown")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names, or 'all'")
    args = ap.parse_args(argv)

    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig()
    torch.manual_seed(0)
    backbone, head = build_model(cfg, NUM_CLASSES)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(memory_format=fmt)
    S, B = cfg.data.input_size, args.batch_size
    x = (torch.rand(B, 3, S, S) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (B,))
    hp, gen_line = generator_hparams(args.generator)

    names = sorted(REGISTRY) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    names = ["source_only"] + [n for n in names if n != "source_only"]
    cpu = torch.device("cpu")
    steppers = [
        Stepper(name, cfg, backbone, head, NUM_CLASSES, cpu, False, hp if name.startswith("cfsm_") else None)
        for name in names
    ]
    for r in range(args.warmup + args.steps):
        for s in steppers:
            # an unlabelled batch of the same size; step 0 would run cfsm_guided's monitoring probe; time ordinary
            # steps
            dt = s.step(x, y, x.flip(0), step=r + 1)
            if r >= args.warmup:
                s.times.append(dt)

    med = {s.name: statistics.median(s.times) for s in steppers}
    base = med["source_only"]
    print(
        f"one training step: batch {B}, {S} px channels_last, backbone {cfg.model.backbone} {list(cfg.model.widths)}, "
        f"head {cfg.model.head}, {NUM_CLASSES} classes; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs"
    )
    print(gen_line)
    print(f"median of {args.steps} steps after {args.warmup} warm-up, methods interleaved")
    head_row = f"{'method':<15} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'x source_only':>14}"
    print(head_row)
    print("-" * len(head_row))
    for s in steppers:
        print(
            f"{s.name:<15} {1e3 * med[s.name]:>10.1f} {1e3 * min(s.times):>8.1f} {1e3 * max(s.times):>8.1f} "
            f"{med[s.name] / base:>14.2f}"
        )
    if "cfsm_guided" in med:
        ratio = med["cfsm_guided"] / base
        print(f"target: cfsm_guided <= {TARGET}x source_only: {'met' if ratio <= TARGET else 'NOT met'} ({ratio:.2f}x)")

    if not args.no_pieces and "cfsm_guided" in med:
        guided = next(s for s in steppers if s.name == "cfsm_guided")
        parts = pieces(guided, x, y, args.steps, args.warmup)
        total = sum(parts.values())
        print()
        print(
            f"cfsm_guided augment, piece by piece (steps=1, synthesize={guided.method.synthesize}, "
            f"{mix_indices(B, guided.method.rs_ratio)[1].numel()} synthetic of {B}; medians)"
        )
        head_row = f"{'piece':<44} {'ms':>8} {'% of source_only step':>22}"
        print(head_row)
        print("-" * len(head_row))
        for k, v in parts.items():
            print(f"{k:<44} {1e3 * v:>8.1f} {100 * v / base:>21.1f}%")
        print(f"{'sum':<44} {1e3 * total:>8.1f} {100 * total / base:>21.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
