"""Figures: what a reader of the report sees in them."""

from __future__ import annotations

import pandas as pd

from stemsweep.analysis.plots import optimizer_gap_figure


def test_optimizer_gap_legend_names_each_schedule_in_good_english():
    gaps = pd.DataFrame({"model": ["ViT_P-XS", "ViT_P-XS"], "epochs": [1, 4], "gap": [3.0, 1.5],
                         "gap_std": [0.5, float("nan")]})
    legend = optimizer_gap_figure(gaps).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["1 epoch", "4 epochs"]
