"""stemsweep: sweeps for the optimizability study of ViT_P, ViT_C and RegNetY (Xiao et al., 2021)."""

__version__ = "0.1.0"
