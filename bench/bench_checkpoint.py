"""What a mid-epoch checkpoint costs the training step (run by hand; results in docs/benchmarks.md,
"Checkpoints").

Trains a model (forward, backward, AdamW step, EMA) on random data and, side by side in rounds, times
  - `plain`: steps with no checkpoint;
  - `background`: as many steps, the first of which starts a checkpoint the way training on a
    GPU does (train/checkpoint.py: a copy of model + EMA + optimizer to host memory, then torch.save,
    fsync and the renames in a thread), so the window holds the copy and the whole write;
  - `file object`: the same, but torch.save writes through a Python file object (what the project
    did before; it holds the GIL for the write);
  - `synchronous`: the save alone, in the training thread (how training on the CPU writes it).
The three windows run in a turning order each round. Reported: the median over rounds of the first
step's time over the plain median step (the stall), of the window's total over the plain window's of
the same round (all the time the checkpoint cost the training thread), the write's own duration, and
each as a multiple of a step.

    .venv/bin/python bench/bench_checkpoint.py [--size vit_xs] [--rounds 5] [--window 20] [--threads 2]
    .venv/bin/python bench/bench_checkpoint.py --size vit_4gf --batch 8 --window 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stemsweep.config import OptimizerConfig
from stemsweep.models import SIZES
from stemsweep.models.build import build_model
from stemsweep.record.checkpoint import save_checkpoint
from stemsweep.record.files import atomic_write
from stemsweep.train.checkpoint import CheckpointWriter, host_copy
from stemsweep.train.ema import ModelEma
from stemsweep.train.optim import build_optimizer
from stemsweep.train.step import train_step


class FileObjectWriter(CheckpointWriter):
    """CheckpointWriter writing through a Python file object, as the project's first version did."""

    def _write(self, snapshot):
        atomic_write(self.path, lambda f: torch.save(snapshot, f), binary=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="vit_xs")
    parser.add_argument("--stem", default="conv")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=20, help="steps per variant and round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = SIZES[args.size]
    image, chans, classes = (28, 1, 10) if spec.cpu else (spec.train_res, 3, 1000)
    stem = None if spec.family == "regnety" else args.stem
    model = build_model(args.size, stem, num_classes=classes, in_chans=chans, image_size=image)
    optimizer = build_optimizer(OptimizerConfig(name="adamw", lr=1e-3, wd=0.05), model, args.batch)
    ema = ModelEma(model)
    x, y = torch.randn(args.batch, chans, image, image), torch.randint(0, classes, (args.batch,))

    def step() -> float:
        tic = time.perf_counter()
        train_step(model, optimizer, x, y, ema=ema, ema_alpha=0.01)
        return time.perf_counter() - tic

    def state() -> dict:
        return {"signature": "bench", "model": model.state_dict(), "ema": ema.state(),
                "optimizer": optimizer.state_dict(), "metrics": []}

    for _ in range(3):  # warm-up, optimizer state allocated
        step()
    size_mb = sum(t.numel() * t.element_size() for t in _tensors(state())) / 2**20
    folder = Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    results: dict[str, list[tuple[float, float, float]]] = {"background": [], "file object": []}
    plain_steps, sync_times, copy_times = [], [], []
    variants = [("plain", None), ("background", CheckpointWriter), ("file object", FileObjectWriter)]
    for r in range(args.rounds):
        windows: dict[str, list[float]] = {}
        writes: dict[str, float] = {}  # each write's own duration, timed in the writer
        for name, writer_class in variants[r % 3:] + variants[:r % 3]:  # the order turns every round
            writer = writer_class(folder / f"{name.replace(' ', '_')}.pt") if writer_class else None
            write_done: dict[str, float] = {}
            if writer is not None:
                def timed_write(snapshot, writer=writer, done=write_done):
                    tic = time.perf_counter()
                    type(writer)._write(writer, snapshot)
                    done["s"] = time.perf_counter() - tic
                writer._write = timed_write  # the same write, timed
            window = []
            for i in range(args.window):
                tic = time.perf_counter()
                if i == 0 and writer is not None:
                    writer.save(state())
                step()
                window.append(time.perf_counter() - tic)
            if writer is not None:
                writer.wait()
            windows[name] = window
            if writer is not None:
                writes[name] = write_done.get("s", float("nan"))
        plain = windows["plain"]
        plain_steps.append(statistics.median(plain))
        for name in ("background", "file object"):
            window = windows[name]
            results[name].append((window[0] - statistics.median(plain), sum(window) - sum(plain), writes[name]))
        tic = time.perf_counter()
        snapshot = host_copy(state())
        copy_times.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        save_checkpoint(folder / "sync.pt", snapshot)
        sync_times.append(time.perf_counter() - tic)

    step_s = statistics.median(plain_steps)
    print(f"{args.size} (stem {stem}), batch {args.batch}, {args.threads} threads; checkpoint {size_mb:.0f} MB "
          f"(model + EMA + AdamW); {args.rounds} rounds of {args.window} steps per variant; "
          f"median step {step_s * 1000:.1f} ms")
    print("| variant | stall of the step that starts it (ms, × step) | extra time over the window (ms, × step) "
          "| write (ms) |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        stall, slowdown, write = (statistics.median(v) for v in zip(*rows))
        print(f"| {name} | {stall * 1000:.1f} ({stall / step_s:.2f}×) | {slowdown * 1000:.1f} "
              f"({slowdown / step_s:.2f}×) | {write * 1000:.0f} |")
    sync = statistics.median(sync_times)
    print(f"| synchronous torch.save + fsync in the training thread | {sync * 1000:.1f} ({sync / step_s:.2f}×) "
          f"| – | {sync * 1000:.0f} |")
    print(f"host copy alone: {statistics.median(copy_times) * 1000:.1f} ms")


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors(value)


if __name__ == "__main__":
    main()
