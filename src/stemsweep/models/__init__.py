"""The study's models: ViT_P and ViT_C (`vit.py`), RegNetY (`regnety.py`), their sizes (`sizes.py`) and
their complexity in the paper's convention (`complexity.py`)."""

from stemsweep.models.complexity import model_complexity
from stemsweep.models.sizes import SIZES, ModelSpec, build_model, paper_name

__all__ = ["SIZES", "ModelSpec", "build_model", "model_complexity", "paper_name"]
