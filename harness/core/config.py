"""The run configuration: typed, frozen dataclasses; ``key=value`` overrides with dotted keys; unknown keys are errors.

``params.yaml`` (section ``run``) holds the pipeline's values; ``python -m harness.run method=... optim.lr=0.05``
applies overrides on top; a run's method hyperparameters also come from ``method_hparams.<method>``, beneath
``hparams`` (:func:`with_method_hparams`). Sacred only records the resulting flat dict (``ex.add_config``:
explicit config, no scope magic). Every knob that can change a number is here, and therefore in every result row.

Every value is checked when the config is built (``__post_init__`` of each dataclass), so a bad value fails before
anything starts, in one line naming the key and what is allowed: ``config optim.lr=-0.1: expected a finite number
> 0``. A YAML syntax error in a params file is one line with the file, line and column (:func:`read_yaml`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass(frozen=True)
class DataConfig:
    release: str = (
        "datasets/synthface/default"  # folder with faces_synthface/ (or any insightface rec folder name below)
    )
    rec: str = "faces_synthface"  # RecordIO folder inside the release (train.rec, train.idx, property)
    target: str = "target"  # unlabelled target crops: <release>/<target>/crops + <target_list>
    target_list: str = "target_list.txt"  # the crop list inside <release>/<target> (domain-adaptation methods)
    # Train on a subset of the RecordIO: a text file of record keys (insightface image indices, as in train.idx),
    # one per line; "" = every image. CFSM's release trains on a 3,870,313-image subset whose list is not public.
    index_list: str = ""
    input_size: int = 64
    cache: bool = True  # decode the whole source set once into memory (SynthFace sizes); False streams
    # Speed only, never a number (docs/cpu_profile.md section 4): a folder where the decoded source and target
    # images (uint8 .npy keyed by the stored bytes' SHA-256, the input size and the decoding code) are written once
    # and read by every later run, bit-identical to decoding; "" = decode the JPEGs in every run.
    decode_cache: str = ""
    # The same for the evaluation's aligned crops (one .npy per benchmark feature pass, keyed by the benchmark's
    # files, its loading knobs and the loading code), shared by every model's evaluation; "" = off.
    crop_cache: str = ""
    flip: bool = True  # random horizontal flip (insightface's only training augmentation)
    channel_order: str = "RGB"

    def __post_init__(self):
        _check(self.input_size >= 1, "data.input_size", self.input_size, "an integer >= 1 (pixels)")
        _one_of("data.channel_order", self.channel_order, CHANNEL_ORDERS)
        _check(bool(self.rec), "data.rec", self.rec, "a RecordIO folder name inside data.release")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small"  # small | r18 | r34 | r50 | r100 | r200
    widths: tuple[int, ...] = (32, 64, 128, 256)  # small only
    layers: tuple[int, ...] = (1, 1, 1, 1)  # small only
    stem_stride: int = 2  # 2: the stem halves the input (a 64 px input then costs what 32 px costs)
    channels_last: bool = True  # NHWC memory format: ~1.3x faster convolutions on CPU (oneDNN)
    embedding_size: int = 128
    dropout: float = 0.0
    # arcface | cosface | adaface | magface (AdaFace's h=0.333, t_alpha=0.01 and MagFace's l_a=10, u_a=110, l_m=0.45,
    # u_m=0.8, lambda_g=35 are the heads' own defaults; model.m does not apply to magface: its margin is m(||f||))
    head: str = "arcface"
    s: float = 64.0
    m: float = 0.5  # passed to every head: ArcFace 0.5; CosFace and AdaFace use 0.4 in their papers (set model.m=0.4)

    def __post_init__(self):
        from harness.models import BACKBONES, HEADS

        _one_of("model.backbone", self.backbone, tuple(BACKBONES))
        _one_of("model.head", self.head, tuple(HEADS))
        _check(
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            "model.widths",
            self.widths,
            "integers >= 1, one per stage",
        )
        _check(
            len(self.layers) >= 1 and all(n >= 1 for n in self.layers),
            "model.layers",
            self.layers,
            "integers >= 1, blocks per stage",
        )
        _one_of("model.stem_stride", self.stem_stride, (1, 2))
        _check(self.embedding_size >= 1, "model.embedding_size", self.embedding_size, "an integer >= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "0 <= dropout < 1")
        _check(self.s > 0, "model.s", self.s, "> 0")


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128  # per process (insightface: per GPU); the global batch is world_size x batch_size
    epochs: float = 4.0
    warmup_epochs: float = 1.0
    poly_power: float = 2.0
    grad_clip: float = 5.0
    # What the clipping norm covers: "backbone" (CFSM's GuidedFaceRecognition/train.py and insightface
    # arcface_torch: clip_grad_norm_(backbone.parameters(), 5)) or "all" (backbone + margin head + method modules).
    grad_clip_scope: str = "backbone"
    amp_growth_interval: int = 100  # GradScaler growth interval under CUDA AMP (CFSM train.py: 100)

    def __post_init__(self):
        _one_of("optim.name", self.name, ("sgd", "adamw"))
        _check(
            self.lr > 0 and self.lr == self.lr and self.lr != float("inf"), "optim.lr", self.lr, "a finite number > 0"
        )
        _check(self.momentum >= 0, "optim.momentum", self.momentum, ">= 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(self.batch_size >= 1, "optim.batch_size", self.batch_size, "an integer >= 1 (per process)")
        _check(self.epochs > 0, "optim.epochs", self.epochs, "> 0 (fractions allowed)")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(self.poly_power >= 0, "optim.poly_power", self.poly_power, ">= 0")
        _check(self.grad_clip > 0, "optim.grad_clip", self.grad_clip, "> 0 (the gradient-norm bound)")


@dataclass(frozen=True)
class EvalConfig:
    benchmarks: tuple[str, ...] = ("IJBB", "IJBC", "IJBS", "TinyFace")
    bin_sets: tuple[str, ...] = ("lfw", "cfp_fp", "agedb_30")  # VerificationBins: <release>/<data.rec>/<set>.bin
    flip: str = "sum"
    faceness: bool = True
    image_norm: bool = False
    batch_size: int = 256
    # off: the embedding pass in float32, as the published evaluation scripts run it; on: the backbone's
    # convolutional trunk under autocast (bfloat16 on the CPU, float16 on CUDA), fc/features float32, whatever the
    # training's `amp` was (harness.eval.registry.evaluate_all applies it and states it in each row's knobs).
    amp: str = "off"

    def __post_init__(self):
        from harness.eval.registry import check_eval_config  # the registered benchmarks and their own knobs

        check_eval_config(self)
        _one_of("eval.flip", self.flip, EVAL_FLIPS)
        _one_of("eval.amp", self.amp, EVAL_AMPS)
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")


@dataclass(frozen=True)
class RunConfig:
    method: str = "source_only"
    seed: int = 0
    hparams_seed: int = 0
    hparams: dict = field(default_factory=dict)  # overrides of the method's declared hyperparameters
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (on for CUDA) | on | off
    threads: int = 0  # torch CPU threads, 0 = torch's default
    out: str = "results/runs"  # Sacred FileStorageObserver root ("" = no observer)
    train: bool = True  # False: load `checkpoint` and only evaluate
    evaluate: bool = True
    checkpoint: str = ""  # where the trained model is saved (train) or loaded from (train=false)
    result: str = ""  # also write the result rows (JSON) here, for DVC
    metrics: str = ""  # also write a compact {benchmark: {metric: value}} JSON here, for `dvc metrics show`
    log_every: int = 50
    # Robustness (harness/engine/train.py "Checkpoints and resume"): the whole training state is saved atomically every
    # `checkpoint_every` optimiser steps (0 = never) to <checkpoint stem>.train_state.pt, beside `checkpoint`.
    checkpoint_every: int = 1000
    # FR weights at several points of training (issue 20, the effect of guidance): every `snapshot_every` optimiser
    # steps (0 = never; not after the last, which is `checkpoint`) to <checkpoint stem>.step<N>.pt, beside `checkpoint`.
    snapshot_every: int = 0
    resume: str = (
        "auto"  # auto: that state file if its config matches, else fresh (says why) | none | PATH (must match)
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _check(bool(self.method), "method", self.method, "a method name")
        _check(
            self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device),
            "device",
            self.device,
            "auto, cpu, cuda or cuda:<index>",
        )
        _one_of("amp", self.amp, ("auto", "on", "off"))
        _check(self.threads >= 0, "threads", self.threads, ">= 0 (0 = torch's default)")
        _check(self.log_every >= 1, "log_every", self.log_every, "an integer >= 1")
        _check(
            self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, ">= 0 (0 = no periodic train state)"
        )
        _check(self.snapshot_every >= 0, "snapshot_every", self.snapshot_every, ">= 0 (0 = no weight snapshots)")
        _check(bool(str(self.resume).strip()), "resume", self.resume, "auto, none or a train state path")
        reduction = self.model.stem_stride * 2 ** (len(self.model.layers) if self.model.backbone == "small" else 4)
        _check(
            self.data.input_size % reduction == 0,
            "data.input_size",
            self.data.input_size,
            f"a multiple of {reduction} for model.backbone={self.model.backbone} with model.stem_stride="
            f"{self.model.stem_stride} (the stem stride x 2 per stage)",
        )

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))


#: The allowed values of the enumerated knobs (checked when a config is built, before anything runs).
CHANNEL_ORDERS = ("RGB", "BGR")
EVAL_AMPS = ("off", "on")  # harness.eval.registry.evaluate_all
EVAL_FLIPS = ("sum", "none")  # harness.eval.ijb_verification / harness.eval.tinyface protocols


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    """One-line ``config <key>=<value>: expected <...>`` ValueError."""
    if not ok:
        raise ValueError(f"config {key}={value!r}: expected {expected}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, key, value, "one of " + ", ".join(str(a) for a in allowed))


def _is_cuda_index(device: str) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def valid_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            keys += valid_keys(sub, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def parse_bool(value: Any, what: str) -> bool:
    """A boolean from a bool or its spelling (``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case); anything
    else is a one-line ValueError ``<what>: <value> is not a boolean``. The one parser of config keys and method
    hyperparameters."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{what}: {value!r} is not a boolean")


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Parse a command-line string (or a YAML value) into the type of the current value."""
    if isinstance(current, bool):
        return parse_bool(value, f"config key {key!r}")
    if isinstance(current, tuple):
        items = (
            value if isinstance(value, (list, tuple)) else [v for v in str(value).strip("[]()").split(",") if v.strip()]
        )
        kind = type(current[0]) if current else str
        return tuple(kind(v.strip() if isinstance(v, str) else v) for v in items)
    if isinstance(current, dict):
        if isinstance(value, dict):
            return value
        parsed = _yaml_value(str(value), key)
        if not isinstance(parsed, dict):
            raise ValueError(f"config key {key!r}: expected a mapping like {{name: value}}, got {value!r}")
        return parsed
    if isinstance(current, float):
        return float(value)
    if isinstance(current, int):
        return int(value)
    return str(value)


def apply_overrides(cfg, overrides: dict[str, Any]):
    """Apply ``{"optim.lr": "0.05", "hparams.rs_ratio": 0.5, ...}`` to a config dataclass (``RunConfig`` or any other
    frozen dataclass tree, e.g. the stage-1 config); unknown keys raise a one-line KeyError."""
    cls = type(cfg)
    keys = valid_keys(cls)
    tree = plain(dataclasses.asdict(cfg))
    for key, raw in overrides.items():
        if (
            key.startswith("hparams.") and "hparams" in tree
        ):  # method hyperparameters are validated against the method's declaration
            tree["hparams"][key.split(".", 1)[1]] = _yaml_value(raw, key) if isinstance(raw, str) else raw
            continue
        if key not in keys:
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(keys)}, hparams.<name>")
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        current = _get(cfg, parts)
        try:
            node[parts[-1]] = plain(_coerce(raw, current, key))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config key {key!r}: cannot use {raw!r} ({exc})") from None
    return from_dict(tree, cls)


def _yaml_value(raw: str, key: str) -> Any:
    """A command-line value read as YAML (``hparams.x=[1, 2]``); a syntax error is one ValueError naming the key."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config key {key!r}: cannot read {raw!r} as a YAML value ({problem})") from None


