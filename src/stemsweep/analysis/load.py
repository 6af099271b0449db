"""Run records → pandas tables: one row per run (`load_runs`), one row per epoch (`load_history`).

A source is a runs directory (one subdirectory per run, docs/record.md) or a W&B project:

- an existing directory is a runs directory;
- ``wandb:entity/project`` is a W&B project;
- ``entity/project`` that is not a directory is a W&B project too, unless its first part is an
  existing directory (``runs/mini`` with ``runs/`` present is a mistyped path, not a project: asking
  an unreachable W&B server would hang for minutes).

Only ``summary.json`` is read per run: it carries every config field the analyses need, so neither
YAML nor ``metrics.jsonl`` is parsed to load runs (10,000 runs load in well under a second). A record
written by older code is read through record/summary.py's ``upgrade`` (one written before summaries
carried ``setting`` gets it from its ``config.yaml``: slower, once per such run).
A record that cannot be read is reported once with its path (a `CorruptRecordWarning`) and skipped;
the paths of skipped records are also kept in ``table.attrs["skipped"]``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stemsweep.errors import ConfigError
from stemsweep.models.stems import record_stem
from stemsweep.record.rundir import STATUSES, CorruptRecord, RunDir
from stemsweep.record.summary import BOOKKEEPING_FIELDS, MODEL_ERROR, upgrade
from stemsweep.record.trackers import flatten

# The error the analyses use (the `error` column): the paper's is the EMA model's best top-1 error.
ERROR_CHOICES = ("best_ema_error", "best_error", "final_ema_error", "final_error")
# A run without an EMA error (EMA off, or never mostly trained weights) has the model's own stand in
# for it, as in its study error (record/summary.py).
EMA_FALLBACK = MODEL_ERROR

# The columns of load_runs, in order; any further scalar summary field follows them.
RUN_COLUMNS = (
    "model", "size", "family", "stem", "optimizer", "lr", "wd", "epochs", "batch_size", "seed",
    "dataset", "train_subset", "aug", "init_from", "pretrained", "sweep",
    "status", "error", "best_ema_error", "final_ema_error", "best_error", "final_error",
    "epochs_done", "diverged_epoch", "error_message", "wall_time_s", "images_per_s",
    "flops_b", "params_m", "acts_m", "signature", "setting", "run_dir",
)
HISTORY_COLUMNS = ("signature", "model", "epoch", "train_loss", "train_error", "test_error", "ema_test_error",
                   "lr", "images_per_s", "elapsed_s", "run_dir")

# The summary.json fields that come from the run's config.
CONFIG_COLUMNS = ("model", "size", "family", "stem", "optimizer", "lr", "wd", "epochs", "batch_size", "seed",
                  "dataset", "train_subset", "aug", "init_from", "sweep", "signature", "setting")
# A W&B run's config is the flattened run config (training passes it to wandb.init); these are the
# keys that give the summary.json config fields. They win over run.summary, whose `lr` and
# `images_per_s` are the last logged epoch's until training copies summary.json there at the end.
WANDB_CONFIG_KEYS = {
    "size": "model.size", "stem": "stem.name", "optimizer": "optimizer.name", "lr": "optimizer.lr",
    "wd": "optimizer.wd", "epochs": "epochs", "batch_size": "batch_size", "seed": "seed",
    "dataset": "data.name", "train_subset": "data.train_subset", "aug": "aug.name", "sweep": "sweep",
    "init_from": "init_from", "signature": "signature", "setting": "setting",
}
# W&B run states → record statuses, for runs whose summary has no status yet (training writes it at
# the end). A run that stopped without finishing is a failed one.
WANDB_STATES = {"running": "running", "pending": "running", "finished": "done",
                "crashed": "failed", "failed": "failed", "killed": "failed"}


# What the notebooks read (runs_source): STEMSWEEP_RUNS, else this repository's runs/, else the mini study's
# committed records, which need no training.
RUNS_ENV = "STEMSWEEP_RUNS"
REPOSITORY = Path(__file__).resolve().parents[3]
COMMITTED_RECORDS = Path("results") / "mini-study"


def runs_source(value: str | None = None, repository: Path = REPOSITORY) -> str:
    """The records a notebook reads: `value`, else $STEMSWEEP_RUNS, as a source for load_runs.

    - ``wandb:entity/project`` (or ``entity/project``): a W&B project, as load_runs takes it;
    - a folder of records: a path, relative to the working directory or else to the repository
      (Jupyter starts a notebook's kernel in the notebook's folder, analysis/);
    - a study's name: the folder its runs are in: runs/NAME/, or the `runs_root=` its study file
      (studies/NAME.yaml) gives, e.g. runs/mini-study for `mini`;
    - unset or empty: runs/ when it holds records, or the one folder in runs/ that does (a study's);
      with none, the mini study's committed records (results/mini-study). runs/ holding several
      studies' records is a ConfigError that names them: one EDF over two studies would mix them.
    """
    text = (value if value is not None else os.environ.get(RUNS_ENV, "")).strip()
    if text:
        folder = _existing(Path(text), repository)
        if folder is None and (repository / "studies" / f"{text}.yaml").is_file():
            study_runs = _study_runs(text, repository)
            folder = _existing(study_runs, repository)
            if folder is None:
                raise ConfigError(f"{RUNS_ENV}={text} is not allowed: study {text}'s runs folder {study_runs} is not "
                                  f"here; run the study first (`stemsweep study run {text}`), or give a records folder")
        folder = folder or _existing(Path("runs") / text, repository)
        if folder is not None:
            return str(folder)
        if text.startswith("wandb:") or re.fullmatch(r"[\w.-]+/[\w.-]+", text):
            return text  # a W&B project (load_runs tells a mistyped folder from one)
        raise ConfigError(f"{RUNS_ENV}={text} is not allowed: it is no records folder, no study's runs folder and "
                          "no W&B project; give a folder of run records, a study's name (its runs in runs/NAME/) "
                          "or wandb:entity/project")
    runs = _existing(Path("runs"), repository)
    if runs is not None:
        if _holds_records(runs):
            return str(runs)
        studies = sorted(d for d in runs.iterdir() if d.is_dir() and _holds_records(d))
        if len(studies) == 1:
            return str(studies[0])
        if studies:
            raise ConfigError(f"{RUNS_ENV} is not set and {runs} holds the records of several studies "
                              f"({', '.join(d.name for d in studies)}): set {RUNS_ENV} to one of them")
    return str(_existing(COMMITTED_RECORDS, repository) or COMMITTED_RECORDS)


def _existing(path: Path, repository: Path) -> Path | None:
    """`path` if it is a folder, else the repository's folder of that relative path, else None."""
    for candidate in (path, repository / path if not path.is_absolute() else None):
        if candidate is not None and candidate.is_dir():
            return candidate.absolute()  # said in full: a notebook's kernel runs in another folder than the user
    return None


def _holds_records(folder: Path) -> bool:
    return next(folder.glob("*/summary.json"), None) is not None


def _study_runs(name: str, repository: Path) -> Path:
    """The runs folder of study NAME (studies/NAME.yaml): the last `runs_root=` of its overrides, else
    runs/NAME. (The study file is read here, not through stemsweep.study, which imports the analysis: the
    layers go one way.)"""
    runs_root = Path("runs") / name
    try:
        overrides = (yaml.safe_load((repository / "studies" / f"{name}.yaml").read_text()) or {}).get("overrides")
    except (yaml.YAMLError, AttributeError):
        overrides = None  # a broken study file: `stemsweep study` says what is wrong with it
    for override in overrides or []:
        key, _, root = str(override).partition("=")
        if key.lstrip("+") == "runs_root":
            runs_root = Path(root)
    return runs_root


class CorruptRecordWarning(UserWarning):
    """A run record that could not be read and was skipped; the message names its path."""


def load_runs(source: str | os.PathLike | Iterable[str | os.PathLike], error: str = "best_ema_error",
              api: Any = None) -> pd.DataFrame:
    """One row per run of one or several sources: its config, results, status and where it lives.

    Columns (RUN_COLUMNS): the config (model — the paper's name, e.g. ViT_C-4GF —, size, family,
    stem (NaN for RegNetY), optimizer, lr and wd per 2048 images, epochs, batch_size, seed, dataset,
    train_subset, aug, init_from, pretrained = whether init_from is set, sweep), the status
    (running | done | failed | diverged), the errors in percent (final/best of the model and of the
    EMA; NaN when not reached, always NaN for a diverged run), `error` = the one the analyses use
    (`error`, default the paper's best_ema_error), epochs_done, diverged_epoch, error_message,
    wall_time_s, images_per_s, flops_b, params_m, acts_m, signature, setting (the signature without
    the seed: runs with equal settings differ only by seed; a record from before summaries carried
    it gets it from its config.yaml, else NaN) and run_dir (the run's directory, or ``wandb:entity/project/<run id>``).

    `api` replaces ``wandb.Api()`` for W&B sources (tests pass a fake one).
    """
    if error not in ERROR_CHOICES:
        raise ConfigError(f"error={error!r} is not allowed: choose one of {', '.join(ERROR_CHOICES)}")
    records, skipped = [], []
    for kind, where in _sources(source):
        read = _runs_dir_summaries if kind == "dir" else _wandb_summaries
        records.extend(read(where, api, skipped))
    table = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    table = _run_table(table, error)
    table.attrs["skipped"] = skipped
    return table


def load_history(source: str | os.PathLike | Iterable[str | os.PathLike], api: Any = None) -> pd.DataFrame:
    """One row per finished epoch of every run: signature, model, epoch, the metrics.jsonl fields
    (train_loss, train_error, test_error, ema_test_error in percent, lr applied, images_per_s,
    elapsed_s) and run_dir. Merge with load_runs on `signature` for the config columns.

    A run with a line of metrics.jsonl that is not JSON is reported once with path and line number,
    and skipped.
    """
    rows, skipped = [], []
    for kind, where in _sources(source):
        read = _runs_dir_history if kind == "dir" else _wandb_history
        rows.extend(read(where, api, skipped))
    history = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(HISTORY_COLUMNS))
    first = [c for c in HISTORY_COLUMNS if c in history.columns]
    history = history[first + [c for c in history.columns if c not in first]]
    history.attrs["skipped"] = skipped
    return history


