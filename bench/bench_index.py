"""The kept image index (data/image_index.py) against torchvision's ImageFolder, at ImageNet-1k's size.

    .venv/bin/python bench/bench_index.py                      # 1.28 M files; minutes, most of it making the folder
    .venv/bin/python bench/bench_index.py --images 200000      # a smaller folder

The folder: `--classes` class folders of ImageNet-like file names, hard links to `--sources` small
JPEGs (cheap on disk; ext4 allows 65,000 links a file), made in a temporary folder under --tmp and
removed at the end. Its folders are dated a minute back (a folder changed within a second or two of
being listed is listed again). Each measurement runs in a fresh Python process, with the folder's
metadata in the kernel's cache (as on a local disk after a first pass: a network file system pays
more per listing, and only ImageFolder and the index's first listing pay it). Printed as markdown:

  (a) seconds from making the training set to the first batch of a shuffled DataLoader (`--workers`
      workers, and none: the workers' start-up is the same for all), batch 256, the images decoded by
      data/imagenet.py's read_rgb: ImageFolder; the index with none kept yet (it is listed and
      written); the index kept (it is read);
  (b) each DataLoader worker's private memory (/proc/<pid>/smaps_rollup) before and after it goes
      through every sample of the index once, reading its path and label without decoding it: what
      reference counting copies from the parent into the worker (pytorch issue 13246).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stemsweep.data.image_index import INDEX_FOLDER

BATCH = 256


def make_folder(train: Path, images: int, classes: int, sources: int) -> None:
    import numpy as np
    from PIL import Image

    source_dir = train.parent / "sources"
    source_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    jpegs = []
    for s in range(sources):
        jpegs.append(str(source_dir / f"{s}.JPEG"))
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(jpegs[-1], quality=90)
    per_class = -(-images // classes)
    made = 0
    for c in range(classes):
        name = f"n{c:08d}"
        (train / name).mkdir(parents=True)
        for i in range(min(per_class, images - made)):
            os.link(jpegs[made % sources], train / name / f"{name}_{i}.JPEG")
            made += 1
    past = time.time_ns() - 60 * 10**9
    for root, _, _ in os.walk(train):
        os.utime(root, ns=(past, past))


def private_kb() -> dict[str, int]:
    """This process's private memory (kB): dirty (written: anonymous copies) and clean (file pages
    no other process maps)."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                fields[key] = int(value.split()[0])
    return fields


class WholePass:
    """Item k (one per worker): the worker's private memory before and after reading every sample's
    path and label of `samples` once, without opening the file."""

    def __init__(self, samples, workers: int):
        self.samples, self.workers = samples, workers

    def __len__(self) -> int:
        return self.workers

    def __getitem__(self, k: int) -> dict:
        before = private_kb()
        touched = 0
        for i in range(len(self.samples)):
            path, label = self.samples[i]
            touched += len(path) + label
        return {"pid": os.getpid(), "before": before, "after": private_kb(), "touched": touched}


def child(kind: str, measure: str, train: str, workers: int) -> dict:
    """One measurement in this (fresh) process; what it imports is imported before the clock starts."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from stemsweep.data.image_index import IndexedImageFolder, image_index
    from stemsweep.data.imagenet import read_rgb

    def training_set():
        if kind == "imagefolder":
            return ImageFolder(train, loader=read_rgb)
        return IndexedImageFolder(image_index(train), read_rgb)

    torch.set_num_threads(1)
    if measure == "first_batch":
        start = time.perf_counter()
        dataset = training_set()
        made = time.perf_counter()
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        images, _ = next(iter(loader))
        assert images.shape == (BATCH, 3, 32, 32)
        return {"dataset_s": made - start, "first_batch_s": time.perf_counter() - start, "images": len(dataset)}
    dataset = training_set()
    passes = list(DataLoader(WholePass(dataset.samples, workers), batch_size=None, num_workers=workers))
    assert len({p["pid"] for p in passes}) == workers
    growth = {key: [(p["after"][key] - p["before"][key]) / 1024 for p in passes]
              for key in ("Private_Dirty", "Private_Clean")}
    return {"before_mb": [p["before"]["Private_Dirty"] / 1024 for p in passes], **growth}


def run_child(kind: str, measure: str, train: Path, workers: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, measure, str(train), "--workers", str(workers)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_280_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=32, help="JPEGs the files are hard links to")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tmp", default=None, help="where to make the folder (default: the system's temp)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "MEASURE", "TRAIN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.workers)))
        return
    if args.images / args.sources > 65000:
        parser.error(f"--sources={args.sources} is too few: at most 65,000 hard links a file on ext4")
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.tmp))
    try:
        train = tmp / "data" / "train"
        start = time.perf_counter()
        make_folder(train, args.images, args.classes, args.sources)
        print(f"made {args.images:,} files in {args.classes} class folders in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
        first = {}
        for workers in (args.workers, 0):
            first["ImageFolder", workers] = run_child("imagefolder", "first_batch", train, workers)
        for workers in (args.workers, 0):
            shutil.rmtree(train.parent / INDEX_FOLDER, ignore_errors=True)
            first["index, none kept yet", workers] = run_child("index", "first_batch", train, workers)
        for workers in (args.workers, 0):
            first["index kept", workers] = run_child("index", "first_batch", train, workers)
        memory = {"ImageFolder": run_child("imagefolder", "memory", train, args.workers),
                  "index kept": run_child("index", "memory", train, args.workers)}
    finally:
        shutil.rmtree(tmp)
    print(f"### {args.images:,} files, {args.classes} classes, {args.workers} workers\n")
    print("(a) from making the training set to the first batch (batch 256, shuffled), seconds:\n")
    print("| training set | workers | made in | first batch after |\n|---|---|---|---|")
    for (name, workers), r in first.items():
        print(f"| {name} | {workers} | {r['dataset_s']:.2f} | {r['first_batch_s']:.2f} |")
    print("\n(b) each worker's private memory growth over one pass through every sample, MB "
          "(min–max over the workers):\n")
    print("| training set | private dirty at start | dirty growth | clean growth |\n|---|---|---|---|")
    for name, r in memory.items():
        print(f"| {name} | {_span(r['before_mb'])} | {_span(r['Private_Dirty'])} | {_span(r['Private_Clean'])} |")


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


if __name__ == "__main__":
    main()
