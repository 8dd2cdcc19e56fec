"""Helpers of the fault suite (issue 16): tiny configs, a crafted payload file, checks of one-line errors."""

from __future__ import annotations


def _benchmark_configs():
    """The tiny run and stage-1 configs of ``benchmarks/faults.py`` (one list each, shared with the fault suite)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "faults.py"
    spec = importlib.util.spec_from_file_location("_benchmark_faults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SMALL, module.STAGE1


SMALL, STAGE1_TINY = _benchmark_configs()


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
