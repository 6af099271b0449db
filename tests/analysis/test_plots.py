"""Figures: what a reader of the report sees in them, for small tables whose every number is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb

from stemsweep.analysis import load_runs, lrwd_study_runs
from stemsweep.analysis.plots import (
    DIVERGED_MARKER,
    FAMILY_COLORS,
    edf_figure,
    lrwd_scatter_figure,
    optimizer_gap_figure,
    peak_figure,
    save_figure,
    training_length_figure,
)

NAN = float("nan")


def texts(items) -> list[str]:
    return [t.get_text() for t in items]


def figure_legend(fig) -> list[str]:
    [legend] = fig.legends
    return texts(legend.get_texts())


def markers(ax, size: float) -> list[tuple[float, float]]:
    """The points of the scatter markers of one size (diverged crosses, best-run stars, the paper's diamonds)."""
    return [tuple(float(v) for v in xy) for c in ax.collections if isinstance(c, PathCollection)
            and len(c.get_sizes()) and c.get_sizes()[0] == size for xy in np.asarray(c.get_offsets())]


def diverged_crosses(ax) -> list[tuple[float, float]]:
    """The (x, axes-fraction y) of the crosses drawn for diverged points."""
    return markers(ax, DIVERGED_MARKER["s"])


def data_lines(ax) -> dict:
    """{label: the line through the data} of each errorbar plot."""
    return {container.get_label(): container.lines[0] for container in ax.containers}


def test_training_length_has_a_panel_per_optimizer_and_a_line_per_model_with_its_gaps():
    gaps = pd.DataFrame({
        "model": ["ViT_C-XS", "ViT_C-XS", "ViT_C-XS", "ViT_P-XS", "ViT_P-XS", "ViT_P-XS", "ViT_P-XS", "ViT_P-XS"],
        "optimizer": ["adamw", "adamw", "adamw", "adamw", "adamw", "sgd", "sgd", "sgd"],
        "epochs": [1, 2, 4, 1, 4, 1, 2, 4],
        "gap": [2.0, 1.0, 0.0, 5.0, 0.0, NAN, 3.0, 0.0], "gap_std": [0.5, NAN, 0.0, 1.0, 0.0, NAN, NAN, 0.0],
        "diverged": [0, 0, 0, 0, 0, 2, 0, 0],
    })
    fig = training_length_figure(gaps)
    adamw, sgd = fig.axes
    assert (adamw.get_title(), sgd.get_title()) == ("AdamW", "SGD")
    assert adamw.get_ylabel() == "Δ top-1 error to the longest schedule (points)"
    assert adamw.get_xlabel() == "training epochs" and adamw.get_xscale() == "log"
    assert list(adamw.get_xticks()) == [1, 2, 4]
    lines = data_lines(adamw)
    assert list(lines) == ["ViT_P-XS", "ViT_C-XS"]
    assert list(lines["ViT_C-XS"].get_xdata()) == [1, 2, 4] and list(lines["ViT_C-XS"].get_ydata()) == [2, 1, 0]
    assert to_rgb(lines["ViT_P-XS"].get_color()) == to_rgb(FAMILY_COLORS["ViT_P"])
    assert diverged_crosses(adamw) == [] and diverged_crosses(sgd) == [(1.0, 1.0)]  # SGD at 1 epoch: at the top
    assert figure_legend(fig) == ["ViT_P-XS", "ViT_C-XS", "diverged"]  # the paper's order: P before C


def test_optimizer_gap_has_a_bar_per_model_and_schedule_and_a_cross_where_one_optimizer_diverged():
    gaps = pd.DataFrame({"model": ["ViT_C-XS", "ViT_P-XS", "ViT_P-XS"], "epochs": [1, 1, 4],
                         "gap": [-0.5, NAN, 1.5], "gap_std": [0.25, NAN, NAN]})
    fig = optimizer_gap_figure(gaps)
    [ax] = fig.axes
    assert texts(ax.get_xticklabels()) == ["ViT_P-XS", "ViT_C-XS"]
    assert ax.get_ylabel() == "top-1 error, SGD − AdamW (points)"
    bars = sorted((round(p.get_x() + p.get_width() / 2, 3), p.get_height()) for p in ax.patches)
    assert bars == [(0.2, 1.5), (0.8, -0.5)]  # ViT_P at 4 epochs right of its centre, ViT_C at 1 left of its
    assert diverged_crosses(ax) == [(-0.2, 1.0)]  # ViT_P at 1 epoch: every run of one optimizer diverged
    assert texts(ax.get_legend().get_texts()) == ["1 epoch", "4 epochs", "diverged (all runs)"]


def test_optimizer_gap_legend_names_each_schedule_in_good_english():
    gaps = pd.DataFrame({"model": ["ViT_P-XS", "ViT_P-XS"], "epochs": [1, 4], "gap": [3.0, 1.5],
                         "gap_std": [0.5, float("nan")]})
    legend = optimizer_gap_figure(gaps).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["1 epoch", "4 epochs"]


def test_edf_steps_to_the_right_edge_and_its_legend_counts_runs_and_diverged_ones():
    band = pd.DataFrame({"model": ["ViT_C-XS"] * 3 + ["ViT_P-XS"] * 2, "optimizer": ["sgd"] * 5,
                         "delta": [0.0, 1.0, 3.0, 0.0, 2.0], "edf": [1 / 3, 2 / 3, 1.0, 0.25, 0.5],
                         "lower": [0.0, 0.3, 0.9, 0.0, 0.2], "upper": [0.6, 0.9, 1.0, 0.5, 0.8]})
    summary = pd.DataFrame({"model": ["ViT_C-XS", "ViT_P-XS"], "optimizer": ["sgd", "sgd"], "runs": [3, 4],
                            "diverged": [0, 2]})
    fig = edf_figure(band, summary)
    [ax] = fig.axes
    assert ax.get_title() == "SGD" and ax.get_ylim() == (0, 1.02) and ax.get_xlim() == (0, pytest.approx(3.15))
    assert ax.get_xlabel() == "Δ top-1 error to the best (points)"
    assert ax.get_ylabel() == "share of runs with Δerror < Δ"
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(curves) == ["ViT_P-XS (n=4, 2 diverged)", "ViT_C-XS (n=3)"]
    p = curves["ViT_P-XS (n=4, 2 diverged)"]
    assert list(p.get_xdata()) == [0.0, 2.0, pytest.approx(3.15)]  # held to the right edge …
    assert list(p.get_ydata()) == [0.25, 0.5, 0.5]  # … at its last value: below 1, two runs diverged
    assert p.get_drawstyle() == "steps-post"
    guides = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert guides == [1, 4]


def test_lrwd_scatter_has_error_against_lr_and_wd_per_optimizer_with_each_models_best_run(records_dir):
    runs = lrwd_study_runs(load_runs(str(records_dir)))
    runs = runs[runs["dataset"] == "fashion_mnist"]
    fig = lrwd_scatter_figure(runs)
    assert [ax.get_title() for ax in fig.axes] == ["AdamW: error vs lr", "AdamW: error vs wd", "SGD: error vs lr",
                                                  "SGD: error vs wd"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["lr (per 2048 images)", "weight decay"]
    assert fig.axes[0].get_ylabel() == "top-1 error (%)"
    adamw_lr = fig.axes[0]
    vit_c = runs[(runs["model"] == "ViT_C-XS") & (runs["optimizer"] == "adamw")]
    best = vit_c.loc[vit_c["best_ema_error"].idxmin()]
    stars = markers(adamw_lr, 180)
    assert len(stars) == 3  # one best run per model
    assert any(np.allclose(star, [best["lr"], best["best_ema_error"]]) for star in stars)
    assert diverged_crosses(fig.axes[2]) and not diverged_crosses(adamw_lr)  # one ViT_P-XS SGD draw diverged
    assert figure_legend(fig) == ["ViT_P-XS", "ViT_C-XS", "RegNetY-XS", "best run", "best region (< 1 point)",
                                  "diverged"]


def test_peak_lists_models_top_down_with_their_error_and_the_papers():
    peak = pd.DataFrame({"model": ["ViT_C-4GF", "ViT_P-4GF", "RegNetY-4GF"], "error": [18.9, 19.9, NAN],
                         "error_std": [0.2, NAN, NAN], "epochs": [400, 400, 400],
                         "optimizer": ["adamw", "sgd", "adamw"], "paper_error": [18.6, 19.6, NAN]})
    fig = peak_figure(peak)
    [ax] = fig.axes
    assert texts(ax.get_yticklabels()) == ["ViT_P-4GF", "ViT_C-4GF", "RegNetY-4GF"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first model on top
    assert ax.get_xlabel() == "top-1 error (%)"
    assert texts(ax.texts) == ["19.9 (400 ep, SGD)", "18.9 (400 ep, AdamW)", "every run diverged"]
    assert sorted(markers(ax, 50)) == [(18.6, 1.0), (19.6, 0.0)]  # the paper's errors, on each model's row
    assert figure_legend(fig) == ["best run (mean over seeds)", "paper, same schedule"]


def test_save_figure_writes_a_png_and_a_pdf(tmp_path):
    fig = peak_figure(pd.DataFrame({"model": ["ViT_C-XS"], "error": [20.0], "error_std": [NAN], "epochs": [8],
                                    "optimizer": ["adamw"]}))
    paths = save_figure(fig, tmp_path / "figures", "peak")
    assert paths == [tmp_path / "figures" / "peak.png", tmp_path / "figures" / "peak.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
