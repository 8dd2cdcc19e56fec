"""Sweeps: a sweep file expanded into jobs (:mod:`.plan`), one job's run and state (:mod:`.jobs`), and the
launchers that run them, on this machine (:mod:`.local`) or on Slurm through submitit (:mod:`.slurm`). The command
is ``python -m harness.sweep``."""
