"""One training run, top to bottom: build, resume, train each epoch, evaluate, checkpoint, record.

Reproducibility: every epoch reseeds torch from (seed, epoch) and draws its own batch order, so a run
resumed from the checkpoint of epoch k trains epoch k+1 exactly as an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stemsweep.config import AugConfig, RunConfig
from stemsweep.data import build_data
from stemsweep.models import SIZES, build_model, model_complexity
from stemsweep.record.rundir import RunDir
from stemsweep.record.trackers import Tracker
from stemsweep.train.checkpoint import load_checkpoint, load_weights_for_finetuning, save_checkpoint
from stemsweep.train.distributed import DistEnv, all_sum
from stemsweep.train.ema import ModelEma, ema_alpha
from stemsweep.train.optim import build_optimizer
from stemsweep.train.schedule import lr_factor

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda is not allowed here: no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


class EpochBatches:
    """The global batches of one epoch (a seeded permutation, last partial batch dropped), each cut
    into equal per-process slices: with P processes, process r trains on slice r of every batch, so P
    processes see exactly the batches one process would."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int, env: DistEnv):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        self.order = torch.randperm(num_items, generator=generator).tolist()
        self.batch_size, self.env = batch_size, env

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __iter__(self):
        local = self.batch_size // self.env.world_size
        for b in range(len(self)):
            start = b * self.batch_size + self.env.rank * local
            yield self.order[start:start + local]


def batch_mixer(aug: AugConfig, num_classes: int):
    """Mixup / CutMix on a batch (torchvision.transforms.v2), one of the two per batch when both are on."""
    from torchvision.transforms import v2

    mixers = []
    if aug.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=aug.mixup_alpha, num_classes=num_classes))
    if aug.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=aug.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


@torch.no_grad()
def top1_error(model: nn.Module, data: Dataset, cfg: RunConfig, device: torch.device, env: DistEnv,
               channels_last: bool) -> float:
    """Top-1 error in percent over the whole test set, each process counting its share."""
    model.eval()
    shard = list(range(env.rank, len(data), env.world_size))
    loader = DataLoader(torch.utils.data.Subset(data, shard), batch_size=cfg.eval_batch_size,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, channels_last)
        with _autocast(cfg, device):
            logits = model(images)
        counts[0] += (logits.argmax(1) != labels).sum()
        counts[1] += labels.numel()
    wrong, total = all_sum(counts, env).tolist()
    return 100.0 * wrong / total


