"""CFSM's released recipe as data, and every run's comparison with it (the ``deviations`` list of each record).

The released values come from the official code, ``github:liufeng2915/CFSM`` at ``dd56184`` (paths abbreviated:
``S/`` = ``CFSM/``, stage 1; ``G/`` = ``GuidedFaceRecognition/``, stage 2; ``config`` =
``G/configs/arcface_ms1mv2_r50_ours.py``). Each entry of :data:`FR_RECIPE`, :data:`CFSM_HPARAMS` and
:data:`STAGE1_RECIPE` names its file and line.

:func:`deviations` (a ``harness.run`` run) and :func:`stage1_deviations` (a ``harness.stage1`` run) return
``[{"key", "ours", "release", "source", "why"}, ...]``, one entry per difference, in a fixed order. ``why`` follows
from the configuration: a value that is one of the documented CPU-default choices (the repository's ``params.yaml``)
carries that reason; a method's own documented default carries the method's reason; a difference that no knob can
close (data that is not public, an external model) says so; any other value says ``"set by the user"``.
"""

from __future__ import annotations

import os
from typing import Any

#: Stage 2 (FR training), the released values: ``key -> (value, source)``. ``optim.global_batch`` is
#: ``optim.batch_size`` x world size.
FR_RECIPE: dict[str, tuple[Any, str]] = {
    "data.input_size": (112, "G/dataset.py:105-110 (112x112 MS1MV2 crops, no resize)"),
    "data.flip": (True, "G/dataset.py:107 (RandomHorizontalFlip)"),
    "data.channel_order": ("RGB", "G/dataset.py:133 (mx.image.imdecode: RGB)"),
    "model.backbone": ("r50", "config:6"),
    "model.stem_stride": (1, "G/backbones/iresnet.py (stride-1 stem)"),
    "model.embedding_size": (512, "config:10"),
    "model.dropout": (0.0, "G/train.py:49-50"),
    "model.head": ("arcface", "config:4"),
    "model.s": (64.0, "G/losses.py:7"),
    "model.m": (0.5, "G/losses.py:7"),
    "optim.name": ("sgd", "G/train.py:90"),
    "optim.lr": (0.1, "config:16"),
    "optim.momentum": (0.9, "G/train.py:96 (hard-coded; config.momentum is unused)"),
    "optim.weight_decay": (5e-4, "config:14"),
    "optim.global_batch": (2048, "config:15 (256 per GPU) x 8 GPUs (G/README.md)"),
    "optim.epochs": (20.0, "config:25"),
    "optim.warmup_epochs": (2.0, "config:26"),
    "optim.poly_power": (2.0, "G/lr_scheduler.py:10"),
    "optim.grad_clip": (5.0, "G/train.py:143,148"),
    "optim.grad_clip_scope": ("backbone", "G/train.py:143,148 (clip_grad_norm_(backbone.parameters(), 5))"),
    "amp": ("on", "config:12 (fp16 = True)"),
    "optim.amp_growth_interval": (100, "G/train.py:126 (GradScaler(growth_interval=100))"),
}

#: The released FR training set: ``config:22-24``.
TRAIN_SET = ("MS1MV2 subset 'v2_39m': 3,870,313 images, all 85,742 classes", "config:22-24")
TRAIN_SET_WHY = (
    "the released subset's image list is not published (the config names only the folder 'v2_39m' "
    "and num_image 3,870,313); data.index_list trains on a list of record keys if one is obtained"
)

#: Stage-2 CFSM hyperparameters of ``cfsm_guided`` / ``cfsm_random`` (``steps`` is the variant, not compared).
CFSM_HPARAMS: dict[str, tuple[Any, str]] = {
    "eps": (0.314, "config:32"),
    "alpha": (0.314, "config:33"),
    "rs_ratio": (0.75, "config:30"),
    "inner_bn_train": (True, "G/train.py:57 (backbone.train() throughout)"),
    "synthesize": ("all", "G/adversarial_regu.py:16-24 (G and the inner FR pass on the whole batch)"),
    "generator_size": (112, "G/train.py:60 (the 112 px generator)"),
    "style_dim": (10, "G/train.py:60"),
    "latent_dim": (128, "G/train.py:60"),
}
GUIDED_STEPS = (1, "config:34 (k = 1)")
GENERATOR = ("WiderFace70K.pth (the published stage-1 generator)", "config:31")

