"""Fixtures of the analysis tests: a runs directory of records (analysis_records.write_study)."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_records import write_study


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory) -> Path:
    """A runs directory of the small study of analysis_records (read it; copy it to change it)."""
    return write_study(tmp_path_factory.mktemp("runs"))
