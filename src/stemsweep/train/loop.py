"""One training run, top to bottom: build, resume, train each epoch, evaluate, checkpoint, record.

Exact resumption at any step: the batch order is a seeded permutation per epoch, every random draw of
augmentation is seeded by where it happens (data/seeding.py), and a checkpoint holds the position
(epoch, step within it), the epoch's running sums, the model, EMA and optimizer. A run resumed from a
checkpoint taken after any step trains the rest exactly as an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from stemsweep.config import AugConfig, CheckpointConfig, ConfigError, RunConfig
from stemsweep.data import DataBundle, build_data
from stemsweep.data.bad_files import RECORD_NAME, BadFiles, TooManyBadFiles
from stemsweep.data.image_index import INDEX_CACHE
from stemsweep.data.seeding import SeededImages, batch_seed, image_seed, seed_torch
from stemsweep.models import SIZES
from stemsweep.models.build import build_model, model_complexity
from stemsweep.models.stems import record_stem, uses_channels_last
from stemsweep.record.checkpoint import LAST_CHECKPOINT_NOT_WRITTEN, load_checkpoint, load_latest, remove_previous
from stemsweep.record.rundir import RunDir, StepMarker
from stemsweep.record.trackers import Tracker
from stemsweep.train.checkpoint import CheckpointWriter, load_weights_for_finetuning
from stemsweep.train.distributed import DistEnv, StepAgreement, all_sum, barrier
from stemsweep.train.ema import ModelEma, ema_alpha
from stemsweep.train.interrupt import StopSignals
from stemsweep.train.optim import build_optimizer
from stemsweep.train.scale import scale_warnings
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
    processes see exactly the batches one process would. Items are (image index, augmentation seed);
    `start` skips the batches a resumed epoch has already trained."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int, env: DistEnv, start: int = 0):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        self.order = torch.randperm(num_items, generator=generator).tolist()
        self.batch_size, self.env, self.start = batch_size, env, start
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __iter__(self):
        local = self.batch_size // self.env.world_size
        for b in range(self.start, len(self.order) // self.batch_size):
            first = b * self.batch_size + self.env.rank * local
            yield [(i, image_seed(self.seed, self.epoch, i)) for i in self.order[first:first + local]]


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
def top1_error(model: nn.Module, data: DataBundle, cfg: RunConfig, device: torch.device, env: DistEnv,
               channels_last: bool) -> tuple[float, int]:
    """Top-1 error in percent over the whole test set, each process counting its share, and the number
    of images it is counted over (unreadable files are left out: data/bad_files.py)."""
    model.eval()
    shard = list(range(env.rank, len(data.test), env.world_size))
    loader = DataLoader(torch.utils.data.Subset(data.test, shard), batch_size=cfg.eval_batch_size,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", collate_fn=data.collate)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        if batch is None:  # every file of the batch unreadable
            continue
        images, labels = data.to_device(batch, device, channels_last, train=False)
        with _autocast(cfg, device):
            logits = model(images)
        counts[0] += (logits.argmax(1) != labels).sum()
        counts[1] += labels.numel()
    wrong, total = all_sum(counts, env).tolist()
    return (100.0 * wrong / total if total else math.nan), int(total)


def _autocast(cfg: RunConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


@dataclass
class Built:
    model: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    channels_last: bool


def build(cfg: RunConfig, data, device: torch.device, env: DistEnv) -> Built:
    stem = record_stem(cfg.stem.name)
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model = build_model(cfg.model.size, stem, num_classes=data.num_classes, in_chans=data.in_chans,
                        image_size=data.image_size)
    if cfg.init_from:
        source = load_checkpoint(init_checkpoint(cfg))
        ema = source.get("ema")
        weights = source["model"] if ema is None else ema.get("weights", ema)
        skipped = load_weights_for_finetuning(model, weights)
        log.info("initialised from %s; re-initialised: %s", cfg.init_from, ", ".join(skipped) or "nothing")
    if env.enabled and device.type == "cuda":
        # The conv stem's BatchNorm over the global batch. gloo (CPU) has no SyncBatchNorm: there BN
        # statistics stay per process.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # channels_last speeds up 3×3 convolutions, on CPU too (RegNetY-XS +15%: docs/benchmarks.md);
    # the patchify stem is a single strided conv, not worth the layout change.
    channels_last = uses_channels_last(stem, SIZES[cfg.model.size].family)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    ema = ModelEma(model) if cfg.ema.enabled else None
    optimizer = build_optimizer(cfg.optimizer, model, cfg.batch_size)
    return Built(model, ema, optimizer, channels_last)


def init_checkpoint(cfg: RunConfig) -> Path:
    """The checkpoint ``init_from`` names: a file, or the latest checkpoint of a run by signature."""
    path = Path(cfg.init_from)
    return path if path.is_file() else RunDir(cfg.runs_root, cfg.init_from).checkpoint


class CheckpointClock:
    """When the next mid-epoch checkpoint is due: `every_min` minutes or `every_steps` steps after
    the last checkpoint, whichever comes first."""

    def __init__(self, cfg: CheckpointConfig, step: int):
        self.cfg = cfg
        self.reset(step)

    def reset(self, step: int) -> None:
        self.step, self.time = step, time.monotonic()

    def due(self, step: int) -> bool:
        by_steps = self.cfg.every_steps is not None and step - self.step >= self.cfg.every_steps
        by_time = self.cfg.every_min is not None and time.monotonic() - self.time >= 60 * self.cfg.every_min
        return by_steps or by_time


def train(cfg: RunConfig, run: RunDir, summary: dict[str, Any], tracker: Tracker, env: DistEnv,
          stop: StopSignals, previous_status: str | None = None) -> dict:
    """Train (or resume) the run; returns its summary: done, diverged, or resumable when a stop
    signal arrived (then a checkpoint of the step it stopped after is written). `previous_status` is
    the record's status before this launch (`running`: the last process was killed). Only process 0
    writes the record."""
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # Input shapes are fixed for a run, so cuDNN's per-shape algorithm search pays off (the conv
        # stems, RegNetY); the authors' pycls turns it on by default too (CUDNN.BENCHMARK).
        torch.backends.cudnn.benchmark = True
    bad_files = BadFiles(run.path / RECORD_NAME, cfg.data.max_bad_files, cfg.data.root)  # bad files
    data = build_data(cfg.data, cfg.aug, SIZES[cfg.model.size].train_res, SIZES[cfg.model.size].test_res,
                      device.type, bad_files, index_cache=Path(cfg.runs_root) / INDEX_CACHE)
    _require_divisible(cfg.batch_size, env)
    built = build(cfg, data, device, env)
    model, ema, optimizer = built.model, built.ema, built.optimizer
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    mixer = batch_mixer(cfg.aug, data.num_classes)
    stem = record_stem(cfg.stem.name)
    summary = {**summary, **model_complexity(cfg.model.size, stem, data.num_classes, data.in_chans,
                                             data.image_size), "dataset": data.name, "data_pipeline": data.pipeline,
               **device_fields(device, env, data.image_size)}
    iters_per_epoch = len(data.train) // cfg.batch_size
    if iters_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} is not allowed: larger than the "
                          f"{len(data.train)} training images")
    alpha = ema_alpha(cfg.ema.alpha, cfg.batch_size, cfg.epochs, cfg.ema.period, len(data.train))
    summary["warnings"] = scale_warnings(cfg, iters_per_epoch, len(data.train), len(data.test), alpha)
    for warning in summary["warnings"] if env.is_main else ():
        log.warning(warning)

    # --- resume -----------------------------------------------------------------------------------
    metrics: list[dict[str, Any]] = []
    start_epoch, start_step, wall_before = 0, 0, 0.0
    resumed_sums, resumed_seconds = None, 0.0
    state, which = load_latest(run.path)
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, metrics, wall_before = state["epoch"], state["metrics"], state["wall_time_s"]
        start_step = state.get("step", 0)  # batches of epoch start_epoch already trained
        if start_step:
            resumed_sums, resumed_seconds = state["sums"], state["epoch_seconds"]
    if state is None and env.is_main:  # bad files: those met by training that starts again are met again
        bad_files.clear()
    if state is not None or previous_status in ("running", "resumable"):
        summary = _note_resume(summary, run, previous_status, which, start_epoch, start_step, iters_per_epoch)
    if state is not None:
        if env.is_main:
            run.write_metrics(metrics)  # drops any epoch written after the checkpoint
            run.write_summary(summarise(summary, metrics, "running", wall_before))

    trained = model
    if env.enabled:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        trained = torch.compile(trained)

    train_set = SeededImages(data.train)
    print_every = max(1, iters_per_epoch // 10)
    started = time.monotonic()
    status, diverged_epoch = "running", None
    writer = CheckpointWriter(run.checkpoint, background=device.type == "cuda") if env.is_main else None
    clock = CheckpointClock(cfg.checkpoint, start_epoch * iters_per_epoch + start_step)
    agreement = StepAgreement(env, flags=2)  # (stop now, checkpoint now), the same step on every process
    marker = StepMarker(run.progress) if env.is_main else None

    def checkpoint(epoch_done: int, step: int, totals: list[float], epoch_seconds: float, wait: bool = False):
        """Write the state after `step` batches of epoch `epoch_done` (0: at the epoch's start);
        `totals` are the epoch's running sums over all processes so far."""
        if writer is not None:
            writer.save({
                "signature": run.signature, "epoch": epoch_done, "step": step, "sums": totals,
                "epoch_seconds": epoch_seconds, "iters_per_epoch": iters_per_epoch, "metrics": metrics,
                "wall_time_s": wall_before + time.monotonic() - started, "model": model.state_dict(),
                "ema": ema.state() if ema is not None else None, "optimizer": optimizer.state_dict(),
            }, wait=wait)
        clock.reset(epoch_done * iters_per_epoch + step)

    def stop_here(epoch: int, step: int) -> None:
        nonlocal summary, status
        status = "resumable"
        summary = _note_interruption(summary, stop, epoch, step, iters_per_epoch)
        log.warning("run %s stopped after step %d of epoch %d (%s); checkpoint written", run.signature,
                    step - epoch * iters_per_epoch, epoch + 1, stop.name)
        barrier(env)  # no process ends before process 0 has written the checkpoint

    try:
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            batches = EpochBatches(len(data.train), cfg.batch_size, cfg.seed, epoch, env, start=first)
            loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.data.num_workers,
                                pin_memory=device.type == "cuda", persistent_workers=False, collate_fn=data.collate)
            trained.train()
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, wrong, n
            seconds_before = 0.0
            if first:
                if env.is_main:  # the totals so far, counted once over the processes
                    sums += torch.tensor(resumed_sums, dtype=torch.float64, device=device)
                seconds_before = resumed_seconds
            epoch_start = time.monotonic()
            for i, batch in enumerate(loader, start=first):
                step = epoch * iters_per_epoch + i
                factor = lr_factor(cfg.schedule, epoch + i / iters_per_epoch, cfg.epochs)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor

                images, labels = data.to_device(batch, device, built.channels_last, train=True)
                targets = labels
                if mixer is not None:
                    seed_torch(batch_seed(cfg.seed, epoch, i, env.rank))
                    images, targets = mixer(images, labels)
                with _autocast(cfg, device):
                    logits = trained(images)
                    loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.aug.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                # Every `period` steps, and after an epoch's last step so that the EMA evaluated at the
                # epoch's end holds its latest weights (pycls updates every period steps only; at the
                # paper's 625 steps an epoch this adds one update to its ~20). A plain copy during warm-up.
                if ema is not None and ((step + 1) % cfg.ema.period == 0 or i + 1 == iters_per_epoch):
                    ema.update(model, 1.0 if epoch < cfg.schedule.warmup_epochs else alpha)
                n = labels.numel()
                sums += torch.stack([loss.detach().double() * n,
                                     (logits.argmax(1) != labels).sum().double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=device)])
                if marker is not None:
                    marker.mark(step + 1)

                # Every tenth of an epoch (the same steps on every process: the check is collective).
                if (i + 1) % print_every == 0 or i + 1 == iters_per_epoch:
                    if not _progress(sums, env, epoch, i, iters_per_epoch, cfg,
                                     seconds_before + time.monotonic() - epoch_start, started,
                                     start_epoch * iters_per_epoch + start_step):
                        break
                if i + 1 == iters_per_epoch:
                    break  # the epoch's end is checkpointed below, with its metrics
                stop_now, checkpoint_now = agreement(stop.requested, clock.due(step + 1))
                if stop_now or checkpoint_now:  # the same step on every process: collectives are safe
                    checkpoint(epoch, i + 1, all_sum(sums.clone(), env).tolist(),
                               seconds_before + time.monotonic() - epoch_start, wait=stop_now)
                if stop_now:
                    stop_here(epoch, step + 1)
                    break
            if status == "resumable":
                break

            loss_sum, wrong, seen = all_sum(sums.clone(), env).tolist()
            train_loss = loss_sum / max(seen, 1)
            if not math.isfinite(train_loss):
                status, diverged_epoch = "diverged", epoch + 1
                log.warning("epoch %d: the loss is not finite: run %s diverged", epoch + 1, run.signature)
                break
            train_seconds = seconds_before + time.monotonic() - epoch_start

            test_error, test_images = top1_error(model, data, cfg, device, env, built.channels_last)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_error": 100.0 * wrong / seen,
                "test_error": test_error,
                "test_images": test_images,  # bad files: those that could be read
                "ema_test_error": (top1_error(ema.module, data, cfg, device, env, built.channels_last)[0]
                                   if ema is not None else None),
                "ema_initial_share": ema.initial_share if ema is not None else None,
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": seen / train_seconds,
                "elapsed_s": wall_before + time.monotonic() - started,
            }
            metrics.append(row)
            log.info("epoch %d/%d: train loss %.4f, train error %.2f%%, test error %.2f%% (EMA %s), %.0f img/s",
                     epoch + 1, cfg.epochs, row["train_loss"], row["train_error"], row["test_error"],
                     "-" if row["ema_test_error"] is None else f"{row['ema_test_error']:.2f}%",
                     row["images_per_s"])
            checkpoint(epoch + 1, 0, [0.0, 0.0, 0.0], 0.0)
            summary = {**summary, "bad_files": bad_files.summary(), "test_images": test_images}  # bad files
            if env.is_main:
                run.write_metrics(metrics)
                summary = summarise(summary, metrics, "running", row["elapsed_s"])
                run.write_summary(summary)
                tracker.log(row, step=epoch + 1)
            if epoch + 1 < cfg.epochs and _any_process(stop.requested, env, device):  # came in its last step
                stop_here(epoch + 1, (epoch + 1) * iters_per_epoch)
                break
    except TooManyBadFiles:  # bad files: raised in this process or, reworded, in a DataLoader worker
        if env.is_main:
            run.write_summary({**summary, "bad_files": bad_files.summary()})
        raise bad_files.too_many() from None
    finally:
        agreement.close()
        unwritten = writer.finish() if writer is not None else None  # the last checkpoint's write error
        if marker is not None:
            marker.close()

    if status == "running" and _any_process(unwritten is not None, env, device):
        status = "resumable"  # not done: a fine-tune needs its last step; launched again, it writes it
        summary = _note_unwritten(summary, unwritten, cfg.epochs, iters_per_epoch)
    if status == "running":
        status = "done"
        if env.is_main:
            remove_previous(run.path)
    wall = wall_before + time.monotonic() - started
    summary = summarise(summary, metrics, status, wall)
    summary["diverged_epoch"] = diverged_epoch
    return summary


