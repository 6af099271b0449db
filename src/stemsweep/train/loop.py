"""One training run, top to bottom (`train`): prepare, resume, then for each epoch train it, evaluate,
checkpoint and record.

Exact resumption at any step: the batch order is a seeded permutation per epoch, every random draw of
augmentation is seeded by where it happens (data/seeding.py), and a checkpoint holds the run's state
(train/state.py): the position (epoch, step within it), the epoch's running sums, the model, EMA and
optimizer. A run resumed from a checkpoint taken after any step trains the rest exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from stemsweep.config import AugConfig, CheckpointConfig, ConfigError, RunConfig
from stemsweep.data import DataBundle, build_data
from stemsweep.data.bad_files import RECORD_NAME, BadFiles, TooManyBadFiles
from stemsweep.data.image_index import INDEX_CACHE
from stemsweep.data.seeding import SeededImages, batch_order_seed, image_seed, mixer_seed, seed_torch
from stemsweep.models import SIZES
from stemsweep.models.build import build_model, model_complexity
from stemsweep.models.stems import record_stem, uses_channels_last
from stemsweep.record import summary as record
from stemsweep.record.checkpoint import load_checkpoint, load_latest, remove_previous
from stemsweep.record.rundir import RunDir, StepMarker
from stemsweep.record.trackers import Tracker
from stemsweep.train.checkpoint import CheckpointWriter, load_weights_for_finetuning
from stemsweep.train.distributed import AnyProcess, DistEnv, all_sum, barrier
from stemsweep.train.ema import ModelEma, ema_alpha
from stemsweep.train.interrupt import StopSignals, leave_stop_signals_to, started
from stemsweep.train.optim import build_optimizer
from stemsweep.train.scale import scale_warnings
from stemsweep.train.schedule import lr_factor
from stemsweep.train.state import (
    Built,
    EpochSums,
    EpochTotals,
    RunState,
    checkpoint_state,
    finetuning_weights,
    resume_from,
)
from stemsweep.train.step import autocast, train_step

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda is not allowed here: no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


class EpochBatches:
    """The global batches of one epoch (a seeded permutation, last partial batch dropped), each cut
    into equal per-process slices: with P processes, process r trains on slice r of every batch, so P
    processes see exactly the batches one process would. Items are (image index, augmentation seed);
    `start` skips the batches a resumed epoch has already trained."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int, env: DistEnv, start: int = 0):
        generator = torch.Generator().manual_seed(batch_order_seed(seed, epoch))
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


def data_loader(dataset, **options) -> DataLoader:
    """A DataLoader whose workers leave the stop signals to this process (train/interrupt.py): SLURM,
    `kill -- -PGID` and `timeout` signal every process of a job, the workers too. Iterate it through
    `started`."""
    return DataLoader(dataset, worker_init_fn=functools.partial(leave_stop_signals_to, os.getpid()), **options)


