"""Helpers of the fault suite (issue 16): tiny configs, a crafted payload file, checks of one-line errors."""

from __future__ import annotations

SMALL = [
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "data.input_size=32",
    "optim.batch_size=32",
    "optim.epochs=1",
    "log_every=1",
    "eval.benchmarks=TinyFace",
]
STAGE1_TINY = [
    "model.image_size=16",
    "model.dim=8",
    "model.d_scales=2",
    "model.d_layers=2",
    "model.adain_scale=one_plus_gamma",
    "model.mlp_dim=32",
    "model.latent_dim=16",
    "train.batch_size=8",
    "train.iterations=4",
    "train.lr=5e-4",
    "log_every=2",
    "checkpoint_every=2",
    "analysis.holdout_target=10",
    "analysis.figure_inputs=3",
]


class _Payload:
    """Unpickling this creates the file ``marker`` (what a crafted checkpoint could do instead: anything)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: str, marker: str, wrap: bool = True) -> str:
    """A ``.pt`` file (torch's zip format) whose unpickling creates ``marker``; ``wrap`` puts the payload inside a
    dict with a checkpoint's keys, so only the unpickler, not a format check, can stop it."""
    import torch

    obj = {"format": "cfsm-train-state/1", "backbone": _Payload(marker), "num_classes": 3} if wrap else _Payload(marker)
    torch.save(obj, path)
    return path


def run_args(tiny_release, out, params, *extra) -> list[str]:
    return ["--params", params, "method=source_only", f"data.release={tiny_release}", f"out={out}", *SMALL, *extra]


def one_error_line(err: str, prog: str) -> str:
    """The error line of ``prog``, asserting it is the only one (no traceback, no other error lines)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith(f"{prog}: ")]
    assert len(errors) == 1, err
    assert not any(ln.startswith("ERROR") for ln in lines), err
    return errors[0]
