"""cfsm-bench: a reproducibility harness for face recognition under domain shift (CFSM, ECCV 2022)."""
