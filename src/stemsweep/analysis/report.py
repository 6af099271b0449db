"""`stemsweep report RUNS --out DIR`: every figure and table of the study, and report.md showing them.

DIR/report.md       the report: the runs, then per data set the four experiments with figures and numbers
DIR/figures/        <experiment>_<dataset>.png and .pdf
DIR/tables/         runs.csv and one CSV per metric (all data sets, full precision)

The training-length, optimizer and peak experiments use `tuned_runs`, the lr/wd experiment
`lrwd_study_runs`. An experiment without the data it needs is skipped with a line saying why.
`--diverged pycls` counts diverged runs in the lr/wd experiment as the authors' pycls does; the
report and the EDF figure's legend say which way they were counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from stemsweep.analysis.load import EMA_FALLBACK, load_runs, with_error_before_divergence
from stemsweep.analysis.plots import (
    edf_figure,
    epochs_label,
    evidence_figure,
    lrwd_scatter_figure,
    model_order,
    optimizer_gap_figure,
    optimizer_name,
    peak_figure,
    save_figure,
    training_length_figure,
)
from stemsweep.analysis.stability import (
    check_diverged_convention,
    edf_band,
    edf_ks,
    edf_summary,
    lrwd_edf,
    lrwd_study_runs,
    optimizer_gap,
    peak_table,
    results,
    training_length_gap,
    tuned_runs,
)
from stemsweep.errors import ConfigError
from stemsweep.record.decisions import decision_words, left_out_text

ERROR_MEANINGS = {
    "best_ema_error": "the EMA model's best top-1 error over epochs (the paper's)",
    "best_error": "the model's best top-1 error over epochs",
    "final_ema_error": "the EMA model's top-1 error after the last epoch",
    "final_error": "the model's top-1 error after the last epoch",
}
NO_DATASET = "unknown"
# How the lr/wd experiment counts diverged runs (stability.DIVERGED_CONVENTIONS), in the report's words:
# its line saying so, the runs section, the shares within 1 and 4 points, the KS tests.
DIVERGED_WORDS = {
    "stemsweep": {
        "line": "Diverged runs count stemsweep's way in the lr/wd EDFs, bands, summaries and KS tests: as failed "
                "settings, in their group's runs and within no Δ (`--diverged pycls` counts them as the "
                "authors' pycls does).",
        "runs": "counted in the EDF's runs, never within any Δ",
        "within": "Share of all runs (diverged ones included)",
        "ks": "diverged runs as Δ = +∞",
    },
    "pycls": {
        "line": "Diverged runs count as the authors' pycls counts them in the lr/wd EDFs, bands, summaries and KS "
                "tests: a run that diverged counts at its `{error}` before it diverged (from its per-epoch "
                "metrics), and one that diverged before its first evaluation is left out.",
        "runs": "in the lr/wd EDFs counted as pycls does, above",
        "within": "Share of the runs counted (diverged ones at their error before diverging)",
        "ks": "diverged runs at their error before diverging",
    },
}


def write_report(runs: list[str], out: str, error: str = "best_ema_error", diverged: str = "stemsweep") -> Path:
    """Load the runs of `runs` (runs directories or W&B projects), write every figure, the tables as
    CSV and report.md into `out`; returns report.md's path. `diverged` says how the lr/wd experiment
    counts diverged runs (stability.DIVERGED_CONVENTIONS). Where no run is found, nothing is written
    (ValueError)."""
    check_diverged_convention(diverged)
    table = load_runs(runs, error=error)
    if table.empty:
        skipped = table.attrs.get("skipped", [])
        unreadable = f" ({len(skipped)} record{'s' * (len(skipped) != 1)} could not be read)" if skipped else ""
        raise ConfigError(f"no runs found in {', '.join(map(str, runs))}{unreadable}: no report written")
    if diverged == "pycls":
        table = with_error_before_divergence(table, runs, error)
    table["dataset"] = table["dataset"].fillna(NO_DATASET)
    out_dir = Path(out)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    tuned, lrwd = tuned_runs(table), lrwd_study_runs(table)
    metrics = {
        "runs": table,
        "training_length_gap": training_length_gap(tuned),
        "optimizer_gap": optimizer_gap(tuned),
        "lrwd_edf": lrwd_edf(lrwd, diverged),
        "edf_band": edf_band(lrwd, diverged=diverged),
        "edf_summary": edf_summary(lrwd, diverged=diverged),
        "edf_ks": edf_ks(lrwd, diverged),
        "peak": peak_table(tuned),
    }
    for name, values in metrics.items():
        values.to_csv(out_dir / "tables" / f"{name}.csv", index=False)

    lines = ["# stemsweep report", "", f"Runs from {', '.join(map(str, runs))}. The error is `{error}`: "
             f"{ERROR_MEANINGS[error]}, in percent. Tables (full precision, all data sets): `tables/`.", ""]
    if error in EMA_FALLBACK and len(table):
        no_ema = int((table[error].isna() & table["error"].notna()).sum())
        if no_ema:
            lines[-1:-1] = [f"{no_ema} of the {len(table)} runs have no EMA error (trained without an EMA, or "
                            "with one still mostly the untrained initial model): their own "
                            f"`{EMA_FALLBACK[error]}` stands in for `{error}`."]
    lines[-1:-1] = [DIVERGED_WORDS[diverged]["line"].format(error=error)]
    lines += _runs_section(table, diverged)
    for dataset in sorted(set(table["dataset"])):
        lines += [f"## Data set: {dataset}", ""]
        report = _DatasetReport(out_dir, dataset, {k: _of(v, dataset) for k, v in metrics.items()},
                                _of(lrwd, dataset), diverged)
        for section in (report.training_length, report.optimizer, report.lrwd, report.peak):
            lines += section()
    lines += adaptive_section(runs, out_dir, table)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- an adaptive study's comparisons -------------------------------------------------------------------

def study_waves(sources: list[str]) -> pd.DataFrame:
    """Each comparison of an adaptive study, wave by wave, from the study's record beside its runs
    (`.studies/NAME.json`, which export copies): one row per comparison and wave until it was decided."""
    rows = []
    for source in sources:
        for path in sorted(Path(source).glob(".studies/*.json")) if not str(source).startswith("wandb:") else []:
            for stage, kept in json.loads(path.read_text()).get("stages", {}).items():
                for wave in kept.get("waves", []):
                    for name, d in wave["decisions"].items():
                        if d["wave"] == wave["wave"]:  # the decision this wave made (a settled one is kept)
                            rows.append({"study": path.stem, "stage": stage, "comparison": name, "wave": wave["wave"],
                                         **{k: d.get(k) for k in ("a", "b", "statistic", "replicate", "max", "alpha",
                                                                  "outcome", "n", "evidence", "threshold", "final",
                                                                  "left_out")},
                                         "runs": wave.get("runs", []), "cells": wave.get("cells"),
                                         "stage_max": wave.get("max")})
    table = pd.DataFrame(rows)
    if len(table):
        table["decision"] = [_decision(r) for r in table.itertuples()]
    return table


def _decision(row) -> str:
    left = left_out_text({"left_out": row.left_out if isinstance(row.left_out, dict) else {}})
    text = decision_words({"outcome": row.outcome, "n": row.n, "final": row.final})
    return text + (f" ({left})" if left else "")


def adaptive_section(sources: list[str], out_dir: Path, table: pd.DataFrame) -> list[str]:
    """The decisions of an adaptive study whose record is among `sources`, the replicates and device-hours
    each took against the fixed design (every cell to its maximum), and the evidence wave by wave. Nothing
    when no source holds an adaptive study's record."""
    waves = study_waves(sources)
    if waves.empty:
        return []
    waves.drop(columns=["runs", "left_out"]).to_csv(out_dir / "tables" / "adaptive_waves.csv", index=False)
    cost = (table["wall_time_s"].fillna(0) * table.get("world_size", pd.Series(1, index=table.index)).fillna(1)
            / 3600).set_axis(table["signature"])
    lines = ["## Adaptive comparisons", "",
             "Each comparison was decided after every wave of its stage, anytime-valid at its α (the study's "
             "split over its comparisons; docs/adaptive.md). Replicates: what it took, of its maximum. "
             "Device-hours: what its stage's waves trained, against the fixed design (every cell to the maximum, "
             "at the mean cost of the runs it trained). Evidence: the e-value; settled at the threshold.", "",
             "| comparison | A | B | statistic | decision | replicates | evidence | threshold | stage h | fixed h |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in waves.groupby("comparison", sort=False):
        last = rows.iloc[-1]
        stage = waves[waves["stage"] == last["stage"]]
        trained = sorted({sig for runs in stage["runs"] for sig in runs})
        used = cost.reindex(trained).dropna()
        fixed = (used.mean() * last["cells"] * last["stage_max"]) if len(used) else float("nan")
        lines.append(f"| {name} | {last['a']} | {last['b']} | {last['statistic']} | {last['decision']} | "
                     f"{last['n']} of {last['max']} | {last['evidence']:.3g} | {last['threshold']:.3g} | "
                     f"{used.sum():.2f} | {fixed:.2f} |")
    lines.append("")
    save_figure(evidence_figure(waves), out_dir / "figures", "adaptive_evidence")
    caption = "Each comparison's evidence wave by wave, and its threshold"
    return lines + [f"![{caption}](figures/adaptive_evidence.png)", "", f"{caption} "
                    "([PDF](figures/adaptive_evidence.pdf))", ""]


def _of(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    if "dataset" not in table.columns:
        return table
    return table[table["dataset"].fillna(NO_DATASET) == dataset]


# --- the runs --------------------------------------------------------------------------------------

def _runs_section(table: pd.DataFrame, diverged: str) -> list[str]:
    lines = ["## Runs", ""]
    skipped = table.attrs.get("skipped", [])
    counts = table.groupby(["dataset", "status"]).size().unstack(fill_value=0)
    statuses = [s for s in ("done", "diverged", "running", "resumable", "failed") if s in counts.columns]
    rows = [[dataset, *(str(counts.loc[dataset, s]) for s in statuses), str(counts.loc[dataset].sum())]
            for dataset in counts.index]
    lines += _markdown_table(["data set", *statuses, "all"], rows)
    lines += [f"Done runs are results; diverged runs are results too (a failed setting: drawn as crosses, "
              f"{DIVERGED_WORDS[diverged]['runs']}). Running, resumable (stopped by a signal, to be resumed) "
              "and failed runs are left out.", ""]
    lines += _cost_section(table)
    failed = table[table["status"] == "failed"]
    if len(failed):
        lines += ["Failed runs (see error.log in the run directory):", ""]
        lines += [f"- {r.model} ({r.optimizer}, {epochs_label(r.epochs)}, seed {r.seed}): {r.error_message} — "
                  f"`{r.run_dir}`" for r in failed.itertuples()]
        lines.append("")
    if skipped:
        lines += [f"Records that could not be read and were skipped ({len(skipped)}):", ""]
        lines += [f"- `{path}`" for path in skipped] + [""]
    return lines


def _cost_section(table: pd.DataFrame) -> list[str]:
    """What each sweep cost: its runs' summed wall time (one run's start-up, training and evaluation;
    runs that ran side by side each count whole) and median training speed."""
    if table["wall_time_s"].isna().all():  # no run recorded its wall time
        return []
    sweeps = table.assign(sweep=table["sweep"].fillna("(none)"))
    rows = []
    for sweep, runs in sweeps.groupby("sweep", sort=True):
        hours = runs["wall_time_s"].sum() / 3600
        speed = runs["images_per_s"].median()
        rows.append([sweep, str(len(runs)), f"{hours:.2f}", "–" if pd.isna(speed) else f"{speed:.0f}"])
    return ["Cost: each sweep's runs' wall time summed, in hours (runs side by side each count whole), and "
            "their median training speed (images/s). A run shared by two sweeps counts for the first.", "",
            *_markdown_table(["sweep", "runs", "run hours", "images/s"], rows)]


# --- one data set's experiments --------------------------------------------------------------------

class _DatasetReport:
    def __init__(self, out_dir: Path, dataset: str, metrics: dict[str, pd.DataFrame],
                 lrwd_runs: pd.DataFrame, diverged: str):
        self.out_dir, self.dataset, self.metrics, self.lrwd_runs = out_dir, dataset, metrics, lrwd_runs
        self.diverged = diverged

    def _figure(self, draw: Callable, name: str, caption: str, *tables: pd.DataFrame) -> list[str]:
        fig = draw(*tables)
        file = f"{name}_{self.dataset}"
        save_figure(fig, self.out_dir / "figures", file)
        return [f"![{caption}](figures/{file}.png)", "", f"{caption} ([PDF](figures/{file}.pdf))", ""]

    def training_length(self) -> list[str]:
        lines = ["### Training-length stability", ""]
        gaps = self.metrics["training_length_gap"]
        if len(gaps):  # a model run at one schedule only has no gap to show
            gaps = gaps[gaps.groupby(["model", "optimizer"])["epochs"].transform("nunique") > 1]
        if gaps.empty:
            return lines + [_skipped("no model was run at two or more schedules with one optimizer")]
        lines += self._figure(training_length_figure, "training_length", "Error at each schedule minus the "
                              "error at the longest schedule, per model and optimizer (points).", gaps)
        rows = [[r.model, optimizer_name(r.optimizer), str(r.epochs), _mean_std(r.error, r.error_std, r.diverged),
                 "reference" if r.epochs == r.reference_epochs else
                 _mean_std(r.gap, r.gap_std, r.diverged, signed=True), _runs(r.n, r.diverged)]
                for r in _by_model(gaps, "optimizer", "epochs").itertuples()]
        lines += _markdown_table(["model", "optimizer", "epochs", "error", "Δ to longest", "runs"], rows)
        return lines

    def optimizer(self) -> list[str]:
        lines = ["### Optimizer stability", ""]
        gaps = self.metrics["optimizer_gap"]
        if gaps.empty:
            return lines + [_skipped("no model and schedule was run with both SGD and AdamW")]
        lines += self._figure(optimizer_gap_figure, "optimizer_gap", "Top-1 error with SGD minus with AdamW, "
                              "each at its tuned lr/wd, per model and schedule (points).", gaps)
        rows = [[r.model, str(r.epochs), _mean_std(r.sgd_error, r.sgd_error_std, r.sgd_diverged),
                 _mean_std(r.adamw_error, r.adamw_error_std, r.adamw_diverged),
                 _mean_std(r.gap, r.gap_std, r.sgd_diverged + r.adamw_diverged, signed=True),
                 f"{_runs(r.sgd_n, r.sgd_diverged)} / {_runs(r.adamw_n, r.adamw_diverged)}"]
                for r in _by_model(gaps, "epochs").itertuples()]
        lines += _markdown_table(["model", "epochs", "SGD", "AdamW", "SGD − AdamW", "runs SGD / AdamW"], rows)
        return lines

    def lrwd(self) -> list[str]:
        lines = ["### lr/wd stability", ""]
        if results(self.lrwd_runs).empty:
            return lines + [_skipped("no finished or diverged runs from an lr/wd sweep (a sweep whose name "
                                     "contains `lrwd`)")]
        band, summary = self.metrics["edf_band"], self.metrics["edf_summary"]
        if band.empty:
            lines.append(_skipped("every run of the lr/wd sweeps diverged: there is no best error to compare "
                                  "with (figures skipped)"))
        else:
            edf = partial(edf_figure, diverged=self.diverged)
            lines += self._figure(edf, "lrwd_edf", "EDF of Δerror = error − the best error of the "
                                  "same model and optimizer: the share of runs with Δerror < Δ, with a 95% "
                                  "bootstrap band. Steeper is more stable.", band, summary)
            lines += self._figure(lrwd_scatter_figure, "lrwd_scatter", "Error of each (lr, wd) draw; star: "
                                  "the best run, shaded: runs less than 1 point worse.", self.lrwd_runs)
        within = [c for c in summary.columns if c.startswith("within_")]
        rows = [[r["model"], optimizer_name(r["optimizer"]), str(r["epochs"]), str(r["runs"]), str(r["diverged"]),
                 _number(r["best_error"]), f"{r['best_lr']:.3g}", f"{r['best_wd']:.3g}",
                 *(f"{r[c]:.0%}" for c in within)]
                for _, r in _by_model(summary, "optimizer", "epochs").iterrows()]
        lines += [f"{DIVERGED_WORDS[self.diverged]['within']} less than 1 and 4 points worse than the best:", ""]
        header = ["model", "optimizer", "epochs", "runs", "diverged", "best error", "best lr", "best wd",
                  *(f"< {c.removeprefix('within_')} points" for c in within)]
        lines += _markdown_table(header, rows)
        tests = self.metrics["edf_ks"]
        if len(tests):
            lines += ["Two-sample Kolmogorov–Smirnov tests between the models' Δerror distributions "
                      f"({DIVERGED_WORDS[self.diverged]['ks']}):", ""]
            rows = [[optimizer_name(r.optimizer), r.model_a, r.model_b, f"{r.n_a} / {r.n_b}",
                     f"{r.statistic:.3f}", f"{r.pvalue:.3g}"] for r in tests.itertuples()]
            header = ["optimizer", "model A", "model B", "runs", "KS statistic", "p-value"]
            lines += _markdown_table(header, rows)
        return lines

    def peak(self) -> list[str]:
        lines = ["### Peak performance", ""]
        peak = self.metrics["peak"]
        if peak.empty:
            return lines + [_skipped("no finished runs")]
        lines += self._figure(peak_figure, "peak", "Each model's best error (mean over seeds) and the "
                              "paper's at the same schedule.", peak)
        rows = [[r.model, _mean_std(r.error, r.error_std, r.diverged), str(r.epochs), optimizer_name(r.optimizer),
                 f"{r.lr:.3g}", f"{r.wd:.3g}", _number(r.paper_error), _number(r.difference, signed=True)]
                for r in _by_model(peak).itertuples()]
        lines += _markdown_table(["model", "best error", "epochs", "optimizer", "lr", "wd", "paper",
                                  "difference"], rows)
        if self.dataset == "imagenet":
            lines += ["Paper: Table 2 of Xiao et al. (2021), ImageNet-1k top-1 error at 100/200/400 epochs "
                      "(pre-trained runs: after ImageNet-21k).", ""]
        return lines


# --- formatting ------------------------------------------------------------------------------------

def _by_model(table: pd.DataFrame, *then: str) -> pd.DataFrame:
    order = {model: i for i, model in enumerate(model_order(table["model"]))}
    ordered = table.assign(_order=table["model"].map(order)).sort_values(["_order", *then])
    return ordered.drop(columns="_order")


def _skipped(why: str) -> str:
    return f"_Skipped: {why}._\n"


def _number(value, signed: bool = False) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _mean_std(mean, std, diverged, signed: bool = False) -> str:
    if pd.isna(mean):
        return "diverged" if diverged else "–"
    return _number(mean, signed) + ("" if pd.isna(std) else f" ± {std:.2f}")


def _runs(finished, diverged) -> str:
    return f"{finished}" + (f" + {diverged} diverged" if diverged else "")


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]
