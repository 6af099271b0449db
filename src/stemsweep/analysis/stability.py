"""The study's metrics as tidy tables: training-length, optimizer and lr/wd stability, peak performance.

Every function takes the table `load_runs` returns — at least `model` (the paper's name, e.g.
ViT_C-4GF), `optimizer`, `epochs`, `lr`, `wd`, `status` and `error` (top-1, percent) — and returns a
DataFrame. What counts, everywhere:

- A `done` run is a result. A `diverged` run is a result too: a failed setting, the paper's reading.
  Each metric says how it shows one; the lr/wd EDFs can count them as the authors' pycls does
  instead (`diverged="pycls"`, DIVERGED_CONVENTIONS). `failed` (crashed) and `running` runs are not
  results and are left out (the report lists them).
- Runs that differ only by seed are one setting (`seed_groups`): `error` is their mean over the
  finished runs, `error_std` the sample standard deviation (NaN for a single run), `n` the finished
  runs and `diverged` the diverged ones.
- Runs of different data sets, or pre-trained vs trained from scratch (`dataset`, `pretrained`, when
  the table has them), are never compared; those columns are carried into every output.
- Where one model, optimizer and schedule has several settings (lr, wd, batch size, …), the best
  one stands for it (fewest diverged runs, then lowest error): that is the tuned setting. Pass
  `tuned_runs(df)` so that lr/wd-study draws do not compete; `settings` says how many there were.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from stemsweep import PAPER_DIR
from stemsweep.errors import ConfigError

CONTEXT_COLUMNS = ("dataset", "pretrained")
MODEL_COLUMNS = ("model", "stem")
# What else makes a setting; runs that differ in none of these nor in the above differ only by seed.
# `setting` (the run's identity without the seed, hashed) covers what the summary has no column for
# (warm-up, EMA, label smoothing…); the named columns stay so that tables show them, and so that
# records without a `setting` (NaN: e.g. W&B runs logged before it existed) still group by them.
RECIPE_COLUMNS = ("lr", "wd", "batch_size", "train_subset", "aug", "setting")
PAPER_SCHEDULES = (100, 200, 400)
# How the lr/wd EDFs count a diverged run. stemsweep: a failed setting, in the group's runs and within
# no Δ. pycls (the authors' sweep analysis): at the error it reached before diverging (the column
# load.with_error_before_divergence adds); one that never evaluated is left out.
DIVERGED_CONVENTIONS = ("stemsweep", "pycls")


# --- which runs ------------------------------------------------------------------------------------

def results(df: pd.DataFrame) -> pd.DataFrame:
    """The runs that are results: done runs with an error, and diverged runs (error NaN)."""
    diverged = df["status"] == "diverged"
    done = (df["status"] == "done") & df["error"].notna()
    runs = df[done | diverged].copy()
    runs.loc[runs["status"] == "diverged", "error"] = np.nan
    return runs


def _from_lrwd_sweep(df: pd.DataFrame) -> pd.Series:
    return df["sweep"].fillna("").astype(str).str.contains("lrwd")


def lrwd_study_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The lr/wd stability study's runs: those an lr/wd sweep launched (its name contains "lrwd",
    e.g. lrwd_adamw, mini_lrwd_sgd). A table without a `sweep` column is taken whole."""
    return df[_from_lrwd_sweep(df)] if "sweep" in df.columns else df


def tuned_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Every run but the lr/wd study's random draws: the training-length, optimizer and peak runs.

    A draw that is also a tuned run — the same setting as a run of another sweep, e.g. the seed-0 run
    at the best draw's (lr, wd) — was trained once and recorded under the sweep that ran it first; it
    counts here too, or that setting would lose a seed."""
    if "sweep" not in df.columns:
        return df
    draws = _from_lrwd_sweep(df).to_numpy()
    setting = pd.MultiIndex.from_frame(df[_setting_keys(df)].astype(str))  # str: NaN equals NaN
    return df[~draws | setting.isin(setting[~draws])]


def _present(df: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in df.columns]


def _cell_keys(df: pd.DataFrame, *more: str) -> list[str]:
    """Context and model columns, then `more`: what one number of a metric is for."""
    return _present(df, CONTEXT_COLUMNS + MODEL_COLUMNS) + list(more)


def _setting_keys(df: pd.DataFrame) -> list[str]:
    """What makes a setting: runs equal in these differ only by seed."""
    return _cell_keys(df, *_present(df, ("optimizer", "epochs") + RECIPE_COLUMNS))


# --- seeds and settings ----------------------------------------------------------------------------

def seed_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (runs that differ only by seed): its columns, then error (mean over the
    finished runs), error_std (sample standard deviation; NaN for one run), n (finished runs) and
    diverged (diverged runs)."""
    runs = results(df)
    keys = _setting_keys(runs)
    runs["is_diverged"] = runs["status"] == "diverged"
    groups = runs.groupby(keys, dropna=False, sort=True).agg(
        error=("error", "mean"), error_std=("error", "std"), n=("error", "count"),
        diverged=("is_diverged", "sum"))
    return groups.reset_index()


