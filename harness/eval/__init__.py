"""Evaluation protocols: ROC / TAR@FAR (:mod:`harness.eval.roc`) and IJB-B/IJB-C 1:1 verification
(:mod:`harness.eval.ijb_verification`), reproducing insightface's numbers exactly."""

from harness.eval.roc import DEFAULT_FARS, roc_auc, roc_curve, tar_at_far

__all__ = ["DEFAULT_FARS", "roc_curve", "roc_auc", "tar_at_far"]
