"""An adaptive study on the real local SLURM (tiny.py's): its second wave waits on the decision job of its
first; that decides one comparison settled and the other open at its maximum, and cancels the second
wave's tasks before they start (no Start time in sacct); `study status` shows the comparisons while it
runs; the decisions are those the local launcher reaches (tests/study/test_adaptive_local.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
from tiny import study, write_adaptive_study  # noqa: E402

pytestmark = pytest.mark.slurm


EXPECTED = {"classes": ("a_better", 3), "same": ("open", 3)}  # as with the local launcher (test_adaptive_local.py)


def queued(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    return [name for name in out.split() if name.startswith(prefix)]


def test_an_adaptive_study_on_slurm_stops_its_settled_cells_before_their_next_wave_starts(tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    path = write_adaptive_study(tmp_path, runs, [
        "hydra/launcher=slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1"])
    try:
        submitted = study("run", str(path), timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        running = study("status", str(path))  # while it runs: each comparison, none decided yet
        assert running.returncode == 0 and "classes" in running.stdout and "no wave decided yet" in running.stdout
        deadline = time.monotonic() + 300
        while queued("tiny_adaptive.") and time.monotonic() < deadline:
            time.sleep(2)
        assert not queued("tiny_adaptive."), "the adaptive study did not end in 300 s"
    finally:
        for name in ("tiny_adaptive.seeds", "tiny_adaptive.seeds.decide"):  # one name at a time
            subprocess.run(["scancel", f"--name={name}"], capture_output=True)

    record = json.loads((runs / ".studies" / "tiny_adaptive.json").read_text())["stages"]["seeds"]
    [wave] = record["waves"]  # one wave decided: every cell stopped after it
    assert {name: (d["outcome"], d["n"]) for name, d in wave["decisions"].items()} == EXPECTED
    assert wave["active"] == [] and len(wave["stopped"]) == 4
    # the second wave's tasks were cancelled while pending: none has a Start time in sacct
    later = {**record["wave_jobs"]["1"], "decision": record["decide_jobs"]["1"]}  # and its decision job
    array = {job.split("_")[0] for job in later.values()}
    accounted = subprocess.run(["sacct", "-n", "-X", "-o", "JobID,Start", "-j", ",".join(array)],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    started = {row.split()[0] for row in accounted if row.strip() and row.split()[1] not in ("None", "Unknown")}
    assert len(later) == 13 and not started & set(later.values()), (started, later)
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert len(summaries) == 12 and all(s["status"] == "done" for s in summaries)
    final = study("status", str(path)).stdout
    assert "A better after 3" in final and "open at 3" in final, final
