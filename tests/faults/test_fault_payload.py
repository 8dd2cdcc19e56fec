"""Issue 16 item 1: no file the project reads runs code. A crafted ``.pt`` whose unpickling would create a file is
given to every entry point that reads a torch file; the file is never created, and the user gets one line (exit 2),
or, for a state found automatically beside a checkpoint, a message that it was set aside and a fresh start."""

from __future__ import annotations

import os

from faultlib import STAGE1_TINY, one_error_line, run_args, write_payload

from harness.run import main as run_main
from harness.stage1 import main as stage1_main


def test_the_payload_really_runs_when_unpickled_without_weights_only(tmp_path):
    """The test file is a real threat: an unrestricted torch.load creates the marker."""
    import torch

    marker = tmp_path / "PWNED"
    path = write_payload(str(tmp_path / "p.pt"), str(marker))
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_evaluate_checkpoint(tiny_release, tmp_path, empty_params, payload, capsys):
    path, marker = payload
    rc = run_main(run_args(tiny_release, tmp_path / "runs", empty_params, "train=false", f"checkpoint={path}"))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and not os.path.exists(marker)
    assert path in line and "refused" in line and "weights_only=True" in line


def test_resume_path(tiny_release, tmp_path, empty_params, payload, capsys):
    path, marker = payload
    rc = run_main(
        run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={tmp_path / 'm.pt'}", f"resume={path}")
    )
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and not os.path.exists(marker) and f"resume={path}" in line and "refused" in line
    assert not os.path.exists(tmp_path / "runs"), "nothing started"


def test_automatic_resume_state_is_set_aside(tiny_release, tmp_path, empty_params, capsys):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "m.pt"
    write_payload(str(tmp_path / "m.train_state.pt"), str(marker))
    assert run_main(run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={ckpt}")) == 0
    err = capsys.readouterr().err
    assert not marker.exists() and ckpt.exists()
    assert "unreadable train state" in err and "set aside as" in err and "starting fresh" in err
    aside = [f for f in os.listdir(tmp_path) if f.startswith("m.train_state.pt.unreadable-")]
    assert len(aside) == 1, os.listdir(tmp_path)


def test_stage1_identity_network(tiny_release, tmp_path, empty_params, payload, capsys):
    path, marker = payload
    rc = stage1_main(
        [
            "--params",
            empty_params,
            f"data.release={tiny_release}",
            f"identity={path}",
            f"out={tmp_path / 's1'}",
            f"figures={tmp_path / 'fig'}",
            "sacred=",
            *STAGE1_TINY,
        ]
    )
    line = one_error_line(capsys.readouterr().err, "harness.stage1")
    assert rc == 2 and not os.path.exists(marker) and path in line and "refused" in line


def test_stage1_own_state_is_set_aside(tiny_release, tmp_path, empty_params, trained_ckpt, capsys):
    out = tmp_path / "s1"
    out.mkdir()
    marker = tmp_path / "PWNED"
    write_payload(str(out / "train_state.pt"), str(marker))
    rc = stage1_main(
        [
            "--params",
            empty_params,
            f"data.release={tiny_release}",
            f"identity={trained_ckpt}",
            f"out={out}",
            f"figures={tmp_path / 'fig'}",
            "sacred=",
            *STAGE1_TINY,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not marker.exists() and (out / "generator.pt").exists()
    assert "stage1: unreadable train state" in err and "set aside as" in err
    assert len([f for f in os.listdir(out) if f.startswith("train_state.pt.unreadable-")]) == 1


def test_cfsm_generator(tiny_release, tmp_path, empty_params, payload, capsys):
    path, marker = payload
    rc = run_main(
        run_args(
            tiny_release,
            tmp_path / "runs",
            empty_params,
            "method=cfsm_guided",
            f"hparams.generator={path}",
            "hparams.generator_size=16",
            "hparams.latent_dim=16",
        )
    )
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and not os.path.exists(marker) and path in line and "refused" in line
    assert "generator_size / style_dim" not in line, "not blamed on the size knobs"