#: Stage 1, the released values of ``Stage1Config`` keys (the architecture's are ``CFSMConfig``'s defaults,
#: ``S/synthesis_network.py``).
STAGE1_RECIPE: dict[str, tuple[Any, str]] = {
    "train.batch_size": (32, "S/README.md:37-68 (--batch_size 32)"),
    "train.lr": (1e-4, "S/train.py:36"),
    "train.betas": ([0.5, 0.999], "S/train.py:37-38"),
    "train.lambda_id": ([8.0, 5.0, 2.0], "S/README.md:37-68 (three runs, --lambda_identity 8 / 5 / 2)"),
    "train.phase_passes": (
        [5.0, 4.0, 13.0],
        "S/README.md:37-68 (--n_epochs 5; --epoch 4 --n_epochs 8; --epoch 7 --n_epochs 20: epochs 4 and 7 run twice)",
    ),
    "train.reset_optimizers": (True, "S/train.py:98-99 (Adam built afresh by each run; saved states never reloaded)"),
    "train.recon_weight": (1.0, "S/train.py:151-156"),
    "train.ortho_weight": (1.0, "S/train.py:149,156 (loss_regu added with weight 1)"),
    "train.ortho_form": ("squared_mean", "S/synthesis_network.py:163"),
    "train.la": (0.0, "S/train.py:33"),
    "train.ua": (6.0, "S/train.py:32"),
    "train.lm": (0.05, "S/train.py:35"),
    "train.um": (0.65, "S/train.py:34"),
    "train.ema_decay": (0.0, "S/train.py (the saved checkpoint holds G's trained weights; no weight averaging)"),
}
STAGE1_MODEL_SOURCE = "S/synthesis_network.py, S/train.py:80-81 (Generator(dim=64, ...), MultiDiscriminator())"

#: The documented CPU-default choices (the repository's ``params.yaml``) with their reasons: ``(key, value) -> why``.
CPU_DEFAULT_REASONS: dict[tuple[str, Any], str] = {
    ("data.input_size", 64): "CPU default: SynthFace is rendered at 64 px (2-core budget)",
    ("model.backbone", "small"): "CPU default: a small IResNet (same block and layout) fits the 2-core budget",
    ("model.stem_stride", 2): "CPU default: a stride-2 stem makes a 64 px input cost what 32 px costs",
    ("model.embedding_size", 128): "CPU default: the small backbone's embedding",
    ("optim.global_batch", (128, 1)): "CPU default: batch 128 on one process",
    ("optim.epochs", 3.0): "CPU default: 3 epochs keep the 12-method pipeline near its time budget (params.yaml)",
    ("optim.warmup_epochs", 0.75): "CPU default: a quarter of the 3 epochs",
    ("optim.grad_clip_scope", "all"): "CPU default: with the backbone's gradients alone clipped, the unclipped ArcFace "
    "head (s = 64, lr 0.1) ruined every method trained on augmented images in the 3-epoch CPU recipe (kornia_degrade "
    "seed 0 IJB-C TAR@1e-4 25.8 vs 61.7 with all; docs/cpu_profile.md section 5)",
    ("amp", "off"): "no CUDA device: amp 'auto' is off on the CPU (bf16 autocast is amp=on)",
    ("hparams.generator_size", 32): "CPU default: stage 1 trains its generator at 32 px",
    ("model.image_size", 32): "CPU default: 112 px does not train in ~10 min on 2 cores; 32 px did",
    ("model.dim", 16): "CPU default: G width 16 instead of 64 (2-core budget)",
    ("model.d_scales", 2): "CPU default: at 32 px a third scale puts instance norm on 1x1 or empty maps",
    ("model.d_layers", 3): "CPU default: 3 blocks (64/128/256) at 32 px, for the same reason",
    ("model.adain_scale", "one_plus_gamma"): "CPU default: 1+gamma starts the decoder as an identity map; with "
    "gamma it did not learn on CPU",
    ("train.lr", 5e-4): "CPU default: with 1e-4 the style code was ignored within the CPU budget",
    ("train.recon_weight", 10.0): "CPU default: the reconstruction weight that made the CPU run learn",
    ("train.batch_size", 16): "CPU default: twice the updates in the same CPU time (32 x 1500 iterations: FD ratio "
    "0.67; 16 x 3000: 0.60)",
    ("train.iterations", 3000): "CPU default: the CPU budget is fixed in iterations (about 10 minutes)",
    ("train.ema_decay", 0.998): "CPU default: the last iterate of the short CPU run is seed-fragile (FD ratios 0.505 "
    "to 1.03 over three seeds); an EMA of G's weights (about the last 500 of 3000 steps) "
    "is saved",
}
USER = "set by the user"


