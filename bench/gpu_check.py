"""The measurements of bench/gpu_check.sh (run that, not this; results in docs/benchmarks.md, "GPU").

    python bench/gpu_check.py step --device cuda --out DIR        # training step: images/s and bf16 MFU
    python bench/gpu_check.py jpegs --out DIR/jpegs               # a generated ImageNet-style JPEG folder
    python bench/gpu_check.py pipeline --device cuda --root DIR/jpegs --out DIR   # input pipelines

`step`: ViT_P-4GF, ViT_C-4GF and RegNetY-4GF as a run trains them (bf16 autocast on CUDA, channels_last
for the conv stem and RegNetY, fused AdamW, optionally torch.compile) and timm's VisionTransformer at
ViT_P-4GF's and ViT_C-4GF's configuration (bench_peers.py builds it), in alternating rounds. MFU is the
model's training flops (3 × 2 × the paper's multiply-adds per image, models/complexity.py) per second
over the bf16 matmul rate measured in the same rounds.

`pipeline`: images/s of the CPU pipeline (DataLoader workers decode and augment) and of the GPU
pipeline (workers read bytes, the device decodes and augments), each alone, and ViT_C-4GF's training
step fed by each against fed by tensors already on the device: the last column says whether training
waits on data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from stemsweep.config import AugConfig, DataConfig, OptimizerConfig
from stemsweep.data import build_data
from stemsweep.data.seeding import SeededImages
from stemsweep.models import SIZES
from stemsweep.models.build import build_model, model_complexity
from stemsweep.train.distributed import DistEnv
from stemsweep.train.loop import EpochBatches
from stemsweep.train.optim import build_optimizer
from stemsweep.train.step import train_step

PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True, mixup_alpha=0.8,
                      cutmix_alpha=1.0, label_smoothing=0.1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, n: int) -> float:
    """bf16 GEMM FLOP/s on CUDA (fp32 on a CPU, which the run uses there)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    reps = 20 if device.type == "cuda" else 2
    tic = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - tic)


class Trained:
    """One model trained as a run trains it: fused AdamW, bf16 autocast on CUDA, channels_last."""

    def __init__(self, name: str, model: torch.nn.Module, macs: float, channels_last: bool, device: torch.device,
                 batch: int, compile_: str | None):
        self.name, self.macs, self.channels_last, self.device = name, macs, channels_last, device
        fmt = torch.channels_last if channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=fmt)
        self.optimizer = build_optimizer(OptimizerConfig(name="adamw", lr=1e-3, wd=0.05), self.model, batch)
        self.forward = torch.compile(self.model, backend=compile_) if compile_ else self.model

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        train_step(self.model, self.optimizer, images, labels, forward=self.forward)


def trained_models(args, device: torch.device, image: int) -> list[Trained]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_peers import build_timm  # timm's ViT at our configuration (same parameter count)

    vit, regnety = args.vit, args.regnety
    spec = SIZES[vit]
    models = []
    for stem in ("patch", "conv"):
        macs = model_complexity(vit, stem, 1000, 3, image)["flops_b"] * 1e9
        models.append(Trained(f"{_name(vit, stem)} (ours)", build_model(vit, stem, num_classes=1000, in_chans=3,
                                                                        image_size=image), macs, stem == "conv",
                              device, args.batch, args.compile))
        models.append(Trained(f"{_name(vit, stem)} (timm)", build_timm(spec, stem, image, 3, 1000), macs,
                              stem == "conv", device, args.batch, args.compile))
    macs = model_complexity(regnety, None, 1000, 3, image)["flops_b"] * 1e9
    models.append(Trained(f"{_name(regnety, None)} (ours)", build_model(regnety, None, num_classes=1000, in_chans=3,
                                                                        image_size=image), macs, True, device,
                          args.batch, args.compile))
    return models


def _name(size: str, stem: str | None) -> str:
    from stemsweep.models import paper_name

    return paper_name(size, stem)


def step_command(args) -> dict:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    image = args.image
    models = [m for m in trained_models(args, device, image) if args.only is None or args.only in m.name]
    x = torch.randn(args.batch, 3, image, image, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    for m in models:  # warm-up: cuDNN's search, compilation, optimizer state
        for _ in range(3):
            m.step(x, y)
    sync(device)
    rates: dict[str, list[float]] = {m.name: [] for m in models}
    gemm = []
    for r in range(args.rounds):
        order = models if r % 2 == 0 else models[::-1]
        for m in order:
            sync(device)
            tic = time.perf_counter()
            for _ in range(args.steps):
                m.step(x, y)
            sync(device)
            rates[m.name].append(args.batch * args.steps / (time.perf_counter() - tic))
        gemm.append(matmul_rate(device, args.gemm))
    peak = statistics.median(gemm)
    rows = []
    what = "bf16 matmul" if device.type == "cuda" else "fp32 matmul"
    compiled = f", torch.compile ({args.compile})" if args.compile else ""
    print(f"\n{_device_name(device)}: training step at {image}², batch {args.batch}, {args.steps} steps × "
          f"{args.rounds} rounds{compiled}; {what} {peak / 1e12:.1f} TFLOP/s ({args.gemm}²)")
    print(f"| model | images/s (median, min–max) | training TFLOP/s | MFU vs {what} |")
    print("|---|---|---|---|")
    for m in models:
        median = statistics.median(rates[m.name])
        flops = 3 * 2 * m.macs * median
        rows.append({"model": m.name, "images_per_s": median, "rounds": rates[m.name], "train_flops": flops,
                     "mfu": flops / peak})
        print(f"| {m.name} | {median:.0f} ({min(rates[m.name]):.0f}–{max(rates[m.name]):.0f}) | "
              f"{flops / 1e12:.1f} | {flops / peak:.1%} |")
    return {"device": _device_name(device), "image": image, "batch": args.batch, "matmul_flops": peak,
            "compile": args.compile, "rows": rows}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else "cpu"


def _write_jpeg(job) -> None:
    from PIL import Image

    path, pixels, size = job
    Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BICUBIC).save(path, quality=90)