def _to_device(images, labels, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _autocast(cfg: RunConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


@dataclass
class Built:
    model: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    channels_last: bool


def build(cfg: RunConfig, data, device: torch.device, env: DistEnv) -> Built:
    stem = None if cfg.stem.name == "none" else cfg.stem.name
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model = build_model(cfg.model.size, stem, num_classes=data.num_classes, in_chans=data.in_chans,
                        image_size=data.image_size)
    if cfg.init_from:
        source = load_checkpoint(init_checkpoint(cfg))
        skipped = load_weights_for_finetuning(model, source["ema"] or source["model"])
        log.info("initialised from %s; re-initialised: %s", cfg.init_from, ", ".join(skipped) or "nothing")
    if env.enabled and device.type == "cuda":
        # The conv stem's BatchNorm over the global batch. gloo (CPU) has no SyncBatchNorm: there BN
        # statistics stay per process.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # channels_last speeds up 3×3 convolutions, on CPU too (RegNetY-XS +15%: docs/benchmarks.md);
    # the patchify stem is a single strided conv, not worth the layout change.
    channels_last = stem == "conv" or SIZES[cfg.model.size].family == "regnety"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    ema = ModelEma(model) if cfg.ema.enabled else None
    optimizer = build_optimizer(cfg.optimizer, model, cfg.batch_size)
    return Built(model, ema, optimizer, channels_last)


def init_checkpoint(cfg: RunConfig) -> Path:
    """The checkpoint ``init_from`` names: a file, or the latest checkpoint of a run by signature."""
    path = Path(cfg.init_from)
    return path if path.is_file() else RunDir(cfg.runs_root, cfg.init_from).checkpoint


def train(cfg: RunConfig, run: RunDir, summary: dict[str, Any], tracker: Tracker, env: DistEnv) -> dict:
    """Train (or resume) the run; returns its final summary. Only process 0 writes the record."""
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # Input shapes are fixed for a run, so cuDNN's per-shape algorithm search pays off (the conv
        # stems, RegNetY); the authors' pycls turns it on by default too (CUDNN.BENCHMARK).
        torch.backends.cudnn.benchmark = True
    data = build_data(cfg.data, cfg.aug, SIZES[cfg.model.size].train_res, SIZES[cfg.model.size].test_res)
    _require_divisible(cfg.batch_size, env)
    built = build(cfg, data, device, env)
    model, ema, optimizer = built.model, built.ema, built.optimizer
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    mixer = batch_mixer(cfg.aug, data.num_classes)
    stem = None if cfg.stem.name == "none" else cfg.stem.name
    summary = {**summary, **model_complexity(cfg.model.size, stem, data.num_classes, data.in_chans,
                                             data.image_size), "dataset": data.name}

    metrics: list[dict[str, Any]] = []
    start_epoch, wall_before = 0, 0.0
    if run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, metrics, wall_before = state["epoch"], state["metrics"], state["wall_time_s"]
        log.info("resuming %s from its checkpoint after epoch %d", run.signature, start_epoch)
        if env.is_main:
            run.write_metrics(metrics)  # drops any epoch written after the checkpoint
            run.write_summary(summarise(summary, metrics, "running", wall_before))

    trained = model
    if env.enabled:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        trained = torch.compile(trained)

    iters_per_epoch = len(EpochBatches(len(data.train), cfg.batch_size, cfg.seed, 0, env))
    if iters_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} is not allowed: larger than the "
                         f"{len(data.train)} training images")
    print_every = max(1, iters_per_epoch // 10)
    alpha = ema_alpha(cfg.ema.alpha, cfg.batch_size, cfg.epochs, cfg.ema.period, len(data.train))
    started = time.monotonic()
    status, diverged_epoch = "running", None

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # augmentation draws, per epoch
        batches = EpochBatches(len(data.train), cfg.batch_size, cfg.seed, epoch, env)
        loader = DataLoader(data.train, batch_sampler=batches, num_workers=cfg.data.num_workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        trained.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, wrong, n
        epoch_start = time.monotonic()
        for i, (images, labels) in enumerate(loader):
            step = epoch * iters_per_epoch + i
            factor = lr_factor(cfg.schedule, epoch + i / iters_per_epoch, cfg.epochs)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor

            images, labels = _to_device(images, labels, device, built.channels_last)
            targets = labels
            if mixer is not None:
                images, targets = mixer(images, labels)
            with _autocast(cfg, device):
                logits = trained(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.aug.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            if ema is not None and (step + 1) % cfg.ema.period == 0:
                # A plain copy during warm-up, as the authors do.
                ema.update(model, 1.0 if epoch < cfg.schedule.warmup_epochs else alpha)
            n = labels.numel()
            sums += torch.stack([loss.detach().double() * n,
                                 (logits.argmax(1) != labels).sum().double(),
                                 torch.tensor(float(n), dtype=torch.float64, device=device)])

            # Every tenth of an epoch (the same steps on every process: the check is collective).
            if (i + 1) % print_every == 0 or i + 1 == iters_per_epoch:
                if not _progress(sums, env, epoch, i, iters_per_epoch, cfg, time.monotonic() - epoch_start,
                                 started, start_epoch):
                    break

        loss_sum, wrong, seen = all_sum(sums.clone(), env).tolist()
        train_loss = loss_sum / max(seen, 1)
        if not math.isfinite(train_loss):
            status, diverged_epoch = "diverged", epoch + 1
            log.warning("epoch %d: the loss is not finite: run %s diverged", epoch + 1, run.signature)
            break
        train_seconds = time.monotonic() - epoch_start

        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_error": 100.0 * wrong / seen,
            "test_error": top1_error(model, data.test, cfg, device, env, built.channels_last),
            "ema_test_error": (top1_error(ema.module, data.test, cfg, device, env, built.channels_last)
                               if ema is not None else None),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen / train_seconds,
            "elapsed_s": wall_before + time.monotonic() - started,
        }
        metrics.append(row)
        log.info("epoch %d/%d: train loss %.4f, train error %.2f%%, test error %.2f%% (EMA %s), %.0f img/s",
                 epoch + 1, cfg.epochs, row["train_loss"], row["train_error"], row["test_error"],
                 "-" if row["ema_test_error"] is None else f"{row['ema_test_error']:.2f}%",
                 row["images_per_s"])
        if env.is_main:
            save_checkpoint(run.checkpoint, {
                "signature": run.signature, "epoch": epoch + 1, "metrics": metrics,
                "wall_time_s": row["elapsed_s"], "model": model.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
            })
            run.write_metrics(metrics)
            summary = summarise(summary, metrics, "running", row["elapsed_s"])
            run.write_summary(summary)
            tracker.log(row, step=epoch + 1)

    if status == "running":
        status = "done"
    wall = wall_before + time.monotonic() - started
    summary = summarise(summary, metrics, status, wall)
    summary["diverged_epoch"] = diverged_epoch
    return summary


def _progress(sums, env, epoch, i, iters, cfg, epoch_seconds, started, start_epoch) -> bool:
    """Print a progress line with the ETA; False when the loss is no longer finite (stop the epoch)."""
    loss_sum, wrong, seen = all_sum(sums.clone(), env).tolist()
    loss = loss_sum / max(seen, 1)
    if env.is_main:
        done_iters = (epoch - start_epoch) * iters + i + 1
        remaining = (cfg.epochs - start_epoch) * iters - done_iters
        eta = (time.monotonic() - started) / done_iters * remaining
        log.info("epoch %d/%d [%d/%d] loss %.4f, train error %.2f%%, %.0f img/s, ETA %s",
                 epoch + 1, cfg.epochs, i + 1, iters, loss, 100.0 * wrong / max(seen, 1),
                 seen / max(epoch_seconds, 1e-9), _duration(eta))
    return math.isfinite(loss)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _require_divisible(batch_size: int, env: DistEnv) -> None:
    if batch_size % env.world_size:
        raise ValueError(f"batch_size={batch_size} is not allowed with {env.world_size} processes: "
                         "the global batch must divide evenly among them")


def summarise(summary: dict[str, Any], metrics: list[dict[str, Any]], status: str, wall: float) -> dict:
    """The summary's result fields from the per-epoch metrics."""
    def best(key):
        values = [m[key] for m in metrics if m.get(key) is not None]
        return min(values) if values else None

    last = metrics[-1] if metrics else {}
    diverged = status == "diverged"
    return {
        **summary,
        "status": status,
        "epochs_done": len(metrics),
        "final_error": None if diverged else last.get("test_error"),
        "best_error": None if diverged else best("test_error"),
        "final_ema_error": None if diverged else last.get("ema_test_error"),
        "best_ema_error": None if diverged else best("ema_test_error"),
        "wall_time_s": wall,
        "images_per_s": (sum(m["images_per_s"] for m in metrics) / len(metrics)) if metrics else None,
    }
