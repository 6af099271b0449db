"""Tuning, as the paper did it: each model's best (lr, wd) per optimizer, read off its lr/wd sweep.

`stemsweep tune` loads the runs of one or more lr/wd sweeps, takes for each model size, stem and
optimizer the draw with the lowest error (`stability.edf_summary`: diverged draws never win) and
writes them as a `tuning` option: ``--out NAME`` writes ``conf/local/tuning/NAME.yaml``, which git does not
track and which `tuning=NAME` finds before conf/tuning/ (a path writes there instead: the committed
mini-study tunings are regenerated from the committed records with ``--out conf/tuning/mini.yaml``).
Sweeps that select it (``tuning=NAME``) run at those values; a run records the resolved lr/wd, so
re-tuning to other values makes new runs rather than reusing old ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stemsweep.analysis.load import load_runs
from stemsweep.analysis.stability import edf_summary, lrwd_study_runs
from stemsweep.config import LOCAL_CONF_DIR
from stemsweep.errors import ConfigError
from stemsweep.models.stems import config_stem
from stemsweep.record.files import write_text


def tuned_lrwd(runs: pd.DataFrame, sweeps: Sequence[str]) -> pd.DataFrame:
    """One row per (size, stem, optimizer) of the runs of `sweeps`: the best draw's lr, wd and error,
    and how many draws it was chosen from. Raises ValueError when a sweep has no runs, or a model
    size, stem and optimizer has no finished draw."""
    known = set(runs["sweep"].dropna()) if "sweep" in runs.columns else set()
    missing = [s for s in sweeps if s not in known]
    if missing:
        raise ConfigError(f"no runs of sweep {', '.join(missing)} found: run it first "
                         f"(runs found for: {', '.join(sorted(known)) or 'none'})")
    chosen = lrwd_study_runs(runs[runs["sweep"].isin(sweeps)])
    chosen = chosen.assign(stem=chosen["stem"].map(config_stem))
    keys = ["size", "stem", "optimizer"]
    # edf_summary groups by model (the paper's name) and stem; size comes along with the model.
    sizes = chosen.drop_duplicates(["model", "stem"])[["model", "stem", "size"]]
    best = edf_summary(chosen).merge(sizes, on=["model", "stem"], how="left")
    unfinished = best[best["best_error"].isna()]
    if len(unfinished):
        cells = ", ".join(f"{r.size}/{r.stem}/{r.optimizer}" for r in unfinished.itertuples())
        raise ConfigError(f"no finished lr/wd draw for {cells}: nothing to tune from")
    best = best.rename(columns={"best_lr": "lr", "best_wd": "wd", "best_error": "error", "runs": "draws"})
    return best[keys + ["lr", "wd", "error", "draws", "finished", "diverged"]].sort_values(keys).reset_index(drop=True)


def tuning_yaml(tuned: pd.DataFrame, sweeps: Sequence[str]) -> str:
    """`tuned` as a conf/tuning/ option: size → stem → optimizer → {lr, wd}, each commented with the
    error that chose it."""
    lines = [
        f"# Tuned (lr, wd) per model size, stem and optimizer: the best draw of the lr/wd sweep(s) "
        f"{', '.join(sweeps)}.",
        "# Written by `stemsweep tune`; lr per 2048 images. Select with `tuning=<this file's name>`.",
    ]
    for size, by_size in tuned.groupby("size", sort=True):
        lines.append(f"{size}:")
        for stem, by_stem in by_size.groupby("stem", sort=True):
            lines.append(f"  {stem}:")
            for row in by_stem.itertuples():
                lines.append(f"    {row.optimizer}: {{lr: {_number(row.lr)}, wd: {_number(row.wd)}}}"
                             f"  # error {row.error:.2f}%, best of {row.draws} draws ({row.diverged} diverged)")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A float YAML reads back as a float (PyYAML wants a dot in the mantissa of 1e-3)."""
    if not math.isfinite(value):
        raise ConfigError(f"tuned value {value} is not a finite number")
    text = f"{value:.4g}"
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def tuning_file(out: str | Path) -> Path:
    """Where `--out` writes: a tuning's name (no folder, no .yaml) is conf/local/tuning/NAME.yaml, the
    machine's own; anything else is the file it names."""
    text = str(out)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        return LOCAL_CONF_DIR / "tuning" / f"{text}.yaml"
    return Path(out)


def write_tuning(sources: Sequence[str], sweeps: Sequence[str], out: str | Path) -> pd.DataFrame:
    """Tune from the runs of `sweeps` found in `sources` and write the option to `out` (tuning_file)."""
    tuned = tuned_lrwd(load_runs(sources), sweeps)
    write_text(tuning_file(out), tuning_yaml(tuned, sweeps))
    return tuned