def with_error_before_divergence(table: pd.DataFrame, source: str | os.PathLike | Iterable[str | os.PathLike],
                                 error: str = "best_ema_error", api: Any = None) -> pd.DataFrame:
    """`table` (load_runs of `source`) with the column error_before_divergence: for a diverged run, the
    `error` it reached over the epochs it evaluated before its loss stopped being finite (its record
    has none, so it is read from its per-epoch metrics: best_* the lowest, final_* the last epoch's;
    as in load_runs, the model's error stands in where the EMA's is missing); NaN for a diverged run
    that never evaluated, and for every other run. The authors' pycls counts diverged runs at it
    (stability.DIVERGED_CONVENTIONS)."""
    if error not in ERROR_CHOICES:
        raise ConfigError(f"error={error!r} is not allowed: choose one of {', '.join(ERROR_CHOICES)}")
    column = {"best_ema_error": "ema_test_error", "final_ema_error": "ema_test_error",
              "best_error": "test_error", "final_error": "test_error"}
    diverged = set(table.loc[table["status"] == "diverged", "run_dir"])
    history = load_history(source, api) if diverged else pd.DataFrame(columns=list(HISTORY_COLUMNS))
    history = history[history["run_dir"].isin(diverged)].sort_values(["run_dir", "epoch"])

    def reached(epochs: pd.DataFrame) -> float:
        def over_epochs(name: str) -> float:
            if name not in epochs:  # e.g. no EMA error logged at all
                return float("nan")
            values = pd.to_numeric(epochs[name], errors="coerce")
            return values.min() if error.startswith("best") else values.iloc[-1]

        value = over_epochs(column[error])
        if pd.isna(value) and error in EMA_FALLBACK:
            value = over_epochs(column[EMA_FALLBACK[error]])
        return float(value)

    before = {run_dir: reached(epochs) for run_dir, epochs in history.groupby("run_dir", sort=False)}
    table = table.copy()
    table["error_before_divergence"] = table["run_dir"].map(before).astype("float64")
    return table


