"""stemsweep: sweeps for the optimizability study of ViT_P, ViT_C and RegNetY (Xiao et al., 2021)."""

from pathlib import Path

__version__ = "0.1.0"

# The paper's tables as CSV (docs/paper/, described in its README): the analysis sets its results
# beside them and the model tests hold the models to them.
PAPER_DIR = Path(__file__).resolve().parents[2] / "docs" / "paper"
