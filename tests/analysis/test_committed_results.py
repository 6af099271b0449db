"""The committed study reports are regenerable from the committed records (results/) alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemsweep.analysis.report import write_report

ROOT = Path(__file__).resolve().parents[2]
STUDIES = {"results/mini-study": "docs/mini-study", "results/mini-study-4ep": "docs/mini-study-4ep",
           "results/mini-adaptive": "docs/mini-adaptive"}


@pytest.mark.parametrize("records", list(STUDIES))
def test_the_committed_report_is_regenerated_from_the_committed_records(records, tmp_path, monkeypatch):
    committed = ROOT / STUDIES[records]
    monkeypatch.chdir(ROOT)  # as `stemsweep report results/... --out docs/...` is run, from the repository
    report = write_report([records], str(tmp_path))
    for table in sorted((committed / "tables").glob("*.csv")):
        assert (tmp_path / "tables" / table.name).read_text() == table.read_text(), table.name
    assert {p.name for p in (tmp_path / "tables").iterdir()} == {p.name for p in (committed / "tables").iterdir()}
    assert report.read_text() == (committed / "report.md").read_text()
    figures = {p.name for p in (committed / "figures").iterdir()}
    assert figures and figures == {p.name for p in (tmp_path / "figures").iterdir()}
    for name in sorted(figures):  # PNG and PDF alike, byte for byte
        assert (tmp_path / "figures" / name).read_bytes() == (committed / "figures" / name).read_bytes(), name
