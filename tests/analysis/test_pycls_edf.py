"""Diverged runs counted as the authors' pycls counts them (`diverged="pycls"`), held to a port of
pycls's own sweep analysis on records with early and late divergences.

The port follows facebookresearch/pycls, read at commit 2d71381 (issue 22 cites 5719de6; the sweep
analysis read here is the one the paper's EDFs were drawn with):

- pycls/sweep/analysis.py:18-24, `load_sweep`: keeps only the jobs whose log has EMA test stats
  (`"test_ema_epoch" in data`); `augment_sweep` adds fields for other plots and is left out.
- pycls/sweep/analysis.py:69, `metrics_info["error"]` = ["test_ema_epoch.min_top1_err", "", min],
  read by `get_vals` (analysis.py:126-132): the lowest of the per-epoch running minima of the EMA
  model's top-1 error.
- pycls/sweep/plotting.py:96-110, `plot_edf`: per sweep, the sorted errors against
  cumsum(1/k) (lines 101-103), k the sweep's jobs: F(x) = share of jobs with error ≤ x.

pycls plots raw errors with ≤ where stemsweep's EDF counts Δ = error − best < Δ: the two are
compared on the sets of runs and their errors, and on F at points between errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_records import write_record
from scipy.stats import ks_2samp

from stemsweep.analysis import (
    edf_band,
    edf_figure,
    edf_ks,
    edf_summary,
    load_runs,
    lrwd_edf,
    with_error_before_divergence,
)
from stemsweep.cli import main
from stemsweep.errors import ConfigError

MODELS = {"ViT_P-XS": "patch", "ViT_C-XS": "conv"}
EPOCHS = 4


# --- the port --------------------------------------------------------------------------------------

def pycls_sweep_file(runs: Path, model: str, optimizer: str, path: Path) -> Path:
    """The sweep file pycls's sweep collection would write for one group's jobs: per job, its name
    and the EMA test stats its log holds (`test_ema_epoch`: per epoch top1_err and min_top1_err, the
    running minimum pycls's meter logs); a job that never evaluated has none."""
    jobs = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        if (summary["model"], summary["optimizer"]) != (model, optimizer):
            continue
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        job = {"name": summary["signature"]}
        if epochs:
            errors = [e["ema_test_error"] for e in epochs]
            job["test_ema_epoch"] = {"epoch_ind": [e["epoch"] for e in epochs], "top1_err": errors,
                                     "min_top1_err": np.minimum.accumulate(errors).tolist()}
        jobs.append(job)
    path.write_text(json.dumps(jobs))
    return path


def load_sweep(sweep_file: Path) -> list[dict]:
    """pycls/sweep/analysis.py:18-24: the jobs of the sweep file that have EMA test stats."""
    sweep = json.loads(sweep_file.read_text())
    return [data for data in sweep if "test_ema_epoch" in data]


def error(data: dict) -> float:
    """pycls/sweep/analysis.py:69 through get_vals (:126-132): min over test_ema_epoch.min_top1_err."""
    return min(data["test_ema_epoch"]["min_top1_err"])


def edf_curve(sweep: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """pycls/sweep/plotting.py:101-103: the sorted errors and the EDF plot_edf draws through them."""
    k = len(sweep)
    return np.array(sorted(error(data) for data in sweep)), np.cumsum(np.ones(k) / k)


def pycls_F(curve: tuple[np.ndarray, np.ndarray], x: float) -> float:
    """The plotted EDF read at x: its value at the last error ≤ x (0 below the first)."""
    errs, edf = curve
    under = np.searchsorted(errs, x, side="right")
    return float(edf[under - 1]) if under else 0.0


# --- stemsweep's side ------------------------------------------------------------------------------

def stemsweep_F(edf: pd.DataFrame, x: float) -> float:
    """One group's lrwd_edf read at the raw error x: the share of its runs with error − best < x − best."""
    return float((edf["delta"] < x - edf["best_error"]).sum() / edf["runs"].iloc[0])


def write_group(runs: Path, model: str, optimizer: str, finished: list[float], late: list[tuple[float, int]],
                early: int) -> None:
    """One lr/wd group: finished runs at these errors, runs that diverged at epoch d ≥ 2 after
    reaching `target + 30 (1 − (d − 1)/EPOCHS)²` (analysis_records' curve), and `early` runs that
    diverged in their first epoch (never evaluated)."""
    common = {"model": model, "size": "vit_xs", "family": "vit", "stem": MODELS[model], "optimizer": optimizer,
              "wd": 0.05, "epochs": EPOCHS, "sweep": f"mini_lrwd_{optimizer}"}
    lrs = iter(np.round(np.geomspace(1e-4, 1.0, len(finished) + len(late) + early), 8))
    for value in finished:
        write_record(runs, **common, lr=float(next(lrs)), final_ema_error=value)
    for target, epoch in late:
        write_record(runs, **common, lr=float(next(lrs)), final_ema_error=target, status="diverged",
                     diverged_epoch=epoch)
    for _ in range(early):
        write_record(runs, **common, lr=float(next(lrs)), status="diverged", diverged_epoch=1)


def loaded(runs: Path) -> pd.DataFrame:
    return with_error_before_divergence(load_runs(runs), runs)


# --- the tests -------------------------------------------------------------------------------------

def test_the_issues_example(tmp_path):
    # 14 finished runs (5 below 30), 1 diverged at once, 1 diverged after reaching 30.0 (at epoch 3 of 4).
    runs = tmp_path / "runs"
    write_group(runs, "ViT_P-XS", "sgd", [25.0, 26.0, 27.0, 28.0, 29.0, *range(31, 40)], [(28.125, 4)], 1)
    curve = edf_curve(load_sweep(pycls_sweep_file(runs, "ViT_P-XS", "sgd", tmp_path / "sweep.json")))
    table = loaded(runs)
    pycls, stemsweep = lrwd_edf(table, "pycls"), lrwd_edf(table)

    assert len(curve[0]) == 15 and curve[1][-1] == pytest.approx(1.0) and 30.0 in curve[0]
    assert sorted(pycls["error"]) == list(curve[0]) and pycls["runs"].iloc[0] == 15
    assert pycls_F(curve, 30.5) == pytest.approx(0.40)
    assert stemsweep_F(pycls, 30.5) == pytest.approx(0.40)
    assert stemsweep_F(stemsweep, 30.5) == pytest.approx(0.3125) and stemsweep["runs"].iloc[0] == 16
    # The summary, the band and the KS tests count the same runs.
    summary = edf_summary(table, within=(30.5 - 25.0,), diverged="pycls").iloc[0]
    assert (summary["runs"], summary["finished"], summary["diverged"]) == (15, 14, 1)
    assert summary["within_5.5"] == pytest.approx(0.40)
    assert edf_summary(table, within=(5.5,)).iloc[0]["within_5.5"] == pytest.approx(0.3125)
    band = edf_band(table, samples=50, diverged="pycls")
    assert band["edf"].iloc[-1] == pytest.approx(1.0) and len(band) == 15


def test_early_and_late_divergences_in_several_groups_against_the_port(tmp_path):
    rng = np.random.default_rng(0)
    runs = tmp_path / "runs"
    groups = [(model, optimizer) for model in MODELS for optimizer in ("adamw", "sgd")]
    for model, optimizer in groups:
        finished = np.round(rng.uniform(15, 60, 10), 2).tolist()
        late = [(round(float(rng.uniform(15, 60)), 2), int(epoch)) for epoch in rng.integers(2, EPOCHS + 1, 3)]
        write_group(runs, model, optimizer, finished, late, early=int(rng.integers(1, 3)))
    table = loaded(runs)
    edf, ks = lrwd_edf(table, "pycls"), edf_ks(table, "pycls")
    band = edf_band(table, samples=50, diverged="pycls")
    curves = {}
    for model, optimizer in groups:
        sweep = load_sweep(pycls_sweep_file(runs, model, optimizer, tmp_path / f"{model}_{optimizer}.json"))
        curves[model, optimizer] = curve = edf_curve(sweep)
        ours = edf[(edf["model"] == model) & (edf["optimizer"] == optimizer)]
        # The same runs, at the same errors.
        assert sorted(zip(ours["signature"], ours["error"])) == sorted((d["name"], error(d)) for d in sweep)
        # The same F between the errors, below the first and past the last.
        errs = np.unique(curve[0])
        for x in [errs[0] - 1, *(errs[:-1] + errs[1:]) / 2, errs[-1] + 1]:
            assert stemsweep_F(ours, x) == pytest.approx(pycls_F(curve, x)), (model, optimizer, x)
        # The band steps through the same EDF.
        steps = band[(band["model"] == model) & (band["optimizer"] == optimizer)]
        assert steps["edf"].tolist() == pytest.approx([pycls_F(curve, e) for e in errs])
    # The KS tests compare the same runs' Δerrors: each pair of models, per optimizer.
    assert len(ks) == len(MODELS) * (len(MODELS) - 1) // 2 * 2
    for row in ks.itertuples():
        a, b = curves[row.model_a, row.optimizer][0], curves[row.model_b, row.optimizer][0]
        assert (row.n_a, row.n_b) == (len(a), len(b))
        assert row.statistic == pytest.approx(ks_2samp(a - a.min(), b - b.min()).statistic)


def test_the_error_before_divergence_follows_the_chosen_error(tmp_path):
    runs = tmp_path / "runs"
    write_group(runs, "ViT_C-XS", "adamw", [20.0], [(28.125, 4)], early=1)
    table = load_runs(runs)
    before = {e: sorted(with_error_before_divergence(table, runs, e)["error_before_divergence"].dropna())
              for e in ("best_ema_error", "best_error", "final_ema_error")}
    # analysis_records: the EMA error falls to 30.0 at epoch 3; the model's is 0.4 worse.
    assert before == {"best_ema_error": [30.0], "best_error": [30.4], "final_ema_error": [30.0]}
    with pytest.raises(ConfigError, match="with_error_before_divergence"):
        lrwd_edf(table, "pycls")
    with pytest.raises(ConfigError, match="diverged='authors' is not allowed: choose one of stemsweep, pycls"):
        lrwd_edf(table, "authors")


def test_the_report_and_the_legend_say_how_diverged_runs_were_counted(tmp_path):
    # stemsweep's way is the committed reports' (test_committed_results); here pycls's.
    runs = tmp_path / "runs"
    write_group(runs, "ViT_P-XS", "sgd", [25.0, 27.0, 31.0], [(28.125, 4)], early=1)
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--diverged", "pycls"]) == 0
    report = (out / "report.md").read_text()
    assert ("Diverged runs count as the authors' pycls counts them in the lr/wd EDFs, bands, summaries and KS "
            "tests: a run that diverged counts at its `best_ema_error` before it diverged") in report
    summary = pd.read_csv(out / "tables" / "edf_summary.csv").iloc[0]
    assert (summary["runs"], summary["finished"], summary["diverged"]) == (4, 3, 1)
    table = loaded(runs)
    for diverged, title in (("stemsweep", "diverged runs: within no Δ"),
                            ("pycls", "diverged runs: at their error\nbefore diverging (as pycls)")):
        figure = edf_figure(edf_band(table, samples=10, diverged=diverged),
                            edf_summary(table, diverged=diverged), diverged=diverged)
        assert figure.axes[0].get_legend().get_title().get_text() == title
