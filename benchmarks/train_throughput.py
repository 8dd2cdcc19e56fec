"""Training throughput (images/s) of the paper backbone, IR-50 at 112 px, with every registered method.

One training step is the trainer's own (:class:`harness.engine.train.TrainStep`, through :class:`Stepper`):
``method.augment`` + ``method.loss`` with no autocast around them (under AMP the backbone autocasts its own
trunk), ``zero_grad``, scaled ``backward``, ``unscale_``, gradient-norm clipping (5) over ``optim.grad_clip_scope``
(the backbone's gradients, as released), the optimiser and GradScaler step (SGD, momentum 0.9, weight decay
5e-4; ``GradScaler(growth_interval=100)`` on CUDA) and ``loss.item()``, at a fixed learning rate of 0.01. The
model is the paper profile of CFSM's released stage 2 (``GuidedFaceRecognition``, insightface ``arcface_torch``
``iresnet50``): IResNet layers [3, 4, 14, 3], widths 64-128-256-512, stem stride 1, 112 x 112 input, 512-d
embedding, ArcFace head (``--num-classes``), built by :func:`harness.models.build.build_model` from a
:class:`harness.core.config.RunConfig`, channels_last as the trainer's default. The batch is random data already on
the device (decoding and host-to-device copies are not timed).
Every method starts from the same initial weights; each runs ``--warmup`` untimed steps (3 on CUDA, for cuDNN's
autotuner and the allocator; none on the CPU, where a step takes seconds and its one-off costs are small) and
``--steps`` timed ones; the table gives the median, min and max step time and ``batch / median`` images/s for one
process (under torchrun the global rate is about N times that).

CFSM methods (``cfsm_guided``, ``cfsm_random``) need a stage-1 generator: ``--generator random`` (default) builds a
randomly initialised paper-size generator (:data:`harness.models.cfsm.PAPER`: 112 px, width 64, q 10, d 128;
the cost does not depend on the weights) in a temporary file; ``--generator PATH`` loads a trained one;
``--generator none`` skips them with a note. Domain-adaptation methods get a random target batch of the same size.

AMP: ``--amp auto`` is on for CUDA, off on the CPU, as the trainer's ``amp=auto``. Under AMP the model is built
as the trainer builds it (``build_model(amp=True)``: the IResNet trunk under autocast, as insightface's
``iresnet(fp16=True)``; nothing else is); ``--no-trunk-fp16`` keeps the trunk in float32 too (only the GradScaler
is left) to see what half precision buys.

    python benchmarks/train_throughput.py                                  # CUDA + AMP if available, else CPU
    python benchmarks/train_throughput.py --methods source_only,cfsm_guided --steps 2 --batch-size 8   # CPU, < 2 min
    python benchmarks/train_throughput.py --device cuda --batch-size 128 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.core.atomic import load_torch  # noqa: E402
from harness.core.config import RunConfig, apply_overrides  # noqa: E402
from harness.core.runtime import tune_malloc  # noqa: E402
from harness.engine.train import TrainStep, build_optimizer, build_scaler, set_lr  # noqa: E402
from harness.models.build import build_model  # noqa: E402
from harness.models.cfsm import PAPER, CFSMGenerator, save_generator  # noqa: E402
from methods import REGISTRY, Batch, FRModel, build_method  # noqa: E402

LR = 0.01  # the timed steps' learning rate (the trainer's schedule starts at 0 in warm-up)
PAPER_MODEL = {
    "model.backbone": "r50",
    "data.input_size": "112",
    "model.embedding_size": "512",
    "model.stem_stride": "1",
}


def generator_hparams(spec: str, tmpdir: str) -> tuple[dict | None, str]:
    """The CFSM methods' generator hyperparameters for ``--generator`` (None: skip them) and a line saying which;
    a random generator is written under ``tmpdir``."""
    if spec == "none":
        return None, "generator: none given (--generator none): CFSM methods skipped"
    if spec == "random":
        path = os.path.join(tmpdir, "generator.pt")
        torch.manual_seed(0)
        save_generator(path, CFSMGenerator(PAPER))
        return (
            {
                "generator": path,
                "generator_size": PAPER.image_size,
                "style_dim": PAPER.style_dim,
                "latent_dim": PAPER.latent_dim,
            },
            f"generator: randomly initialised paper-size CFSM generator ({PAPER.image_size} px, width {PAPER.dim}, "
            f"q {PAPER.style_dim}, d {PAPER.latent_dim}), in a temporary file",
        )
    if not os.path.isfile(spec):
        raise SystemExit(f"--generator {spec}: no such file (use 'random' or 'none')")
    c = load_torch(spec, "stage-1 generator")["model_config"]  # weights_only=True
    return (
        {
            "generator": spec,
            "generator_size": c["image_size"],
            "style_dim": c["style_dim"],
            "latent_dim": c["latent_dim"],
        },
        f"generator: {spec} ({c['image_size']} px, width {c['dim']})",
    )


class Stepper:
    """One method with its own copy of the FR model, stepping with the trainer's own step.

    Built as :func:`harness.engine.train.train` builds a run: the method from the registry
    (``build_method(name, ..., cfg.hparams_seed, hparams)``) after the model, the optimiser and GradScaler of
    ``cfg.optim`` (:func:`harness.engine.train.build_optimizer`, :func:`harness.engine.train.build_scaler`), and one
    :class:`harness.engine.train.TrainStep` (no autocast around the step, gradient clipping over
    ``optim.grad_clip_scope``); :meth:`step` sets the learning rate and calls it on a batch already on the device.
    ``backbone`` and ``head`` are copied, so every method starts from the same weights."""

    def __init__(
        self,
        name: str,
        cfg: RunConfig,
        backbone,
        head,
        num_classes: int,
        device: torch.device,
        amp: bool,
        hparams: dict | None = None,
        total_steps: int = 1000,
        lr: float = LR,
    ):
        self.name, self.device, self.amp, self.lr = name, device, amp, lr
        self.backbone, self.head = copy.deepcopy(backbone), copy.deepcopy(head)
        self.method = build_method(name, cfg.model.embedding_size, num_classes, cfg.hparams_seed, hparams).to(device)
        self.method.total_steps = total_steps
        self.fr = FRModel(backbone=self.backbone, raw=self.backbone, head=self.head)
        self.optimizer = build_optimizer(cfg.optim, self.backbone, self.head, self.method)
        self.scaler = build_scaler(cfg.optim, device, amp)
        self.take_step = TrainStep(self.fr, self.method, self.optimizer, self.scaler, cfg.optim)
        self.backbone.train(), self.head.train(), self.method.train()
        self.times: list[float] = []
        self.peak_mib: float | None = None

    def step(
        self, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor | None, step: int, lr: float | None = None
    ) -> float:
        """One training step on ``(x, y)`` (and ``xt`` for a method that uses target data) at learning rate ``lr``
        (default: the Stepper's); returns its seconds, the loss's ``.item()`` and a CUDA synchronisation included."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        set_lr(self.optimizer, self.lr if lr is None else lr)
        sync()
        t0 = time.perf_counter()
        shown, _ = self.take_step(Batch(x=x, y=y, xt=xt if self.method.uses_target else None, step=step))
        shown.item()
        sync()
        return time.perf_counter() - t0


def main(argv=None) -> int:
    with tempfile.TemporaryDirectory(prefix="cfsm_throughput_") as tmpdir:
        return _main(argv, tmpdir)


def _main(argv, tmpdir: str) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    ap.add_argument("--batch-size", type=int, default=0, help="per process; 0 = 128 on CUDA, 8 on the CPU")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per method; 0 = 20 on CUDA, 2 on the CPU")
    ap.add_argument(
        "--warmup", type=int, default=-1, help="untimed steps per method first; -1 = 3 on CUDA, 0 on the CPU"
    )
    ap.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    ap.add_argument(
        "--amp", choices=("auto", "on", "off"), default="auto", help="auto: on for CUDA (the trainer's amp=auto)"
    )
    ap.add_argument(
        "--no-trunk-fp16", action="store_true", help="under AMP, keep the IResNet trunk in float32 (GradScaler only)"
    )
    ap.add_argument(
        "--generator", default="random", help="random (paper-size, random weights) | PATH | none (skip CFSM)"
    )
    ap.add_argument("--num-classes", type=int, default=1000, help="ArcFace head classes (MS1MV2 has 85742)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args(argv)

    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")
    cuda = device.type == "cuda"
    amp = cuda if args.amp == "auto" else args.amp == "on"
    B = args.batch_size or (128 if cuda else 8)
    steps = args.steps or (20 if cuda else 2)
    warmup = args.warmup if args.warmup >= 0 else (3 if cuda else 0)
    if cuda:
        torch.backends.cudnn.benchmark = True

    names = sorted(REGISTRY) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(sorted(REGISTRY))}")
    names = ["source_only"] + [n for n in names if n != "source_only"]
    needs_generator = any(n.startswith("cfsm_") for n in names)
    hp, gen_line = generator_hparams(args.generator, tmpdir) if needs_generator else (None, "generator: not needed")
    skipped = [n for n in names if n.startswith("cfsm_")] if hp is None else []
    names = [n for n in names if n not in skipped]

    cfg = apply_overrides(RunConfig(), {**PAPER_MODEL, "optim.batch_size": str(B)})
    torch.manual_seed(0)
    backbone, head = build_model(cfg, args.num_classes, amp=amp and not args.no_trunk_fp16)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    backbone.to(device).to(memory_format=fmt), head.to(device)
    S = cfg.data.input_size
    x = (torch.rand(B, 3, S, S, device=device) * 2 - 1).contiguous(memory_format=fmt)
    xt = (torch.rand(B, 3, S, S, device=device) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.randint(0, args.num_classes, (B,), device=device)

    where = (
        f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        if cuda
        else f"CPU, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(
        f"IR-50 (layers 3-4-14-3, widths 64-512, stem stride 1) at {S} px, 512-d, ArcFace {args.num_classes} classes; "
        f"batch {B}; channels_last {cfg.model.channels_last}; {where}; torch {torch.__version__}"
    )
    print(
        f"AMP {'on' if amp else 'off'}"
        f"{' (GradScaler only, the trunk in float32: --no-trunk-fp16)' if amp and args.no_trunk_fp16 else ''}"
        f"{' (the backbone trunk, as the trainer)' if amp and not args.no_trunk_fp16 else ''}; "
        f"median of {steps} timed steps after {warmup} warm-up, one method at a time"
    )
    print(gen_line)
    rows = []
    for name in names:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        s = Stepper(name, cfg, backbone, head, args.num_classes, device, amp, hp if name.startswith("cfsm_") else None)
        for r in range(warmup + steps):
            dt = s.step(x, y, xt, step=r + 1)  # step 0 would run cfsm_guided's monitoring probe
            if r >= warmup:
                s.times.append(dt)
        if cuda:
            s.peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append((name, statistics.median(s.times), min(s.times), max(s.times), s.peak_mib))
        del s
    base = rows[0][1]
    head_row = f"{'method':<16} {'ms/step':>10} {'min ms':>9} {'max ms':>9} {'images/s':>10} {'x source_only':>14}" + (
        f" {'peak MiB':>10}" if cuda else ""
    )
    print(head_row)
    print("-" * len(head_row))
    for name, med, lo, hi, peak in rows:
        line = f"{name:<16} {1e3 * med:>10.1f} {1e3 * lo:>9.1f} {1e3 * hi:>9.1f} {B / med:>10.1f} {med / base:>14.2f}"
        print(line + (f" {peak:>10.0f}" if cuda else ""))
    for name in skipped:
        print(f"{name:<16} skipped: no CFSM generator (--generator random or PATH to include it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
