"""Moved to :mod:`harness.data.align`; this path stays importable because README's "Readers" section showed it."""

from harness.data.align import align_faces, arcface_template, umeyama_similarity, warp_affine  # noqa: F401
