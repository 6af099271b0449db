"""The study's metrics on small hand-made tables (answers worked out by hand) and on random data
against plain independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from stemsweep.analysis import (
    edf_band,
    edf_ks,
    edf_summary,
    lrwd_edf,
    lrwd_study_runs,
    optimizer_gap,
    peak_table,
    seed_groups,
    training_length_gap,
    tuned_runs,
)

STEMS = {"ViT_P": "patch", "ViT_C": "conv", "RegNetY": None}


def table(*runs: tuple) -> pd.DataFrame:
    """Runs as (model, optimizer, epochs, error or "diverged", extra columns…) → a load_runs-like table."""
    rows = []
    for model, optimizer, epochs, error, *extra in runs:
        diverged = error == "diverged"
        row = {"model": model, "stem": STEMS[model.split("-")[0]], "optimizer": optimizer, "epochs": epochs,
               "lr": 1e-3 if optimizer == "adamw" else 0.1, "wd": 0.05 if optimizer == "adamw" else 1e-4,
               "seed": 0, "status": "diverged" if diverged else "done",
               "error": np.nan if diverged else float(error)}
        row.update(*extra)
        rows.append(row)
    return pd.DataFrame(rows)


def test_seed_groups_give_mean_spread_and_counts():
    groups = seed_groups(table(("ViT_C-4GF", "adamw", 50, 24.0),
                               ("ViT_C-4GF", "adamw", 50, 26.0, {"seed": 1}),
                               ("ViT_C-4GF", "adamw", 50, "diverged", {"seed": 2}),
                               ("ViT_C-4GF", "adamw", 50, 30.0, {"lr": 1e-2})))
    assert len(groups) == 2
    three = groups[groups["lr"] == 1e-3].iloc[0]
    assert three["error"] == 25.0 and three["error_std"] == pytest.approx(2 ** 0.5)
    assert (three["n"], three["diverged"]) == (2, 1)
    one = groups[groups["lr"] == 1e-2].iloc[0]
    assert one["n"] == 1 and np.isnan(one["error_std"])


def test_runs_of_different_settings_are_not_seed_repeats_even_when_their_columns_agree():
    # Two recipes the summary has no column for (e.g. warm-up): their `setting` hashes differ.
    groups = seed_groups(table(("ViT_C-4GF", "adamw", 50, 24.0, {"setting": "a"}),
                               ("ViT_C-4GF", "adamw", 50, 26.0, {"seed": 1, "setting": "a"}),
                               ("ViT_C-4GF", "adamw", 50, 30.0, {"setting": "b"})))
    assert sorted(zip(groups["setting"], groups["n"], groups["error"])) == [("a", 2, 25.0), ("b", 1, 30.0)]
    # Records from before `setting` existed (NaN) group by their columns as before.
    old = seed_groups(table(("ViT_C-4GF", "adamw", 50, 24.0, {"setting": np.nan}),
                            ("ViT_C-4GF", "adamw", 50, 26.0, {"seed": 1, "setting": np.nan})))
    assert len(old) == 1 and old["n"].iloc[0] == 2


def test_training_length_gap_by_hand():
    runs = table(
        ("ViT_P-4GF", "adamw", 50, 30.0), ("ViT_P-4GF", "adamw", 100, 27.0),
        ("ViT_P-4GF", "adamw", 200, 25.0), ("ViT_P-4GF", "adamw", 400, 24.0),
        ("ViT_C-4GF", "adamw", 50, 26.0), ("ViT_C-4GF", "adamw", 50, 27.0, {"seed": 1}),
        ("ViT_C-4GF", "adamw", 400, 24.5), ("ViT_C-4GF", "adamw", 400, 25.5, {"seed": 1}),
        ("RegNetY-4GF", "sgd", 100, "diverged"), ("RegNetY-4GF", "sgd", 400, 22.0),
        ("RegNetY-4GF", "sgd", 200, 23.0, {"status": "failed"}),  # crashed: not a result
    )
    gaps = training_length_gap(runs)
    got = {(r.model, r.epochs): r for r in gaps.itertuples()}
    assert {k: r.gap for k, r in got.items() if k[0] == "ViT_P-4GF"} == {
        ("ViT_P-4GF", 50): 6.0, ("ViT_P-4GF", 100): 3.0, ("ViT_P-4GF", 200): 1.0, ("ViT_P-4GF", 400): 0.0}
    vit_c = got["ViT_C-4GF", 50]
    assert vit_c.gap == 1.5 and vit_c.gap_std == pytest.approx(1.0)  # sqrt(0.5 + 0.5)
    assert got["ViT_C-4GF", 400].gap_std == 0.0 and got["ViT_P-4GF", 50].reference_epochs == 400
    assert np.isnan(got["ViT_P-4GF", 50].gap_std)  # one seed: spread unknown
    regnet = got["RegNetY-4GF", 100]
    assert np.isnan(regnet.gap) and regnet.diverged == 1 and regnet.n == 0
    assert ("RegNetY-4GF", 200) not in got
    assert list(gaps.columns[:4]) == ["model", "stem", "optimizer", "epochs"]


def test_training_length_gap_keeps_optimizers_and_data_sets_apart():
    runs = table(("ViT_C-XS", "adamw", 2, 20.0, {"dataset": "fashion_mnist"}),
                 ("ViT_C-XS", "adamw", 8, 15.0, {"dataset": "fashion_mnist"}),
                 ("ViT_C-XS", "adamw", 4, 30.0, {"dataset": "synthetic"}),
                 ("ViT_C-XS", "sgd", 2, 22.0, {"dataset": "fashion_mnist"}),
                 ("ViT_C-XS", "sgd", 4, 19.0, {"dataset": "fashion_mnist"}))
    gaps = training_length_gap(runs).set_index(["dataset", "optimizer", "epochs"])["gap"]
    assert gaps.to_dict() == {("fashion_mnist", "adamw", 2): 5.0, ("fashion_mnist", "adamw", 8): 0.0,
                              ("fashion_mnist", "sgd", 2): 3.0, ("fashion_mnist", "sgd", 4): 0.0,
                              ("synthetic", "adamw", 4): 0.0}


def test_optimizer_gap_by_hand():
    runs = table(
        ("ViT_P-4GF", "adamw", 50, 27.7), ("ViT_P-4GF", "sgd", 50, 33.0),  # the paper's headline
        ("ViT_C-4GF", "adamw", 50, 24.0), ("ViT_C-4GF", "sgd", 50, 24.7),
        ("ViT_C-4GF", "sgd", 50, 30.0, {"lr": 1.0}),  # a worse lr: the tuned one stands for SGD
        ("ViT_P-4GF", "adamw", 100, 25.0), ("ViT_P-4GF", "sgd", 100, "diverged"),
        ("ViT_C-4GF", "adamw", 200, 20.0),  # no SGD run: no gap
    )
    gaps = optimizer_gap(runs)
    got = {(r.model, r.epochs): r for r in gaps.itertuples()}
    assert set(got) == {("ViT_P-4GF", 50), ("ViT_C-4GF", 50), ("ViT_P-4GF", 100)}
    assert got["ViT_P-4GF", 50].gap == pytest.approx(5.3)
    vit_c = got["ViT_C-4GF", 50]
    assert vit_c.gap == pytest.approx(0.7) and vit_c.sgd_lr == 0.1 and vit_c.sgd_settings == 2
    diverged = got["ViT_P-4GF", 100]
    assert np.isnan(diverged.gap) and diverged.sgd_diverged == 1 and diverged.sgd_n == 0
    assert diverged.adamw_error == 25.0 and diverged.adamw_diverged == 0
    assert list(gaps.columns[:5]) == ["model", "stem", "epochs", "gap", "gap_std"]


def test_a_setting_with_diverged_runs_does_not_stand_for_a_model():
    runs = table(("ViT_P-4GF", "sgd", 50, 30.0), ("ViT_P-4GF", "sgd", 50, "diverged", {"seed": 1}),
                 ("ViT_P-4GF", "sgd", 50, 31.0, {"lr": 0.05}), ("ViT_P-4GF", "adamw", 50, 27.0))
    assert optimizer_gap(runs)["gap"].tolist() == [4.0]


LRWD_RUNS = (
    # model A: 20, 21, 23 and one diverged → Δ 0, 1, 3 of 4 runs
    ("ViT_P-4GF", "adamw", 50, 20.0), ("ViT_P-4GF", "adamw", 50, 23.0), ("ViT_P-4GF", "adamw", 50, 21.0),
    ("ViT_P-4GF", "adamw", 50, "diverged"),
    # model B: 30, 30.5 → Δ 0, 0.5
    ("ViT_C-4GF", "adamw", 50, 30.5), ("ViT_C-4GF", "adamw", 50, 30.0),
    # model C with ties: 10, 10, 12 → Δ 0, 0, 2
    ("RegNetY-4GF", "adamw", 50, 10.0), ("RegNetY-4GF", "adamw", 50, 12.0),
    ("RegNetY-4GF", "adamw", 50, 10.0),
    ("RegNetY-4GF", "sgd", 50, "diverged"),  # a group whose every run diverged
)


def lrwd_table() -> pd.DataFrame:
    runs = table(*LRWD_RUNS)
    runs["lr"] = np.arange(len(runs)) * 1e-4 + 1e-4  # every run its own (lr, wd) draw
    return runs


def test_lrwd_edf_by_hand():
    edf = lrwd_edf(lrwd_table())
    got = {m: list(zip(g["delta"], g["edf"], strict=True)) for m, g in edf.groupby("model")}
    assert got["ViT_P-4GF"] == [(0.0, 0.25), (1.0, 0.5), (3.0, 0.75)]  # the diverged run: never reached
    assert got["ViT_C-4GF"] == [(0.0, 0.5), (0.5, 1.0)]
    assert got["RegNetY-4GF"] == [(0.0, 2 / 3), (0.0, 2 / 3), (2.0, 1.0)]
    assert set(edf["optimizer"]) == {"adamw"}  # no finished run: no rows
    sizes = edf.groupby("model")["runs"].first().to_dict()
    assert sizes == {"ViT_P-4GF": 4, "ViT_C-4GF": 2, "RegNetY-4GF": 3}


def test_edf_summary_by_hand():
    summary = edf_summary(lrwd_table()).set_index(["model", "optimizer"])
    vit_p = summary.loc["ViT_P-4GF", "adamw"]
    assert (vit_p["runs"], vit_p["finished"], vit_p["diverged"], vit_p["best_error"]) == (4, 3, 1, 20.0)
    assert vit_p["best_lr"] == pytest.approx(1e-4)
    assert (vit_p["within_1"], vit_p["within_4"]) == (0.25, 0.75)  # Δ < 1: only the best; Δ < 4: 3 of 4
    assert summary.loc["ViT_C-4GF", "adamw"]["within_1"] == 1.0
    assert summary.loc["RegNetY-4GF", "adamw"]["within_1"] == 2 / 3
    all_diverged = summary.loc["RegNetY-4GF", "sgd"]
    assert all_diverged["runs"] == 1 and all_diverged["within_4"] == 0.0
    assert np.isnan(all_diverged["best_error"])


def random_lrwd_runs(seed: int = 0, per_group: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model in ("ViT_P-4GF", "ViT_C-4GF", "RegNetY-4GF"):
        for optimizer in ("adamw", "sgd"):
            errors = 20 + rng.gamma(2.0, 3.0 if model == "ViT_P-4GF" else 1.5, per_group).round(1)  # ties too
            for error in errors:
                diverged = rng.random() < 0.1
                rows.append((model, optimizer, 50, "diverged" if diverged else error))
    runs = table(*rows)
    runs["lr"] = rng.uniform(1e-4, 1e-2, len(runs))
    return runs


def independent_edf(runs: pd.DataFrame) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The EDF with plain loops: for each finished run, the share of its group's runs with Δ ≤ its Δ."""
    out = {}
    for model in set(runs["model"]):
        for optimizer in set(runs["optimizer"]):
            group = runs[(runs["model"] == model) & (runs["optimizer"] == optimizer)]
            finished = [e for e, s in zip(group["error"], group["status"], strict=True) if s == "done"]
            best = min(finished)
            deltas = [e - best for e in finished]
            out[model, optimizer] = sorted((d, sum(o <= d for o in deltas) / len(group)) for d in deltas)
    return out


