"""The command line's error contract: the user's input is one line and exit status 2; anything else is a
bug and keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pandas
import pytest

from stemsweep.cli import main
from stemsweep.config import CONF_DIR

RECORDS = str(Path(CONF_DIR).parent / "results" / "mini-study")


def test_a_bad_value_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stemsweep report: error: ") and "neither a runs directory" in err and err.count("\n") == 1


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug inside pandas")

    monkeypatch.setattr(pandas.DataFrame, "sort_values", broken)
    with pytest.raises(ValueError, match="a bug inside pandas"):  # not swallowed into one line
        main(["report", RECORDS, "--out", str(tmp_path / "r")])
