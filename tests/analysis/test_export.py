"""`stemsweep export`: a run set's records as data that reads back like the runs themselves."""

from __future__ import annotations

import shutil

import pandas as pd

from stemsweep.analysis import load_runs
from stemsweep.analysis.report import write_report
from stemsweep.cli import main
from stemsweep.sweep.status import status_rows


def test_export_keeps_the_records_only_and_reads_back_like_the_runs(records_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(records_dir, runs)
    some = sorted(p for p in runs.iterdir() if p.is_dir())[0]
    (some / "checkpoint.pt").write_bytes(b"weights")  # what a real run directory holds besides its record
    (some / "wandb").mkdir()
    (some / "wandb" / "run.wandb").write_bytes(b"w")
    (some / "lock").write_text("host 1\n")
    out = tmp_path / "export"
    assert main(["export", str(runs), "--out", str(out)]) == 0
    assert "runs exported to" in capsys.readouterr().out

    exported = {p.name for p in out.iterdir() if p.is_dir()}
    source = load_runs(runs)
    assert exported == set(source["signature"])
    assert {f.name for f in (out / some.name).iterdir()} <= {"config.yaml", "summary.json", "metrics.jsonl",
                                                             "error.log"}
    again = load_runs(out)
    columns = [c for c in source.columns if c != "run_dir"]
    pd.testing.assert_frame_equal(again[columns], source[columns])
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == len(source) and set(table["run_dir"]) == exported  # relative: the signature
    # Report and status read it like any runs root.
    from_runs = write_report([str(runs)], str(tmp_path / "from_runs"))
    from_export = write_report([str(out)], str(tmp_path / "from_export"))
    for name in ("training_length_gap", "optimizer_gap", "edf_summary", "edf_ks", "peak"):
        assert (from_runs.parent / "tables" / f"{name}.csv").read_text() == \
               (from_export.parent / "tables" / f"{name}.csv").read_text(), name
    assert {row["state"] for row in status_rows(str(out))} <= {"done", "diverged", "failed", "interrupted"}


def test_export_of_something_that_is_not_a_runs_directory_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no_such_folder"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stemsweep export: error: ") and "no_such_folder" in err and "\n" == err[-1]
    assert not (tmp_path / "x").exists()
