"""The paper's numbers (../shared/paper/*.csv) for the model tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

PAPER_DIR = Path(__file__).parents[2].parent / "shared" / "paper"


@pytest.fixture(scope="session")
def paper_csv():
    """paper_csv("vit_models.csv") → {first column: row}; skips when the shared paper folder is absent."""

    def read(name: str) -> dict[str, dict[str, str]]:
        path = PAPER_DIR / name
        if not path.is_file():
            pytest.skip(f"the paper's numbers are not here: {path} is missing")
        with path.open() as f:
            return {row["model"]: row for row in csv.DictReader(f)}

    return read
