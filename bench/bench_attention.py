"""Two changes to the CPU training step tried and not kept (docs/benchmarks.md, "Changes and their
effect"), kept runnable so that the numbers there can be measured again:

- a hand-written attention: one autograd function on the fused q, k, v projection's output that packs
  q, k, v once, runs `bmm` + softmax and saves the attention probabilities for a `bmm` backward
  (no recomputation, no zero-filled gradient buffers, no re-concatenation of the q, k, v gradients),
  against ours with `F.scaled_dot_product_attention` and against timm;
- glibc's malloc thresholds: the minor page faults per step are printed for every variant; run the
  script once as is and once with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296`.

    .venv/bin/python bench/bench_attention.py [--size vit_xs] [--batch 64] [--rounds 8]

1 thread, ViT_P, fused AdamW in every variant; interleaved rounds, the order reversed every other round;
median images/s and per-round ratios to timm.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import Variant, build_timm  # noqa: E402

from stemsweep.models import SIZES  # noqa: E402
from stemsweep.models.build import build_model  # noqa: E402
from stemsweep.models.vit import MultiheadSelfAttention  # noqa: E402


class BmmAttention(torch.autograd.Function):
    """softmax(q kᵀ / √d) v over every token, from the fused (b, n, 3d) projection to (b, n, d)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, d3 = qkv.shape
        d = d3 // 3
        dh = d // heads
        packed = qkv.view(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4).contiguous().view(3, b * heads, n, dh)
        q, k, v = packed
        scores = torch.baddbmm(torch.empty(b * heads, n, n, dtype=qkv.dtype), q, k.transpose(1, 2),
                               beta=0, alpha=dh ** -0.5)
        probs = torch.softmax(scores, -1)
        ctx.save_for_backward(packed, probs)
        ctx.heads = heads
        return torch.bmm(probs, v).view(b, heads, n, dh).transpose(1, 2).reshape(b, n, d)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        packed, probs = ctx.saved_tensors
        q, k, v = packed
        bh, n, dh = q.shape
        heads = ctx.heads
        b = bh // heads
        grad_out = grad_out.reshape(b, n, heads, dh).transpose(1, 2).reshape(bh, n, dh)
        grad = torch.empty_like(packed)
        torch.bmm(probs.transpose(1, 2), grad_out, out=grad[2])
        grad_probs = torch.bmm(grad_out, v.transpose(1, 2))
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(dh ** -0.5)
        torch.bmm(grad_scores, k, out=grad[0])
        torch.bmm(grad_scores.transpose(1, 2), q, out=grad[1])
        return grad.view(3, b, heads, n, dh).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * heads * dh), None


class BmmSelfAttention(MultiheadSelfAttention):
    def forward(self, x, queries=None):
        if queries is not None:  # the last block's class-token-only attention stays as it is
            return super().forward(x, queries)
        return self.proj(BmmAttention.apply(self.qkv(x), self.num_heads))


def with_bmm_attention(model):
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is MultiheadSelfAttention:
            module.__class__ = BmmSelfAttention
    return model


def check_equal(ours, bmm):
    """Same logits and parameter gradients in float64."""
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    grads = []
    for model in (copy.deepcopy(ours).double(), copy.deepcopy(bmm).double()):
        logits = model(x)
        grads.append((logits, torch.autograd.grad(logits.square().sum(), list(model.parameters()))))
    (la, ga), (lb, gb) = grads
    diff = max((a - b).abs().max().item() for a, b in zip(ga, gb))
    print(f"float64: logits differ by {(la - lb).abs().max().item():.1e}, gradients by {diff:.1e}")
    assert torch.allclose(la, lb) and diff < 1e-10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="vit_xs")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"torch {torch.__version__}; {args.size}, batch {args.batch}, 1 thread; "
          f"malloc settings: {malloc or 'glibc defaults'}")
    torch.manual_seed(0)
    ours = build_model(args.size, "patch", num_classes=10, in_chans=1, image_size=28)
    bmm = with_bmm_attention(ours)
    check_equal(ours, bmm)
    variants = [Variant("ours (SDPA)", "ours", "patch", ours, fused=True),
                Variant("ours, hand-written attention", "ours", "patch", bmm, fused=True),
                Variant("timm", "timm", "patch", build_timm(SIZES[args.size], "patch", 28, 1, 10), fused=True)]
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    for v in variants:
        for _ in range(3):
            v.step(x, y, "cpu")
    rates = {v.name: [] for v in variants}
    faults = {v.name: [] for v in variants}
    steps = 4
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(steps):
                v.step(x, y, "cpu")
            rates[v.name].append(steps * args.batch / (time.perf_counter() - start))
            faults[v.name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps)
    print("| variant | img/s (median) | / timm, per round | minor page faults per step |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        ratio = statistics.median(a / b for a, b in zip(values, rates["timm"]))
        print(f"| {name} | {statistics.median(values):.1f} | {ratio:.3f} | {statistics.median(faults[name]):.0f} |")


if __name__ == "__main__":
    main()
