"""What a run will cost before it is queued: device-hours (GPU-hours on a GPU) and its wall time.

The estimate comes from the best source at hand, and says which (no tool in the field estimates a
sweep's cost before submitting it, hence this module):
1. `measured`: the training speed (images/s) of finished runs of the same model, stem, resolution and
   device type, read from their records (summary.json's `images_per_s`, `device`, `image_size`,
   `world_size`), scaled by the number of devices the run asks for;
2. `paper`: the paper's time column (minutes per ImageNet-1k epoch on 8 V100, vit_models.csv) scaled by
   the data set's size and the run's epochs; RegNetY by its flops against the ViTs' minutes per GF.
   Only for a GPU run at the paper's resolution;
3. else unknown: never a made-up number.
A run that is already done costs nothing.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from stemsweep import PAPER_DIR
from stemsweep.config import RunConfig
from stemsweep.models import SIZES, paper_name
from stemsweep.models.stems import record_stem

UNITS = {"cuda": "GPU-h", "cpu": "CPU-h"}  # what a run's device_hours are counted in
PAPER_GPUS = 8  # the time column is minutes per ImageNet-1k epoch on 8 V100
PAPER_RESOLUTION = 224
# Training images per epoch of each data set (the published train splits; ImageNet-21k: the fall 2011
# release's 14,197,122 images, about the "14 M" the paper pre-trains on). A run's train_subset wins.
TRAIN_IMAGES = {"imagenet": 1_281_167, "imagenet21k": 14_197_122, "fashion_mnist": 60_000}


@dataclass(frozen=True)
class Cost:
    device: str  # cuda | cpu: what the run's resources ask for
    devices: int  # how many (GPUs over all nodes; 1 for a CPU run)
    device_hours: float | None  # None: unknown
    wall_hours: float | None
    source: str  # measured (N runs, device name) | paper (8 V100) | done | unknown: why

    @property
    def known(self) -> bool:
        return self.device_hours is not None

    @property
    def unit(self) -> str:
        return UNITS[self.device]


def train_images(cfg: RunConfig) -> int | None:
    if cfg.data.train_subset:
        return cfg.data.train_subset
    if cfg.data.name == "synthetic":
        return cfg.data.num_train
    return TRAIN_IMAGES.get(cfg.data.name)


def planned_device(cfg: RunConfig) -> tuple[str, int]:
    """The device type and count a run asks for: its model's resources (conf/model/), as SLURM gets them."""
    gpus = cfg.model.resources.gpus * cfg.model.resources.nodes
    return ("cuda", gpus) if gpus > 0 else ("cpu", 1)


class MeasuredSpeeds:
    """Training speeds of finished runs, by (paper model name, stem, resolution, device type)."""

    def __init__(self, summaries: Iterable[dict[str, Any]]):
        self.by_key: dict[tuple, list[dict[str, Any]]] = {}
        for s in summaries:
            if s.get("status") != "done" or not s.get("images_per_s") or not s.get("device") \
                    or not s.get("image_size"):
                continue  # records from before `device` and `image_size` cannot say where they ran
            key = (s.get("model"), s.get("stem"), s["image_size"], s["device"])
            self.by_key.setdefault(key, []).append(s)

    @classmethod
    def from_runs_roots(cls, roots: Sequence[str | Path]) -> MeasuredSpeeds:
        summaries = []
        for root in roots:
            for path in sorted(Path(root).glob("*/summary.json")):
                try:
                    summaries.append(json.loads(path.read_text()))
                except (OSError, json.JSONDecodeError):
                    continue  # an unreadable record measures nothing; `stemsweep status` names it
        return cls(summaries)

    def per_device(self, model: str, stem: str | None, image_size: int, device: str) -> tuple[float, int, str] | None:
        """(images/s per device, runs measured, device names) or None."""
        runs = self.by_key.get((model, stem, image_size, device))
        if not runs:
            return None
        speed = median(s["images_per_s"] / max(1, s.get("world_size") or 1) for s in runs)
        names = sorted({s.get("device_name") or device for s in runs})
        return speed, len(runs), ", ".join(names)


@functools.cache
def paper_epoch_minutes() -> dict[str, float]:
    """Minutes per ImageNet-1k epoch on 8 V100 by paper model name: the ViTs from the paper's table,
    RegNetY from its flops at the ViTs' median minutes per GF (the paper gives no RegNetY time)."""
    with open(PAPER_DIR / "vit_models.csv") as f:
        vits = {row["model"]: (float(row["epoch_min_8v100"]), float(row["flops_b"])) for row in csv.DictReader(f)}
    minutes = {model: m for model, (m, _) in vits.items()}
    per_gf = median(m / flops for m, flops in vits.values())
    with open(PAPER_DIR / "regnety_models.csv") as f:
        for row in csv.DictReader(f):
            minutes[row["model"]] = per_gf * float(row["flops_b_at_train_res"])
    return minutes


def estimate(cfg: RunConfig, measured: MeasuredSpeeds, status: str | None = None) -> Cost:
    """The cost of one run of `cfg` (validated, lr/wd resolved); `status` its record's, if any."""
    device, devices = planned_device(cfg)
    if status == "done":
        return Cost(device, devices, 0.0, 0.0, "done")
    stem = record_stem(cfg.stem.name)
    model, size = paper_name(cfg.model.size, stem), cfg.train_image_size()
    images = train_images(cfg)
    if images is None:
        return Cost(device, devices, None, None, f"unknown: the size of data set {cfg.data.name}")
    images_seen = images * cfg.epochs
    speed = measured.per_device(model, stem, size, device)
    if speed is not None:
        per_device, count, names = speed
        wall = images_seen / (per_device * devices) / 3600
        return Cost(device, devices, wall * devices, wall, f"measured ({count} runs, {names})")
    minutes = paper_epoch_minutes().get(model)
    native = SIZES[cfg.model.size].train_res if SIZES[cfg.model.size].family == "regnety" else PAPER_RESOLUTION
    if minutes is not None and device == "cuda" and size == native:
        device_hours = minutes / 60 * PAPER_GPUS * images_seen / TRAIN_IMAGES["imagenet"]
        return Cost(device, devices, device_hours, device_hours / devices, "paper (8 V100)")
    why = "no finished run of it on this device type" + ("" if minutes is None or device == "cuda" else
                                                         ", and the paper timed GPUs")
    return Cost(device, devices, None, None, f"unknown: {why}")


def sweep_wall_hours(costs: Sequence[Cost], parallel: int) -> float | None:
    """The wall time of runs taking `parallel` slots at once (greedy, longest first); None if any is unknown."""
    if any(not c.known for c in costs):
        return None
    walls = sorted((c.wall_hours or 0.0 for c in costs), reverse=True)
    slots = [0.0] * max(1, min(parallel, len(walls) or 1))
    for wall in walls:
        slots[slots.index(min(slots))] += wall
    return max(slots)


def hours(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "0"
    return f"{value:.3g}" if value < 100 else f"{math.ceil(value):,}"