def jpegs_command(args) -> dict:
    """Fashion-MNIST garments as an ImageNet-style folder of RGB JPEGs (data/imagenet.py's layout),
    written by all cores."""
    from stemsweep.data.fashion_mnist import find_folder, load_split

    images, labels = load_split(find_folder(None, download=False), "train")
    jobs = []
    for label in range(args.classes):
        indices = (labels == label).nonzero().flatten()[: args.train_per_class + args.val_per_class].tolist()
        for n, index in enumerate(indices):
            folder = Path(args.out) / ("train" if n < args.train_per_class else "val") / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{index}.jpg", images[index, 0].numpy(), args.size))
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    print(f"{len(jobs)} JPEGs of {args.size}² in {args.out}")
    return {"images": len(jobs), "size": args.size}


def pipeline_command(args) -> dict:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    bundles = {p: build_data(DataConfig(name="imagenet", root=args.root, pipeline=p, image_size=args.image),
                             PAPER_AUG, None, None, device.type) for p in ("cpu", "gpu")}
    env = DistEnv()

    def batches(pipeline: str, epoch: int):
        data = bundles[pipeline]
        sampler = EpochBatches(len(data.train), args.batch, 0, epoch, env)
        loader = DataLoader(SeededImages(data.train), batch_sampler=sampler, num_workers=args.workers,
                            pin_memory=device.type == "cuda", collate_fn=data.collate,
                            persistent_workers=False, prefetch_factor=4 if args.workers else None)
        for i, batch in enumerate(loader):
            if i == args.batches:
                break
            yield data.to_device(batch, device, channels_last=False, train=True)

    model = Trained(_name(args.vit, "conv"), build_model(args.vit, "conv", num_classes=1000, in_chans=3,
                                                         image_size=args.image),
                    model_complexity(args.vit, "conv", 1000, 3, args.image)["flops_b"] * 1e9, True, device,
                    args.batch, None)
    resident = (torch.randn(args.batch, 3, args.image, args.image, device=device),
                torch.randint(0, 1000, (args.batch,), device=device))
    for _ in range(3):
        model.step(*resident)
    results: dict[str, list[float]] = {k: [] for k in ("cpu alone", "gpu alone", "train: resident tensors",
                                                        "train: cpu pipeline", "train: gpu pipeline")}
    for r in range(args.rounds):
        for pipeline in ("cpu", "gpu"):
            sync(device)
            tic, n = time.perf_counter(), 0
            for images, _ in batches(pipeline, r):
                n += len(images)
            sync(device)
            results[f"{pipeline} alone"].append(n / (time.perf_counter() - tic))
        sync(device)
        tic = time.perf_counter()
        for _ in range(args.batches):
            model.step(*resident)
        sync(device)
        results["train: resident tensors"].append(args.batch * args.batches / (time.perf_counter() - tic))
        for pipeline in ("cpu", "gpu"):
            sync(device)
            tic, n = time.perf_counter(), 0
            for images, labels in batches(pipeline, r):
                model.step(images, labels)
                n += len(images)
            sync(device)
            results[f"train: {pipeline} pipeline"].append(n / (time.perf_counter() - tic))
    print(f"\nInput pipelines on {_device_name(device)}: the paper's train transform at {args.image}², batch "
          f"{args.batch}, {args.workers} workers, {args.batches} batches × {args.rounds} rounds (each includes "
          f"starting its workers); training: {model.name}")
    print("| what | images/s (median, min–max) | × training on resident tensors |")
    print("|---|---|---|")
    train_rate = statistics.median(results["train: resident tensors"])
    rows = []
    for name, values in results.items():
        median = statistics.median(values)
        rows.append({"what": name, "images_per_s": median, "rounds": values})
        print(f"| {name} | {median:.0f} ({min(values):.0f}–{max(values):.0f}) | {median / train_rate:.2f} |")
    return {"device": _device_name(device), "image": args.image, "batch": args.batch, "workers": args.workers,
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("step", "pipeline"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--vit", default="vit_4gf")
        p.add_argument("--image", type=int, default=224)
        p.add_argument("--batch", type=int, default=256)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--out", required=True, help="folder for the results (JSON)")
    step = sub.choices["step"]
    step.add_argument("--regnety", default="regnety_4gf")
    step.add_argument("--steps", type=int, default=20)
    step.add_argument("--gemm", type=int, default=8192)
    step.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                      help="torch.compile the models (inductor; the dry run checks the path with 'eager')")
    step.add_argument("--only", help="only the models whose name contains this, e.g. ViT_C")
    pipeline = sub.choices["pipeline"]
    pipeline.add_argument("--root", required=True)
    pipeline.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    pipeline.add_argument("--batches", type=int, default=30)
    jpegs = sub.add_parser("jpegs")
    jpegs.add_argument("--out", required=True)
    jpegs.add_argument("--classes", type=int, default=10)
    jpegs.add_argument("--train-per-class", type=int, default=1000)
    jpegs.add_argument("--val-per-class", type=int, default=50)
    jpegs.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    result = {"step": step_command, "pipeline": pipeline_command, "jpegs": jpegs_command}[args.command](args)
    if args.command != "jpegs":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = "_compiled" if getattr(args, "compile", False) else ""
        (out / f"{args.command}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