def _note_resume(summary: dict, run: RunDir, previous_status: str | None, which: str | None, epoch: int,
                 step: int, iters: int) -> dict:
    """Record where the run resumes from (`which` checkpoint; None: from the start), and a hard kill
    before it: the last record said `running` though no process trains it, so the steps trained after
    its checkpoint (its progress file says how many) are lost."""
    resumed_at = epoch * iters + step
    interruptions = list(summary.get("interruptions", []))
    if previous_status == "running":
        trained = run.trained_steps()
        interruptions.append({**_when(), "cause": "killed", "epoch": epoch + 1 if step else epoch,
                              "step": trained, "lost_steps": None if trained is None else trained - resumed_at})
    resumes = [*summary.get("resumes", []), {**_when(), "from_epoch": epoch, "from_step": step,
                                             "from_global_step": resumed_at, "checkpoint": which}]
    if which is None:
        log.info("restarting %s from its first step: it has no readable checkpoint", run.signature)
    else:
        log.info("resuming %s from %s after epoch %d%s", run.signature, which, epoch,
                 f", step {step}/{iters} of epoch {epoch + 1}" if step else "")
    return {**summary, "interruptions": interruptions, "resumes": resumes}


def _note_interruption(summary: dict, stop: StopSignals, epoch: int, step: int, iters: int) -> dict:
    entry = {**_when(), "cause": stop.cause(), "signal": stop.name, "epoch": epoch + 1, "step": step,
             "lost_steps": 0}
    return {**summary, "interruptions": [*summary.get("interruptions", []), entry]}


