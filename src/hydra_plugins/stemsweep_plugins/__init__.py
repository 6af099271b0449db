"""stemsweep's Hydra plugins: the sweeps/ search path, the sweeper and the SLURM launcher."""
