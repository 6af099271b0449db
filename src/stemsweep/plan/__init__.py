"""The planning spine: (a sweep or a study stage, overrides) → typed planned runs → one submission.

runs.py plans (one composer, Hydra's own override parser), cost.py prices a run, launcher.py types a
launcher's settings, queue.py asks SLURM what is queued, submit.py turns planned runs into job arrays
and submits them in one commit, printer.py prints a plan. The Hydra sweeper and SLURM launcher, `stemsweep
plan`, `status` and the study commands all go through it.
"""
