"""Structured configs: the schema of conf/, registered in Hydra's ConfigStore, and its validation.

OmegaConf checks types when Hydra composes; the dataclasses' ``__post_init__`` checks values when the
composed config is turned into objects (``OmegaConf.to_object``), before any work is done. Every
error is one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from stemsweep.errors import ConfigError
from stemsweep.models import SIZES
from stemsweep.models.stems import CONFIG_STEMS, NO_STEM, VIT_STEMS

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # the YAML this schema validates
SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"  # one file per experiment (+sweeps=NAME)
# This machine's own settings, not tracked by git: default.yaml, launcher presets, the tunings studies write
# (conf/local/README.md; hydra_plugins/stemsweep_plugins/searchpath.py).
LOCAL_CONF_DIR = Path(CONF_DIR) / "local"

# Planning a sweep checks every value but the existence of folders (a plan is made where the data
# may not be, e.g. ImageNet sweeps planned on a laptop); see paths_unchecked().
_CHECK_PATHS = True


@contextmanager
def paths_unchecked() -> Iterator[None]:
    global _CHECK_PATHS
    previous, _CHECK_PATHS = _CHECK_PATHS, False
    try:
        yield
    finally:
        _CHECK_PATHS = previous


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(
        value is not None and math.isfinite(value) and value > 0,
        f"{name}={value} is not allowed: it must be a positive number",
    )


def _non_negative(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(
        value is not None and math.isfinite(value) and value >= 0,
        f"{name}={value} is not allowed: it must be a number >= 0",
    )


def _one_of(name: str, value: Any, allowed: list[Any]) -> None:
    _require(value in allowed, f"{name}={value!r} is not allowed: choose one of {', '.join(map(str, allowed))}")


@dataclass
class LrWd:
    lr: float = MISSING
    wd: float = MISSING


@dataclass
class TunedLrWd:
    """A model's tuned (lr, wd) for one stem, per optimizer."""

    adamw: LrWd | None = None
    sgd: LrWd | None = None


@dataclass
class StemTuning:
    """One model size's tuned (lr, wd) per stem (conf/tuning/), each per optimizer: a field per name
    of CONFIG_STEMS."""

    patch: TunedLrWd | None = None
    conv: TunedLrWd | None = None
    none: TunedLrWd | None = None


@dataclass
class Interval:
    """Where the lr/wd stability study draws (lr, wd) log-uniformly, lr per 2048 images."""

    lr: list[float] = MISSING
    wd: list[float] = MISSING


@dataclass
class Resources:
    """What one run of this model asks a SLURM cluster for (read by the SLURM launcher)."""

    gpus: int = 0
    nodes: int = 1
    cpus_per_task: int = 2
    mem_gb: int = 4
    timeout_min: int = 60


@dataclass
class ModelConfig:
    size: str = MISSING  # a name in stemsweep.models.SIZES, e.g. vit_4gf, regnety_4gf, vit_xs
    # Tuned (lr, wd) per stem ("patch", "conv"; "none" for RegNetY) and optimizer, lr per 2048 images.
    # Used where optimizer.lr / optimizer.wd are left null.
    tuned: dict[str, TunedLrWd] = field(default_factory=dict)
    lrwd_intervals: dict[str, Interval] = field(default_factory=dict)  # per optimizer
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        _one_of("model", self.size, sorted(SIZES))


@dataclass
class StemConfig:
    name: str = MISSING  # one of CONFIG_STEMS: patch | conv | none (RegNetY has its own stem)

    def __post_init__(self) -> None:
        _one_of("stem", self.name, list(CONFIG_STEMS))


