"""`stemsweep report`: every figure, every table and report.md, also when experiments lack data."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from stemsweep.analysis import CorruptRecordWarning
from stemsweep.cli import main

TABLES = ["runs", "training_length_gap", "optimizer_gap", "lrwd_edf", "edf_band", "edf_summary", "edf_ks",
          "peak"]
FIGURES = {"fashion_mnist": ["training_length", "optimizer_gap", "lrwd_edf", "lrwd_scatter", "peak"],
           "imagenet": ["training_length", "peak"]}


def test_report_writes_every_figure_table_and_report_md(records_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(records_dir), "--out", str(out)]) == 0
    for table in TABLES:
        assert (out / "tables" / f"{table}.csv").stat().st_size > 0, table
    written = {p.name for p in (out / "figures").iterdir()}
    expected = {f"{figure}_{dataset}.{ext}" for dataset, figures in FIGURES.items() for figure in figures
                for ext in ("png", "pdf")}
    assert written == expected
    report = (out / "report.md").read_text()
    for link in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (out / link).exists(), link
    # The ImageNet runs have neither SGD nor lr/wd sweeps: those experiments are skipped, and say why.
    imagenet = report.split("## Data set: imagenet")[1]
    assert "_Skipped: no model and schedule was run with both SGD and AdamW._" in imagenet
    assert "_Skipped: no finished or diverged runs from an lr/wd sweep" in imagenet
    # The numbers a reader needs: the diverged SGD run, the paper's errors, the failed run.
    assert "| ViT_P-XS | 2 | diverged | 26.04 | diverged | 0 + 1 diverged / 1 |" in report
    assert "| ViT_C-4GF | 18.90 | 400 | AdamW | 0.001 | 0.24 | 18.60 | +0.30 |" in report
    assert "RuntimeError: out of memory" in report
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 78
    # What each sweep cost, from the records' wall times (20 s an epoch in these records).
    sgd = runs[runs["sweep"] == "mini_lrwd_sgd"]
    assert len(sgd) == 24 and sgd["wall_time_s"].sum() == 20 * 2 * 23  # the draw that diverged in epoch 1 adds 0
    assert f"| mini_lrwd_sgd | 24 | {sgd['wall_time_s'].sum() / 3600:.2f} | 500 |" in report


def test_report_on_no_runs_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "report"
    runs.mkdir()
    assert main(["report", str(runs), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"stemsweep report: error: no runs found in {runs}: no report written\n"
    (runs / "0123456789").mkdir()  # a run directory without a summary: skipped, and counted
    with pytest.warns(CorruptRecordWarning):
        assert main(["report", str(runs), "--out", str(out)]) == 2
    assert capsys.readouterr().err.endswith(
        f"stemsweep report: error: no runs found in {runs} (1 record could not be read): no report written\n")
    assert not out.exists()


def test_a_report_regenerated_later_is_the_same_bytes(tmp_path, monkeypatch):
    from analysis_records import write_record

    runs = tmp_path / "runs"
    for lr in (1e-3, 3e-3, 1e-2):
        write_record(runs, model="ViT_C-XS", size="vit_xs", family="vit", stem="conv", optimizer="adamw", lr=lr,
                     wd=0.05, epochs=2, sweep="mini_lrwd_adamw", final_ema_error=20.0 + 1000 * lr)
    outputs = []
    for now in ("1700000000", "1800000000"):  # matplotlib dates a PDF by SOURCE_DATE_EPOCH, else by the clock
        monkeypatch.setenv("SOURCE_DATE_EPOCH", now)
        outputs.append(tmp_path / now)
        assert main(["report", str(runs), "--out", str(outputs[-1])]) == 0
    files = sorted(p.relative_to(outputs[0]) for p in outputs[0].rglob("*") if p.is_file())
    assert sum(f.suffix == ".pdf" for f in files) == 2  # the lr/wd EDF and scatter
    assert files == sorted(p.relative_to(outputs[1]) for p in outputs[1].rglob("*") if p.is_file())
    for file in files:
        assert (outputs[0] / file).read_bytes() == (outputs[1] / file).read_bytes(), file


def test_report_of_a_missing_directory_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "neither a runs directory nor a W&B project" in capsys.readouterr().err


@pytest.mark.processes
def test_report_on_records_of_real_trainings(real_runs_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(real_runs_dir), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 14 and set(runs["status"]) == {"done"}
    assert set(runs["model"]) == {"ViT_P-XS", "ViT_C-XS"}
    assert (out / "figures" / "optimizer_gap_fashion_mnist.png").exists()
    assert (out / "figures" / "lrwd_edf_fashion_mnist.png").exists()
    gaps = pd.read_csv(out / "tables" / "optimizer_gap.csv")
    assert len(gaps) == 4 and gaps["gap"].notna().all()  # 2 models × 2 schedules, SGD − AdamW


def test_report_says_when_runs_without_an_ema_stand_in_with_their_own_error(tmp_path):
    import json

    from analysis_records import write_record

    runs = tmp_path / "runs"
    common = {"model": "ViT_C-XS", "size": "vit_xs", "family": "vit", "stem": "conv", "optimizer": "adamw",
              "lr": 1e-3, "wd": 0.05, "epochs": 2}
    write_record(runs, **common, final_ema_error=20.0)
    no_ema = write_record(runs, **common, seed=1, final_ema_error=22.0)
    summary = json.loads((no_ema / "summary.json").read_text())
    summary.update(best_ema_error=None, final_ema_error=None)  # what a run with ema.enabled=false records
    (no_ema / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert ("1 of the 2 runs have no EMA error (trained without an EMA, or with one still mostly the untrained "
            "initial model): their own `best_error` stands in for `best_ema_error`.") in report
    assert main(["report", str(runs), "--out", str(out), "--error", "best_error"]) == 0
    report = (out / "report.md").read_text()
    assert "The error is `best_error`" in report and "without an EMA" not in report
