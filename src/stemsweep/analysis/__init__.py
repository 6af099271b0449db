"""Analysis of the study: run records → one table → the paper's metrics, figures and report.

    from stemsweep import analysis as sa
    runs = sa.load_runs(sa.runs_source())             # $STEMSWEEP_RUNS, else runs/, else results/mini-study
    sa.training_length_gap(sa.tuned_runs(runs))
    sa.lrwd_edf(sa.lrwd_study_runs(runs))

`stemsweep report RUNS --out DIR` writes every figure and table (stemsweep.analysis.report).
"""

from stemsweep.analysis.load import (
    CorruptRecordWarning,
    load_history,
    load_runs,
    runs_source,
    with_error_before_divergence,
)
from stemsweep.analysis.plots import (
    edf_figure,
    lrwd_scatter_figure,
    optimizer_gap_figure,
    peak_figure,
    save_figure,
    training_length_figure,
)
from stemsweep.analysis.stability import (
    DIVERGED_CONVENTIONS,
    edf_band,
    edf_ks,
    edf_summary,
    lrwd_edf,
    lrwd_results,
    lrwd_study_runs,
    optimizer_gap,
    paper_top1_errors,
    peak_table,
    results,
    seed_groups,
    training_length_gap,
    tuned_runs,
)

__all__ = [
    "CorruptRecordWarning", "load_history", "load_runs", "runs_source", "with_error_before_divergence",
    "DIVERGED_CONVENTIONS", "edf_band", "edf_ks", "edf_summary", "lrwd_edf", "lrwd_results", "lrwd_study_runs",
    "optimizer_gap", "paper_top1_errors", "peak_table", "results", "seed_groups", "training_length_gap", "tuned_runs",
    "edf_figure", "lrwd_scatter_figure", "optimizer_gap_figure", "peak_figure", "save_figure",
    "training_length_figure",
]