def _get(cfg: Any, parts: list[str]) -> Any:
    for p in parts:
        cfg = getattr(cfg, p)
    return cfg


def from_dict(tree: dict, root: type = RunConfig):
    def build(cls, data: dict, prefix: str):
        kwargs = {}
        names = {f.name: f for f in dataclasses.fields(cls)}
        for k, v in data.items():
            if k not in names:
                raise KeyError(f"unknown config key {prefix + k!r}; valid keys: {', '.join(valid_keys(root))}")
            f = names[k]
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                kwargs[k] = build(sub, v, f"{prefix}{k}.")
            else:
                default = f.default if f.default is not dataclasses.MISSING else (sub() if sub else None)
                kwargs[k] = _coerce(v, default, prefix + k) if default is not None else v
        return cls(**kwargs)

    return build(root, tree, "")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "hparams":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file (``yaml.safe_load``); a syntax error is one ValueError ``<path>:line L, column C: <problem>``."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            what = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
            raise ValueError(f"{path}:{where}: {what}" if where else f"{path}: {what}") from None


def load_params(path: str | os.PathLike = "params.yaml", section: str = "run") -> dict[str, Any]:
    """The flat overrides of a params.yaml section (missing file or section: none). A YAML syntax error is one
    line naming the file, line and column; a section that is not a mapping is one line too."""
    if not os.path.isfile(path):
        return {}
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{os.fspath(path)}: expected a mapping of sections at the top, got {type(data).__name__}")
    part = data.get(section) or {}
    if not isinstance(part, dict):
        raise ValueError(f"{os.fspath(path)}:{section}: expected a mapping of config keys, got {type(part).__name__}")
    return flatten(part)


