"""Training-step throughput of the CPU sizes, per memory layout (run by hand; results in docs/benchmarks.md).

Each configuration is timed in rounds, interleaved with the others so that machine noise spreads
over all of them; each round is a few training steps (train/step.py's, with AdamW) after warm-up steps.
Reported: median images/s over rounds and the interquartile range.

    .venv/bin/python bench/bench_train_step.py [--rounds 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stemsweep.models.build import build_model
from stemsweep.train.step import train_step

CONFIGS = [("vit_xs", "patch", False), ("vit_xs", "conv", False), ("vit_xs", "conv", True),
           ("regnety_xs", None, False), ("regnety_xs", None, True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    setups = []
    for size, stem, channels_last in CONFIGS:
        model = build_model(size, stem, num_classes=10, in_chans=1, image_size=28)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        setups.append((model, torch.optim.AdamW(model.parameters(), 1e-3), x.contiguous(memory_format=fmt)))

    def step(model, opt, images):
        train_step(model, opt, images, y)

    for setup in setups:  # warm-up: oneDNN builds its kernels on first use
        for _ in range(3):
            step(*setup)
    rates = [[] for _ in setups]
    for _ in range(args.rounds):
        for i, setup in enumerate(setups):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(*setup)
            rates[i].append(args.batch * args.steps / (time.perf_counter() - start))
    print(f"| model | stem | layout | img/s (median) | IQR |  (batch {args.batch}, {args.threads} threads)")
    print("| --- | --- | --- | --- | --- |")
    for (size, stem, channels_last), r in zip(CONFIGS, rates):
        q1, _, q3 = statistics.quantiles(r, n=4)
        layout = "channels_last" if channels_last else "NCHW"
        print(f"| {size} | {stem or '-'} | {layout} | {statistics.median(r):.0f} | {q1:.0f}–{q3:.0f} |")


if __name__ == "__main__":
    main()