def _note_unwritten(summary: dict, error: str | None, epochs: int, iters: int) -> dict:
    """The run trained to its end but could not write its last checkpoint, twice: it resumes from the
    checkpoint it has (how many steps back is not known here)."""
    log.warning("the last checkpoint could not be written (%s): the run is recorded resumable", error)
    entry = {**_when(), "cause": LAST_CHECKPOINT_NOT_WRITTEN, "signal": None, "epoch": epochs,
             "step": epochs * iters, "lost_steps": None, "error": error}
    return {**summary, "interruptions": [*summary.get("interruptions", []), entry]}


def _any_process(flag: bool, env: DistEnv, device: torch.device) -> bool:
    if not env.enabled:
        return flag
    return bool(all_sum(torch.tensor([float(flag)], device=device), env).item())


def device_fields(device: torch.device, env: DistEnv, image_size: int) -> dict[str, Any]:
    """Where and at which resolution the run trains: what a cost estimate matches finished runs on
    (study/cost.py)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": device.type, "device_name": name, "world_size": env.world_size, "image_size": image_size}


def _when() -> dict[str, Any]:
    job = os.environ.get("SLURM_JOB_ID")
    restart = os.environ.get("SLURM_RESTART_COUNT")
    return {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "slurm_job_id": job,
            "slurm_restart": int(restart) if restart else None}


def _progress(sums, env, epoch, i, iters, cfg, epoch_seconds, started, start_step) -> bool:
    """Print a progress line with the ETA; False when the loss is no longer finite (stop the epoch)."""
    loss_sum, wrong, seen = all_sum(sums.clone(), env).tolist()
    loss = loss_sum / max(seen, 1)
    if env.is_main:
        done_iters = epoch * iters + i + 1 - start_step
        remaining = cfg.epochs * iters - (epoch * iters + i + 1)
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
        raise ConfigError(f"batch_size={batch_size} is not allowed with {env.world_size} processes: "
                          "the global batch must divide evenly among them")


def summarise(summary: dict[str, Any], metrics: list[dict[str, Any]], status: str, wall: float) -> dict:
    """The summary's result fields from the per-epoch metrics. The EMA errors count only epochs whose
    EMA is mostly trained weights (ema.MAX_INITIAL_SHARE); with none, they are null and the model's
    errors are the study's (`study_error_source`)."""
    def best(key, rows):
        values = [m[key] for m in rows if m.get(key) is not None]
        return min(values) if values else None

    from stemsweep.train.ema import MAX_INITIAL_SHARE

    meaningful = [m for m in metrics if (m.get("ema_initial_share") or 0.0) <= MAX_INITIAL_SHARE]
    last = metrics[-1] if metrics else {}
    diverged = status == "diverged"
    result = {
        **summary,
        "status": status,
        "epochs_done": len(metrics),
        "final_error": None if diverged else last.get("test_error"),
        "best_error": None if diverged else best("test_error", metrics),
        "final_ema_error": None if diverged or last not in meaningful else last.get("ema_test_error"),
        "best_ema_error": None if diverged else best("ema_test_error", meaningful),
        "wall_time_s": wall,
        "images_per_s": (sum(m["images_per_s"] for m in metrics) / len(metrics)) if metrics else None,
    }
    from_ema = result["best_ema_error"] is not None
    result["study_error"] = result["best_ema_error"] if from_ema else result["best_error"]
    result["study_error_source"] = None if result["study_error"] is None else "ema" if from_ema else "model"
    return result
