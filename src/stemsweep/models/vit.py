"""Vision transformer with a patchify stem (ViT_P) or a convolutional stem (ViT_C).

    image ─► stem ─► tokens ─► [class token; tokens] + position embedding ─► blocks ─► LayerNorm ─► head

References: Dosovitskiy et al. 2020 (ViT, arXiv 2010.11929); Xiao et al. 2021, Early Convolutions Help
Transformers See Better (arXiv 2106.14881), whose models these are; pycls's vit.py, the authors' code.

Stems. The patchify stem is one p×p conv of stride p. The conv stem is a stack of 3×3 conv + BatchNorm
+ ReLU layers whose strides multiply to p, then a 1×1 conv to the hidden size; the paper's stems are
in `sizes.py`, and any power-of-2 p has a default (`conv_stem_layers`). BatchNorm appears in the conv
stem only.

Body. Pre-norm blocks x += MHSA(LN(x)); x += MLP(LN(x)); LayerNorm eps 1e-6; MLP Linear → exact GELU →
Linear; no dropout, stochastic depth or layer scale. Initialisation follows pycls (`init_weights_vit`),
which is torchvision's too: named at each layer below.

Every module counts its own complexity (`complexity(cx, ...)`, mirroring its `__init__`), in the
paper's convention (`complexity.py`).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stemsweep.errors import ConfigError
from stemsweep.models.complexity import Complexity
from stemsweep.models.stems import PATCH, VIT_STEMS


def layer_norm(width: int) -> nn.LayerNorm:
    return nn.LayerNorm(width, eps=1e-6)


class PatchifyStem(nn.Module):
    """ViT_P's stem: one p×p conv of stride p, with bias; each p×p patch becomes a token."""

    def __init__(self, in_chans: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        self.patchify = nn.Conv2d(in_chans, hidden_size, patch_size, stride=patch_size)
        # LeCun normal. torch truncates at ±2 absolute, not ±2 std: at this std, no truncation (as pycls).
        nn.init.trunc_normal_(self.patchify.weight, std=math.sqrt(1.0 / (in_chans * patch_size**2)))
        nn.init.zeros_(self.patchify.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patchify(x)

    @staticmethod
    def complexity(cx: Complexity, in_chans: int, hidden_size: int, patch_size: int) -> None:
        cx.conv2d(in_chans, hidden_size, patch_size, stride=patch_size, padding=0, bias=True)


class ConvBNReLU(nn.Sequential):
    """One layer of the conv stem: 3×3 conv (padding 1; no bias, BatchNorm has one) → BatchNorm → ReLU."""

    def __init__(self, w_in: int, w_out: int, stride: int) -> None:
        # PyTorch's default init for conv and BatchNorm, as pycls.
        super().__init__(OrderedDict(
            conv=nn.Conv2d(w_in, w_out, 3, stride=stride, padding=1, bias=False),
            bn=nn.BatchNorm2d(w_out),
            relu=nn.ReLU(inplace=True),
        ))

    @staticmethod
    def complexity(cx: Complexity, w_in: int, w_out: int, stride: int) -> None:
        cx.conv2d(w_in, w_out, 3, stride=stride)
        cx.norm(w_out)


def conv_stem_layers(patch_size: int, hidden_size: int) -> tuple[tuple[int, int], ...]:
    """The default conv stem's 3×3 layers as (stride, width): log2(p) stride-2 layers whose widths double
    up to the hidden size (p=16, d=192: 24, 48, 96, 192; ViT_C-1GF's and ViT_C-4GF's stems)."""
    num_layers = patch_size.bit_length() - 1
    if patch_size < 2 or 2**num_layers != patch_size or hidden_size % 2 ** (num_layers - 1):
        raise ConfigError(f"no default conv stem for patch_size={patch_size}, hidden_size={hidden_size}: "
                         "patch_size must be a power of 2 and hidden_size divisible by patch_size / 2")
    return tuple((2, hidden_size >> (num_layers - 1 - i)) for i in range(num_layers))


class ConvStem(nn.Module):
    """ViT_C's stem: 3×3 conv + BN + ReLU layers (stride, width), then a 1×1 conv with bias to the hidden
    size, no norm, no activation. The strides multiply to the patch size, so the token grid is ViT_P's."""

    def __init__(self, in_chans: int, hidden_size: int, patch_size: int,
                 layers: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__()
        convs, w_in = [], in_chans
        for stride, w_out in _checked_stem_layers(patch_size, hidden_size, layers):
            convs.append(ConvBNReLU(w_in, w_out, stride))
            w_in = w_out
        self.convs = nn.Sequential(*convs)
        self.conv_1x1 = nn.Conv2d(w_in, hidden_size, 1)
        # pycls: He normal over the fan-out for the 1×1, zero bias.
        nn.init.normal_(self.conv_1x1.weight, std=math.sqrt(2.0 / hidden_size))
        nn.init.zeros_(self.conv_1x1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1x1(self.convs(x))

    @staticmethod
    def complexity(cx: Complexity, in_chans: int, hidden_size: int, patch_size: int,
                   layers: Sequence[tuple[int, int]] | None = None) -> None:
        w_in = in_chans
        for stride, w_out in _checked_stem_layers(patch_size, hidden_size, layers):
            ConvBNReLU.complexity(cx, w_in, w_out, stride)
            w_in = w_out
        cx.conv2d(w_in, hidden_size, 1, bias=True)


def _checked_stem_layers(patch_size: int, hidden_size: int,
                         layers: Sequence[tuple[int, int]] | None) -> tuple[tuple[int, int], ...]:
    layers = tuple(layers) if layers is not None else conv_stem_layers(patch_size, hidden_size)
    if math.prod(s for s, _ in layers) != patch_size:
        raise ConfigError(f"conv stem {layers}: its strides must multiply to the patch size {patch_size}")
    return layers


class MultiheadSelfAttention(nn.Module):
    """Multi-head self-attention: one fused q, k, v projection, scaled dot-product attention per head
    (PyTorch's fused kernels), an output projection."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        # pycls and torchvision (nn.MultiheadAttention): Xavier uniform over the fused q, k, v weight;
        # PyTorch's default for the output projection's weight; zero biases.
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """Attention of every token over all tokens; with `queries`, of the first `queries` tokens only
        (keys and values still from all): the output is then (b, queries, d)."""
        b, n, d = x.shape
        h = self.num_heads
        if queries is None:
            # (b, n, 3d) → 3 × (b, heads, n, d / heads); q, k, v are each d wide, split head by head
            q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            # The same fused weight, its q rows applied to the query tokens only.
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :queries], w[:d], bias[:d]).view(b, queries, h, d // h).transpose(1, 2)
            k, v = F.linear(x, w[d:], bias[d:]).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (b, heads, queries, d / heads)
        return self.proj(x.transpose(1, 2).reshape(b, -1, d))

    @staticmethod
    def complexity(cx: Complexity, hidden_size: int, num_heads: int, num_tokens: int) -> None:
        n, d = num_tokens, hidden_size
        cx.linear(d, 3 * d, tokens=n)
        # QKᵀ and attention·V: heads·N²·(d/heads) multiply-adds each, outputs heads·N² scores and N·d.
        cx.flops += 2 * n * n * d
        cx.acts += num_heads * n * n + n * d
        cx.linear(d, d, tokens=n)


class MLP(nn.Module):
    """The block's MLP: Linear(d → m) → exact GELU → Linear(m → d)."""

    def __init__(self, hidden_size: int, mlp_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, mlp_size)
        self.gelu = nn.GELU()
        self.linear_2 = nn.Linear(mlp_size, hidden_size)
        for linear in (self.linear_1, self.linear_2):  # pycls and torchvision
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.gelu(self.linear_1(x)))

    @staticmethod
    def complexity(cx: Complexity, hidden_size: int, mlp_size: int, num_tokens: int) -> None:
        cx.linear(hidden_size, mlp_size, tokens=num_tokens)
        cx.linear(mlp_size, hidden_size, tokens=num_tokens)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x += MHSA(LN(x)); x += MLP(LN(x))."""

    def __init__(self, hidden_size: int, mlp_size: int, num_heads: int) -> None:
        super().__init__()
        self.norm_1 = layer_norm(hidden_size)
        self.attention = MultiheadSelfAttention(hidden_size, num_heads)
        self.norm_2 = layer_norm(hidden_size)
        self.mlp = MLP(hidden_size, mlp_size)

    def forward(self, x: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """All tokens' outputs; with `keep`, only the first `keep` tokens' (they still attend to all)."""
        x_in = x if keep is None else x[:, :keep]
        x = x_in + self.attention(self.norm_1(x), queries=keep)
        return x + self.mlp(self.norm_2(x))

    @staticmethod
    def complexity(cx: Complexity, hidden_size: int, mlp_size: int, num_heads: int, num_tokens: int) -> None:
        cx.norm(hidden_size)
        MultiheadSelfAttention.complexity(cx, hidden_size, num_heads, num_tokens)
        cx.norm(hidden_size)
        MLP.complexity(cx, hidden_size, mlp_size, num_tokens)


class ViT(nn.Module):
    """ViT_P (stem="patch") or ViT_C (stem="conv"; `conv_stem` its 3×3 layers, None: the default).

    Tokens: (image_size / patch_size)² from the stem, plus the class token."""

    def __init__(self, *, stem: str, image_size: int, patch_size: int, hidden_size: int, mlp_mult: int,
                 num_heads: int, num_blocks: int, num_classes: int = 1000, in_chans: int = 3,
                 conv_stem: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__()
        num_tokens = _num_tokens(stem, image_size, patch_size, hidden_size, num_heads)
        if num_blocks < 1:
            raise ConfigError(f"num_blocks={num_blocks}: a ViT needs at least 1 block")
        if stem == PATCH:
            self.stem = PatchifyStem(in_chans, hidden_size, patch_size)
        else:
            self.stem = ConvStem(in_chans, hidden_size, patch_size, conv_stem)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embedding = nn.Parameter(torch.empty(1, num_tokens, hidden_size).normal_(std=0.02))
        self.blocks = nn.Sequential(*(EncoderBlock(hidden_size, mlp_mult * hidden_size, num_heads)
                                      for _ in range(num_blocks)))
        self.norm = layer_norm(hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (b, d, h, w) → (b, h·w tokens, d)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        # The head reads the class token only, so the last block computes only that token's output: its
        # keys and values still come from every token, but the query, output projection, MLP and final
        # LayerNorm (all token by token) run on one token instead of N. Same logits and gradients as
        # running every token through; ~8/10 of the last block's work skipped (docs/benchmarks.md).
        *blocks, last = self.blocks
        for block in blocks:
            x = block(x)
        return self.head(self.norm(last(x, keep=1)[:, 0]))

    @staticmethod
    def complexity(cx: Complexity, *, stem: str, image_size: int, patch_size: int, hidden_size: int,
                   mlp_mult: int, num_heads: int, num_blocks: int, num_classes: int = 1000, in_chans: int = 3,
                   conv_stem: Sequence[tuple[int, int]] | None = None) -> Complexity:
        """Counts for one image_size² image; cx starts at that resolution."""
        num_tokens = _num_tokens(stem, image_size, patch_size, hidden_size, num_heads)
        if stem == PATCH:
            PatchifyStem.complexity(cx, in_chans, hidden_size, patch_size)
        else:
            ConvStem.complexity(cx, in_chans, hidden_size, patch_size, conv_stem)
        cx.params += hidden_size + num_tokens * hidden_size  # class token, position embedding
        for _ in range(num_blocks):
            EncoderBlock.complexity(cx, hidden_size, mlp_mult * hidden_size, num_heads, num_tokens)
        cx.norm(hidden_size)
        cx.linear(hidden_size, num_classes)
        return cx


def _num_tokens(stem: str, image_size: int, patch_size: int, hidden_size: int, num_heads: int) -> int:
    """The sequence length, once the arguments are checked."""
    if stem not in VIT_STEMS:
        raise ConfigError(f"unknown stem {stem!r}: choose one of {', '.join(sorted(VIT_STEMS))}")
    if image_size % patch_size:
        raise ConfigError(f"image_size={image_size} is not divisible by the patch size {patch_size}")
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    return (image_size // patch_size) ** 2 + 1


# torchvision's VisionTransformer names → ours. Its ViT-B/16 is ViT_P-18GF, so its weights load into ours.
_TORCHVISION_NAMES = [
    (r"^conv_proj\.", "stem.patchify."),
    (r"^encoder\.pos_embedding$", "pos_embedding"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_(\d)\.", r"blocks.\1.norm_\2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_", r"blocks.\1.attention.qkv."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attention.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"blocks.\1.mlp.linear_1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"blocks.\1.mlp.linear_2."),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
]


def from_torchvision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision `VisionTransformer` state dict (no representation layer) renamed for a ViT_P."""
    renamed = {}
    for name, tensor in state.items():
        for pattern, replacement in _TORCHVISION_NAMES:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed
