"""load_runs / load_history: run directories and W&B runs → one table; corrupt records skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_records import write_record

from stemsweep.analysis import CorruptRecordWarning, load_history, load_runs
from stemsweep.analysis.load import RUN_COLUMNS
from stemsweep.errors import ConfigError

VIT_C = {"model": "ViT_C-XS", "size": "vit_xs", "family": "vit", "stem": "conv", "optimizer": "adamw",
         "lr": 1e-3, "wd": 0.05, "epochs": 4}


def test_one_row_per_run_with_config_results_and_status(records_dir):
    runs = load_runs(records_dir)
    assert len(runs) == 78
    assert list(runs.columns[:len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert runs["status"].value_counts().to_dict() == {"done": 74, "diverged": 2, "failed": 1, "running": 1}
    assert set(runs["model"]) == {"ViT_P-XS", "ViT_C-XS", "RegNetY-XS", "ViT_P-4GF", "ViT_C-4GF"}
    assert runs["signature"].is_unique
    run_dirs = [Path(d) for d in runs["run_dir"]]
    assert [d.parent for d in run_dirs] == [records_dir] * len(runs)
    assert [d.name for d in run_dirs] == list(runs["signature"])
    regnet = runs[runs["model"] == "RegNetY-XS"]
    assert regnet["stem"].isna().all()
    assert (runs["pretrained"] == False).all()  # noqa: E712
    assert "versions" not in runs.columns  # nested fields are not columns


def test_error_is_the_ema_best_by_default_and_can_be_switched(records_dir):
    runs = load_runs(records_dir)
    done = runs[runs["status"] == "done"]
    assert (done["error"] == done["best_ema_error"]).all()
    final = load_runs(records_dir, error="final_error")
    assert final["error"].equals(final["final_error"])
    with pytest.raises(ConfigError, match="error='top5'"):
        load_runs(records_dir, error="top5")


def test_diverged_runs_are_rows_without_errors(records_dir):
    diverged = load_runs(records_dir).query("status == 'diverged'")
    assert len(diverged) == 2
    assert diverged[["error", "best_ema_error", "final_error"]].isna().all().all()
    assert set(diverged["diverged_epoch"]) == {1, 2}


def test_without_ema_the_model_error_stands_in(tmp_path):
    run = write_record(tmp_path, **VIT_C, final_ema_error=20.0)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(best_ema_error=None, final_ema_error=None)
    (run / "summary.json").write_text(json.dumps(summary))
    runs = load_runs(tmp_path)
    assert runs.loc[0, "error"] == summary["best_error"]


def test_a_record_from_before_settings_gets_its_setting_from_its_config(tmp_path):
    from omegaconf import OmegaConf
    from run_configs import make_config

    from stemsweep.identity import run_identity, setting_signature

    settings = {}
    for seed, warmup in [(0, 1), (1, 1), (0, 2)]:
        cfg = make_config(**{"schedule.warmup_epochs": float(warmup), "data.name": "fashion_mnist", "epochs": 4,
                             "seed": seed})
        run = write_record(tmp_path, **{**VIT_C, "seed": seed, "lr": 1e-3 * warmup}, final_ema_error=20.0)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        summary = json.loads((run / "summary.json").read_text())
        del summary["setting"]
        (run / "summary.json").write_text(json.dumps(summary))
        settings[run.name] = setting_signature(run_identity(cfg))
    runs = load_runs(tmp_path)
    assert dict(zip(runs["signature"], runs["setting"])) == settings
    assert runs["setting"].nunique() == 2  # the two seeds of warm-up 1 are one setting


def test_several_sources_are_one_table(tmp_path):
    write_record(tmp_path / "a", **VIT_C, final_ema_error=20.0)
    write_record(tmp_path / "b", **{**VIT_C, "seed": 1}, final_ema_error=21.0)
    runs = load_runs([tmp_path / "a", str(tmp_path / "b")])
    assert sorted(runs["best_ema_error"]) == [20.0, 21.0]


def test_history_has_every_epoch(records_dir):
    runs = load_runs(records_dir)
    history = load_history(records_dir)
    assert len(history) == runs["epochs_done"].sum()
    assert list(history.columns[:3]) == ["signature", "model", "epoch"]
    one = runs[runs["status"] == "done"].iloc[0]
    epochs = history[history["signature"] == one["signature"]]
    assert list(epochs["epoch"]) == list(range(1, one["epochs_done"] + 1))
    assert epochs["ema_test_error"].min() == pytest.approx(one["best_ema_error"])


@pytest.fixture
def damaged_dir(records_dir, tmp_path) -> tuple[Path, Path, Path]:
    """A copy of the study with a truncated summary.json, a bad line in a metrics.jsonl, a run
    directory without summary.json and a hidden folder."""
    root = tmp_path / "runs"
    shutil.copytree(records_dir, root)
    truncated, bad_line = sorted(p for p in root.iterdir() if (p / "metrics.jsonl").stat().st_size)[:2]
    text = (truncated / "summary.json").read_text()
    (truncated / "summary.json").write_text(text[: len(text) // 2])
    lines = (bad_line / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (bad_line / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (root / "0000000000").mkdir()
    (root / ".submitit").mkdir()
    return root, truncated, bad_line


def _messages(caught, text: str) -> list[str]:
    return [str(w.message) for w in caught if text in str(w.message)]


def test_corrupt_records_are_reported_once_and_skipped(damaged_dir):
    root, truncated, bad_line = damaged_dir
    with pytest.warns(CorruptRecordWarning) as caught:
        runs = load_runs(root)
    assert len(runs) == 77
    assert truncated.name not in set(runs["signature"])
    assert len(_messages(caught, str(truncated / "summary.json"))) == 1
    assert len(_messages(caught, f"{root / '0000000000'}: no summary.json")) == 1
    assert runs.attrs["skipped"] == sorted([str(truncated), str(root / "0000000000")])
    # load_runs reads summary.json only: a bad metrics line does not touch the run's results.
    assert bad_line.name in set(runs["signature"])


def test_a_bad_metrics_line_skips_the_run_in_the_history(damaged_dir):
    root, truncated, bad_line = damaged_dir
    with pytest.warns(CorruptRecordWarning) as caught:
        history = load_history(root)
    assert _messages(caught, f"{bad_line / 'metrics.jsonl'}:2: not valid JSON")
    assert len(_messages(caught, str(bad_line))) == 1
    assert bad_line.name not in set(history["signature"])
    assert truncated.name not in set(history["signature"])
    # Neither do the two runs without a finished epoch (the failed one, one diverged in its first).
    assert history["signature"].nunique() == 78 - 2 - 2


def test_a_path_that_is_no_directory_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="neither a runs directory nor a W&B project"):
        load_runs(tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="wandb:entity/project"):
        load_runs("runs/typo")  # runs/ exists: a mistyped path, not a W&B project


# --- W&B -------------------------------------------------------------------------------------------

class FakeRun:
    """Shaped like wandb.apis.public.Run: what training's WandbTracker leaves there."""

    def __init__(self, record: Path, state: str = "finished", finished: bool = True):
        summary = json.loads((record / "summary.json").read_text())
        self.id = summary["signature"]
        self.name = summary["model"]
        self.state = state
        stem = summary["stem"] or "none"
        # wandb.init(config=...) gets the flattened run config, plus the signature.
        self.config = {
            "model.size": summary["size"], "stem.name": stem, "optimizer.name": summary["optimizer"],
            "optimizer.lr": summary["lr"], "optimizer.wd": summary["wd"], "optimizer.momentum": 0.9,
            "epochs": summary["epochs"], "batch_size": summary["batch_size"], "seed": summary["seed"],
            "data.name": summary["dataset"], "data.train_subset": summary["train_subset"],
            "aug.name": summary["aug"], "sweep": summary["sweep"], "init_from": None,
            "signature": summary["signature"],
        }
        self._history = [json.loads(line) for line in (record / "metrics.jsonl").read_text().splitlines()]
        # run.summary: the last logged row, then (when training finished) summary.json's scalars.
        last = self._history[-1] if self._history else {}
        self.summary = {"_step": len(self._history), "_runtime": 12.0, **last}
        if finished:
            self.summary.update({k: v for k, v in summary.items() if not isinstance(v, dict)})

    def scan_history(self):
        for step, row in enumerate(self._history, 1):
            yield {"_step": step, "_runtime": 1.0 * step, **row}