def config_from_cli(argv: list[str], defaults, section: str, doc: str | None = None, hparams_of=None):
    """``[--params FILE] key=value ...`` -> the config: ``defaults``, then the ``section`` of the params file
    (``params.yaml`` in the working directory when present), then the command line. ``-h`` exits with ``doc``;
    anything else is a one-line ValueError listing the valid keys. With ``hparams_of`` (a method name -> its
    declared ``{name: (default, sampler)}``; ``harness.run`` passes the method registry's), the params file's
    ``method_hparams.<method>`` goes beneath the config's ``hparams`` (:func:`with_method_hparams`)."""
    params = "params.yaml"
    overrides: dict[str, str] = {}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--params":
            if not args:
                raise ValueError("--params needs a file name")
            params = args.pop(0)
        elif a.startswith("--params="):
            params = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            raise SystemExit(doc)
        elif "=" in a and not a.startswith("-"):
            key, value = a.split("=", 1)
            overrides[key] = value
        else:
            extra = ", hparams.<name>" if any(f.name == "hparams" for f in dataclasses.fields(type(defaults))) else ""
            raise ValueError(
                f"argument {a!r}: expected key=value (valid keys: {', '.join(valid_keys(type(defaults)))}{extra})"
            )
    if params != "params.yaml" and not os.path.isfile(params):
        raise FileNotFoundError(f"{params}: params file not found")
    cfg = apply_overrides(defaults, load_params(params, section=section) | overrides)
    return with_method_hparams(cfg, params, hparams_of) if hparams_of is not None else cfg


