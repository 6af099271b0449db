"""The study's figures, drawn like the paper's, from the tables of `stemsweep.analysis.stability`.

Every function returns a matplotlib `Figure` built without pyplot (no global state, no display
needed: it renders through Agg) for one data set's tables; `save_figure` writes PNG and PDF.
Colours are fixed per family and stem — ViT_P vermillion, ViT_C blue, RegNetY green (Okabe–Ito,
readable for colour-blind readers) — lighter for smaller sizes; markers are per family too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, ScalarFormatter

from stemsweep.analysis.stability import check_diverged_convention, lrwd_edf, results

FAMILY_COLORS = {"ViT_P": "#D55E00", "ViT_C": "#0072B2", "RegNetY": "#009E73"}
FAMILY_MARKERS = {"ViT_P": "o", "ViT_C": "s", "RegNetY": "^"}
OTHER_COLOR, OTHER_MARKER = "#666666", "D"
SIZE_ORDER = ("XS", "S", "1GF", "4GF", "16GF", "18GF", "36GF")
OPTIMIZER_NAMES = {"adamw": "AdamW", "sgd": "SGD"}
DIVERGED_MARKER = dict(marker="x", s=60, linewidths=2, clip_on=False, zorder=5)


# --- style -----------------------------------------------------------------------------------------

def model_family(model: str) -> str:
    """ViT_P, ViT_C, RegNetY (or whatever precedes the size in the name)."""
    return model.split("-")[0]


def _size_rank(model: str) -> tuple[int, str]:
    size = model.partition("-")[2]
    return (SIZE_ORDER.index(size) if size in SIZE_ORDER else len(SIZE_ORDER), size)


def model_order(models: Iterable[str]) -> list[str]:
    """ViT_P, ViT_C, RegNetY, others; smaller sizes first within each."""
    families = list(FAMILY_COLORS)

    def rank(model: str):
        family = model_family(model)
        return (families.index(family) if family in families else len(families), family, _size_rank(model))

    return sorted(set(models), key=rank)


def model_colors(models: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """The family's colour for its largest size among `models`, lighter for the smaller ones."""
    ordered = model_order(models)
    colors = {}
    for model in ordered:
        family = [m for m in ordered if model_family(m) == model_family(model)]
        lighter = 0.55 * (len(family) - 1 - family.index(model)) / max(len(family) - 1, 1)
        base = np.array(to_rgb(FAMILY_COLORS.get(model_family(model), OTHER_COLOR)))
        colors[model] = tuple(base + (1 - base) * lighter)
    return colors


def model_marker(model: str) -> str:
    return FAMILY_MARKERS.get(model_family(model), OTHER_MARKER)


def optimizer_name(optimizer: str) -> str:
    """The optimizer's name as the paper writes it (AdamW, SGD), in figures and the report alike."""
    return OPTIMIZER_NAMES.get(optimizer, optimizer)


def _optimizers(table: pd.DataFrame, column: str = "optimizer") -> list[str]:
    known = [o for o in OPTIMIZER_NAMES if o in set(table[column])]
    return known + sorted(set(table[column]) - set(known))


def _panels(count: int, width: float = 4.4, height: float = 3.6, rows: int = 1, sharey=True):
    fig = Figure(figsize=(width * count, height * rows), layout="constrained")
    axes = fig.subplots(rows, count, squeeze=False, sharey=sharey)
    return fig, axes


def _mark_diverged(ax, xs, color) -> None:
    """A cross at the top edge of the axes for each diverged point: a failed setting, off the scale."""
    xs = np.asarray(xs, dtype=float)
    if xs.size:
        ax.scatter(xs, np.full(xs.size, 1.0), color=color, transform=ax.get_xaxis_transform(),
                   **DIVERGED_MARKER)


def _diverged_handle() -> Line2D:
    return Line2D([], [], color="0.3", marker="x", linestyle="none", markersize=7, markeredgewidth=2,
                  label="diverged (all runs)")


