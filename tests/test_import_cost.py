"""Every training and evaluation stage is a fresh process that imports the method registry: torchvision (about a
second to import on the 2-core VM, through its ``ops``) and kornia are imported only by the methods that use them,
on first use."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import sys
import harness.run, methods
from methods.base import build_method, resolve_hparams
before = sorted(m for m in ("torchvision", "kornia") if m in sys.modules)
import torch
from methods import policy_augment
from methods import degradations as D
x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
D.gaussian_blur(x.float() / 255, torch.tensor([1.0, 2.0]))
policy_augment._apply_grouped(x, "Brightness", 0.3, "nearest")
after = sorted(m for m in ("torchvision", "kornia") if m in sys.modules)
print(",".join(before) + "|" + ",".join(after))
"""


def test_registry_import_leaves_torchvision_and_kornia_out():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    before, after = out.stdout.strip().split("|")
    assert before == ""
    assert after == "kornia,torchvision"  # both are imported when an op that needs them runs
