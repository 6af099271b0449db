"""An adaptive study on the real local SLURM: its waves chain through small decision jobs, a comparison that
settles after its first wave stops its cells (their later tasks are cancelled before they start: no Start
time in sacct), one stays open to its maximum, `study status` shows the comparisons while it runs, and the
same study with the local launcher (run beside it, sharing the wait) reaches the same decisions."""

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


def queued(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    return [name for name in out.split() if name.startswith(prefix)]


def decisions(runs: Path) -> dict[str, tuple]:
    waves = json.loads((runs / ".studies" / "tiny_adaptive.json").read_text())["stages"]["seeds"]["waves"]
    return {name: (d["outcome"], d["n"], round(d["evidence"], 6), d["wave"])
            for name, d in waves[-1]["decisions"].items()}


def test_an_adaptive_study_on_slurm_stops_its_settled_cells_and_decides_as_it_does_locally(tmp_path, slurm_cluster):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    slurm_dir.mkdir(), local_dir.mkdir()
    on_slurm = write_adaptive_study(slurm_dir, slurm_dir / "runs", [
        "hydra/launcher=slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1"])
    locally = write_adaptive_study(local_dir, local_dir / "runs", ["hydra/launcher=local_parallel",
                                                                   "hydra.launcher.n_jobs=2"])
    try:
        submitted = study("run", str(on_slurm), timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "seeds" in submitted.stdout and "waiting" not in submitted.stderr
        local = subprocess.Popen([sys.executable, "-m", "stemsweep.cli", "study", "run", str(locally)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        deadline = time.monotonic() + 420
        while queued("tiny_adaptive.") and time.monotonic() < deadline:
            status = study("status", str(on_slurm))
            assert status.returncode == 0, status.stderr
            seen.append(status.stdout)
            time.sleep(4)
        assert not queued("tiny_adaptive."), "the adaptive study did not end in 420 s"
        local_out = local.communicate(timeout=420)[0]
        assert local.returncode == 0, local_out[-3000:]
    finally:
        subprocess.run(["scancel", "--name=tiny_adaptive.seeds"], capture_output=True)
        subprocess.run(["scancel", "--name=tiny_adaptive.seeds.decide"], capture_output=True)

    # status while it ran: each comparison, first undecided, then with its decision
    assert any("classes" in s and "no wave decided yet" in s for s in seen), seen[:2]
    assert any("classes" in s and "A better after 3" in s for s in seen), seen[-1]
    final = study("status", str(on_slurm)).stdout
    assert "A better after 3" in final and "open at 6" in final, final

    got = decisions(slurm_dir / "runs")
    assert got["classes"][:2] == ("a_better", 3) and got["same"][:2] == ("open", 6), got
    assert got == decisions(local_dir / "runs")  # the same decisions, from the same records

    # the settled comparison's cells never started their second wave: cancelled while pending
    record = json.loads((slurm_dir / "runs" / ".studies" / "tiny_adaptive.json").read_text())["stages"]["seeds"]
    stopped = set(record["waves"][0]["stopped"])
    assert len(stopped) == 2  # data.num_classes=100 (no open comparison needs it any more), and the cell in none
    later = record["wave_jobs"]["1"]
    trained = set(record["waves"][1]["runs"])
    cancelled = [job for signature, job in later.items() if signature not in trained]
    assert len(cancelled) == 6 and len(trained) == 6
    array = {job.split("_")[0] for job in later.values()}
    accounted = subprocess.run(["sacct", "-n", "-X", "-o", "JobID,Start", "-j", ",".join(array)],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    started = {row.split()[0] for row in accounted if row.strip() and row.split()[1] not in ("None", "Unknown")}
    assert not started & set(cancelled), (started, cancelled)  # no Start time (a task cancelled pending has no row)
    assert {later[signature] for signature in trained} <= started
    assert not queued("tiny_adaptive.")
    summaries = [json.loads(p.read_text()) for p in (slurm_dir / "runs").glob("*/summary.json")]
    assert len(summaries) == 18 and all(s["status"] == "done" for s in summaries)

    # run again, it goes on from its recorded decisions: nothing left to train, the same decisions
    again = study("run", str(locally))
    assert again.returncode == 0 and "every cell of stage seeds has stopped" in again.stdout, again.stdout
    assert decisions(local_dir / "runs") == got
    # the report: each comparison's decision, and its evidence wave by wave
    report = subprocess.run([sys.executable, "-m", "stemsweep.cli", "report", str(slurm_dir / "runs"), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Adaptive comparisons" in text and "| classes | data.num_classes=2 ema.period=32 |" in text, text
    assert "| A better after 3 | 3 of 6 |" in text and "| open at 6 | 6 of 6 |" in text
    assert (tmp_path / "report" / "figures" / "adaptive_evidence.png").is_file()