@torch.no_grad()
def top1_error(model: nn.Module, data: DataBundle, cfg: RunConfig, device: torch.device, env: DistEnv,
               channels_last: bool) -> tuple[float, int]:
    """Top-1 error in percent over the whole test set, each process counting its share, and the number
    of images it is counted over (unreadable files are left out: data/bad_files.py)."""
    model.eval()
    shard = list(range(env.rank, len(data.test), env.world_size))
    loader = data_loader(torch.utils.data.Subset(data.test, shard), batch_size=cfg.eval_batch_size,
                         num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", collate_fn=data.collate)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in started(loader):
        if batch is None:  # every file of the batch unreadable
            continue
        images, labels = data.to_device(batch, device, channels_last, train=False)
        with autocast(device, cfg.amp):
            logits = model(images)
        counts[0] += (logits.argmax(1) != labels).sum()
        counts[1] += labels.numel()
    wrong, total = all_sum(counts, env).tolist()
    return (100.0 * wrong / total if total else math.nan), int(total)


def build(cfg: RunConfig, data, device: torch.device, env: DistEnv) -> Built:
    stem = record_stem(cfg.stem.name)
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model = build_model(cfg.model.size, stem, num_classes=data.num_classes, in_chans=data.in_chans,
                        image_size=data.image_size)
    if cfg.init_from:
        source = load_checkpoint(init_checkpoint(cfg))
        skipped = load_weights_for_finetuning(model, finetuning_weights(source))
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


class EpochEnd(enum.Enum):
    """How an epoch's training ended."""

    DONE = "done"  # after its last step
    STOPPED = "stopped"  # after a step at a stop signal, checkpointed: the run is resumable
    NOT_FINITE = "not finite"  # the loss is no longer finite: the run diverged


@dataclass
class Training:
    """What every epoch of a run uses: its config, record directory, processes, data and modules, and,
    once it is resumed (`begin`), the module that computes the logits and what checkpoints it."""

    cfg: RunConfig
    run: RunDir
    env: DistEnv
    stop: StopSignals
    device: torch.device
    data: DataBundle
    bad_files: BadFiles  # the data's unreadable files, counted over the run's processes and launches
    built: Built
    base_lrs: list[float]
    mixer: Any  # Mixup / CutMix, or None
    steps_per_epoch: int
    ema_alpha: float
    forward: nn.Module | None = None  # the model, wrapped for data parallelism and torch.compile
    writer: CheckpointWriter | None = None  # process 0's
    clock: CheckpointClock | None = None
    flags: AnyProcess | None = None
    marker: StepMarker | None = None  # process 0's

    def begin(self, state: RunState) -> None:
        """Once resumed: wrap the model, start the checkpoint clock and the launch's clocks."""
        cfg, env = self.cfg, self.env
        self.forward = self.built.model
        if env.enabled:
            self.forward = nn.parallel.DistributedDataParallel(
                self.built.model, device_ids=[env.local_rank] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.forward = torch.compile(self.forward)
        state.begin_launch(self.steps_per_epoch)
        if env.is_main:
            self.writer = CheckpointWriter(self.run.checkpoint, background=self.device.type == "cuda")
        self.clock = CheckpointClock(cfg.checkpoint, state.global_step(self.steps_per_epoch))
        self.flags = AnyProcess(env)  # stop now, checkpoint now: the same step on every process
        if env.is_main:
            self.marker = StepMarker(self.run.progress)

    def close(self) -> str | None:
        """Ends what `begin` started; returns why the last checkpoint could not be written (retried
        once: train/checkpoint.py), or None."""
        if self.flags is not None:
            self.flags.close()
        unwritten = self.writer.finish() if self.writer is not None else None
        if self.marker is not None:
            self.marker.close()
        return unwritten


def train(cfg: RunConfig, run: RunDir, summary: dict[str, Any], tracker: Tracker, env: DistEnv,
          stop: StopSignals, previous_status: str | None = None) -> dict:
    """Train (or resume) the run; returns its summary: done, diverged, or resumable when a stop
    signal arrived (then a checkpoint of the step it stopped after is written). `previous_status` is
    the record's status before this launch (`running`: the last process was killed). Only process 0
    writes the record."""
    t, summary = prepare(cfg, run, summary, env, stop)
    state = RunState()
    summary = resume(t, state, summary, previous_status)
    if env.is_main:
        tracker.resume(state.metrics)  # the epochs a signal cost W&B (record/trackers.py)
    t.begin(state)
    status, diverged_epoch, unwritten = "running", None, None
    try:
        while state.epoch < cfg.epochs:
            sums = EpochSums(t.device, env, state.sums)
            end = train_epoch(t, state, sums)
            if end is EpochEnd.STOPPED:
                status, summary = "resumable", stopped(t, state, summary)
                break
            if end is EpochEnd.NOT_FINITE:
                status, diverged_epoch = "diverged", state.epoch + 1
                log.warning("epoch %d: the loss is not finite: run %s diverged", state.epoch + 1, run.signature)
                break
            row = evaluate(t, state, sums.totals())
            if t.flags.now(t.bad_files.exceeded())[0]:  # crossed by any process, in training or evaluation
                raise t.bad_files.too_many()
            state.end_epoch(row)
            save_checkpoint(t, state)
            summary = record_epoch(t, state, summary, tracker, row)
            if state.epoch < cfg.epochs and t.flags.now(stop.requested)[0]:  # came in the epoch's last step
                status, summary = "resumable", stopped(t, state, summary)
                break
    except TooManyBadFiles:  # raised in this process or, reworded, in a DataLoader worker
        if env.is_main:
            run.write_summary(record.with_bad_files(summary, t.bad_files.summary()))
        raise t.bad_files.too_many() from None
    finally:
        unwritten = t.close()

    if status == "running" and t.flags.now(unwritten is not None)[0]:
        # Not done: a fine-tune needs its last step. Launched again, it resumes and writes it.
        log.warning("the last checkpoint could not be written (%s): the run is recorded resumable", unwritten)
        status = "resumable"
        summary = record.last_checkpoint_unwritten(summary, unwritten, state.global_step(t.steps_per_epoch))
    if status == "running":
        status = "done"
        if env.is_main:
            remove_previous(run.path)
    return record.finished(summary, state.metrics, status, state.wall_time_s(), diverged_epoch)


def prepare(cfg: RunConfig, run: RunDir, summary: dict[str, Any], env: DistEnv,
            stop: StopSignals) -> tuple[Training, dict[str, Any]]:
    """The device, data, model, EMA and optimizer of the run; the summary gains what they tell."""
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # Input shapes are fixed for a run, so cuDNN's per-shape algorithm search pays off (the conv
        # stems, RegNetY); the authors' pycls turns it on by default too (CUDNN.BENCHMARK).
        torch.backends.cudnn.benchmark = True
    # With several processes, one that meets the file past the limit goes on like the others, and all
    # stop at the same step (train_epoch, train): stopping alone, it would leave them in a collective.
    bad_files = BadFiles(run.path / RECORD_NAME, cfg.data.max_bad_files, cfg.data.root, stop_at_limit=not env.enabled)
    data = build_data(cfg.data, cfg.aug, SIZES[cfg.model.size].train_res, SIZES[cfg.model.size].test_res,
                      device.type, bad_files, index_cache=Path(cfg.runs_root) / INDEX_CACHE)
    _require_divisible(cfg.batch_size, env)
    built = build(cfg, data, device, env)
    base_lrs = [group["lr"] for group in built.optimizer.param_groups]
    mixer = batch_mixer(cfg.aug, data.num_classes)
    stem = record_stem(cfg.stem.name)
    complexity = model_complexity(cfg.model.size, stem, data.num_classes, data.in_chans, data.image_size)
    steps_per_epoch = len(data.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} is not allowed: larger than the "
                          f"{len(data.train)} training images")
    alpha = ema_alpha(cfg.ema.alpha, cfg.batch_size, cfg.epochs, cfg.ema.period, len(data.train))
    warnings = scale_warnings(cfg, steps_per_epoch, len(data.train), len(data.test), alpha)
    for warning in warnings if env.is_main else ():
        log.warning(warning)
    summary = record.prepared(summary, complexity, data.name, data.pipeline, warnings,
                              where_trained(device, env, data.image_size))
    training = Training(cfg, run, env, stop, device, data, bad_files, built, base_lrs, mixer, steps_per_epoch, alpha)
    return training, summary


def where_trained(device: torch.device, env: DistEnv, image_size: int) -> dict[str, Any]:
    """The device type and name, the number of processes and the resolution: what a cost estimate
    matches finished runs on (plan/cost.py)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": device.type, "device_name": name, "world_size": env.world_size, "image_size": image_size}


def resume(t: Training, state: RunState, summary: dict[str, Any], previous_status: str | None) -> dict[str, Any]:
    """Load the run's latest readable checkpoint into `state` and the modules, if it has one, and note
    the resume in the summary (also a restart from the first step after a kill or a stop)."""
    run, iters = t.run, t.steps_per_epoch
    checkpoint, which = load_latest(run.path)
    if checkpoint is not None:
        resume_from(checkpoint, state, t.built)
    elif t.env.is_main:  # training that starts again meets its unreadable files again
        t.bad_files.clear()
    if checkpoint is not None or previous_status in ("running", "resumable"):
        trained = run.trained_steps() if previous_status == "running" else None
        summary = record.resumed(summary, previous_status, which, state.epoch, state.step, iters, trained)
        if which is None:
            log.info("restarting %s from its first step: it has no readable checkpoint", run.signature)
        else:
            log.info("resuming %s from %s after epoch %d%s", run.signature, which, state.epoch,
                     f", step {state.step}/{iters} of epoch {state.epoch + 1}" if state.step else "")
    if checkpoint is not None:
        summary = record.with_results(summary, state.metrics, "running", state.wall_before)
        if t.env.is_main:
            run.write_metrics(state.metrics)  # drops any epoch written after the checkpoint
            run.write_summary(summary)
    return summary


def train_epoch(t: Training, state: RunState, sums: EpochSums) -> EpochEnd:
    """Train epoch `state.epoch` from step `state.step` on, adding to `sums`; a stop signal ends it
    after the step it came in, with a checkpoint of that step."""
    cfg, env, epoch, iters = t.cfg, t.env, state.epoch, t.steps_per_epoch
    batches = EpochBatches(len(t.data.train), cfg.batch_size, cfg.seed, epoch, env, start=state.step)
    loader = data_loader(SeededImages(t.data.train), batch_sampler=batches, num_workers=cfg.data.num_workers,
                         pin_memory=t.device.type == "cuda", persistent_workers=False, collate_fn=t.data.collate)
    t.forward.train()
    state.begin_epoch()
    for i, batch in enumerate(started(loader), start=state.step):
        step = epoch * iters + i
        factor = lr_factor(cfg.schedule, epoch + i / iters, cfg.epochs)
        for group, base in zip(t.built.optimizer.param_groups, t.base_lrs):
            group["lr"] = base * factor

        images, labels = t.data.to_device(batch, t.device, t.built.channels_last, train=True)
        targets = labels
        if t.mixer is not None:
            seed_torch(mixer_seed(cfg.seed, epoch, i, env.rank))
            images, targets = t.mixer(images, labels)
        loss, logits = train_step(t.built.model, t.built.optimizer, images, targets, amp=cfg.amp,
                                  label_smoothing=cfg.aug.label_smoothing, forward=t.forward, ema=t.built.ema,
                                  ema_alpha=ema_update(t, epoch, i))
        sums.add(loss, logits, labels)
        if t.marker is not None:
            t.marker.mark(step + 1)

        last = i + 1 == iters
        # Every tenth of an epoch (the same steps on every process: the check is collective).
        if ((i + 1) % max(1, iters // 10) == 0 or last) and not report_progress(t, state, sums.totals(), i):
            return EpochEnd.NOT_FINITE
        if last:
            return EpochEnd.DONE  # the epoch's end is checkpointed after its evaluation
        stop_now, checkpoint_now, too_many = t.flags.after_next_step(t.stop.requested, t.clock.due(step + 1),
                                                                     t.bad_files.exceeded())
        if too_many:  # data.max_bad_files, crossed by any process: every process stops at this step
            raise t.bad_files.too_many()
        if stop_now or checkpoint_now:  # the same step on every process: collectives are safe
            state.within_epoch(i + 1, sums.totals())
            save_checkpoint(t, state, wait=stop_now)
        if stop_now:
            return EpochEnd.STOPPED
    return EpochEnd.DONE


def ema_update(t: Training, epoch: int, i: int) -> float | None:
    """The EMA's α after step `i` of `epoch`, or None when no update is due: every `ema.period` steps,
    and after an epoch's last step so that the EMA evaluated at the epoch's end holds its latest
    weights (pycls updates every period steps only; at the paper's 625 steps an epoch this adds one
    update to its ~20). A plain copy (α = 1) during warm-up."""
    cfg = t.cfg
    if t.built.ema is None:
        return None
    if (epoch * t.steps_per_epoch + i + 1) % cfg.ema.period and i + 1 != t.steps_per_epoch:
        return None
    return 1.0 if epoch < cfg.schedule.warmup_epochs else t.ema_alpha


def report_progress(t: Training, state: RunState, totals: EpochTotals, i: int) -> bool:
    """Log a progress line with the ETA (process 0); False when the loss is no longer finite."""
    cfg, iters = t.cfg, t.steps_per_epoch
    if t.env.is_main:
        done_steps = state.epoch * iters + i + 1
        eta = (time.monotonic() - state.launched) / (done_steps - state.launch_step) * (cfg.epochs * iters - done_steps)
        log.info("epoch %d/%d [%d/%d] loss %.4f, train error %.2f%%, %.0f img/s, ETA %s",
                 state.epoch + 1, cfg.epochs, i + 1, iters, totals.train_loss, totals.train_error,
                 totals.seen / max(state.epoch_time_s(), 1e-9), _duration(eta))
    return math.isfinite(totals.train_loss)


def evaluate(t: Training, state: RunState, totals: EpochTotals) -> dict[str, Any]:
    """The epoch's metrics row: its training totals, the test errors of the model and the EMA."""
    cfg, built = t.cfg, t.built
    train_seconds = state.epoch_time_s()
    ema = built.ema
    test_error, test_images = top1_error(built.model, t.data, cfg, t.device, t.env, built.channels_last)
    row = {
        "epoch": state.epoch + 1,
        "train_loss": totals.train_loss,
        "train_error": totals.train_error,
        "test_error": test_error,
        "test_images": test_images,  # the readable ones
        "ema_test_error": (top1_error(ema.module, t.data, cfg, t.device, t.env, built.channels_last)[0]
                           if ema is not None else None),
        "ema_initial_share": ema.initial_share if ema is not None else None,
        "lr": built.optimizer.param_groups[0]["lr"],
        "images_per_s": totals.seen / train_seconds,
        "elapsed_s": state.wall_time_s(),
    }
    log.info("epoch %d/%d: train loss %.4f, train error %.2f%%, test error %.2f%% (EMA %s), %.0f img/s",
             row["epoch"], cfg.epochs, row["train_loss"], row["train_error"], row["test_error"],
             "-" if row["ema_test_error"] is None else f"{row['ema_test_error']:.2f}%", row["images_per_s"])
    return row


def save_checkpoint(t: Training, state: RunState, wait: bool = False) -> None:
    """Process 0 writes the run's state (in the background on a GPU); the checkpoint clock restarts."""
    if t.writer is not None:
        t.writer.save(checkpoint_state(t.run.signature, state, t.built, t.steps_per_epoch), wait=wait)
    t.clock.reset(state.global_step(t.steps_per_epoch))


def record_epoch(t: Training, state: RunState, summary: dict[str, Any], tracker: Tracker,
                 row: dict[str, Any]) -> dict[str, Any]:
    """The record after an epoch: metrics.jsonl, summary.json and the tracker (process 0 writes them)."""
    summary = record.with_results(summary, state.metrics, "running", row["elapsed_s"])
    summary = record.with_bad_files(summary, t.bad_files.summary(), row["test_images"])
    if t.env.is_main:
        t.run.write_metrics(state.metrics)
        t.run.write_summary(summary)
        tracker.log(row, step=row["epoch"])
    return summary


def stopped(t: Training, state: RunState, summary: dict[str, Any]) -> dict[str, Any]:
    """A stop signal after the checkpoint of `state`: noted in the summary; no process ends before
    process 0 has written the checkpoint."""
    iters = t.steps_per_epoch
    summary = record.interrupted(summary, t.stop.cause(), t.stop.name, state.epoch, state.global_step(iters))
    log.warning("run %s stopped after step %d of epoch %d (%s); checkpoint written", t.run.signature,
                state.step, state.epoch + 1, t.stop.name)
    barrier(t.env)
    return summary


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _require_divisible(batch_size: int, env: DistEnv) -> None:
    if batch_size % env.world_size:
        raise ConfigError(f"batch_size={batch_size} is not allowed with {env.world_size} processes: "
                          "the global batch must divide evenly among them")
