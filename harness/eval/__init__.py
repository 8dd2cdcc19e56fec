"""Evaluation protocols: ROC / TAR@FAR (:mod:`harness.eval.roc`), IJB-B/IJB-C 1:1 verification
(:mod:`harness.eval.ijb_verification`) and 1:N identification, IJB-S, TinyFace and insightface's ``.bin``
verification sets, reproducing the published code's numbers exactly; the benchmark registry
(:mod:`harness.eval.registry`) lists them for the rest of the harness."""

from harness.eval.roc import DEFAULT_FARS, roc_auc, roc_curve, tar_at_far

__all__ = ["DEFAULT_FARS", "roc_curve", "roc_auc", "tar_at_far"]
