"""The sizes' names, specs, paper names and the errors for sizes and stems that do not exist."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stemsweep.errors import ConfigError
from stemsweep.models import SIZES, ModelSpec, paper_name
from stemsweep.models.build import build_model, model_complexity


def test_size_names():
    assert set(SIZES) == {"vit_1gf", "vit_4gf", "vit_18gf", "vit_36gf", "vit_xs", "vit_s",
                          "regnety_1gf", "regnety_4gf", "regnety_16gf", "regnety_xs"}


def test_specs():
    for size, spec in SIZES.items():
        assert isinstance(spec, ModelSpec) and spec.family == size.split("_")[0]
        assert (spec.patch_size is None) == (spec.family == "regnety")
    vit_4gf = SIZES["vit_4gf"]
    assert (vit_4gf.train_res, vit_4gf.test_res, vit_4gf.patch_size) == (224, 224, 16)
    assert (SIZES["regnety_16gf"].train_res, SIZES["regnety_16gf"].test_res) == (256, 292)
    for size in ("vit_xs", "vit_s", "regnety_xs"):
        assert (SIZES[size].train_res, SIZES[size].test_res) == (28, 28) and SIZES[size].cpu
    assert SIZES["vit_xs"].patch_size == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        SIZES["vit_xs"].train_res = 32


def test_cpu_vit_sizes():
    xs, s = SIZES["vit_xs"], SIZES["vit_s"]
    assert (xs.hidden_size, xs.num_heads, xs.mlp_mult) == (96, 3, 3)
    assert (xs.blocks("patch"), xs.blocks("conv")) == (6, 5)
    assert (s.hidden_size, s.num_heads, s.mlp_mult) == (192, 3, 3)
    assert (s.blocks("patch"), s.blocks("conv")) == (12, 11)


def test_paper_names():
    assert paper_name("vit_4gf", "patch") == "ViT_P-4GF"
    assert paper_name("vit_18gf", "conv") == "ViT_C-18GF"
    assert paper_name("regnety_16gf", None) == "RegNetY-16GF" == paper_name("regnety_16gf", "none")
    assert (paper_name("vit_xs", "conv"), paper_name("vit_s", "patch"), paper_name("regnety_xs", None)) == (
        "ViT_C-XS", "ViT_P-S", "RegNetY-XS")


def test_image_size_defaults_to_the_train_resolution():
    with torch.device("meta"):
        assert build_model("vit_4gf", "conv").pos_embedding.shape == (1, 197, 384)
        assert build_model("vit_4gf", "conv", image_size=384).pos_embedding.shape == (1, 24 * 24 + 1, 384)


@pytest.mark.parametrize("call", [build_model, paper_name, model_complexity])
def test_unknown_size_names_it_and_the_choices(call):
    message = r"^unknown model size 'vit_5gf': choose one of regnety_16gf, .*, vit_xs$"
    with pytest.raises(ConfigError, match=message):
        call("vit_5gf", "patch")


@pytest.mark.parametrize("call", [build_model, paper_name, model_complexity])
@pytest.mark.parametrize("stem", ["patchify", None, "none"])
def test_unknown_stem_names_it_and_the_choices(call, stem):
    with pytest.raises(ConfigError, match=rf"unknown stem {stem!r} for vit_4gf: choose one of conv, patch"):
        call("vit_4gf", stem)


@pytest.mark.parametrize("call", [build_model, paper_name, model_complexity])
@pytest.mark.parametrize("stem", ["conv", "patch"])
def test_regnety_has_its_own_stem(call, stem):
    message = rf"stem '{stem}' is not allowed with regnety_4gf: RegNetY has its own stem"
    with pytest.raises(ConfigError, match=message):
        call("regnety_4gf", stem)
