"""bench/gpu_check.sh, the prepared device check, end to end on the CPU (--dry-run), so it cannot rot
between the GPU machines it is meant for."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]


def test_the_device_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                            env={**os.environ, "PY": str(ROOT / ".venv" / "bin" / "python")},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    log = (out / "gpu_check.log").read_text()
    assert f"gpu_check: results in {out}" in log
    done = rf"gpu_check: done \(\d\d:\d\d:\d\d\); results in {re.escape(str(out))}$"
    assert re.search(done, log.rstrip()), log[-500:]
    for name, expected in (("step", ["ViT_P-XS (ours)", "ViT_P-XS (timm)", "ViT_C-XS (ours)", "ViT_C-XS (timm)",
                                      "RegNetY-XS (ours)"]),
                           ("step_compiled", ["ViT_C-XS (ours)", "ViT_C-XS (timm)"])):
        step = json.loads((out / f"{name}.json").read_text())
        assert [row["model"] for row in step["rows"]] == expected
        # toy sizes against a small matmul: the numbers mean nothing here, only that they are there
        assert all(row["images_per_s"] > 0 and math.isfinite(row["mfu"]) and row["mfu"] > 0 for row in step["rows"])
    assert json.loads((out / "step_compiled.json").read_text())["compile"] == "eager"
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert [row["what"] for row in pipeline["rows"]] == ["cpu alone", "gpu alone", "train: resident tensors",
                                                         "train: cpu pipeline", "train: gpu pipeline"]
    assert all(row["images_per_s"] > 0 for row in pipeline["rows"])
    assert "| train: gpu pipeline |" in log and "| ViT_C-XS (ours) |" in log
    [run] = [p for p in (out / "runs").iterdir() if not p.name.startswith(".")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs_done"] == 2 and summary["dataset"] == "imagenet"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert f"record {out}/runs/{run.name}/:" in log
