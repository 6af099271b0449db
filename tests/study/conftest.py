"""The tiny study (tiny.py) run once with the local launcher, for the local and the SLURM tests."""

from __future__ import annotations

import pytest
from tiny import remove_tuning, study, write_tiny_study


@pytest.fixture(scope="session")
def local_study(tmp_path_factory):
    """(folder, runs root, study file, tuning name, the first `study run`'s result)."""
    folder = tmp_path_factory.mktemp("local-study")
    runs = folder / "runs"
    path, tuning = write_tiny_study(folder, runs)
    first = study("run", str(path))
    yield folder, runs, path, tuning, first
    remove_tuning(tuning)
