"""Studies: a file of stages (lr/wd sweeps → tune → the other sweeps → report), run here in order or
submitted to SLURM at once, chained by afterany."""