# --- sources ---------------------------------------------------------------------------------------

def _sources(source) -> list[tuple[str, str]]:
    """("dir", path) or ("wandb", "entity/project") for each source given, all checked first."""
    many = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    return [_source(os.fspath(one)) for one in many]


def _source(text: str) -> tuple[str, str]:
    if text.startswith("wandb:"):
        return "wandb", text.removeprefix("wandb:").strip("/")
    if Path(text).is_dir():
        return "dir", text
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not Path(text.split("/")[0]).is_dir():
        return "wandb", text
    raise ConfigError(f"{text} is neither a runs directory nor a W&B project "
                            "(write wandb:entity/project for a W&B project)")


def _skip(path: str, problem: str, skipped: list[str]) -> None:
    """Report a record that cannot be read (`problem` names the file) and remember its path."""
    warnings.warn(f"{problem}; the run is skipped", CorruptRecordWarning, stacklevel=2)
    skipped.append(path)


# --- runs directories ------------------------------------------------------------------------------

def _run_dirs(root: str) -> Iterator[RunDir]:
    # Hidden entries (.submitit, editors' files) are not runs.
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    for name in names:
        yield RunDir(root, name)


def _read_summary(run: RunDir, skipped: list[str]) -> dict[str, Any] | None:
    try:
        summary = run.read_summary()
    except (CorruptRecord, UnicodeDecodeError) as exc:
        _skip(str(run.path), str(exc), skipped)
        return None
    if summary is None:
        _skip(str(run.path), f"{run.path}: no summary.json", skipped)
    return summary


