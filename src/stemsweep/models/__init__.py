"""The study's models. Imports run one way, each module needing only those above it:

- `stems`: the stem vocabulary (the names, "no stem" in config, record and table, the channels_last rule);
- `sizes`: the size table (`SIZES`, `paper_name`);
- `complexity`: the counter, in the paper's convention;
- `vit`, `regnety`: the models, each layer counting its own complexity next to its definition;
- `build`: `build_model` and `model_complexity`, from a size and a stem;
- `paper`: `stemsweep models`, every model counted beside what the paper prints.

This package, `stems` and `sizes` import no torch: config validation and sweep planning read the size
table only, and a re-launched sweep whose runs are all done never needs torch.
"""

from stemsweep.models.sizes import SIZES, ModelSpec, paper_name

__all__ = ["SIZES", "ModelSpec", "paper_name"]
