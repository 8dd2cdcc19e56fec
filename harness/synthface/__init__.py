"""SynthFace: a procedural stand-in face-recognition benchmark written in the real dataset layouts.

``python -m harness.synthface --size tiny --out datasets/synthface/tiny`` writes a release; see
``harness.synthface.generate`` for the layout, ``render`` for the identities and ``degrade`` for the hidden
target-domain camera model.
"""
