"""The study's models: ViT_P and ViT_C (`vit.py`), RegNetY (`regnety.py`), their sizes (`sizes.py`) and
their complexity in the paper's convention (`complexity.py`).

Importing this package does not import torch: config validation and sweep planning read the size
table only, and a re-launched sweep whose runs are all done never needs torch. `build_model` and
`model_complexity` import it when called.
"""

from stemsweep.models.sizes import SIZES, ModelSpec, build_model, paper_name

__all__ = ["SIZES", "ModelSpec", "build_model", "model_complexity", "paper_name"]


def __getattr__(name: str):
    if name == "model_complexity":
        from stemsweep.models.complexity import model_complexity

        return model_complexity
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