@dataclass
class OptimizerConfig:
    name: str = MISSING  # adamw | sgd
    # lr is per 2048 images and scales linearly with the actual batch size (the paper's convention).
    # null: the model's tuned value for this stem and optimizer (conf/model/*.yaml, `tuned`).
    lr: float | None = None
    wd: float | None = None
    lr_scale: float = 1.0  # multiplies the resolved lr (fine-tuning at a fraction of the tuned lr)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW
    momentum: float = 0.9  # SGD
    nesterov: bool = True  # SGD

    def __post_init__(self) -> None:
        _one_of("optimizer", self.name, ["adamw", "sgd"])
        _positive("optimizer.lr", self.lr, allow_none=True)
        _positive("optimizer.lr_scale", self.lr_scale)
        _non_negative("optimizer.wd", self.wd, allow_none=True)
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"optimizer.betas={list(self.betas)} is not allowed: two numbers in [0, 1)",
        )
        _require(0 <= self.momentum < 1, f"optimizer.momentum={self.momentum} is not allowed: a number in [0, 1)")


@dataclass
class ScheduleConfig:
    """Linear warm-up from warmup_factor × lr, then cosine decay to min_lr × lr (pycls's lr policy)."""

    name: str = "cosine"
    warmup_epochs: float = 5
    warmup_factor: float = 0.1
    min_lr: float = 0.005  # floor, as a fraction of the base lr
    step: str = "epoch"  # epoch: lr set once per epoch (the authors' way) | iteration: every step

    def __post_init__(self) -> None:
        _one_of("schedule", self.name, ["cosine"])
        _non_negative("schedule.warmup_epochs", self.warmup_epochs)
        _require(0 < self.warmup_factor <= 1, f"schedule.warmup_factor={self.warmup_factor} is not allowed: (0, 1]")
        _require(0 <= self.min_lr < 1, f"schedule.min_lr={self.min_lr} is not allowed: a fraction in [0, 1)")
        _one_of("schedule.step", self.step, ["epoch", "iteration"])


FOLDER_DATASETS = ("imagenet", "imagenet21k")  # ImageNet-style folders of image files


@dataclass
class DataConfig:
    name: str = MISSING  # fashion_mnist | imagenet | imagenet21k | synthetic
    root: str | None = None  # folder with the data (fashion_mnist: IDX .gz files; imagenet: train/ val/)
    train_subset: int | None = None  # train on a seeded subset of this many images
    test_subset: int | None = None  # evaluate on a seeded subset (smoke tests only)
    subset_seed: int = 0
    image_size: int | None = None  # train resolution; null: the dataset's own (or the model's for ImageNet)
    test_image_size: int | None = None  # null: image_size for small sets, the model's test res for ImageNet
    num_classes: int | None = None  # synthetic only; others know theirs
    in_chans: int = 3  # synthetic only
    num_train: int = 512  # synthetic only
    num_test: int = 256  # synthetic only
    num_workers: int = 0  # DataLoader workers; not part of a run's identity
    # Where images are decoded and augmented: cpu (DataLoader workers), gpu (workers read bytes; the
    # training device decodes and augments whole batches: image folders only), auto (gpu with CUDA and
    # an image folder, else cpu). The same augmentation either way; not part of a run's identity.
    pipeline: str = "auto"
    download: bool = False  # fashion_mnist only: let torchvision fetch it where a network exists
    # Image folders: files that cannot be read or decoded are replaced (train) or left out (test) and
    # counted (data/bad_files.py); past this many distinct files the run stops (0: at the first).
    # Not part of a run's identity: it changes whether a run ends, not what it trains.
    max_bad_files: int = 100
    # Image folders whose data set has a known shape (ImageNet-1k's 1,000 classes; the ImageNet-21k
    # releases: data/fingerprint.py) are checked when a run starts; false trains on a folder of another
    # shape (your own data). Not part of a run's identity: it changes whether a run starts, not what it trains.
    check_shape: bool = True

    def __post_init__(self) -> None:
        _one_of("data", self.name, ["fashion_mnist", "imagenet", "imagenet21k", "synthetic"])
        if not _CHECK_PATHS:
            pass
        elif self.root is not None:
            root = os.path.expanduser(str(self.root))
            _require(
                os.path.isdir(root),
                f"data.root={self.root} is not allowed: no such directory (give an existing folder)",
            )
        elif self.name in FOLDER_DATASETS:
            raise ConfigError(f"data.root=null is not allowed for data={self.name}: name its folder (train/ and val/) "
                              f"with data_roots.{self.name}=PATH, or data.root=PATH for one run")
        for name in ("train_subset", "test_subset", "image_size", "test_image_size", "num_classes"):
            value = getattr(self, name)
            _require(
                value is None or value > 0,
                f"data.{name}={value} is not allowed: a positive integer or null",
            )
        _require(self.num_workers >= 0, f"data.num_workers={self.num_workers} is not allowed: an integer >= 0")
        _require(self.max_bad_files >= 0,
                 f"data.max_bad_files={self.max_bad_files} is not allowed: an integer >= 0 (0: stop at the first)")
        _one_of("data.pipeline", self.pipeline, ["auto", "cpu", "gpu"])
        _require(self.pipeline != "gpu" or self.name in FOLDER_DATASETS,
                 f"data.pipeline=gpu is not allowed with data={self.name}: the GPU pipeline decodes the JPEG "
                 "files of an image folder (data=imagenet, imagenet21k); use data.pipeline=cpu or auto")