def test_lrwd_edf_against_an_independent_computation():
    runs = random_lrwd_runs()
    edf = lrwd_edf(runs)
    expected = independent_edf(runs)
    for (model, optimizer), group in edf.groupby(["model", "optimizer"]):
        got = sorted(zip(group["delta"], group["edf"], strict=True))
        assert np.allclose(got, expected[model, optimizer])
    assert len(edf) == (runs["status"] == "done").sum()


def test_bootstrap_band_contains_the_edf():
    runs = random_lrwd_runs(seed=1)
    band = edf_band(runs, level=0.9, samples=500, seed=3)
    assert ((band["lower"] <= band["edf"]) & (band["edf"] <= band["upper"])).all()
    assert ((band["lower"] >= 0) & (band["upper"] <= 1)).all()
    assert (band["upper"] > band["lower"]).any()
    # The band's EDF is the EDF, at each step.
    edf = lrwd_edf(runs)
    steps = edf.groupby(["model", "optimizer", "delta"])["edf"].max()
    band_edf = band.set_index(["model", "optimizer", "delta"])["edf"].sort_index()
    assert np.allclose(band_edf, steps.sort_index())
    # A diverged run falls under no Δ: one of four runs diverged, so the EDF stops at 3/4.
    assert edf_band(table(*LRWD_RUNS[:4]), samples=200)["edf"].tolist() == [0.25, 0.5, 0.75]
    wide = edf_band(runs, level=0.99, samples=500, seed=3)
    assert (wide["upper"] - wide["lower"]).mean() > (band["upper"] - band["lower"]).mean()


