"""Data-parallel training with two gloo processes matches one process with the same global batch, also
when the two are stopped by a signal mid-epoch and resumed (torchrun forwards SIGTERM to both)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

ARGS = ["model=vit_xs", "stem=patch", "data.train_subset=512", "data.test_subset=256", "batch_size=64",
        "epochs=2", "logger=none", "threads=1"]  # 8 steps an epoch
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29533",
            "-m", "stemsweep.run"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(cmd, runs_root):
    result = subprocess.run([*cmd, f"runs_root={runs_root}", *ARGS], env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return records(runs_root)


def the_run_dir(runs_root):
    [run_dir] = [p for p in Path(runs_root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def records(runs_root):
    run_dir = the_run_dir(runs_root)
    return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process_also_stopped_and_resumed(tmp_path):
    one_dir, one = run([sys.executable, "-m", "stemsweep.run"], tmp_path / "one")

    log = tmp_path / "two.log"
    with log.open("w") as out:
        two = subprocess.Popen([*TORCHRUN, f"runs_root={tmp_path / 'two'}", *ARGS], env=ENV, stdout=out,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "epoch 1/2 [3/8]" not in log.read_text():
        assert two.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    two.send_signal(signal.SIGTERM)
    two.wait(timeout=120)
    summary = json.loads((the_run_dir(tmp_path / "two") / "summary.json").read_text())
    [stop] = summary["interruptions"]
    assert summary["status"] == "resumable" and 3 <= stop["step"] < 8, summary  # both agreed on one step
    assert log.read_text().count(f"stopped after step {stop['step']} of epoch 1 (SIGTERM)") == 2

    two_dir, two_metrics = run(TORCHRUN, tmp_path / "two")
    assert one_dir.name == two_dir.name  # the process count is not part of a run's identity
    assert json.loads((two_dir / "summary.json").read_text())["resumes"][-1]["from_global_step"] == stop["step"]
    for a, b in zip(one, two_metrics, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"])
        # errors are counts over 512 / 256 images: float-order noise may flip a borderline image or two
        assert abs(b["train_error"] - a["train_error"]) <= 0.5
        assert abs(b["test_error"] - a["test_error"]) <= 1.0
