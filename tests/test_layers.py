"""The layers of docs/design.md hold (import-linter, `make lint`), and the check sees what it must: an
import placed inside a function that makes a circle breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts (pyproject.toml) on the packages under `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), str(ROOT / "pyproject.toml"),
                           "--no-cache"], capture_output=True, text=True, env=env, cwd=src)


def test_the_code_keeps_its_layers_and_has_no_circles():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_an_import_inside_a_function_that_makes_a_circle_breaks_the_contracts(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    with open(src / "stemsweep" / "record" / "rundir.py", "a") as f:  # record, far below study, reaching up
        f.write("\n\ndef _deliberate():\n    from stemsweep.study import runner  # noqa: F401\n")
    with open(src / "stemsweep" / "study" / "spec.py", "a") as f:  # two modules of study importing each other
        f.write("\n\ndef _deliberate():\n    from stemsweep.study import runner  # noqa: F401\n")
    result = lint_imports(src)
    assert result.returncode != 0
    assert "stemsweep.record.rundir -> stemsweep.study.runner" in result.stdout, result.stdout[-3000:]
    assert "No cycles are allowed in stemsweep.study" in result.stdout and "- .spec -> .runner" in result.stdout
    # the layers, the circles and (record now reaching training through study) analysis's contract
    assert "0 kept, 3 broken" in result.stdout, result.stdout[-3000:]
