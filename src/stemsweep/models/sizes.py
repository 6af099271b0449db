"""The model sizes of the study: the paper's (Table 1, regnety_models.csv) and small ones for CPU runs.

A size names an architecture; for ViT the stem ("patch" or "conv") is chosen separately, and ViT_C
has one block fewer than ViT_P so that the two cost the same (the conv stem costs about one block).
No torch here: config validation and sweep planning read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from stemsweep.errors import ConfigError
from stemsweep.models.stems import CONV, NO_STEM, PAPER_LETTER, VIT_STEMS

# ViT_C-18GF's 3×3 layers (stride, width) in conv_stems.csv, narrower than the default rule's and with
# stride-1 layers between; ViT_C-36GF reuses them before its 1024-wide 1×1. 1GF and 4GF: the rule.
CONV_STEM_18GF = ((2, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512))


@dataclass(frozen=True)
class ModelSpec:
    """One size. ViT fields are None for RegNetY and the other way round."""

    family: str  # "vit" | "regnety"
    label: str  # the size part of the paper's name: "4GF", "XS"
    train_res: int  # default input resolution for training ...
    test_res: int  # ... and for testing
    cpu: bool = False  # a CPU size, for 28×28 (or 32×32) inputs
    # ViT, Table 1
    patch_size: int | None = None
    hidden_size: int | None = None
    mlp_mult: int | None = None
    num_heads: int | None = None
    num_blocks: int | None = None  # ViT_P's; ViT_C has one fewer
    conv_stem: tuple[tuple[int, int], ...] | None = None  # ViT_C's 3×3 layers; None: ViT's rule
    # RegNetY, regnety_models.csv
    depths: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    group_width: int | None = None
    stem_stride: int | None = None

    def blocks(self, stem: str) -> int:
        """Transformer blocks of ViT with this stem; RegNetY's blocks over all stages."""
        if self.family == "regnety":
            return sum(self.depths)
        return self.num_blocks - (stem == CONV)


def _vit(label: str, *, hidden_size: int, mlp_mult: int, num_heads: int, num_blocks: int,
         conv_stem: tuple[tuple[int, int], ...] | None = None, patch_size: int = 16, res: int = 224,
         cpu: bool = False) -> ModelSpec:
    return ModelSpec("vit", label, res, res, cpu, patch_size=patch_size, hidden_size=hidden_size,
                     mlp_mult=mlp_mult, num_heads=num_heads, num_blocks=num_blocks, conv_stem=conv_stem)


def _regnety(label: str, *, depths: tuple[int, ...], widths: tuple[int, ...], group_width: int,
             train_res: int, test_res: int, stem_stride: int = 2, cpu: bool = False) -> ModelSpec:
    return ModelSpec("regnety", label, train_res, test_res, cpu, depths=depths, widths=widths,
                     group_width=group_width, stem_stride=stem_stride)


SIZES: dict[str, ModelSpec] = {
    "vit_1gf": _vit("1GF", hidden_size=192, mlp_mult=3, num_heads=3, num_blocks=12),
    "vit_4gf": _vit("4GF", hidden_size=384, mlp_mult=3, num_heads=6, num_blocks=12),
    "vit_18gf": _vit("18GF", hidden_size=768, mlp_mult=4, num_heads=12, num_blocks=12,
                     conv_stem=CONV_STEM_18GF),
    "vit_36gf": _vit("36GF", hidden_size=1024, mlp_mult=4, num_heads=16, num_blocks=14,
                     conv_stem=CONV_STEM_18GF),
    "regnety_1gf": _regnety("1GF", depths=(1, 4, 10, 3), widths=(40, 120, 328, 904), group_width=4,
                            train_res=232, test_res=262),
    "regnety_4gf": _regnety("4GF", depths=(2, 6, 16, 2), widths=(96, 192, 512, 1216), group_width=32,
                            train_res=240, test_res=272),
    "regnety_16gf": _regnety("16GF", depths=(2, 7, 18, 2), widths=(168, 336, 896, 2128), group_width=56,
                             train_res=256, test_res=292),
    # CPU sizes, patch 4 (7×7 tokens at 28²). With only two stride-2 layers, the rule's widths (d/2, d)
    # would make the conv stem cost half a block; two full-width layers cost 0.9 of a block, so ViT_C
    # with one block fewer stays within 2% of ViT_P's flops, as the paper's pairs do.
    "vit_xs": _vit("XS", hidden_size=96, mlp_mult=3, num_heads=3, num_blocks=6,
                   conv_stem=((2, 96), (2, 96)), patch_size=4, res=28, cpu=True),
    "vit_s": _vit("S", hidden_size=192, mlp_mult=3, num_heads=3, num_blocks=12,
                  conv_stem=((2, 192), (2, 192)), patch_size=4, res=28, cpu=True),
    # A stride-1 stem, so the stages run at 14, 7, 4, 2 pixels (at 224²: 56, 28, 14, 7; a stride-2 stem
    # would leave the last stage one pixel), and widths doubling from 64: ViT_XS's flops (30.8 M at 28²)
    # with 3.3× its parameters, as the paper matches flops, not parameters (RegNetY-1GF: 2× ViT_P-1GF's).
    "regnety_xs": _regnety("XS", depths=(1, 3, 6, 1), widths=(64, 128, 256, 512), group_width=8,
                           train_res=28, test_res=28, stem_stride=1, cpu=True),
}


def resolve(size: str, stem: str | None) -> tuple[ModelSpec, str]:
    """The size's spec and the stem as the config names it ("patch", "conv"; "none" for RegNetY), or
    ValueError."""
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r}: choose one of {', '.join(sorted(SIZES))}")
    spec = SIZES[size]
    if spec.family == "regnety":
        if stem not in (None, NO_STEM):
            raise ConfigError(f"stem {stem!r} is not allowed with {size}: RegNetY has its own stem "
                             f"(give None or {NO_STEM!r})")
        return spec, NO_STEM
    if stem not in VIT_STEMS:
        raise ConfigError(f"unknown stem {stem!r} for {size}: choose one of {', '.join(sorted(VIT_STEMS))}")
    return spec, stem


def paper_name(size: str, stem: str | None) -> str:
    """The paper's name for the model: ViT_P-4GF, ViT_C-18GF, RegNetY-16GF (CPU sizes: ViT_C-XS, ...)."""
    spec, stem = resolve(size, stem)
    if spec.family == "regnety":
        return f"RegNetY-{spec.label}"
    return f"ViT_{PAPER_LETTER[stem]}-{spec.label}"
