"""RegNetY, the paper's reference CNN: torchvision's `RegNet` with the paper's block lists.

Radosavovic et al. 2020, Designing Network Design Spaces (arXiv 2003.13678). A stem (3×3 conv of
stride 2, width 32, BatchNorm, ReLU), then 4 stages of residual bottleneck blocks, each stage starting
with stride 2: 1×1 conv → 3×3 group conv (group width g) → squeeze-excitation → 1×1 conv, bottleneck
multiplier 1, SE width 0.25 × the block's input width; global average pool, one linear head.
torchvision's init is pycls's: He normal (fan-out) convs, N(0, 0.01) head.

The CPU size regnety_xs (28×28 inputs) has a stride-1 stem, as pycls's CIFAR stem: five stride-2 steps
would leave its last stage one pixel, whose BatchNorm then sees only the batch (none for a batch of 1).
"""

from __future__ import annotations

from torchvision.models.regnet import BlockParams, RegNet
from torchvision.ops.misc import Conv2dNormActivation

from stemsweep.models.complexity import Complexity

STEM_WIDTH = 32
SE_RATIO = 0.25  # of the block's input width (torchvision's and pycls's reading of se_ratio)


class RegNetY(RegNet):
    """RegNetY of these stage depths and widths (4 stages, all stride 2) and one group width."""

    def __init__(self, depths: tuple[int, ...], widths: tuple[int, ...], group_width: int,
                 num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2) -> None:
        stages = len(depths)
        block_params = BlockParams(list(depths), list(widths), group_widths=[group_width] * stages,
                                   bottleneck_multipliers=[1.0] * stages, strides=[2] * stages,
                                   se_ratio=SE_RATIO)
        # torchvision's stem (SimpleStemIN) is for 3 input channels and stride 2; this one is for in_chans
        # and stem_stride.
        super().__init__(block_params, num_classes=num_classes, stem_width=STEM_WIDTH,
                         stem_type=lambda _rgb, width, norm, act: Conv2dNormActivation(
                             in_chans, width, 3, stride=stem_stride, norm_layer=norm, activation_layer=act))

    @staticmethod
    def complexity(cx: Complexity, depths: tuple[int, ...], widths: tuple[int, ...], group_width: int,
                   num_classes: int = 1000, in_chans: int = 3, stem_stride: int = 2) -> Complexity:
        """Counts for one image; cx starts at its resolution. Matches regnety_models.csv to its precision."""
        cx.conv2d(in_chans, STEM_WIDTH, 3, stride=stem_stride)
        cx.norm(STEM_WIDTH)
        w_in = STEM_WIDTH
        for depth, w_out in zip(depths, widths, strict=True):
            for i in range(depth):
                res_bottleneck_block_complexity(cx, w_in, w_out, 2 if i == 0 else 1, group_width)
                w_in = w_out
        cx.linear(w_in, num_classes)  # after the global average pool
        return cx


def res_bottleneck_block_complexity(cx: Complexity, w_in: int, w_out: int, stride: int,
                                    group_width: int) -> None:
    """torchvision's `ResBottleneckBlock` with bottleneck multiplier 1 and SE."""
    if w_in != w_out or stride != 1:  # the shortcut projection: 1×1 conv + BN
        with cx.branch():
            cx.conv2d(w_in, w_out, 1, stride=stride)
            cx.norm(w_out)
    cx.conv2d(w_in, w_out, 1)
    cx.norm(w_out)
    cx.conv2d(w_out, w_out, 3, stride=stride, groups=w_out // group_width)
    cx.norm(w_out)
    squeeze_excitation_complexity(cx, w_out, round(SE_RATIO * w_in))
    cx.conv2d(w_out, w_out, 1)
    cx.norm(w_out)


def squeeze_excitation_complexity(cx: Complexity, width: int, se_width: int) -> None:
    """SE: global average pool, 1×1 conv + ReLU, 1×1 conv + sigmoid, rescale. Its two convs see one pixel,
    so they count as linear layers on the pooled vector (pycls counts them the same way)."""
    cx.linear(width, se_width)
    cx.linear(se_width, width)