def _epoch_axis(ax, epochs) -> None:
    ticks = sorted({int(e) for e in epochs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training epochs")


# --- training-length stability ---------------------------------------------------------------------

def training_length_figure(gaps: pd.DataFrame) -> Figure:
    """Δ top-1 error to the longest schedule against epochs (training_length_gap), one panel per
    optimizer, one line per model; error bars are the seed spread (gap_std)."""
    optimizers = _optimizers(gaps)
    colors = model_colors(gaps["model"])
    fig, axes = _panels(len(optimizers))
    any_diverged = False
    for ax, optimizer in zip(axes[0], optimizers, strict=True):
        part = gaps[gaps["optimizer"] == optimizer]
        for model in model_order(part["model"]):
            line = part[part["model"] == model].sort_values("epochs")
            epochs = line["epochs"].to_numpy(dtype=float)
            ax.errorbar(epochs, line["gap"].to_numpy(float), yerr=line["gap_std"].fillna(0).to_numpy(float),
                        color=colors[model], marker=model_marker(model), capsize=2, label=model)
            failed = (line["gap"].isna() & (line["diverged"] > 0)).to_numpy()
            _mark_diverged(ax, epochs[failed], colors[model])
            any_diverged |= bool(failed.any())
        ax.axhline(0, color="0.6", linewidth=0.8)
        _epoch_axis(ax, part["epochs"])
        ax.set_title(optimizer_name(optimizer))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Δ top-1 error to the longest schedule (points)")
    unique = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    if any_diverged:
        unique["diverged"] = _diverged_handle()
    fig.legend(unique.values(), unique.keys(), loc="outside right upper", frameon=False)
    fig.suptitle("Training-length stability")
    return fig


def epochs_label(epochs: int) -> str:
    """'1 epoch', '4 epochs'."""
    return f"{epochs} epoch" if epochs == 1 else f"{epochs} epochs"


# --- optimizer stability ---------------------------------------------------------------------------

def optimizer_gap_figure(gaps: pd.DataFrame) -> Figure:
    """error(SGD) − error(AdamW) per model (optimizer_gap): one bar per schedule, lighter for shorter
    schedules; a cross at the top where every run of one optimizer diverged."""
    models = model_order(gaps["model"])
    schedules = sorted({int(e) for e in gaps["epochs"]})
    colors = model_colors(models)
    width = 0.8 / len(schedules)
    shorter = [0.6 * (len(schedules) - 1 - j) / max(len(schedules) - 1, 1) for j in range(len(schedules))]
    fig = Figure(figsize=(max(4.8, 1.3 * len(models) + 2.2), 3.8), layout="constrained")
    ax = fig.subplots()
    any_diverged = False
    for i, model in enumerate(models):
        rows = gaps[gaps["model"] == model]
        for j, epochs in enumerate(schedules):
            row = rows[rows["epochs"] == epochs]
            if row.empty:
                continue
            row = row.iloc[0]
            x = i + (j - (len(schedules) - 1) / 2) * width
            shade = _lighter(colors[model], shorter[j])
            if pd.isna(row["gap"]):
                _mark_diverged(ax, [x], colors[model])
                any_diverged = True
                continue
            std = row["gap_std"]
            ax.bar(x, row["gap"], width * 0.92, color=shade, edgecolor=colors[model],
                   yerr=None if pd.isna(std) else std, capsize=2)
    ax.axhline(0, color="0.4", linewidth=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("top-1 error, SGD − AdamW (points)")
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=_lighter((0.3, 0.3, 0.3), shorter[j]), label=epochs_label(e))
               for j, e in enumerate(schedules)]
    if any_diverged:
        handles.append(_diverged_handle())
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.suptitle("Optimizer stability (above 0: SGD is worse)")
    return fig


def _lighter(color, amount: float) -> tuple[float, float, float]:
    base = np.array(to_rgb(color))
    return tuple(base + (1 - base) * amount)


# --- lr/wd stability -------------------------------------------------------------------------------

# The legend's title: how the curves count diverged runs (stability.DIVERGED_CONVENTIONS).
DIVERGED_LEGEND_TITLES = {"stemsweep": "diverged runs: within no Δ",
                          "pycls": "diverged runs: at their error\nbefore diverging (as pycls)"}


def edf_figure(band: pd.DataFrame, summary: pd.DataFrame, diverged: str = "stemsweep") -> Figure:
    """The EDF of Δerror with its bootstrap band (edf_band), one panel per optimizer, one curve per
    model; the legend gives each model's runs and diverged runs (edf_summary), and its title how
    they were counted (`diverged`: the convention both tables were made with). Dotted lines at 1
    and 4 points."""
    check_diverged_convention(diverged)
    optimizers = _optimizers(band)
    colors = model_colors(band["model"])
    fig, axes = _panels(len(optimizers))
    right = float(band["delta"].max()) * 1.05 or 1.0
    for ax, optimizer in zip(axes[0], optimizers, strict=True):
        part = band[band["optimizer"] == optimizer]
        for model in model_order(part["model"]):
            curve = part[part["model"] == model].sort_values("delta")
            counts = summary[(summary["model"] == model) & (summary["optimizer"] == optimizer)].iloc[0]
            of_them = f", {counts['diverged']} diverged" if counts["diverged"] else ""
            label = f"{model} (n={counts['runs']}{of_them})"
            # Steps to the right edge: the EDF stays at its last value (below 1 if runs diverged).
            delta = np.append(curve["delta"].to_numpy(float), right)
            edf, lower, upper = (_hold_last(curve[c]) for c in ("edf", "lower", "upper"))
            ax.step(delta, edf, where="post", color=colors[model], linewidth=1.8, label=label)
            ax.fill_between(delta, lower, upper, step="post", color=colors[model], alpha=0.15, linewidth=0)
        for points in (1, 4):
            ax.axvline(points, color="0.5", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, right)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("Δ top-1 error to the best (points)")
        ax.set_title(optimizer_name(optimizer))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small", title=DIVERGED_LEGEND_TITLES[diverged],
                  title_fontsize="small")
    axes[0][0].set_ylabel("share of runs with Δerror < Δ")
    fig.suptitle("lr/wd stability: EDF of Δerror (band: bootstrap)")
    return fig