def _runs_dir_summaries(root: str, api: Any, skipped: list[str]) -> Iterator[dict[str, Any]]:
    for run in _run_dirs(root):
        summary = _read_summary(run, skipped)
        if summary is not None:
            summary["run_dir"] = str(run.path)
            yield summary


def _runs_dir_history(root: str, api: Any, skipped: list[str]) -> Iterator[dict[str, Any]]:
    for run in _run_dirs(root):
        summary = _read_summary(run, skipped)
        if summary is None:
            continue
        try:
            epochs = run.read_metrics()
        except (CorruptRecord, UnicodeDecodeError) as exc:
            _skip(str(run.path), str(exc), skipped)
            continue
        who = {"signature": summary["signature"], "model": summary.get("model"),
               "run_dir": str(run.path)}
        for epoch in epochs:
            yield {**who, **epoch}


# --- W&B -------------------------------------------------------------------------------------------

def _wandb_runs(project: str, api: Any) -> Iterator[Any]:
    if api is None:
        import wandb

        api = wandb.Api()
    yield from api.runs(project)


def wandb_summary(run: Any, project: str) -> dict[str, Any]:
    """A W&B run as the summary.json record it copies.

    - run.summary: every scalar summary.json field (training copies them there when the run ends:
      status, model, final/best errors, epochs_done, wall_time_s, flops_b, …); keys starting with
      ``_`` are W&B's own and dropped.
    - run.config: the flattened run config; WANDB_CONFIG_KEYS maps its keys to the config columns
      (``model.size`` → size, ``stem.name`` → stem with ``none`` → NaN, ``optimizer.name`` →
      optimizer, ``optimizer.lr``/``optimizer.wd`` → lr/wd, ``data.name`` → dataset, …). A config
      that already holds summary.json's flat names (``lr``, ``model``, …) is read as is. Config
      values win over summary ones.
    - status: the summary's when it has one, else from run.state (finished → done, running or
      pending → running, crashed/failed/killed → failed); a summary still saying ``running`` for a
      run W&B knows stopped is failed.
    - model: the summary's, else run.name (training names the W&B run by the paper's model name).
    - signature: the config's, else run.id (training uses the signature as the W&B run id).
    - run_dir: ``wandb:<project>/<run id>``.
    """
    summary = {k: v for k, v in flatten(run.summary).items() if not k.startswith("_")}
    config = flatten(run.config)
    record = {k: v for k, v in summary.items() if not _is_nested(v)}
    for column in CONFIG_COLUMNS:
        if column in config:
            record[column] = config[column]
    for column, key in WANDB_CONFIG_KEYS.items():
        if key in config:
            record[column] = config[key]
    if "stem" in record:
        record["stem"] = record_stem(record["stem"])
    if not record.get("model"):
        record["model"] = run.name
    if not record.get("signature"):
        record["signature"] = run.id
    if "epochs_done" not in record and "epoch" in summary:
        record["epochs_done"] = summary["epoch"]
    state = WANDB_STATES.get(str(run.state).lower(), "failed")
    if record.get("status") not in STATUSES or (record["status"] == "running" and state == "failed"):
        record["status"] = state
    record["run_dir"] = f"wandb:{project}/{run.id}"
    return upgrade(record)


