"""ViT_P and ViT_C: stems as the paper lists them, body and init as the README says, forward shapes,
and the same function as torchvision's VisionTransformer once its weights are copied in."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from stemsweep.errors import ConfigError
from stemsweep.models import SIZES, paper_name
from stemsweep.models.build import build_model
from stemsweep.models.vit import ViT, conv_stem_layers, from_torchvision_state_dict

VIT_SIZES = [size for size, spec in SIZES.items() if spec.family == "vit"]
PAPER_VIT_SIZES = ["vit_1gf", "vit_4gf", "vit_18gf", "vit_36gf"]
CPU_VIT_SIZES = [size for size in VIT_SIZES if SIZES[size].cpu]


def meta_model(size, stem, **kwargs):
    with torch.device("meta"):
        return build_model(size, stem, **kwargs)


def stem_convs(model):
    """(stride, out channels, kernel) of every conv of the stem, in order."""
    convs = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    return [(m.stride[0], m.out_channels, m.kernel_size[0]) for m in convs]


@pytest.mark.parametrize("size", PAPER_VIT_SIZES)
def test_architecture_is_table_1(size, paper_csv):
    table = paper_csv("vit_models.csv")
    for stem in ("patch", "conv"):
        row, model = table[paper_name(size, stem)], meta_model(size, stem)
        assert len(model.blocks) == int(row["num_blocks"])
        block = model.blocks[0]
        d = int(row["hidden_size"])
        assert block.attention.qkv.in_features == d and model.pos_embedding.shape == (1, 197, d)
        assert block.mlp.linear_1.out_features == int(row["mlp_mult"]) * d
        assert block.attention.num_heads == int(row["num_heads"])


@pytest.mark.parametrize("size", PAPER_VIT_SIZES)
def test_conv_stem_is_conv_stems_csv(size, paper_csv):
    row = paper_csv("conv_stems.csv")[paper_name(size, "conv")]
    strides, widths = ([int(v) for v in row[key].split(";")] for key in ("strides", "out_channels"))
    kernels = [3] * (len(strides) - 1) + [1]
    assert stem_convs(meta_model(size, "conv")) == list(zip(strides, widths, kernels, strict=True))
    assert len(meta_model(size, "conv").blocks) == int(row["num_blocks"])


def test_36gf_stem_reuses_18gf_layers_with_a_1024_wide_1x1():
    stem_18, stem_36 = stem_convs(meta_model("vit_18gf", "conv")), stem_convs(meta_model("vit_36gf", "conv"))
    assert stem_36[:-1] == stem_18[:-1]
    assert stem_36[-1] == (1, 1024, 1) and stem_18[-1] == (1, 768, 1)


@pytest.mark.parametrize("size", VIT_SIZES)
def test_vit_c_has_one_block_fewer(size):
    assert len(meta_model(size, "conv").blocks) == len(meta_model(size, "patch").blocks) - 1


def test_default_conv_stem_doubles_widths_up_to_the_hidden_size():
    assert conv_stem_layers(16, 192) == ((2, 24), (2, 48), (2, 96), (2, 192))  # ViT_C-1GF's
    assert conv_stem_layers(8, 64) == ((2, 16), (2, 32), (2, 64))
    assert conv_stem_layers(2, 10) == ((2, 10),)
    for patch_size, hidden_size in ((12, 192), (1, 192), (16, 100)):
        with pytest.raises(ConfigError, match=f"patch_size={patch_size}"):
            conv_stem_layers(patch_size, hidden_size)


@pytest.mark.parametrize("size", CPU_VIT_SIZES)
@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_cpu_sizes_train_on_fashion_mnist_shapes(size, stem):
    torch.manual_seed(0)
    model = build_model(size, stem, num_classes=10, in_chans=1)
    nn.init.normal_(model.head.weight)  # the zero-initialised head would stop every gradient below it
    loss = model(torch.randn(2, 1, 28, 28)).logsumexp(1).sum()
    loss.backward()
    assert model.head.weight.shape == (10, SIZES[size].hidden_size)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_any_image_size_divisible_by_the_patch_size(stem):
    for res, in_chans in ((32, 3), (40, 1)):
        model = build_model("vit_xs", stem, num_classes=7, in_chans=in_chans, image_size=res)
        assert model.pos_embedding.shape == (1, (res // 4) ** 2 + 1, 96)
        assert model(torch.randn(1, in_chans, res, res)).shape == (1, 7)
    with pytest.raises(ConfigError, match="image_size=30"):
        build_model("vit_xs", stem, image_size=30)


@pytest.mark.parametrize("size", PAPER_VIT_SIZES)
def test_paper_sizes_forward_on_the_meta_device(size):
    for stem in ("patch", "conv"):
        assert meta_model(size, stem)(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_vit_1gf_forward_on_the_cpu(stem):
    with torch.no_grad():
        out = build_model("vit_1gf", stem).eval()(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.all(out == 0)  # zero-initialised head


def test_batchnorm_only_in_the_conv_stem():
    for stem in ("patch", "conv"):
        model = build_model("vit_xs", stem, in_chans=1)
        batchnorms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert (stem == "conv") == bool(batchnorms)
        assert all(name.startswith("stem.") for name in batchnorms)


def test_init_as_the_paper_and_pycls():
    torch.manual_seed(0)
    model = build_model("vit_4gf", "patch")
    assert torch.all(model.class_token == 0)
    assert model.pos_embedding.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(model.head.weight == 0) and torch.all(model.head.bias == 0)
    patchify = model.stem.patchify.weight
    assert patchify.std().item() == pytest.approx(math.sqrt(1 / (3 * 16 * 16)), rel=0.05)
    linear_1 = model.blocks[0].mlp.linear_1.weight
    xavier_bound = math.sqrt(6 / (384 + 1152))
    assert linear_1.abs().max().item() == pytest.approx(xavier_bound, rel=0.01)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 12 + 1 and all(m.eps == 1e-6 for m in norms)
    assert all(m.approximate == "none" for m in model.modules() if isinstance(m, nn.GELU))
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_same_function_as_torchvision_with_its_weights():
    torch.manual_seed(0)
    theirs = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32,
                               mlp_dim=96, num_classes=10)
    for p in theirs.parameters():  # its zero head and near-zero biases would hide mistakes
        nn.init.normal_(p, std=0.2)
    ours = ViT(stem="patch", image_size=16, patch_size=4, hidden_size=32, mlp_mult=3, num_heads=2,
               num_blocks=2, num_classes=10)
    ours.load_state_dict(from_torchvision_state_dict(theirs.state_dict()))
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    out_theirs = theirs(x)
    (grad_theirs,) = torch.autograd.grad(out_theirs.square().sum(), x)
    out_ours = ours(x)
    (grad_ours,) = torch.autograd.grad(out_ours.square().sum(), x)
    assert out_theirs.abs().mean() > 0.1
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-4, atol=1e-5)


def full_token_forward(model, x):
    """The textbook forward: every token through every block, then the class token's output."""
    x = model.stem(x).flatten(2).transpose(1, 2)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1) + model.pos_embedding
    for block in model.blocks:
        x = block(x)
    return model.head(model.norm(x)[:, 0])


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_class_token_only_last_block_has_the_full_models_logits_and_gradients(stem):
    # The forward runs only the class token through the last block's query, MLP and norms; every
    # parameter must get the gradient it gets when all tokens go through.
    torch.manual_seed(0)
    model = ViT(stem=stem, image_size=16, patch_size=4, hidden_size=32, mlp_mult=3, num_heads=2,
                num_blocks=2, num_classes=10, in_chans=1).train().double()
    nn.init.normal_(model.head.weight, std=0.5)
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)  # float64: a wrong gradient is not rounding
    grads = []
    for forward in (model, lambda x: full_token_forward(model, x)):
        model.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out, fast), (out_ref, ref) = grads
    assert out.abs().mean() > 0.1
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-9, atol=1e-12, msg=name)
    # q, k and v rows of the last block's fused projection all learn
    qkv = fast["blocks.1.attention.qkv.weight"]
    assert all(part.abs().sum() > 0 for part in qkv.chunk(3))


def test_a_vit_needs_a_block():
    with pytest.raises(ConfigError, match="num_blocks=0"):
        ViT(stem="patch", image_size=16, patch_size=4, hidden_size=32, mlp_mult=3, num_heads=2, num_blocks=0)