def _hold_last(values: pd.Series) -> np.ndarray:
    values = values.to_numpy(float)
    return np.append(values, values[-1])


def lrwd_scatter_figure(runs: pd.DataFrame, within: float = 1.0) -> Figure:
    """Error against lr and against wd (log axes) for the lr/wd study's runs, one row per optimizer.
    Each model's best run is a star; the shaded span covers the runs less than `within` points
    worse than it (the best region). Diverged runs are crosses at the top edge; runs beyond the
    upper limit are triangles on it."""
    edf = lrwd_edf(runs)
    diverged = results(runs)
    diverged = diverged[diverged["status"] == "diverged"]
    optimizers = _optimizers(pd.concat([edf["optimizer"], diverged["optimizer"]]).to_frame())
    colors = model_colors(pd.concat([edf["model"], diverged["model"]]))
    fig, axes = _panels(2, rows=len(optimizers), sharey="row")
    for row, optimizer in zip(axes, optimizers, strict=True):
        finished = edf[edf["optimizer"] == optimizer]
        failed = diverged[diverged["optimizer"] == optimizer]
        low = finished["error"].min() if len(finished) else 0.0
        top = min(finished["error"].max(), low + 20) + 1 if len(finished) else 100.0
        for ax, axis in zip(row, ("lr", "wd"), strict=True):
            for model in model_order(pd.concat([finished["model"], failed["model"]])):
                color = colors[model]
                points = finished[finished["model"] == model]
                x, error = points[axis].to_numpy(float), points["error"].to_numpy(float)
                off_scale = error > top
                ax.scatter(x[~off_scale], error[~off_scale], color=color, marker=model_marker(model), s=22,
                           alpha=0.85, label=model)
                ax.scatter(x[off_scale], np.full(off_scale.sum(), top), color=color, marker="^", s=22,
                           clip_on=False)
                if len(points):
                    best = points.loc[points["delta"].idxmin()]
                    region = points[points["delta"] < within][axis]
                    ax.axvspan(region.min(), region.max(), color=color, alpha=0.12, linewidth=0)
                    ax.scatter([best[axis]], [best["error"]], color=color, marker="*", s=180,
                               edgecolor="black", linewidths=0.8, zorder=4)
                _mark_diverged(ax, failed[failed["model"] == model][axis], color)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only (and a faster layout)
            ax.set_ylim(low - 1, top)
            ax.set_xlabel(f"{axis} (per 2048 images)" if axis == "lr" else "weight decay")
            ax.set_title(f"{optimizer_name(optimizer)}: error vs {axis}")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("top-1 error (%)")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    handles["best run"] = Line2D([], [], color="0.5", marker="*", markersize=12, markeredgecolor="black",
                                 linestyle="none", label="best run")
    handles[f"best region (< {within:g} point)"] = Patch(color="0.5", alpha=0.25)
    if len(diverged):
        handles["diverged"] = _diverged_handle()
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", frameon=False)
    fig.suptitle("lr/wd stability: error of each (lr, wd) draw")
    return fig


