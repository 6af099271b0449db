"""The study's models. Imports run one way:

    stems ─► sizes ─► complexity ─► vit, regnety ─► build ─► paper
    (the stem      (the size   (the counter)  (the models, each  (build_model,   (`stemsweep models`:
     vocabulary)    table)                     layer counting     model_complexity) the paper's table)
                                               itself)

Importing this package, `stems` or `sizes` does not import torch: config validation and sweep
planning read the size table only, and a re-launched sweep whose runs are all done never needs
torch. `stemsweep.models.build` (and what follows it) imports torch.
"""

from stemsweep.models.sizes import SIZES, ModelSpec, paper_name

__all__ = ["SIZES", "ModelSpec", "paper_name"]