def _wandb_summaries(project: str, api: Any, skipped: list[str]) -> Iterator[dict[str, Any]]:
    for run in _wandb_runs(project, api):
        where = f"wandb:{project}/{getattr(run, 'id', '?')}"
        try:
            yield wandb_summary(run, project)
        except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the load
            _skip(where, f"{where}: unreadable W&B run ({type(exc).__name__}: {exc})", skipped)


def _wandb_history(project: str, api: Any, skipped: list[str]) -> Iterator[dict[str, Any]]:
    for run in _wandb_runs(project, api):
        where = f"wandb:{project}/{getattr(run, 'id', '?')}"
        try:
            record = wandb_summary(run, project)
            rows = []
            for logged in run.scan_history():
                row = {k: v for k, v in logged.items() if not k.startswith("_")}
                row.setdefault("epoch", logged.get("_step"))
                rows.append({"signature": record["signature"], "model": record["model"], "run_dir": where,
                             **row})
        except Exception as exc:  # noqa: BLE001
            _skip(where, f"{where}: unreadable W&B history ({type(exc).__name__}: {exc})", skipped)
            continue
        yield from rows


# --- the table -------------------------------------------------------------------------------------

def _run_table(table: pd.DataFrame, error: str) -> pd.DataFrame:
    for column in RUN_COLUMNS:
        if column not in table.columns:
            table[column] = pd.Series(dtype="float64") if table.empty else None
    nested = [c for c in table.columns if table[c].dtype == object and table[c].map(_is_nested).any()]
    table = table.drop(columns=nested + [c for c in BOOKKEEPING_FIELDS if c in table.columns])
    table = table[list(RUN_COLUMNS) + [c for c in table.columns if c not in RUN_COLUMNS]].copy()
    numbers = ("lr", "wd", *ERROR_CHOICES, "wall_time_s", "images_per_s", "flops_b", "params_m", "acts_m")
    for column in numbers:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    for column in ("epochs", "batch_size", "seed", "epochs_done", "diverged_epoch", "train_subset"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    # A diverged run has no result, whatever was copied into it.
    diverged = table["status"] == "diverged"
    table.loc[diverged, list(ERROR_CHOICES)] = float("nan")
    chosen = table[error]
    if error in EMA_FALLBACK:
        chosen = chosen.fillna(table[EMA_FALLBACK[error]])
    table["error"] = chosen
    table["pretrained"] = table["init_from"].notna()
    return table.reset_index(drop=True)


def _is_nested(value: Any) -> bool:
    return isinstance(value, (dict, list))