@dataclass
class DataRoots:
    """The folder of each image-folder data set (conf/config.yaml: `data_roots`; conf/data/<name>.yaml
    takes its `root` from here). One entry a data set, so that a study whose runs read two data sets
    (peak: ImageNet-21k, then ImageNet-1k) gives each its own folder. Not part of a run's identity."""

    imagenet: str | None = None
    imagenet21k: str | None = None


NATIVE_IMAGE_SIZE = {"fashion_mnist": 28}  # the size a data set's images have when data.image_size is null


@dataclass
class AugConfig:
    name: str = MISSING
    random_resized_crop: bool = False  # Inception crop
    flip: bool = False
    autoaugment: bool = False  # ImageNet policy
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0  # with both > 0, one of the two per batch, 50/50
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("aug.mixup_alpha", self.mixup_alpha)
        _non_negative("aug.cutmix_alpha", self.cutmix_alpha)
        _require(
            0 <= self.label_smoothing < 1,
            f"aug.label_smoothing={self.label_smoothing} is not allowed: a number in [0, 1)",
        )


@dataclass
class EmaConfig:
    """Weight EMA for evaluation: every `period` steps ema ← (1−α)·ema + α·model,
    α = min(1, alpha · batch / epochs · period) (pycls). The paper's alpha is 1e-5 for ImageNet-1k;
    null scales it by 1.28M / train images so that a smaller data set keeps the paper's EMA horizon."""

    enabled: bool = True
    alpha: float | None = None
    period: int = 32

    def __post_init__(self) -> None:
        _positive("ema.alpha", self.alpha, allow_none=True)
        _require(self.period >= 1, f"ema.period={self.period} is not allowed: an integer >= 1")


@dataclass
class CheckpointConfig:
    """Mid-epoch checkpoints, which bound what a hard kill (`kill -9`, a node lost) can cost: one is
    written when `every_min` wall minutes or `every_steps` steps have passed since the last (either,
    whichever comes first; null turns that one off). An epoch's end and a stop signal always write one.
    Not part of a run's identity."""

    every_min: float | None = 10.0
    every_steps: int | None = None

    def __post_init__(self) -> None:
        _positive("checkpoint.every_min", self.every_min, allow_none=True)
        _require(self.every_steps is None or self.every_steps >= 1,
                 f"checkpoint.every_steps={self.every_steps} is not allowed: an integer >= 1 or null")


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | none
    project: str = "stemsweep"
    entity: str | None = None
    mode: str | None = None  # null: $WANDB_MODE, else offline (these machines have no network)

    def __post_init__(self) -> None:
        _one_of("logger", self.name, ["wandb", "none"])
        _require(
            self.mode in (None, "offline", "online", "disabled"),
            f"logger.mode={self.mode!r} is not allowed: offline, online, disabled or null",
        )