def load_method_hparams(path: str | os.PathLike, method: str) -> dict[str, Any]:
    """``method_hparams.<method>`` of a params file: that method's hyperparameters as the pipeline sets them
    (``{}`` when the file, the section or the entry is absent, or the entry is ``{}`` / empty). A section or entry
    that is not a mapping is one line ``<path>:method_hparams[.<method>]: ...``."""
    if not os.path.isfile(path):
        return {}
    data = read_yaml(path)
    section = data.get("method_hparams") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(
            f"{os.fspath(path)}:method_hparams: expected a mapping of method names to their "
            f"hyperparameters, got {type(section).__name__}"
        )
    entry = section.get(method)
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise ValueError(
            f"{os.fspath(path)}:method_hparams.{method}: expected a mapping of hyperparameter names to "
            f"values ({{}} for none), got {type(entry).__name__}"
        )
    return dict(entry)


def with_method_hparams(cfg, params: str | os.PathLike, hparams_of):
    """The run config with ``method_hparams.<cfg.method>`` of the params file put beneath its ``hparams``;
    ``hparams_of(method)`` is the method's declaration ``{name: (default, sampler)}`` (a KeyError if unknown).

    Precedence, lowest first: the method's declared defaults, or with ``hparams_seed != 0`` its per-name seeded draws
    (``methods.base.resolve_hparams``, DomainBed's rule); then ``method_hparams.<method>``; then ``run.hparams`` of
    the params file and ``hparams.<name>=`` of the command line. A ``method_hparams`` value equal to the declared
    default only restates it: it is not copied into ``cfg.hparams``, so ``hparams_seed != 0`` still draws that name
    (the params files write every CFSM default out, for ``dvc exp run -S``, and a random search behaves as before).
    A name the method does not declare is one line naming the file, the key and the valid names; only the run's own
    method's mapping is read, so an entry for ``cfsm_guided`` never touches a ``source_only`` run."""
    mapping = load_method_hparams(params, cfg.method)
    if not mapping:
        return cfg
    try:
        declared = hparams_of(cfg.method)
    except KeyError:  # an unknown method: the run's own check names it, with the registered ones
        return cfg
    for name in mapping:
        if name not in declared:
            raise ValueError(
                f"{os.fspath(params)}:method_hparams.{cfg.method}.{name}: unknown hyperparameter of "
                f"method {cfg.method!r}; valid: {', '.join(sorted(declared)) or 'none'}"
            )
    changed = {k: v for k, v in mapping.items() if not _same(v, declared[k][0])}
    return dataclasses.replace(cfg, hparams={**changed, **cfg.hparams}) if changed else cfg


def _same(value: Any, default: Any) -> bool:
    """A params value that restates a declared default (same type and value: ``1`` does not restate ``True``)."""
    return type(value) is type(default) and value == default
