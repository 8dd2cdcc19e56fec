"""CFSM stage 1 internals: the analysis of a trained synthesis model (the command is ``python -m harness.stage1``)."""
