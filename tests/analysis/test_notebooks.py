"""The notebooks in analysis/ run top to bottom on a runs directory (STEMSWEEP_RUNS)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.processes

NOTEBOOKS = Path(__file__).resolve().parents[2] / "analysis"
RUNS = ["records_dir", "real_runs_dir"]  # hand-made records of a whole study; records of real short trainings
CASES = [(name, runs) for name in ("lrwd_edf.ipynb", "all_figures.ipynb") for runs in RUNS]


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory) -> dict:
    """Each notebook executed on each runs directory, every kernel at once (a kernel is a process of its
    own, mostly on one core): {(name, runs): (the executed notebook or what it raised, the runs directory)}."""
    dirs = {runs: request.getfixturevalue(runs) for runs in RUNS}
    clients = {(name, runs): NotebookClient(nbformat.read(NOTEBOOKS / name, as_version=4), timeout=300,
                                            kernel_name="python3",
                                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
               for name, runs in CASES}

    async def execute_all() -> list:
        return await asyncio.gather(*(
            client.async_execute(env={**os.environ, "STEMSWEEP_RUNS": str(dirs[runs]), "MPLBACKEND": "Agg"})
            for (_, runs), client in clients.items()), return_exceptions=True)
    outcomes = asyncio.run(execute_all())
    return {key: (outcome, dirs[key[1]]) for key, outcome in zip(clients, outcomes)}


@pytest.mark.parametrize("name,runs", CASES)
def test_notebook_runs(name, runs, executed):
    notebook, records_dir = executed[name, runs]
    if isinstance(notebook, BaseException):
        raise notebook
    expected = len([p for p in records_dir.iterdir() if p.is_dir() and not p.name.startswith(".")])
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # figures were drawn
    assert f"{expected} runs in {records_dir}" in "".join(o.get("text", "") for o in outputs)
