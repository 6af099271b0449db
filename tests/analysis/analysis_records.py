"""Run records for the analysis tests, written in the exact format of docs/record.md.

`write_study` writes a small study: a CPU mini study on Fashion-MNIST (ViT_P-XS, ViT_C-XS, RegNetY-XS;
AdamW and SGD at 2, 4 and 8 epochs, two seeds at 8 epochs; 8 lr/wd draws per model and optimizer at
2 epochs) with diverged, failed and running runs, and a few ImageNet runs (ViT_P-4GF and ViT_C-4GF at
100 and 400 epochs) for the comparison with the paper. The errors follow a simple formula, so the
study reads like the paper's: ViT_C beats ViT_P, ViT_P suffers most from short schedules, from SGD
and from lr/wd far from the tuned ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

MINI_MODELS = {  # paper name: size, family, stem
    "ViT_P-XS": ("vit_xs", "vit", "patch"),
    "ViT_C-XS": ("vit_xs", "vit", "conv"),
    "RegNetY-XS": ("regnety_xs", "regnety", None),
}
TUNED = {("vit", "adamw"): (1e-3, 0.05), ("vit", "sgd"): (0.1, 1e-4),
         ("regnety", "adamw"): (3e-3, 0.05), ("regnety", "sgd"): (0.5, 5e-5)}
BASE_ERROR = {"ViT_P-XS": 20.0, "ViT_C-XS": 15.0, "RegNetY-XS": 14.0}  # at 8 epochs, AdamW
SHORT_SCHEDULE_COST = {"ViT_P-XS": 3.0, "ViT_C-XS": 2.0, "RegNetY-XS": 1.5}  # points per halving
SGD_COST = {"ViT_P-XS": 6.0, "ViT_C-XS": 1.0, "RegNetY-XS": 0.0}
LRWD_COST = {"ViT_P-XS": 6.0, "ViT_C-XS": 3.0, "RegNetY-XS": 2.0}  # points per decade², off the tuned lr/wd


def write_record(root: Path, *, model: str, size: str, family: str, stem: str | None, optimizer: str,
                 lr: float, wd: float, epochs: int, seed: int = 0, dataset: str = "fashion_mnist",
                 batch_size: int = 128, sweep: str | None = None, final_ema_error: float | None = None,
                 status: str = "done", epochs_done: int | None = None, diverged_epoch: int | None = None,
                 error_message: str | None = None) -> Path:
    """One run directory (config.yaml, metrics.jsonl, summary.json) whose EMA error falls to
    `final_ema_error` over its epochs; returns the directory."""
    meaning = json.dumps([model, optimizer, lr, wd, epochs, seed, dataset, batch_size])
    signature = hashlib.sha256(meaning.encode()).hexdigest()[:10]
    setting = hashlib.sha256(json.dumps([model, optimizer, lr, wd, epochs, dataset, batch_size]).encode())
    setting = setting.hexdigest()[:10]
    run_dir = root / signature
    run_dir.mkdir(parents=True)
    if epochs_done is None:
        epochs_done = diverged_epoch - 1 if status == "diverged" else epochs
    metrics = []
    for epoch in range(1, epochs_done + 1):
        # The error decays towards the final one; a diverged run's never gets there.
        target = 60.0 if final_ema_error is None else final_ema_error
        ema = target + 30.0 * (1 - epoch / max(epochs, 1)) ** 2
        metrics.append({"epoch": epoch, "train_loss": 2.3 * ema / 100, "train_error": ema + 3.0,
                        "test_error": ema + 0.4, "ema_test_error": ema, "lr": lr * 128 / 2048 * 0.5,
                        "images_per_s": 500.0, "elapsed_s": 20.0 * epoch})
    result = status != "diverged" and metrics

    def best(key: str) -> float | None:
        return min(m[key] for m in metrics) if result else None

    summary: dict[str, Any] = {
        "signature": signature, "setting": setting, "status": status, "model": model, "size": size, "family": family,
        "stem": stem, "optimizer": optimizer, "lr": lr, "wd": wd, "epochs": epochs,
        "batch_size": batch_size, "seed": seed, "dataset": dataset, "train_subset": 10000 if
        dataset == "fashion_mnist" else None, "aug": "light", "sweep": sweep, "init_from": None,
        "epochs_done": epochs_done,
        "final_error": metrics[-1]["test_error"] if result else None, "best_error": best("test_error"),
        "final_ema_error": metrics[-1]["ema_test_error"] if result else None,
        "best_ema_error": best("ema_test_error"),
        "diverged_epoch": diverged_epoch, "error_message": error_message,
        "wall_time_s": 20.0 * epochs_done, "images_per_s": 500.0 if metrics else None,
        "flops_b": 0.05 if family == "vit" else 0.04, "params_m": 1.2, "acts_m": 0.3,
        "slurm_job_id": None, "log_path": None, "host": "testhost",
        "versions": {"stemsweep": "0.1.0", "torch": "2.14.1", "python": "3.11.7"},
        "updated": "2026-11-24T08:00:00+00:00",
    }
    (run_dir / "config.yaml").write_text(
        f"model:\n  size: {size}\nstem:\n  name: {stem or 'none'}\noptimizer:\n  name: {optimizer}\n"
        f"  lr: {lr}\n  wd: {wd}\ndata:\n  name: {dataset}\nepochs: {epochs}\nbatch_size: {batch_size}\n"
        f"seed: {seed}\nsweep: {sweep or 'null'}\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir


def mini_error(model: str, optimizer: str, epochs: int, lr_decades: float = 0.0, wd_decades: float = 0.0,
               noise: float = 0.0) -> float:
    return (BASE_ERROR[model] + SHORT_SCHEDULE_COST[model] * math.log2(8 / epochs)
            + (SGD_COST[model] if optimizer == "sgd" else 0.0)
            + LRWD_COST[model] * (lr_decades ** 2 + 0.5 * wd_decades ** 2) + noise)


def write_study(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for model, (size, family, stem) in MINI_MODELS.items():
        common = {"model": model, "size": size, "family": family, "stem": stem}
        for optimizer in ("adamw", "sgd"):
            lr, wd = TUNED[family, optimizer]
            for epochs in (2, 4, 8):
                seeds = (0, 1) if epochs == 8 else (0,)
                for seed in seeds:
                    if model == "ViT_P-XS" and optimizer == "sgd" and epochs == 2:
                        write_record(root, **common, optimizer=optimizer, lr=lr, wd=wd, epochs=epochs,
                                     seed=seed, sweep="mini_optimizer", status="diverged", diverged_epoch=2)
                        continue
                    error = mini_error(model, optimizer, epochs, noise=rng.normal(0, 0.3))
                    write_record(root, **common, optimizer=optimizer, lr=lr, wd=wd, epochs=epochs, seed=seed,
                                 sweep="mini_optimizer", final_ema_error=error)
            for draw in range(8):
                lr_decades, wd_decades = rng.uniform(-1, 1, size=2)
                sweep = f"mini_lrwd_{optimizer}"
                draw_lr, draw_wd = lr * 10 ** lr_decades, wd * 10 ** wd_decades
                if model == "ViT_P-XS" and optimizer == "sgd" and draw == 7:
                    write_record(root, **common, optimizer=optimizer, lr=draw_lr * 10, wd=draw_wd, epochs=2,
                                 sweep=sweep, status="diverged", diverged_epoch=1)
                    continue
                error = mini_error(model, optimizer, 2, lr_decades, wd_decades, rng.normal(0, 0.3))
                write_record(root, **common, optimizer=optimizer, lr=draw_lr, wd=draw_wd, epochs=2,
                             sweep=sweep, final_ema_error=error)
    vit_c = {"model": "ViT_C-XS", "size": "vit_xs", "family": "vit", "stem": "conv", "optimizer": "adamw",
             "lr": 1e-3, "wd": 0.05, "epochs": 16}
    write_record(root, **vit_c, status="failed", epochs_done=0, error_message="RuntimeError: out of memory")
    write_record(root, **vit_c, seed=1, status="running", epochs_done=3, final_ema_error=16.0)
    for model, stem, paper in (("ViT_P-4GF", "patch", {100: 23.3, 400: 19.6}),
                               ("ViT_C-4GF", "conv", {100: 20.9, 400: 18.6})):
        for epochs, error in paper.items():
            write_record(root, model=model, size="vit_4gf", family="vit", stem=stem, optimizer="adamw",
                         lr=1e-3, wd=0.24, epochs=epochs, dataset="imagenet", batch_size=2048,
                         sweep="training_length", final_ema_error=error + 0.3)
    return root
