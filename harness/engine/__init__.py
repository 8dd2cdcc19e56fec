"""The training engine: the one training loop, data parallelism, and the deviations from the released recipes."""
