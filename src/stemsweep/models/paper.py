"""`stemsweep models`: every model of the study counted beside what the paper prints for it."""

from __future__ import annotations

import csv as csv_module
import sys

import torch

from stemsweep.models.build import build_model, model_complexity
from stemsweep.models.sizes import SIZES, paper_name
from stemsweep.models.stems import NO_STEM, VIT_STEMS

# What the paper prints (GFLOPs, Mparams, Macts): Table 1 for ViT at 224², regnety_models.csv for
# RegNetY at its train resolution; 1000 classes (docs/paper/; the model tests hold these to the CSVs).
PAPER_COMPLEXITY: dict[str, tuple[float, float, float]] = {
    "ViT_P-1GF": (1.1, 4.8, 5.5),
    "ViT_C-1GF": (1.1, 4.6, 5.7),
    "ViT_P-4GF": (3.9, 18.5, 11.1),
    "ViT_C-4GF": (4.0, 17.8, 11.3),
    "ViT_P-18GF": (17.5, 86.7, 24.0),
    "ViT_C-18GF": (17.7, 81.6, 24.1),
    "ViT_P-36GF": (35.9, 178.4, 37.3),
    "ViT_C-36GF": (35.0, 167.8, 36.7),
    "RegNetY-1GF": (1.047, 9.601, 6.210),
    "RegNetY-4GF": (4.096, 22.409, 14.465),
    "RegNetY-16GF": (15.460, 72.283, 30.702),
}

# The CPU sizes are counted on what they train on: Fashion-MNIST, 28×28 grey images, 10 classes.
CPU_INPUT = {"in_chans": 1, "num_classes": 10}

METRICS = ("flops_b", "params_m", "acts_m")
COLUMNS = ["model", "size", "stem", "blocks", "flops_b", "params_m", "acts_m", "numel",
           "paper_flops_b", "paper_params_m", "paper_acts_m", "diff_flops_b", "diff_params_m", "diff_acts_m",
           "image_size", "in_chans", "num_classes"]


def model_table() -> list[dict]:
    """One row per model of the study, in SIZES's order, ViT_P before ViT_C. numel is the built model's
    parameter count (built on the meta device: no memory used)."""
    rows = []
    for size, spec in SIZES.items():
        inputs = CPU_INPUT if spec.cpu else {"in_chans": 3, "num_classes": 1000}
        for stem in VIT_STEMS if spec.family == "vit" else (NO_STEM,):
            with torch.device("meta"):
                numel = sum(p.numel() for p in build_model(size, stem, **inputs).parameters())
            row = {"model": paper_name(size, stem), "size": size, "stem": stem, "blocks": spec.blocks(stem),
                   **model_complexity(size, stem, **inputs), "numel": numel,
                   "image_size": spec.train_res, **inputs}
            paper = PAPER_COMPLEXITY.get(row["model"])
            for i, key in enumerate(METRICS):
                row[f"paper_{key}"] = paper[i] if paper else None
                row[f"diff_{key}"] = round(row[key] - paper[i], 9) if paper else None  # no float noise
            rows.append(row)
    return rows


def print_model_table(csv: bool = False) -> None:
    """`stemsweep models`: the table for reading, or (csv=True) as CSV with unrounded numbers."""
    rows = model_table()
    if csv:
        writer = csv_module.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return
    header = ["model", "blocks", "GFLOPs", "Mparams", "Macts", "numel",
              "paper GFLOPs", "Mparams", "Macts", "diff GFLOPs", "Mparams", "Macts", "input"]
    lines = [header]
    for r in rows:
        paper = ".1f" if r["model"].startswith("ViT") else ".3f"  # as printed: Table 1 one decimal
        lines.append([r["model"], str(r["blocks"]), *(f"{r[k]:.4f}" for k in METRICS), f"{r['numel']:,}",
                      *(_format(r[f"paper_{k}"], paper) for k in METRICS),
                      *(_format(r[f"diff_{k}"], "+.4f") for k in METRICS),
                      f"{r['image_size']}²×{r['in_chans']}, {r['num_classes']} classes"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:  # model left-aligned, numbers right-aligned, input last
        numbers = (f"{cell:>{w}}" for cell, w in zip(line[1:-1], widths[1:-1], strict=True))
        print(f"{line[0]:<{widths[0]}}  " + "  ".join(numbers) + f"   {line[-1]}")
    print("\nflops = multiply-adds + bias adds; params include norms, class token and position embedding; "
          "acts = outputs of convs, linears and the two attention matmuls; one image. "
          "Paper values: Table 1 for ViT, regnety_models.csv for RegNetY.")


def _format(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