def test_ks_against_scipy():
    runs = random_lrwd_runs(seed=2)
    tests = edf_ks(runs)
    assert len(tests) == 6  # 3 pairs of models × 2 optimizers
    for test in tests.itertuples():
        deltas = []
        for model in (test.model_a, test.model_b):
            group = runs[(runs["model"] == model) & (runs["optimizer"] == test.optimizer)]
            best = group["error"].min()
            deltas.append([np.inf if s == "diverged" else e - best
                           for e, s in zip(group["error"], group["status"], strict=True)])
        expected = ks_2samp(*deltas)
        assert test.statistic == pytest.approx(expected.statistic)
        assert test.pvalue == pytest.approx(expected.pvalue)
        assert (test.n_a, test.n_b) == tuple(map(len, deltas))


def test_peak_table_beside_the_paper():
    runs = table(
        ("ViT_P-4GF", "adamw", 400, 20.0, {"dataset": "imagenet", "pretrained": False}),
        ("ViT_P-4GF", "adamw", 100, 23.0, {"dataset": "imagenet", "pretrained": False}),
        ("ViT_C-4GF", "adamw", 90, 19.0, {"dataset": "imagenet", "pretrained": True}),
        ("ViT_C-4GF", "adamw", 50, 24.0, {"dataset": "imagenet", "pretrained": False}),
        ("ViT_C-XS", "adamw", 8, 15.0, {"dataset": "fashion_mnist", "pretrained": False}),
        ("RegNetY-4GF", "sgd", 400, 20.1, {"dataset": "imagenet", "pretrained": False}),
    )
    peak = peak_table(runs).set_index(["model", "pretrained"])
    vit_p = peak.loc["ViT_P-4GF", False]
    assert (vit_p["error"], vit_p["epochs"], vit_p["paper_error"]) == (20.0, 400, 19.6)
    assert vit_p["difference"] == pytest.approx(0.4)
    assert (vit_p["paper_100ep"], vit_p["paper_in21k"]) == (23.3, 20.6)
    assert peak.loc["ViT_C-4GF", True]["paper_error"] == 18.8  # pre-trained: the ImageNet-21k column
    assert np.isnan(peak.loc["ViT_C-4GF", False]["paper_error"])  # the paper has no 50-epoch number
    assert np.isnan(peak.loc["ViT_C-XS", False]["paper_400ep"])  # not ImageNet
    assert np.isnan(peak.loc["RegNetY-4GF", False]["paper_error"])  # not in the paper's Table 2


