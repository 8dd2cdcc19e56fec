"""Issue 16 items 3 and 4: every config value is checked when the config is built, before anything starts; a bad
value is one line naming the key and what is allowed (exit 2), with no Sacred run and no file written."""

from __future__ import annotations

import os
import time

import pytest
from faultlib import one_error_line, run_args

from harness.run import main as run_main


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("optim.epochs=0", "config optim.epochs=0.0: expected > 0"),
        ("optim.epochs=-1", "config optim.epochs=-1.0: expected > 0"),
        ("data.channel_order=XYZ", "config data.channel_order='XYZ': expected one of RGB, BGR"),
        ("optim.batch_size=0", "config optim.batch_size=0: expected an integer >= 1"),
        ("optim.batch_size=-4", "config optim.batch_size=-4: expected an integer >= 1"),
        ("data.input_size=0", "config data.input_size=0: expected an integer >= 1"),
        ("data.input_size=40", "config data.input_size=40: expected a multiple of 32"),
        ("model.head=foo", "config model.head='foo': expected one of arcface, cosface, adaface"),
        ("model.backbone=r7", "config model.backbone='r7': expected one of r18, r34, r50, r100, r200, small"),
        ("eval.benchmarks=IJBX", "config eval.benchmarks='IJBX': expected one of IJBB, IJBC, IJBS, TinyFace"),
        ("eval.flip=foo", "config eval.flip='foo': expected one of sum, none"),
        ("checkpoint_every=-1", "config checkpoint_every=-1: expected >= 0"),
        ("optim.lr=-0.1", "config optim.lr=-0.1: expected a finite number > 0"),
        ("optim.name=adam", "config optim.name='adam': expected one of sgd, adamw"),
        ("amp=maybe", "config amp='maybe': expected one of auto, on, off"),
    ],
)
def test_bad_values_fail_before_anything_starts(tiny_release, tmp_path, empty_params, capsys, arg, needle):
    t0 = time.perf_counter()
    rc = run_main(run_args(tiny_release, tmp_path / "runs", empty_params, f"checkpoint={tmp_path / 'm.pt'}", arg))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and needle in line, line
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "m.pt"), "nothing started"
    assert time.perf_counter() - t0 < 10


def test_train_false_without_its_checkpoint(tiny_release, tmp_path, empty_params, capsys):
    rc = run_main(
        run_args(tiny_release, tmp_path / "runs", empty_params, "train=false", f"checkpoint={tmp_path / 'no.pt'}")
    )
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and "checkpoint=" in line and "no.pt" in line and "no such file" in line
    assert not os.path.exists(tmp_path / "runs")


def test_missing_release(tmp_path, empty_params, capsys):
    rc = run_main(run_args(str(tmp_path / "nowhere"), tmp_path / "runs", empty_params))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and "config data.release=" in line and "nowhere" in line and "no such folder" in line
    assert not os.path.exists(tmp_path / "runs")


def test_an_unreadable_hparams_value(tiny_release, tmp_path, empty_params, capsys):
    rc = run_main(run_args(tiny_release, tmp_path / "runs", empty_params, "hparams.alpha=[1,"))
    line = one_error_line(capsys.readouterr().err, "harness.run")
    assert rc == 2 and "config key 'hparams.alpha': cannot read '[1,' as a YAML value" in line