def _why(key: str, value: Any, default: str = USER) -> str:
    try:
        return CPU_DEFAULT_REASONS.get((key, value), default)
    except TypeError:  # an unhashable value (a list) is never one of the documented choices
        return default


def _entry(key: str, ours: Any, release: Any, source: str, why: str) -> dict[str, Any]:
    return {"key": key, "ours": ours, "release": release, "source": source, "why": why}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _trained_on(cfg, device: str | None) -> str:
    """The device type the run trains (trained) on: ``device`` when known (a run's train info), else ``cfg.device``
    resolved as the trainer resolves it."""
    if device:
        return "cuda" if str(device).startswith("cuda") else "cpu"
    if cfg.device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if cfg.device.startswith("cuda") else "cpu"


def generator_provenance(path: str) -> tuple[str, bool]:
    """``(description, is_released)`` of a stage-1 generator file, from its metadata (read without running code).
    A generator imported from the published ``WiderFace70K.pth`` says so in ``meta["provenance"]``."""
    import torch

    if not path or not os.path.isfile(path):
        return f"{path or '<none>'} (not found)", False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta = state.get("meta", {}) if isinstance(state, dict) else {}
    except Exception:  # unreadable here: described, never fatal
        return f"{path} (metadata unreadable)", False
    provenance = str(meta.get("provenance", ""))
    if "WiderFace70K" in provenance:
        return f"{path}: {provenance}", True
    if "config" in meta:
        n = len(meta.get("deviations") or [])
        return f"{path}: trained by this project's stage 1 (harness.stage1; {n} recorded deviations)", False
    return f"{path}: {provenance or 'unknown provenance'}", False


def deviations(cfg, hparams: dict[str, Any], world_size: int = 1, device: str | None = None) -> list[dict[str, Any]]:
    """How the ``harness.run`` config ``cfg`` (a :class:`harness.core.config.RunConfig`) with the method's resolved
    ``hparams``, trained by ``world_size`` processes on ``device`` (default: ``cfg.device`` resolved here), differs
    from CFSM's released FR training (the recipe of :data:`FR_RECIPE`, the training set :data:`TRAIN_SET`, and for
    the CFSM methods :data:`CFSM_HPARAMS`, the FGSM step count and the generator). The FR recipe applies to every
    method (the baselines share it)."""
    from harness.core.config import flatten

    flat = flatten(cfg.to_dict())
    flat["optim.global_batch"] = flat["optim.batch_size"] * max(1, int(world_size))
    on = _trained_on(cfg, device)
    flat["amp"] = ("on" if on == "cuda" else "off") if cfg.amp == "auto" else cfg.amp
    out = []
    for key, (value, source) in FR_RECIPE.items():
        ours = flat[key]
        if not _same(ours, value):
            if key == "optim.global_batch":
                per, n = flat["optim.batch_size"], max(1, int(world_size))
                why = _why(key, (per, n), f"{per} per process x {n} process(es)")
            else:
                why = _why(key, ours)
            out.append(_entry(key, ours, value, source, why))
    if flat["amp"] == "on" and on == "cpu":
        out.append(
            _entry(
                "amp.dtype",
                "bfloat16 (CPU autocast, no GradScaler)",
                "float16 + GradScaler",
                "config:12, G/train.py:126",
                "no CUDA device: the CPU autocasts to bfloat16",
            )
        )
    index = cfg.data.index_list
    ours_set = f"{cfg.data.rec}: " + (f"the records of index list {index}" if index else "every image of the RecordIO")
    out.append(_entry("data.train_set", ours_set, TRAIN_SET[0], TRAIN_SET[1], TRAIN_SET_WHY))
    if "generator" in hparams and "synthesize" in hparams:  # a CFSM stage-2 method
        out += _cfsm_deviations(cfg.method, hparams)
    return out


