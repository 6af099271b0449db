"""The builder: a model of the study from its size and stem, and its complexity counted on the same
arguments."""

from __future__ import annotations

from torch import nn

from stemsweep.models.complexity import Complexity
from stemsweep.models.regnety import RegNetY
from stemsweep.models.sizes import resolve
from stemsweep.models.vit import ViT


def _model_args(size: str, stem: str | None, num_classes: int, in_chans: int,
               image_size: int) -> tuple[type[ViT] | type[RegNetY], dict]:
    """The model class and its keyword arguments: what `build_model` builds and `model_complexity` counts."""
    spec, stem = resolve(size, stem)
    if spec.family == "regnety":
        return RegNetY, {"depths": spec.depths, "widths": spec.widths, "group_width": spec.group_width,
                         "stem_stride": spec.stem_stride, "num_classes": num_classes, "in_chans": in_chans}
    return ViT, {"stem": stem, "image_size": image_size, "patch_size": spec.patch_size,
                 "hidden_size": spec.hidden_size, "mlp_mult": spec.mlp_mult, "num_heads": spec.num_heads,
                 "num_blocks": spec.blocks(stem), "conv_stem": spec.conv_stem,
                 "num_classes": num_classes, "in_chans": in_chans}


def build_model(size: str, stem: str | None, num_classes: int = 1000, in_chans: int = 3,
                image_size: int | None = None) -> nn.Module:
    """The model of this size: ViT with stem "patch" or "conv", or RegNetY (stem None or "none").

    image_size (None: the size's train resolution) sizes ViT's position embedding; RegNetY takes any."""
    spec, _ = resolve(size, stem)
    model_class, args = _model_args(size, stem, num_classes, in_chans, image_size or spec.train_res)
    return model_class(**args)


def model_complexity(size: str, stem: str | None, num_classes: int = 1000, in_chans: int = 3,
                     image_size: int | None = None) -> dict[str, float]:
    """flops_b (GFLOPs), params_m and acts_m (millions) of the model `build_model` builds with these
    arguments, for one image of image_size² (None: the size's train resolution)."""
    spec, stem = resolve(size, stem)
    image_size = image_size or spec.train_res
    model_class, args = _model_args(size, stem, num_classes, in_chans, image_size)
    cx = model_class.complexity(Complexity(image_size, image_size), **args)
    return {"flops_b": cx.flops / 1e9, "params_m": cx.params / 1e6, "acts_m": cx.acts / 1e6}
