"""Helpers every SynthFace writer shares (``generate`` and the IJB-S, TinyFace and ``.bin`` writers): the seeded
random streams, the identity tables, chunked rendering and the video-frame degradation. In a module of their own so
that the writers import them without importing ``generate`` (which imports the writers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from harness.synthface import degrade as camera
from harness.synthface.render import ImageSpec, identity_params, render, stack_identities

if TYPE_CHECKING:
    from harness.synthface.generate import SynthFaceConfig

CHUNK = 256  # images rendered per batch; results do not depend on it


def stream_rng(cfg: SynthFaceConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def identity_table(cfg: SynthFaceConfig, domain: int, count: int) -> dict[str, torch.Tensor]:
    """Parameters of identities 0..count-1 of a domain; each depends only on (seed, domain, index)."""
    return stack_identities([identity_params(stream_rng(cfg, 0, domain, k)) for k in range(count)])


def render_chunks(table, spec: ImageSpec, size: int) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    n = len(spec.identity)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        sub = ImageSpec(**{k: np.asarray(v)[sl] for k, v in dataclasses.asdict(spec).items()})
        images, landmarks = render(table, sub, size)
        yield sl, images, landmarks


def take_spec(spec: ImageSpec, index: np.ndarray) -> ImageSpec:
    return ImageSpec(**{k: np.asarray(v)[index] for k, v in dataclasses.asdict(spec).items()})


def degrade_frames(images, landmarks, params: camera.DegradationParams, noise_rng, det_rng):
    """Video frames: the camera model, then detector noise on the low-resolution landmarks (proportional to the
    inter-ocular distance and the degradation strength). Returns (JPEG bytes, noisy landmarks (B, 5, 2) float64,
    decoded low-resolution uint8 images)."""
    jpegs, lm_low, lows = camera.degrade(images, landmarks, params, noise_rng)
    lm = lm_low.double().numpy()
    ipd = np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)
    lm = lm + det_rng.normal(0, 1, lm.shape) * (0.05 * ipd * params.strength)[:, None, None]
    return jpegs, lm, lows
