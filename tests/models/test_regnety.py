"""RegNetY: the paper's block lists on torchvision's RegNet, any input channels, 28×28 inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.regnet import ResBottleneckBlock

from stemsweep.models import SIZES, paper_name
from stemsweep.models.build import build_model

PAPER_REGNETY_SIZES = ["regnety_1gf", "regnety_4gf", "regnety_16gf"]


def meta_model(size, **kwargs):
    with torch.device("meta"):
        return build_model(size, None, **kwargs)


@pytest.mark.parametrize("size", PAPER_REGNETY_SIZES)
def test_architecture_is_regnety_models_csv(size, paper_csv):
    row = paper_csv("regnety_models.csv")[paper_name(size, None)]
    spec, model = SIZES[size], meta_model(size)
    assert (spec.train_res, spec.test_res) == (int(row["train_res"]), int(row["test_res"]))
    depths, widths = ([int(v) for v in row[key].split(";")] for key in ("depths", "widths"))
    stages = list(model.trunk_output.children())
    assert [len(stage) for stage in stages] == depths
    assert model.stem[0].out_channels == int(row["stem_width"]) and model.stem[0].stride == (2, 2)
    w_in = int(row["stem_width"])
    for stage, width in zip(stages, widths, strict=True):
        for i, block in enumerate(stage):
            assert isinstance(block, ResBottleneckBlock)
            a, b, se = block.f.a[0], block.f.b[0], block.f.se
            assert a.out_channels == width * float(row["bottleneck_mult"])  # bottleneck multiplier 1
            assert b.stride == ((2, 2) if i == 0 else (1, 1))
            assert b.in_channels // b.groups == int(row["group_width"])
            assert se.fc1.out_channels == round(float(row["se_ratio_of_block_input"]) * w_in)
            w_in = width


@pytest.mark.parametrize("size", PAPER_REGNETY_SIZES)
def test_paper_sizes_forward_on_the_meta_device(size):
    res = SIZES[size].train_res
    assert meta_model(size)(torch.empty(2, 3, res, res, device="meta")).shape == (2, 1000)


def test_regnety_1gf_forward_on_the_cpu():
    with torch.no_grad():
        assert build_model("regnety_1gf", None).eval()(torch.randn(1, 3, 232, 232)).shape == (1, 1000)


def test_cpu_size_trains_on_fashion_mnist_shapes():
    torch.manual_seed(0)
    model = build_model("regnety_xs", "none", num_classes=10, in_chans=1)
    assert model.stem[0].in_channels == 1 and model.stem[0].stride == (1, 1)
    for batch in (1, 2):  # the last stage is 2×2, so BatchNorm has statistics even for one image
        model(torch.randn(batch, 1, 28, 28)).sum().backward()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert all(p.grad is not None for p in model.parameters())


def test_any_input_channels_and_resolution():
    model = build_model("regnety_xs", None, num_classes=5, in_chans=3)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert isinstance(model.stem[1], nn.BatchNorm2d)
    # The paper's sizes keep their stride-2 stem: at 28² their last stage is one pixel, and still runs.
    paper_size = build_model("regnety_1gf", None, num_classes=10, in_chans=1)
    assert paper_size(torch.randn(2, 1, 28, 28)).shape == (2, 10)