def _cfsm_deviations(method: str, hp: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, (value, source) in CFSM_HPARAMS.items():
        if name in hp and not _same(hp[name], value):
            key = f"hparams.{name}"
            why = _why(key, hp[name])
            if name == "synthesize" and hp[name] == "selected":
                why = (
                    "the method's default: G and the inner FR pass run on the 25 % kept only (about 4x less "
                    "work); the inner pass's BatchNorm statistics then come from those rows"
                )
            out.append(_entry(key, hp[name], value, source, why))
    if method == "cfsm_guided" and "steps" in hp and not _same(hp["steps"], GUIDED_STEPS[0]):
        out.append(_entry("hparams.steps", hp["steps"], GUIDED_STEPS[0], GUIDED_STEPS[1], USER))
    described, released = generator_provenance(str(hp["generator"]))
    if not released:
        out.append(
            _entry(
                "hparams.generator",
                described,
                GENERATOR[0],
                GENERATOR[1],
                "the generator is this project's own stage-1 model unless the published one is imported",
            )
        )
    return out


def stage1_deviations(cfg) -> list[dict[str, Any]]:
    """How the stage-1 config ``cfg`` (a :class:`harness.cfsm.train.Stage1Config`) differs from the released stage 1:
    the architecture (:class:`harness.models.cfsm.CFSMConfig` defaults are the released one), the training values
    of :data:`STAGE1_RECIPE`, the run length, the identity network and the data, which the release does not
    publish."""
    from harness.models.cfsm import CFSMConfig

    out = []
    released_model = CFSMConfig()
    for name, ours in sorted(vars(cfg.model).items()):
        value = getattr(released_model, name)
        if not _same(ours, value):
            key = f"model.{name}"
            out.append(_entry(key, ours, value, STAGE1_MODEL_SOURCE, _why(key, ours)))
    for key, (value, source) in STAGE1_RECIPE.items():
        ours = getattr(cfg.train, key.split(".", 1)[1])
        ours = list(ours) if isinstance(ours, tuple) else ours
        if not _same(ours, value):
            out.append(_entry(key, ours, value, source, _why(key, ours)))
    if cfg.train.iterations > 0:
        out.append(
            _entry(
                "train.iterations",
                cfg.train.iterations,
                "22 passes over data_list/source_list.txt (length unknown)",
                "S/README.md:37-68",
                _why(
                    "train.iterations",
                    cfg.train.iterations,
                    "set by the user: the released source list is not public, so its length (and the "
                    "released run length) cannot be matched; the lambda_id phases scale with the cap",
                ),
            )
        )
    out.append(
        _entry(
            "identity",
            f"{cfg.identity} (this project's harness.run FR model)",
            "TreB1eN IR-SE50, model_ir_se50.pth (MS1M)",
            "S/id_loss.py:10-12",
            "the released identity network is an external download; t(a) targets its cosine distances",
        )
    )
    out.append(
        _entry(
            "data.source",
            f"{cfg.data.rec} RecordIO (minus the analysis hold-out)",
            "v2_39m_source + data_list/source_list.txt",
            "S/README.md:37-68, S/datasets.py:26-47",
            "the released source list is not public (data_list/source_list.txt is missing from the "
            "repository snapshot)",
        )
    )
    out.append(
        _entry(
            "data.target",
            f"{cfg.data.target}/{cfg.data.target_list} (minus the analysis hold-out)",
            "70K WIDER FACE detector crops (the published WiderFace70K model)",
            "config:31, S/train.py:28 (target_list_wf_70k.txt, not shipped)",
            "the 70K list and the crop/alignment procedure are not released (CFSM ships a 12K list, "
            "target_list_wf_12k.txt)",
        )
    )
    out.append(
        _entry(
            "train.g_step_parity",
            "step % 2",
            "(epoch + i) % 2",
            "S/train.py:138",
            "negligible: with an even number of batches per epoch two steps of one kind meet at each epoch "
            "boundary in the release; the published model predates that line and used i % 2",
        )
    )
    return out
