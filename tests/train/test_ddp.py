"""Data-parallel training with two gloo processes matches one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["model=vit_xs", "stem=patch", "data.train_subset=512", "data.test_subset=256", "batch_size=64",
        "epochs=2", "logger=none", "threads=1"]


def run(cmd, runs_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*cmd, f"runs_root={runs_root}", *ARGS], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = [p for p in Path(runs_root).iterdir() if not p.name.startswith(".")]
    return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path):
    one_dir, one = run([sys.executable, "-m", "stemsweep.run"], tmp_path / "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29533",
                "-m", "stemsweep.run"]
    two_dir, two = run(torchrun, tmp_path / "two")
    assert one_dir.name == two_dir.name  # the process count is not part of a run's identity
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"])
        # errors are counts over 512 / 256 images: float-order noise may flip a borderline image or two
        assert abs(b["train_error"] - a["train_error"]) <= 0.5
        assert abs(b["test_error"] - a["test_error"]) <= 1.0
