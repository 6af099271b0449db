"""An adaptive study with the local launcher (tiny.py's): its waves, its decisions, run again, its report. The
real-SLURM test (tests/slurm/test_adaptive_slurm.py) runs the same study and must reach the same decisions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny import study, write_adaptive_study

pytestmark = pytest.mark.processes
EXPECTED = {"classes": ("a_better", 3), "same": ("open", 3)}  # as on SLURM (test_adaptive_slurm.py)


def decisions(runs) -> dict[str, tuple]:
    waves = json.loads((runs / ".studies" / "tiny_adaptive.json").read_text())["stages"]["seeds"]["waves"]
    return {name: (d["outcome"], d["n"], d["evidence"], d["wave"]) for name, d in waves[-1]["decisions"].items()}


def test_an_adaptive_study_here_decides_after_its_first_wave_and_keeps_its_decisions(tmp_path):
    runs = tmp_path / "runs"
    path = write_adaptive_study(tmp_path, runs, ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"])
    first = study("run", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "wave 0: 12 runs of 4 cells" in first.stdout and "wave 1" not in first.stdout.replace("wave 1 of", "")
    assert "classes: A better after 3" in first.stdout and "same: open at 3" in first.stdout, first.stdout
    got = decisions(runs)
    assert {name: d[:2] for name, d in got.items()} == EXPECTED
    assert len(list(runs.glob("*/summary.json"))) == 12  # the second wave never ran

    status = study("status", str(path)).stdout
    assert "cut" in status.splitlines()[0] and status.splitlines()[1].split()[2:4] == ["24", "12"], status
    assert "A better after 3" in status and "open at 3" in status

    again = study("run", str(path))  # from its recorded decisions: nothing to train, the same decisions
    assert again.returncode == 0 and "every cell of stage seeds has stopped" in again.stdout, again.stdout
    assert decisions(runs) == got

    report = subprocess.run([sys.executable, "-m", "stemsweep.cli", "report", str(runs), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Adaptive comparisons" in text and "| classes | data.num_classes=2 ema.period=32 |" in text, text
    assert "| A better after 3 | 3 of 6 |" in text and "| open at 3 | 3 of 3 |" in text
    assert (tmp_path / "report" / "figures" / "adaptive_evidence.png").is_file()