def _best_settings(settings: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per `keys`, the setting that stands for it: the fewest diverged runs (a diverged run is a
    failed setting), then the lowest mean error. `settings` counts the candidates."""
    settings = settings.assign(
        settings=settings.groupby(keys, dropna=False)["n"].transform("size"),
        failed_share=settings["diverged"] / (settings["n"] + settings["diverged"]),
    )
    ranked = settings.sort_values(["failed_share", "error"], na_position="last", kind="stable")
    return ranked.drop_duplicates(keys).drop(columns="failed_share").sort_values(keys).reset_index(drop=True)


def _ordered(table: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    first = _present(table, first)
    return table[first + [c for c in table.columns if c not in first]].reset_index(drop=True)


# --- training-length stability ---------------------------------------------------------------------

def training_length_gap(df: pd.DataFrame) -> pd.DataFrame:
    """For each model (and stem) and optimizer, the error at each schedule minus the error at its
    longest schedule (the paper's Δ top-1 error to the 400-epoch result), in points.

    Columns: model, stem, optimizer, epochs, gap, gap_std, error, error_std, n, diverged,
    reference_epochs, then the setting (lr, wd, …) and `settings`. gap_std combines the two points'
    seed spreads, sqrt(std² + std_ref²) (NaN unless both have several seeds; 0 at the reference).
    A point whose runs all diverged has gap NaN and diverged > 0; if the longest schedule's runs all
    diverged, every gap of that model is NaN.
    """
    line = _cell_keys(df, "optimizer")
    points = _best_settings(seed_groups(df), line + ["epochs"])
    reference = (points.sort_values("epochs").drop_duplicates(line, keep="last")
                 [line + ["epochs", "error", "error_std"]]
                 .rename(columns={"epochs": "reference_epochs", "error": "reference_error",
                                  "error_std": "reference_std"}))
    gaps = points.merge(reference, on=line, how="left")
    gaps["gap"] = gaps["error"] - gaps["reference_error"]
    at_reference = gaps["epochs"] == gaps["reference_epochs"]
    spread = np.sqrt(gaps["error_std"] ** 2 + gaps["reference_std"] ** 2)
    gaps["gap_std"] = spread.mask(at_reference, 0.0).where(gaps["gap"].notna())
    gaps = gaps.drop(columns=["reference_error", "reference_std"])
    first = line + ["epochs", "gap", "gap_std", "error", "error_std", "n", "diverged", "reference_epochs"]
    return _ordered(gaps.sort_values(line + ["epochs"]), first)


# --- optimizer stability ---------------------------------------------------------------------------

def optimizer_gap(df: pd.DataFrame) -> pd.DataFrame:
    """For each model (and stem) and schedule, error(SGD) − error(AdamW) in points, each optimizer at
    its best setting (its tuned lr/wd).

    Columns: model, stem, epochs, gap, gap_std, then for each optimizer (prefix sgd_, adamw_): error,
    error_std, n (finished runs), diverged (diverged runs), lr, wd, settings. Only schedules run with both
    optimizers appear. Diverged runs are reported, not dropped: when every run of one optimizer
    diverged, gap is NaN and its `*_diverged` count says so (the paper draws it as a failure).
    """
    keys = _cell_keys(df, "epochs")
    points = _best_settings(seed_groups(df), keys + ["optimizer"])
    measured = ["error", "error_std", "n", "diverged", *_present(points, ("lr", "wd")), "settings"]

    def side(name: str) -> pd.DataFrame:
        part = points[points["optimizer"] == name][keys + measured]
        return part.rename(columns={c: f"{name}_{c}" for c in measured})

    pairs = side("sgd").merge(side("adamw"), on=keys)
    pairs["gap"] = pairs["sgd_error"] - pairs["adamw_error"]
    pairs["gap_std"] = np.sqrt(pairs["sgd_error_std"] ** 2 + pairs["adamw_error_std"] ** 2)
    return _ordered(pairs.sort_values(keys), keys + ["gap", "gap_std"])


# --- lr/wd stability: the EDF of Δerror --------------------------------------------------------------

def check_diverged_convention(diverged: str) -> None:
    """One line naming a `diverged` that is not in DIVERGED_CONVENTIONS, and what is allowed."""
    if diverged not in DIVERGED_CONVENTIONS:
        raise ConfigError(f"diverged={diverged!r} is not allowed: choose one of {', '.join(DIVERGED_CONVENTIONS)}")


def lrwd_results(df: pd.DataFrame, diverged: str = "stemsweep") -> pd.DataFrame:
    """The runs the lr/wd EDFs count, and at which error, by the `diverged` convention: "stemsweep"
    (`results`: a diverged run's error is NaN) or "pycls" (a diverged run's error is its
    error_before_divergence; one without is left out, as pycls's load_sweep drops a job that never
    evaluated its EMA)."""
    check_diverged_convention(diverged)
    runs = results(df)
    if diverged == "stemsweep":
        return runs
    if "error_before_divergence" not in runs.columns:
        raise ConfigError("diverged='pycls' counts each diverged run at its error before divergence: add "
                         "it with stemsweep.analysis.with_error_before_divergence(table, source)")
    is_diverged = runs["status"] == "diverged"
    runs.loc[is_diverged, "error"] = runs.loc[is_diverged, "error_before_divergence"]
    return runs[runs["error"].notna()]


def _lrwd_deltas(df: pd.DataFrame, diverged: str) -> tuple[pd.DataFrame, list[str]]:
    """The runs `lrwd_results` counts with best_error (of their group), delta = error − best_error
    (inf for a run without an error, a diverged one by stemsweep's convention: it falls under no Δ)
    and runs (the group's size, such runs included)."""
    runs = lrwd_results(df, diverged)
    keys = _cell_keys(runs, "optimizer", *_present(runs, ("epochs",)))
    grouped = runs.groupby(keys, dropna=False)
    runs["best_error"] = grouped["error"].transform("min")
    runs["delta"] = (runs["error"] - runs["best_error"]).fillna(np.inf)
    runs["runs"] = grouped["status"].transform("size")
    return runs, keys


def lrwd_edf(df: pd.DataFrame, diverged: str = "stemsweep") -> pd.DataFrame:
    """The EDF of Δerror = error − the best error of the same model, optimizer (and schedule): one
    row per run with an error with model, optimizer, delta and edf = the share of the group's runs
    whose delta is ≤ this one (the EDF just after its step; the paper's F(Δ) = share with Δerror < Δ).

    By stemsweep's convention (`diverged`, DIVERGED_CONVENTIONS) diverged runs are no rows but count
    in the group's size (`runs`), and fall under no Δ: with diverged runs the EDF never reaches 1. By
    pycls's, a diverged run that evaluated is a row at its error before divergence, and one that never
    did is left out. Also: stem, epochs, lr, wd, seed, error, best_error.
    """
    runs, keys = _lrwd_deltas(df, diverged)
    runs["edf"] = runs.groupby(keys, dropna=False)["delta"].rank(method="max") / runs["runs"]
    rows = runs[np.isfinite(runs["delta"])]
    columns = keys + ["delta", "edf", *_present(runs, ("lr", "wd", "seed")), "error", "best_error", "runs",
                      *_present(runs, ("signature",))]
    return rows[columns].sort_values(keys + ["delta"]).reset_index(drop=True)


def edf_band(df: pd.DataFrame, level: float = 0.95, samples: int = 1000, seed: int = 0,
             diverged: str = "stemsweep") -> pd.DataFrame:
    """A bootstrap confidence band of each group's EDF, at every Δ where the EDF steps.

    The group's runs (those `lrwd_edf` counts by the `diverged` convention) are drawn again with
    replacement `samples` times, the Δs held fixed, and the EDF of each draw evaluated; lower/upper
    are its (1 ∓ level)/2 quantiles. Columns: the group's (model, stem, optimizer, epochs), delta,
    edf, lower, upper.
    """
    if not 0 < level < 1:
        raise ConfigError(f"level={level} is not allowed: a number in (0, 1)")
    runs, keys = _lrwd_deltas(df, diverged)
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    bands = []
    for key, group in runs.groupby(keys, dropna=False, sort=True):
        deltas = np.sort(group["delta"].to_numpy())  # diverged runs (inf) last
        steps = np.unique(deltas[np.isfinite(deltas)])
        if steps.size == 0:
            continue
        size = deltas.size
        under = np.searchsorted(deltas, steps, side="right")  # runs with delta ≤ each step
        # How often each run is drawn, per bootstrap sample; summed over the runs under each step.
        draws = rng.integers(0, size, (samples, size)) + size * np.arange(samples)[:, None]
        drawn = np.bincount(draws.ravel(), minlength=samples * size).reshape(samples, size)
        drawn_under = np.cumsum(drawn, axis=1)[:, under - 1] / size
        lower, upper = np.quantile(drawn_under, quantiles, axis=0)
        bands.append(pd.DataFrame({**dict(zip(keys, key, strict=True)), "delta": steps,
                                   "edf": under / size, "lower": lower, "upper": upper}))
    if not bands:
        return pd.DataFrame(columns=keys + ["delta", "edf", "lower", "upper"])
    return pd.concat(bands, ignore_index=True)


def edf_summary(df: pd.DataFrame, within: tuple[float, ...] = (1.0, 4.0), diverged: str = "stemsweep"
                ) -> pd.DataFrame:
    """Per model, optimizer (and schedule): runs, finished, diverged (the runs `lrwd_edf` counts by the
    `diverged` convention, and the done and diverged ones among them), the best run (best_error,
    best_lr, best_wd) and, for each t in `within`, within_<t> = F(t), the share of all those runs
    (diverged ones included) less than t points worse than the best."""
    runs, keys = _lrwd_deltas(df, diverged)
    rows = []
    for key, group in runs.groupby(keys, dropna=False, sort=True):
        finished = group[group["status"] == "done"]
        best = group.loc[group["error"].idxmin()] if group["error"].notna().any() else None
        row = {**dict(zip(keys, key, strict=True)), "runs": len(group), "finished": len(finished),
               "diverged": int((group["status"] == "diverged").sum()),
               "best_error": np.nan if best is None else best["error"]}
        for column in _present(group, ("lr", "wd")):
            row[f"best_{column}"] = np.nan if best is None else best[column]
        for points in within:
            row[f"within_{points:g}"] = float((group["delta"] < points).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def edf_ks(df: pd.DataFrame, diverged: str = "stemsweep") -> pd.DataFrame:
    """The two-sample Kolmogorov–Smirnov test (scipy.stats.ks_2samp) between every two models'
    Δerror distributions, for each optimizer (and schedule), over the runs `lrwd_edf` counts by the
    `diverged` convention: by stemsweep's, diverged runs enter as Δ = +inf, as in the EDF. Columns:
    optimizer, epochs, model_a, model_b, n_a, n_b, statistic, pvalue."""
    runs, keys = _lrwd_deltas(df, diverged)
    across = [k for k in keys if k not in MODEL_COLUMNS]
    rows = []
    for key, part in runs.groupby(across, dropna=False, sort=True):
        deltas = {model: group["delta"].to_numpy() for model, group in part.groupby("model", sort=True)}
        for model_a, model_b in itertools.combinations(deltas, 2):
            test = ks_2samp(deltas[model_a], deltas[model_b])
            rows.append({**dict(zip(across, key, strict=True)), "model_a": model_a, "model_b": model_b,
                         "n_a": deltas[model_a].size, "n_b": deltas[model_b].size,
                         "statistic": float(test.statistic), "pvalue": float(test.pvalue)})
    columns = across + ["model_a", "model_b", "n_a", "n_b", "statistic", "pvalue"]
    return pd.DataFrame(rows, columns=columns)


# --- peak performance ------------------------------------------------------------------------------

def paper_top1_errors() -> pd.DataFrame:
    """The paper's Table 2 (ImageNet-1k top-1 error, percent): model, paper_100ep, paper_200ep,
    paper_400ep, paper_in21k (pre-trained on ImageNet-21k, then ImageNet-1k)."""
    paper = pd.read_csv(PAPER_DIR / "imagenet_top1_error.csv")
    names = {f"epochs_{e}": f"paper_{e}ep" for e in PAPER_SCHEDULES}
    return paper.rename(columns={**names, "in21k_then_in1k": "paper_in21k"})


def peak_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each model's best error (its best setting over schedules and optimizers, mean over seeds)
    beside the paper's.

    Columns: model, stem, error, error_std, n, diverged, epochs, optimizer, lr, wd, …; paper_error
    = the paper's error at the same schedule (at paper_in21k for a pre-trained run) and difference
    = error − paper_error, then the paper's row (paper_100ep … paper_in21k). The paper's numbers are
    given only where the data set is ImageNet (or the table has no dataset column).
    """
    keys = _cell_keys(df)
    best = _best_settings(seed_groups(df), keys)
    table = best.merge(paper_top1_errors(), on="model", how="left")
    paper_columns = [f"paper_{e}ep" for e in PAPER_SCHEDULES] + ["paper_in21k"]
    if "dataset" in table.columns:
        table.loc[table["dataset"] != "imagenet", paper_columns] = np.nan
    paper_error = pd.Series(np.nan, index=table.index)
    for epochs in PAPER_SCHEDULES:
        paper_error = paper_error.mask(table["epochs"].eq(epochs).fillna(False).astype(bool),
                                       table[f"paper_{epochs}ep"])
    if "pretrained" in table.columns:
        paper_error = paper_error.mask(table["pretrained"].fillna(False).astype(bool), table["paper_in21k"])
    table["paper_error"] = paper_error
    table["difference"] = table["error"] - table["paper_error"]
    first = keys + ["error", "error_std", "n", "diverged", "epochs", "optimizer", *RECIPE_COLUMNS,
                    "paper_error", "difference"]
    table = _ordered(table, first)
    return table[[c for c in table.columns if c not in paper_columns] + paper_columns]
