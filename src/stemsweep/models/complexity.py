"""The complexity counter: a model's flops, params and acts in the paper's counting convention.

The convention (docs/paper/README.md, the authors' pycls): for one image,
- flops are multiply-adds (one per MAC) plus one per bias add;
- params are every learned tensor, norm gains and biases, class token and position embedding included;
- acts are the sizes of the outputs of convs, linears and the two attention matmuls.
Norms cost no flops and no acts; activations, softmax, residual adds and the position-embedding add
cost nothing.

Each layer counts itself next to its definition (`ViT.complexity`, `RegNetY.complexity`, ...) by
calling the few primitives of `Complexity`, pycls's `cx` as an object; `stemsweep.models.build.
model_complexity` counts a whole model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Complexity:
    """Running counts for one image whose feature map is now h × w."""

    h: int
    w: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv2d(self, w_in: int, w_out: int, k: int, *, stride: int = 1, padding: int | None = None,
               groups: int = 1, bias: bool = False) -> None:
        """A k×k conv; padding k // 2 unless given (the patchify conv has none)."""
        padding = k // 2 if padding is None else padding
        self.h = (self.h + 2 * padding - k) // stride + 1
        self.w = (self.w + 2 * padding - k) // stride + 1
        locations = self.h * self.w
        self.flops += (k * k * w_in // groups * w_out + (w_out if bias else 0)) * locations
        self.params += k * k * w_in // groups * w_out + (w_out if bias else 0)
        self.acts += w_out * locations

    def norm(self, width: int) -> None:
        """BatchNorm or LayerNorm: a gain and a bias per channel."""
        self.params += 2 * width

    def linear(self, w_in: int, w_out: int, *, tokens: int = 1, bias: bool = True) -> None:
        """A linear layer applied to each of `tokens` vectors."""
        self.flops += (w_in * w_out + (w_out if bias else 0)) * tokens
        self.params += w_in * w_out + (w_out if bias else 0)
        self.acts += w_out * tokens

    @contextmanager
    def branch(self) -> Iterator[Complexity]:
        """A side path (a shortcut projection): its counts add up, the main path's h × w stays."""
        h, w = self.h, self.w
        yield self
        self.h, self.w = h, w
