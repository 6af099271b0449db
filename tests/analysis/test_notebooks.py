"""The notebooks in analysis/ run top to bottom on a runs directory (STEMSWEEP_RUNS)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.processes

NOTEBOOKS = Path(__file__).resolve().parents[2] / "analysis"


@pytest.mark.parametrize("runs", ["records_dir", "real_runs_dir"])
@pytest.mark.parametrize("name", ["lrwd_edf.ipynb", "all_figures.ipynb"])
def test_notebook_runs(name, runs, request, tmp_path, monkeypatch):
    """On hand-made records of a whole study, and on records of real short trainings."""
    records_dir = request.getfixturevalue(runs)
    expected = len([p for p in records_dir.iterdir() if p.is_dir() and not p.name.startswith(".")])
    monkeypatch.setenv("STEMSWEEP_RUNS", str(records_dir))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # figures were drawn
    assert f"{expected} runs in {records_dir}" in "".join(o.get("text", "") for o in outputs)
