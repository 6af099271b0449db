"""The stem vocabulary: ViT's two stems, how each layer of the project writes "no stem", and what a
stem decides beyond the model (the memory layout).

"No stem" is RegNetY's case (it has its own stem, not a choice): a config names it "none" (`stem=none`,
conf/stem/none.yaml), a run's record holds None (summary.json's `stem`), an analysis table NaN.
Nothing here imports torch: config validation and sweep planning read it.
"""

from __future__ import annotations

from typing import Any

PATCH = "patch"  # ViT_P's: one p×p conv of stride p
CONV = "conv"  # ViT_C's: 3×3 conv + BatchNorm + ReLU layers, then a 1×1 conv
VIT_STEMS = (PATCH, CONV)  # in the paper's order
NO_STEM = "none"  # the config's name for RegNetY's own stem
CONFIG_STEMS = (*VIT_STEMS, NO_STEM)  # what `stem.name` may be

PAPER_LETTER = {PATCH: "P", CONV: "C"}  # ViT_P, ViT_C


def record_stem(config_name: str) -> str | None:
    """The stem as a record holds it: the config's name, None for "none"."""
    return None if config_name == NO_STEM else config_name


def config_stem(stem: Any) -> str:
    """The config's name for a stem read from a record (None) or a table (NaN): "none" for no stem."""
    return stem if isinstance(stem, str) else NO_STEM


def uses_channels_last(stem: str | None, family: str) -> bool:
    """Whether the model trains in the channels_last memory layout. It speeds up 3×3 convolutions, on
    CPU too (RegNetY-XS +15%: docs/benchmarks.md); the patchify stem is a single strided conv, not
    worth the layout change."""
    return stem == CONV or family == "regnety"
