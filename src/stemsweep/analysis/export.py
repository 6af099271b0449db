"""`stemsweep export RUNS --out DIR`: a run set's records as data, small enough to commit.

Each run keeps its record files (config.yaml, summary.json, metrics.jsonl, and error.log for a failed
run) under DIR/<signature>/, without checkpoints, W&B files, locks or progress; DIR/runs.csv is the
one-row-per-run table of `load_runs`. DIR is then a runs root like any other: `load_runs`, `stemsweep
report` and `stemsweep status` read it, so a study's figures and tables can be regenerated from it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from stemsweep.analysis.load import load_runs
from stemsweep.errors import ConfigError

RECORD_FILES = ("config.yaml", "summary.json", "metrics.jsonl", "error.log")
TABLE = "runs.csv"


def export_runs(sources: Iterable[str | os.PathLike], out: str | os.PathLike) -> int:
    """Copy the records of every readable run of `sources` (runs directories) into `out`; returns the
    number of runs exported. A record that cannot be read is reported (load_runs) and left out."""
    out = Path(out)
    sources = list(sources)
    table = load_runs(sources)
    if len(table) and table["run_dir"].str.startswith("wandb:").any():
        raise ConfigError("export copies runs directories; a W&B project is not one (give a runs directory)")
    out.mkdir(parents=True, exist_ok=True)
    for source in table["run_dir"]:
        source = Path(source)
        target = out / source.name
        if target.resolve() == source.resolve():
            continue  # exporting a folder into itself: its records are already there
        target.mkdir(exist_ok=True)
        for name in RECORD_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, target / name)
    for source in sources:  # an adaptive study's record of its waves, which the report reads
        for study in sorted(Path(source).glob(".studies/*.json")):
            (out / ".studies").mkdir(exist_ok=True)
            shutil.copy2(study, out / ".studies" / study.name)
    exported = load_runs(out)
    # Machine-independent: a run's directory is named relative to the export folder.
    exported["run_dir"] = [os.path.relpath(path, out) for path in exported["run_dir"]]
    exported.to_csv(out / TABLE, index=False)
    return len(table)