# --- peak performance ------------------------------------------------------------------------------

def peak_figure(peak: pd.DataFrame) -> Figure:
    """Each model's best error (dot, with its seed spread) beside the paper's at the same schedule
    (open diamond) where there is one (peak_table)."""
    models = model_order(peak["model"])
    colors = model_colors(models)
    fig = Figure(figsize=(6.4, 0.45 * len(models) + 1.6), layout="constrained")
    ax = fig.subplots()
    for y, model in enumerate(models):
        row = peak[peak["model"] == model].iloc[0]
        if pd.notna(row["error"]):
            std = row["error_std"]
            ax.errorbar(row["error"], y, xerr=None if pd.isna(std) else std, color=colors[model],
                        marker=model_marker(model), capsize=2)
            ax.annotate(f"{row['error']:.1f} ({int(row['epochs'])} ep, {optimizer_name(row['optimizer'])})",
                        (row["error"], y), textcoords="offset points", xytext=(6, 5), fontsize="small")
        else:
            ax.annotate("every run diverged", (0.02, y), xycoords=("axes fraction", "data"),
                        color=colors[model], va="center")
        if pd.notna(row.get("paper_error", np.nan)):
            ax.scatter(row["paper_error"], y, marker="D", facecolor="none", edgecolor=colors[model], s=50)
    ax.set_yticks(range(len(models)), models)
    ax.set_ylim(len(models) - 0.5, -0.5)  # the first model on top
    ax.margins(x=0.3)  # room for the labels beside the dots
    ax.set_xlabel("top-1 error (%)")
    ax.grid(axis="x", alpha=0.3)
    ours = Line2D([], [], color="0.3", marker="o", linestyle="none", label="best run (mean over seeds)")
    paper = Line2D([], [], color="0.3", marker="D", markerfacecolor="none", linestyle="none",
                   label="paper, same schedule")
    fig.legend(handles=[ours, paper], loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    fig.suptitle("Peak performance")
    return fig


def save_figure(fig: Figure, directory: str | Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.pdf into `directory`; returns their paths. The same figure gives the
    same bytes: the PDF carries no creation date (the PNG never does)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def evidence_figure(waves: pd.DataFrame) -> Figure:
    """An adaptive study's comparisons wave by wave: each one's evidence (log scale) against the replicates
    it had seen, and its threshold; a comparison is settled where its evidence crosses the threshold."""
    names = list(dict.fromkeys(waves["comparison"]))
    fig, axes = _panels(len(names), width=3.6, height=3.0, sharey=False)
    for ax, name in zip(np.atleast_1d(axes).ravel(), names):
        rows = waves[waves["comparison"] == name]
        ax.plot(rows["n"], rows["evidence"], marker="o", color="C0", label="evidence")
        ax.axhline(rows["threshold"].iloc[-1], color="C3", linestyle="--", label="threshold")
        ax.set_yscale("log")
        ax.set_title(f"{name}: {rows['decision'].iloc[-1]}", fontsize=9)
        ax.set_xlabel(f"replicates ({rows['replicate'].iloc[-1]})")
        ax.set_ylabel("evidence (e-value)")
        ax.legend(fontsize=7)
    return fig
