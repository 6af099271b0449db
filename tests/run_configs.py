"""A small valid RunConfig for tests that need one without composing Hydra configs."""

from __future__ import annotations

from stemsweep.config import (
    AugConfig,
    DataConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    StemConfig,
)


def make_config(**changes) -> RunConfig:
    """ViT_C-XS, AdamW, synthetic data, 10 epochs; `changes` by dotted key ("schedule.warmup_epochs")."""
    cfg = RunConfig(
        model=ModelConfig(size="vit_xs"), stem=StemConfig(name="conv"),
        optimizer=OptimizerConfig(name="adamw", lr=1e-3, wd=0.05), schedule=ScheduleConfig(),
        data=DataConfig(name="synthetic"), aug=AugConfig(name="none"), logger=LoggerConfig(name="none"),
        epochs=10,
    )
    for key, value in changes.items():
        target = cfg
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return cfg