@dataclass
class LrwdDraw:
    """A seeded log-uniform (lr, wd) draw from the model family's interval (lr/wd stability sweeps).
    draw=null: use optimizer.lr / optimizer.wd."""

    draw: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.draw is None or self.draw >= 0, f"lrwd.draw={self.draw} is not allowed: an integer >= 0")


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    stem: StemConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    data: DataConfig = MISSING
    aug: AugConfig = MISSING
    logger: LoggerConfig = MISSING
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    lrwd: LrwdDraw = field(default_factory=LrwdDraw)
    data_roots: DataRoots = field(default_factory=DataRoots)
    # Tuned (lr, wd) that take precedence over the model's own, per model size, then stem and optimizer
    # (conf/tuning/: e.g. `mini`, written by `stemsweep tune` from the mini lr/wd sweeps).
    tuning: dict[str, StemTuning] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128  # the global batch, over all processes
    seed: int = 0
    runs_root: str = "runs"
    init_from: str | None = None  # a run signature (under runs_root) or a checkpoint path
    sweep: str | None = None  # the sweep this run belongs to (W&B group); not part of its identity
    retry: bool = False  # run again a run whose record is failed or diverged
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast where the device supports it (CUDA)
    compile: bool = False  # torch.compile the model
    threads: int | None = None  # torch threads on CPU; null: torch's default
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs={self.epochs} is not allowed: an integer >= 1")
        _require(self.batch_size >= 1, f"batch_size={self.batch_size} is not allowed: an integer >= 1")
        _require(self.eval_batch_size >= 1, f"eval_batch_size={self.eval_batch_size} is not allowed: >= 1")
        _one_of("device", self.device, ["auto", "cpu", "cuda"])
        _require(self.threads is None or self.threads >= 1, f"threads={self.threads} is not allowed: >= 1")
        spec = SIZES[self.model.size]
        family = spec.family
        if family == "vit":
            size = self.train_image_size()
            _require(
                size % spec.patch_size == 0,
                f"model={self.model.size} is not allowed with {size}×{size} images (data={self.data.name}): "
                f"its patch size {spec.patch_size} must divide the image size; use a CPU size (vit_xs, vit_s) "
                "or set data.image_size",
            )
        if family == "regnety":
            _require(
                self.stem.name == NO_STEM,
                f"stem={self.stem.name} is not allowed with model={self.model.size}: "
                f"RegNetY has its own stem (stem={NO_STEM})",
            )
        else:
            _require(
                self.stem.name in VIT_STEMS,
                f"stem={self.stem.name} is not allowed with model={self.model.size}: choose {' or '.join(VIT_STEMS)}",
            )
        if self.schedule.step == "iteration" and self.schedule.warmup_epochs >= self.epochs:
            # A per-step warm-up as long as the run or longer is fitted to it: half the run, so that the
            # natural first sweep, epochs=1 with the short schedule's 1-epoch warm-up, trains (at 0.5, as the
            # mini preset does). The fitted value is what the run hashes and records (config.yaml); a run
            # whose warm-up already fits keeps its value and its signature.
            self.schedule.warmup_epochs = self.epochs / 2
        _require(
            self.schedule.warmup_epochs < self.epochs,
            f"schedule.warmup_epochs={self.schedule.warmup_epochs} is not allowed with epochs={self.epochs} and "
            f"schedule.step={self.schedule.step}: warm-up must end before the last epoch; lower it, or use "
            "schedule=short, whose per-step warm-up is fitted to short runs",
        )

    def train_image_size(self) -> int:
        """The resolution the run trains at: data.image_size, else the data set's own, else the model's."""
        return self.data.image_size or NATIVE_IMAGE_SIZE.get(self.data.name) or SIZES[self.model.size].train_res


