"""Benchmark: load 10,000 run records and compute every metric of the study (target ≤ 3 s).

    .venv/bin/python bench/bench_analysis.py [--runs 10000] [--report]

Writes the records into a temporary directory in the exact docs/record.md format (config.yaml,
metrics.jsonl, summary.json): 6,000 lr/wd draws (3 models × 2 optimizers × 1,000, 3% diverged) and
4,000 tuned runs (9 models × 2 optimizers × 4 schedules × ~55 seeds); schedules of 2–16 epochs keep
metrics.jsonl short. Then times load_runs, every metric as the report uses it, and (informational)
load_history and, with --report, the whole report with its figures. Prints a markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stemsweep import analysis as sa
from stemsweep.analysis.report import write_report
from stemsweep.models.stems import config_stem

MODELS = {  # paper name: size, family, stem
    "ViT_P-1GF": ("vit_1gf", "vit", "patch"), "ViT_P-4GF": ("vit_4gf", "vit", "patch"),
    "ViT_P-18GF": ("vit_18gf", "vit", "patch"), "ViT_C-1GF": ("vit_1gf", "vit", "conv"),
    "ViT_C-4GF": ("vit_4gf", "vit", "conv"), "ViT_C-18GF": ("vit_18gf", "vit", "conv"),
    "RegNetY-1GF": ("regnety_1gf", "regnety", None), "RegNetY-4GF": ("regnety_4gf", "regnety", None),
    "RegNetY-16GF": ("regnety_16gf", "regnety", None),
}
LRWD_MODELS = ("ViT_P-4GF", "ViT_C-4GF", "RegNetY-4GF")
SCHEDULES = (2, 4, 8, 16)


def write_run(root: Path, number: int, model: str, optimizer: str, lr: float, wd: float, epochs: int,
              seed: int, sweep: str, error: float, diverged: bool) -> None:
    size, family, stem = MODELS[model]
    signature = f"{number:010x}"
    run_dir = root / signature
    run_dir.mkdir()
    finished_epochs = 1 if diverged else epochs  # a diverged run's loss went non-finite in epoch 2
    metrics = [{"epoch": e, "train_loss": 1.0, "train_error": error + 5,
                "test_error": error + 0.3 + epochs - e,
                "ema_test_error": error + epochs - e, "lr": lr, "images_per_s": 500.0, "elapsed_s": 10.0 * e}
               for e in range(1, finished_epochs + 1)]
    summary = {
        "signature": signature, "status": "diverged" if diverged else "done", "model": model, "size": size,
        "family": family, "stem": stem, "optimizer": optimizer, "lr": lr, "wd": wd, "epochs": epochs,
        "batch_size": 2048, "seed": seed, "dataset": "imagenet", "train_subset": None, "aug": "paper",
        "sweep": sweep, "init_from": None, "epochs_done": len(metrics),
        "final_error": None if diverged else error + 0.3, "best_error": None if diverged else error + 0.3,
        "final_ema_error": None if diverged else error, "best_ema_error": None if diverged else error,
        "diverged_epoch": 2 if diverged else None, "error_message": None,
        "wall_time_s": 10.0 * epochs, "images_per_s": 500.0, "flops_b": 3.9, "params_m": 18.5, "acts_m": 11.0,
        "slurm_job_id": None, "log_path": None, "host": "bench",
        "versions": {"stemsweep": "0.1.0", "torch": "2.14.1", "python": "3.11.7"},
        "updated": "2026-11-24T08:00:00+00:00",
    }
    (run_dir / "config.yaml").write_text(f"model:\n  size: {size}\nstem:\n  name: {config_stem(stem)}\n"
                                         f"optimizer:\n  name: {optimizer}\n  lr: {lr}\n  wd: {wd}\n"
                                         f"epochs: {epochs}\nseed: {seed}\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def write_study(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    lrwd_count = count * 6 // 10
    number = 0
    for i in range(lrwd_count):
        model, optimizer = LRWD_MODELS[i % 3], ("adamw", "sgd")[i // 3 % 2]
        lr_decades, wd_decades = rng.uniform(-1, 1, 2)
        error = 25 + 3 * (lr_decades ** 2 + wd_decades ** 2) + rng.normal(0, 0.3)
        write_run(root, number, model, optimizer, 1e-3 * 10 ** lr_decades, 0.1 * 10 ** wd_decades, 8, 0,
                  f"lrwd_{optimizer}", error, rng.random() < 0.03)
        number += 1
    models = list(MODELS)
    for i in range(count - lrwd_count):
        cell = i % (len(models) * 2 * len(SCHEDULES))
        model, rest = models[cell // 8], cell % 8
        optimizer, epochs = ("adamw", "sgd")[rest // 4], SCHEDULES[rest % 4]
        error = 20 + 8 / epochs + (2 if optimizer == "sgd" else 0) + rng.normal(0, 0.3)
        write_run(root, number, model, optimizer, 1e-3, 0.24, epochs, i // 72, "optimizer", error, False)
        number += 1


def timed(name: str, timings: dict[str, float], work):
    started = time.perf_counter()
    result = work()
    timings[name] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--report", action="store_true", help="also time the whole report (figures included)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        started = time.perf_counter()
        write_study(root, args.runs)
        print(f"wrote {args.runs} records in {time.perf_counter() - started:.1f} s")
        os.sync()
        timings: dict[str, float] = {}
        runs = timed("load_runs", timings, lambda: sa.load_runs(root))
        tuned, study = sa.tuned_runs(runs), sa.lrwd_study_runs(runs)
        timed("training_length_gap", timings, lambda: sa.training_length_gap(tuned))
        timed("optimizer_gap", timings, lambda: sa.optimizer_gap(tuned))
        timed("peak_table", timings, lambda: sa.peak_table(tuned))
        timed("lrwd_edf", timings, lambda: sa.lrwd_edf(study))
        timed("edf_band (1,000 bootstrap samples)", timings, lambda: sa.edf_band(study))
        timed("edf_summary", timings, lambda: sa.edf_summary(study))
        timed("edf_ks", timings, lambda: sa.edf_ks(study))
        total = sum(timings.values())
        extra: dict[str, float] = {}
        history = timed("load_history (informational)", extra, lambda: sa.load_history(root))
        if args.report:
            timed("stemsweep report, figures included (informational)", extra,
                  lambda: write_report([str(root)], str(Path(tmp) / "report")))
    print(f"\n{len(runs)} runs ({len(study)} lr/wd draws, {len(tuned)} tuned), {len(history)} epochs\n")
    print("| step | seconds |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"| **load + every metric** | **{total:.2f}** (target ≤ 3) |")
    for name, seconds in extra.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