class FakeApi:
    def __init__(self, runs: list[FakeRun]):
        self._runs = runs
        self.asked: list[str] = []

    def runs(self, path: str):
        self.asked.append(path)
        return iter(self._runs)


def test_wandb_runs_map_to_the_same_columns(records_dir, tmp_path, monkeypatch):
    local = load_runs(records_dir)
    records = sorted(records_dir.iterdir())
    api = FakeApi([FakeRun(record) for record in records])
    monkeypatch.chdir(tmp_path)  # "me" must not be a directory here
    remote = load_runs("me/study", api=api)
    assert api.asked == ["me/study"]
    assert len(remote) == len(local)
    columns = ["signature", "model", "size", "stem", "optimizer", "lr", "wd", "epochs", "batch_size", "seed",
               "dataset", "sweep", "status", "error", "best_ema_error", "final_error", "epochs_done",
               "flops_b"]
    pd.testing.assert_frame_equal(remote[columns], local[columns], check_dtype=False)
    assert remote["run_dir"].iloc[0] == f"wandb:me/study/{local['signature'].iloc[0]}"
    assert not any(c.startswith("_") for c in remote.columns)


def test_wandb_runs_still_running_or_crashed(records_dir):
    record = next(p for p in sorted(records_dir.iterdir()) if (p / "metrics.jsonl").stat().st_size)
    running = FakeRun(record, state="running", finished=False)
    crashed = FakeRun(record, state="crashed", finished=False)
    crashed.id = "other"
    runs = load_runs("wandb:me/study", api=FakeApi([running, crashed]))
    assert list(runs["status"]) == ["running", "failed"]
    # Until training copies summary.json to W&B, its `lr` is the last epoch's; the config's wins.
    assert runs["lr"].iloc[0] == running.config["optimizer.lr"] != running.summary["lr"]
    assert runs["model"].iloc[0] == running.name
    assert np.isnan(runs["error"].iloc[0])


def test_wandb_history(records_dir):
    records = sorted(records_dir.iterdir())[:5]
    history = load_history("wandb:me/study", api=FakeApi([FakeRun(record) for record in records]))
    local = load_history(records[0].parent)
    local = local[local["signature"].isin([r.name for r in records])]
    assert len(history) == len(local)
    columns = ["signature", "model", "epoch", "test_error", "ema_test_error", "lr"]
    pd.testing.assert_frame_equal(history[columns].reset_index(drop=True),
                                  local[columns].reset_index(drop=True))