def register_configs() -> None:
    """Register the schema that conf/config.yaml names in its defaults list; its typed fields check
    every group's yaml as it is merged in."""
    cs = ConfigStore.instance()
    if "run_schema.yaml" not in cs.repo:  # stored once: Hydra 1.5 makes a repeated store an error
        cs.store(name="run_schema", node=RunConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config: type checks by OmegaConf, value checks by the dataclasses."""
    try:
        run = OmegaConf.to_object(cfg)
    except InterpolationResolutionError as exc:
        # A resolver that validates another run's config (`${run_signature:…}`, the fine-tuning source)
        # found a bad value there: that one line, not OmegaConf's wrapping of it.
        cause = exc.__context__  # OmegaConf wraps it once or twice, with the cause as the context
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None
    _require(isinstance(run, RunConfig),
             f"a config with keys {', '.join(map(str, cfg)) or '(none)'} is not allowed: stemsweep runs, sweeps "
             "and launches only stemsweep run configs (conf/config.yaml, whose defaults list names run_schema)")
    return run  # type: ignore[return-value]


def log_uniform_draw(low: float, high: float, seed: int, draw: int, axis: int) -> float:
    """Draw number ``draw`` of a seeded log-uniform sequence on [low, high], 4 significant digits.

    The uniform numbers depend only on (seed, draw, axis), not on the interval: every model of a
    lr/wd sweep gets the same 64 points, each mapped into its own family's interval.
    """
    import numpy as np

    u = np.random.default_rng([seed, draw]).random(2)[axis]
    return float(f"{math.exp(math.log(low) + u * (math.log(high) - math.log(low))):.4g}")


LRWD_ORIGINS = ("draw", "given", "tuning", "model")


def lrwd_origin(cfg: RunConfig) -> str:
    """Where resolve_hyperparameters takes a run's (lr, wd) from (call it before): `draw` (an lr/wd
    stability draw), `given` (optimizer.lr and .wd set), `tuning` (the tuning's entry for this model
    size, stem and optimizer) or `model` (the model's own tuned values, conf/model/)."""
    opt = cfg.optimizer
    if cfg.lrwd.draw is not None:
        return "draw"
    if opt.lr is not None and opt.wd is not None:
        return "given"
    tuned = getattr(getattr(cfg.tuning.get(cfg.model.size), cfg.stem.name, None) or TunedLrWd(), opt.name)
    return "tuning" if tuned is not None else "model"


def resolve_hyperparameters(cfg: RunConfig) -> RunConfig:
    """Fill optimizer.lr / optimizer.wd: from the lr/wd draw when one is asked for, else, where left
    null, from `tuning` (its entry for this model size, stem and optimizer) or failing that the model's
    tuned values. The resolved values are what a run records and hashes."""
    opt = cfg.optimizer
    if cfg.lrwd.draw is not None:
        interval = cfg.model.lrwd_intervals.get(opt.name)
        _require(interval is not None,
                 f"lrwd.draw={cfg.lrwd.draw} is not allowed with model={cfg.model.size}: "
                 f"no lr/wd interval for optimizer {opt.name} in its config")
        opt.lr = log_uniform_draw(*interval.lr, cfg.lrwd.seed, cfg.lrwd.draw, axis=0)
        opt.wd = log_uniform_draw(*interval.wd, cfg.lrwd.seed, cfg.lrwd.draw, axis=1)
    tuned = getattr(getattr(cfg.tuning.get(cfg.model.size), cfg.stem.name, None) or TunedLrWd(), opt.name)
    if tuned is None:
        tuned = getattr(cfg.model.tuned.get(cfg.stem.name, TunedLrWd()), opt.name)
    for name in ("lr", "wd"):
        if getattr(opt, name) is None:
            _require(tuned is not None,
                     f"optimizer.{name}=null is not allowed for model={cfg.model.size} stem={cfg.stem.name} "
                     f"optimizer={opt.name}: it has no tuned value; give optimizer.{name}")
            setattr(opt, name, getattr(tuned, name))
    if opt.lr_scale != 1.0:
        opt.lr, opt.lr_scale = float(f"{opt.lr * opt.lr_scale:.4g}"), 1.0  # the lr a run records is the one used
    return cfg


def validated_config(cfg: DictConfig) -> RunConfig:
    """The composed config checked and with its lr/wd resolved: what a run trains, records and hashes.
    A bad value raises ConfigError."""
    return resolve_hyperparameters(to_run_config(cfg))
