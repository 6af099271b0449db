"""Fixtures of the analysis tests: a runs directory of records (analysis_records.write_study)."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_records import write_study


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory) -> Path:
    """A runs directory of the small study of analysis_records (read it; copy it to change it)."""
    return write_study(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def real_runs_dir(tmp_path_factory) -> Path:
    """Records of real short trainings: two `-m` sweeps (basic launcher): ViT_P-XS and ViT_C-XS with AdamW
    and SGD at 1 and 2 epochs, and three lr/wd draws per stem (a mini lr/wd sweep)."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("real_runs")
    tiny = ["model=vit_xs", "data.train_subset=256", "data.test_subset=256", "batch_size=64", "logger=none",
            "threads=1", "schedule.warmup_epochs=0", f"runs_root={root}"]
    sweeps = [["stem=patch,conv", "optimizer=adamw,sgd", "epochs=1,2", "sweep=mini_optimizer"],
              ["stem=patch,conv", "lrwd.draw=0,1,2", "epochs=1", "sweep=mini_lrwd_adamw"]]
    # The two sweeps train single-threaded, side by side on two cores; their runs differ, so they share
    # no run directory, and each has Hydra's sweep folder of its own (both may start in the same second).
    logs = [root.parent / f"{root.name}-sweep{i}.log" for i in range(len(sweeps))]
    launched = []
    for i, (axes, log) in enumerate(zip(sweeps, logs)):
        with log.open("w") as out:
            launched.append(subprocess.Popen([sys.executable, "-m", "stemsweep.run", "-m", *tiny, *axes,
                                              f"hydra.sweep.dir={root}/.hydra/sweep{i}"],
                                             env={**os.environ, "WANDB_MODE": "disabled"}, stdout=out,
                                             stderr=subprocess.STDOUT))
    for sweep, log in zip(launched, logs):
        assert sweep.wait(timeout=900) == 0, log.read_text()[-3000:]
    return root
