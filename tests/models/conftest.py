"""The paper's numbers (docs/paper/*.csv) for the model tests."""

from __future__ import annotations

import csv

import pytest

from stemsweep import PAPER_DIR


@pytest.fixture(scope="session")
def paper_csv():
    """paper_csv("vit_models.csv") → {first column: row}."""

    def read(name: str) -> dict[str, dict[str, str]]:
        with (PAPER_DIR / name).open() as f:
            return {row["model"]: row for row in csv.DictReader(f)}

    return read
