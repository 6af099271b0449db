"""A tiny study with every kind of stage, for the local and the SLURM tests: an lr/wd sweep of 4 draws,
tune, a 2-run training-length sweep, a pre-training run and the fine-tuning of it (by its
signature, as conf/stage/in1k_finetune.yaml names it), and
the report. Synthetic data, ViT_C-XS, a few steps a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from stemsweep.config import LOCAL_CONF_DIR

COMMON = ["model=vit_xs", "stem=conv", "data=synthetic", "data.num_train=128", "data.num_test=64",
          "batch_size=32", "logger=none", "threads=1", "schedule.warmup_epochs=0", "ema.enabled=false"]
PRETRAIN = ["sweep=tiny_pretrain", "optimizer=adamw", "epochs=1", "seed=0"]


def write_tiny_study(folder: Path, runs_root: Path, extra: list[str] = ()) -> tuple[Path, str]:
    """The study file and the tuning name it writes (unique: conf/local/tuning/ is shared by every test)."""
    tuning = f"test_{uuid.uuid4().hex[:8]}"
    from stemsweep.compose import signature_of_overrides

    source = signature_of_overrides(" ".join([*COMMON, *extra, *PRETRAIN]))
    lines = [
        "description: a tiny study for the tests",
        f"overrides: [runs_root={runs_root}, {', '.join(COMMON + list(extra))}]",
        "stages:",
        "  lrwd: {overrides: [sweep=tiny_lrwd, optimizer=adamw, epochs=1, lrwd.seed=0, 'lrwd.draw=range(0,4)']}",
        f"  tune: {{tune: {{from: [lrwd], out: {tuning}}}, needs: [lrwd]}}",
        f"  length: {{overrides: [sweep=tiny_length, tuning={tuning}, optimizer=adamw, 'epochs=2,3'], needs: [tune]}}",
        f"  pretrain: {{overrides: [{', '.join(PRETRAIN)}]}}",
        "  finetune:",
        "    overrides: [sweep=tiny_finetune, optimizer=adamw, epochs=1, seed=0, data.num_classes=5,",
        f"                init_from={source}]",
        "    needs: [pretrain]",
        f"  report: {{report: {{out: {folder / 'report'}}}, needs: [length, finetune]}}",
    ]
    path = folder / "tiny.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, tuning


def tuning_path(name: str) -> Path:
    """Where a study's `tune` stage writes tuning NAME (Stage.tuning_file)."""
    return LOCAL_CONF_DIR / "tuning" / f"{name}.yaml"


def remove_tuning(name: str) -> None:
    path = tuning_path(name)
    if path.exists():
        os.remove(path)


def study(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`stemsweep study ARGS…` as a user runs it."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "stemsweep.cli", "study", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def summaries(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/summary.json"))}


def write_adaptive_study(folder: Path, runs_root: Path, extra: list[str] = ()) -> Path:
    """A tiny adaptive study: one stage of seeds in waves of 3, two comparisons, decided after its first wave.
    `classes` settles (untrained models, lr ~0: 2 classes against 100, an error near 50% against 99%, over
    1024 test images); `same` is open at its maximum, 3 (the EMA's period, with the EMA off: the same
    errors). So every cell stops after the first wave, and the second (up to `classes`'s maximum, 6) never
    runs; the fourth cell is in no comparison."""
    common = [*COMMON, "data.num_train=64", "data.num_test=1024", "epochs=1", "optimizer=adamw", "optimizer.lr=1e-9",
              *extra]
    lines = [
        "description: a tiny adaptive study for the tests",
        f"overrides: [runs_root={runs_root}, {', '.join(common)}]",
        "alpha: 0.05",
        "stages:",
        "  seeds: {overrides: [sweep=tiny_seeds, 'data.num_classes=2,100', 'ema.period=16,32', 'seed=range(0,6)']}",
        "comparisons:",
        "  classes: {stage: seeds, a: [data.num_classes=2, ema.period=32], b: [data.num_classes=100, ema.period=32],",
        "            statistic: metric, method: normal, replicate: seed, wave: 3, min: 3, max: 6}",
        "  same: {stage: seeds, a: [data.num_classes=2, ema.period=16], b: [data.num_classes=2, ema.period=32],",
        "         statistic: metric, replicate: seed, wave: 3, min: 3, max: 3}",
    ]
    path = folder / "tiny_adaptive.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
