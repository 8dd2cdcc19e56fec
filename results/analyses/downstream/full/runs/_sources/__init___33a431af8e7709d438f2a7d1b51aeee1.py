"""Infrastructure with no training or evaluation knowledge: the run config, errors, atomic files, the runtime (Sacred,
locks), the pipeline's params."""