def test_which_runs_each_experiment_uses():
    runs = table(("ViT_C-4GF", "adamw", 50, 24.0, {"sweep": "optimizer"}),
                 ("ViT_C-4GF", "adamw", 50, 26.0, {"sweep": "lrwd_adamw", "lr": 3e-3}),
                 ("ViT_C-4GF", "adamw", 50, 27.0, {"sweep": "mini_lrwd_sgd", "lr": 4e-4}),
                 ("ViT_C-4GF", "adamw", 50, 25.0, {"sweep": None}),
                 # The tuned setting itself, trained first by the lr/wd sweep (the best draw, seed 1):
                 # one run shared by both studies.
                 ("ViT_C-4GF", "adamw", 50, 23.0, {"sweep": "lrwd_adamw", "seed": 1}))
    assert tuned_runs(runs)["error"].tolist() == [24.0, 25.0, 23.0]
    assert lrwd_study_runs(runs)["error"].tolist() == [26.0, 27.0, 23.0]
    assert seed_groups(tuned_runs(runs))["n"].tolist() == [3]
    no_sweeps = runs.drop(columns="sweep")
    assert len(tuned_runs(no_sweeps)) == len(lrwd_study_runs(no_sweeps)) == 5


def test_empty_tables_give_empty_results():
    empty = table(("ViT_C-4GF", "adamw", 50, 24.0)).iloc[:0]
    for metric in (training_length_gap, optimizer_gap, lrwd_edf, edf_band, edf_summary, edf_ks, peak_table):
        assert metric(empty).empty, metric.__name__
