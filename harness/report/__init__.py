"""Reporting downstream of the evaluators: bootstrap confidence intervals over the per-item arrays, the published
numbers."""
