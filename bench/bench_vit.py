"""Our ViT against torchvision's VisionTransformer: the same function, and the training-step speed.

We write our own ViT (stemsweep.models.vit) instead of configuring torchvision's, for the conv stem and
the paper's complexity counting. Where the configurations coincide (patchify stem, same width, depth,
heads, MLP width), torchvision's weights are copied into ours and both are run on the same batch:
- max |difference| of the logits (eval) and of the input gradient;
- the wall time of one training step (forward, cross-entropy backward, AdamW step), both models side
  by side in this process, one step of each in turn (the order alternating), many pairs: medians and
  interquartile ranges of each time and of the per-pair ratio.

Run by hand: .venv/bin/python bench/bench_vit.py (about 2 minutes on 2 quiet cores, longer when other
jobs share them).
Results: docs/benchmarks.md, "ViT implementation vs torchvision".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from stemsweep.models.vit import ViT, from_torchvision_state_dict

# (name, image size, patch, hidden, MLP multiplier, heads, blocks, classes, batch, timed pairs of steps)
CONFIGS = [
    ("ViT_P-XS-like, 32²", 32, 4, 96, 3, 3, 6, 10, 64, 30),
    ("ViT_P-1GF-like, 224²", 224, 16, 192, 3, 3, 12, 1000, 8, 12),
]


def build_pair(image_size, patch, hidden, mlp_mult, heads, blocks, classes):
    theirs = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=blocks, num_heads=heads,
                               hidden_dim=hidden, mlp_dim=mlp_mult * hidden, num_classes=classes)
    # Every tensor random, so that a wrong copy cannot hide behind a zero head or near-zero biases.
    for p in theirs.parameters():
        nn.init.normal_(p, std=0.05)
    ours = ViT(stem="patch", image_size=image_size, patch_size=patch, hidden_size=hidden, mlp_mult=mlp_mult,
               num_heads=heads, num_blocks=blocks, num_classes=classes)
    ours.load_state_dict(from_torchvision_state_dict(theirs.state_dict()))
    return ours, theirs


def check_same_layers(theirs: VisionTransformer) -> None:
    """What the paper's ViT needs and torchvision's has: exact GELU, LayerNorm eps 1e-6, no dropout."""
    layer = theirs.encoder.layers[0]
    assert layer.mlp[1].approximate == "none", "torchvision's GELU is not the exact one"
    assert layer.ln_1.eps == theirs.encoder.ln.eps == 1e-6
    assert all(m.p == 0 for m in theirs.modules() if isinstance(m, nn.Dropout))


def differences(ours, theirs, x):
    """Max |ours − theirs| of the logits and of d(sum logits²)/d input, and the largest logit for scale."""
    out, grads = [], []
    for model in (ours.eval(), theirs.eval()):
        x_ = x.clone().requires_grad_(True)
        logits = model(x_)
        (grad,) = torch.autograd.grad(logits.square().sum(), x_)
        out.append(logits.detach())
        grads.append(grad)
    return ((out[0] - out[1]).abs().max().item(), (grads[0] - grads[1]).abs().max().item(),
            out[1].abs().max().item())


def train_step(model, optimizer, x, y) -> float:
    """One forward, cross-entropy backward and AdamW step; its wall time in seconds."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return time.perf_counter() - start


def bench(config):
    name, image_size, patch, hidden, mlp_mult, heads, blocks, classes, batch, pairs = config
    torch.manual_seed(0)
    ours, theirs = build_pair(image_size, patch, hidden, mlp_mult, heads, blocks, classes)
    check_same_layers(theirs)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, classes, (batch,))
    logits_diff, grad_diff, logits_max = differences(ours, theirs, x[:4])

    models = {"ours": ours.train(), "torchvision": theirs.train()}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    for key in models:  # warm-up: allocator, kernel choices, optimizer state
        train_step(models[key], optimizers[key], x, y)
    # One step of each, back to back, order alternating: a load change from other processes hits both
    # steps of a pair alike, so the ratio within a pair is steadier than either time.
    seconds = {key: [] for key in models}
    for i in range(pairs):
        for key in list(models)[:: 1 if i % 2 == 0 else -1]:
            seconds[key].append(train_step(models[key], optimizers[key], x, y))
    ratios = [o / t for o, t in zip(seconds["ours"], seconds["torchvision"], strict=True)]
    return {"name": name, "batch": batch, "pairs": pairs, "logits_diff": logits_diff, "grad_diff": grad_diff,
            "logits_max": logits_max, "seconds": seconds, "ratios": ratios}


def spread(values, scale=1.0, spec=".1f"):
    """median (interquartile range)"""
    q1, median, q3 = statistics.quantiles([v * scale for v in values], n=4)
    return f"{median:{spec}} ({q1:{spec}}–{q3:{spec}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
          f"load average before: {os.getloadavg()[0]:.1f}\n")
    print("| config | batch | pairs | max abs diff: logits (max logit) | input grad | ms/step ours "
          "| ms/step torchvision | ours / torchvision |")
    print("|---|---|---|---|---|---|---|---|")
    for config in CONFIGS:
        r = bench(config)
        cells = [r["name"], r["batch"], r["pairs"], f"{r['logits_diff']:.1e} ({r['logits_max']:.2f})",
                 f"{r['grad_diff']:.1e}", spread(r["seconds"]["ours"], 1e3),
                 spread(r["seconds"]["torchvision"], 1e3), spread(r["ratios"], spec=".3f")]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; cells: median (interquartile range)")


if __name__ == "__main__":
    main()
