"""The Hydra application end to end: real short trainings. Where the claim is about processes (the
command line, two launches at once, W&B's offline files) they run as a user runs them, in subprocesses;
the rest call `run()` in this process on the config `python -m stemsweep.run` composes (no torch import
per run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stemsweep.record.summary import setting_from_config

TINY = ["model=vit_xs", "data.train_subset=640", "data.test_subset=500", "batch_size=64", "threads=1",
        "logger=none"]


def launch(runs_root, *overrides, wait=True, multirun=False):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "stemsweep.run", *["-m"] * multirun, f"runs_root={runs_root}", *TINY, *overrides]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def train_here(run_in_process):
    """run() in this process on the composed config of `TINY + overrides`; returns what it logged."""
    return lambda runs_root, *overrides: run_in_process(f"runs_root={runs_root}", *TINY, *overrides)


def only_run(runs_root) -> Path:
    runs = [p for p in Path(runs_root).iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_launches(tmp_path_factory):
    """Two launches of one 2-epoch run at once, as a user's two shells would (W&B offline): (runs_root,
    the output of the one that trained, the other's output)."""
    runs_root = tmp_path_factory.mktemp("runs")
    procs = [launch(runs_root, "epochs=2", "logger=wandb", wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trained = [o for o in outs if "epoch 2/2:" in o]
    assert len(trained) == 1, outs
    return runs_root, trained[0], outs[1 - outs.index(trained[0])]


@pytest.mark.processes
def test_two_concurrent_launches_train_the_run_once(two_launches):
    runs_root, _, other = two_launches
    assert "being trained by another process" in other or "is done" in other
    assert summary(only_run(runs_root))["status"] == "done"


@pytest.mark.processes
def test_a_short_run_writes_a_complete_record_and_a_second_launch_skips_it(two_launches):
    runs_root, trained, _ = two_launches
    run = only_run(runs_root)
    s = summary(run)
    assert s["status"] == "done" and s["epochs_done"] == 2 and s["signature"] == run.name
    assert len(s["setting"]) == 10 and s["setting"] != s["signature"]  # the identity less the seed
    assert setting_from_config(run / "config.yaml") == s["setting"]  # older records: from config.yaml
    assert s["model"] == "ViT_C-XS" and s["stem"] == "conv" and s["optimizer"] == "adamw"
    assert s["lr"] == 1.6e-2 and s["wd"] == 0.05  # the CPU size's tuned values, lr per 2048
    for key in ("final_error", "best_error", "final_ema_error", "best_ema_error", "wall_time_s", "images_per_s",
                "flops_b", "params_m"):
        assert isinstance(s[key], float), key
    assert s["best_error"] <= s["final_error"] < 75  # it learns: 10 classes, chance is 90%
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "train_error", "test_error", "ema_test_error", "lr", "images_per_s",
                            "elapsed_s"}
    assert (run / "config.yaml").exists() and (run / "checkpoint.pt").exists()
    assert "record in" in trained

    again = launch(runs_root, "epochs=2")  # the logger is not part of the identity
    assert again.returncode == 0
    out = again.stdout + again.stderr
    assert "is done" in out and "resuming" not in out and "epoch 1/2" not in out
    assert summary(run)["updated"] == s["updated"]  # nothing rewritten


@pytest.mark.processes
def test_wandb_offline_run_uses_the_signature_as_its_id(two_launches):
    run = only_run(two_launches[0])
    offline = list((run / "wandb").glob(f"offline-run-*-{run.name}"))
    assert offline, list((run / "wandb").iterdir())


def test_a_huge_lr_is_recorded_as_diverged_and_not_retried_unless_asked(tmp_path, train_here):
    train_here(tmp_path, "epochs=2", "optimizer=sgd", "optimizer.lr=1e6", "stem=patch")
    run = only_run(tmp_path)
    s = summary(run)
    assert s["status"] == "diverged" and s["diverged_epoch"] == 1
    assert s["final_error"] is None and s["best_ema_error"] is None
    again = train_here(tmp_path, "epochs=2", "optimizer=sgd", "optimizer.lr=1e6", "stem=patch")
    assert "retry=true" in again


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr=-1", "optimizer.lr=-1.0 is not allowed: it must be a positive number"),
    ("epochs=0", "epochs=0 is not allowed"),
    ("data.root=/no/such/folder", "data.root=/no/such/folder is not allowed: no such directory"),
    ("model=regnety_xs stem=conv", "stem=conv is not allowed with model=regnety_xs"),
    ("model=vit_4gf", "model=vit_4gf is not allowed with 28×28 images (data=fashion_mnist)"),
    ("stem=pyramid", "Could not find 'stem/pyramid'"),
    ("model=vit_5gf", "Could not find 'model/vit_5gf'"),
])
def test_bad_config_exits_nonzero_naming_the_value_before_any_work(tmp_path, override, message):
    result = launch(tmp_path, *override.split())
    assert result.returncode != 0
    assert message in result.stderr
    assert not any(p for p in tmp_path.glob("*") if not p.name.startswith("."))  # nothing written


def test_fine_tuning_starts_from_another_runs_weights_and_names_it_in_its_identity(tmp_path, train_here):
    synthetic = ["epochs=1", "schedule.warmup_epochs=0", "data=synthetic", "data.image_size=28", "data.in_chans=1",
                 "data.train_subset=null", "data.test_subset=null"]
    train_here(tmp_path, *synthetic, "data.num_classes=10")
    source_sig = only_run(tmp_path).name
    out = train_here(tmp_path, *synthetic, "data.num_classes=5", f"init_from={source_sig}")
    # only the head (10 → 5 classes) starts fresh
    assert f"initialised from {source_sig}; re-initialised: head.bias, head.weight" in out
    runs = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    [tuned_sig] = runs - {source_sig}
    assert summary(tmp_path / tuned_sig)["init_from"] == source_sig

    missing = launch(tmp_path, "epochs=1", "schedule.warmup_epochs=0", "init_from=0123456789")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        f"stemsweep: init_from=0123456789 is not ready: run 0123456789 has no record under runs_root={tmp_path}; "
        "train it first, then launch this run again")


def test_a_sweep_shows_the_line_of_a_fine_tune_that_cannot_start_and_trains_its_other_runs(tmp_path):
    result = launch(tmp_path, "epochs=1", "schedule.warmup_epochs=0", "data.train_subset=128",
                    "data.test_subset=128", "init_from=0123456789,null", multirun=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out
    assert "stemsweep: init_from=0123456789 is not ready: run 0123456789 has no record" in out
    assert out.strip().splitlines()[-1] == ("stemsweep: 1 of the 2 runs launched did not finish (the lines above "
                                            "say why and what to do); launched again, the sweep trains them")
    [trained] = [p for p in tmp_path.iterdir() if (p / "summary.json").exists()]  # the fine-tune wrote no record
    assert summary(trained)["status"] == "done" and summary(trained)["init_from"] is None


def test_a_run_shorter_than_the_ema_period_reports_the_error_its_model_reached(tmp_path, train_here):
    # 10 steps, fewer than ema.period=32: the EMA is updated after the epoch's last step (a copy during
    # warm-up), so the study error is the trained model's, not the untrained one's 90%.
    train_here(tmp_path, "epochs=1", "schedule.warmup_epochs=0.5")
    s = summary(only_run(tmp_path))
    assert s["study_error_source"] == "ema" and s["best_ema_error"] == s["best_error"] < 80, s
    assert s["study_error"] == s["best_ema_error"]
    assert any(w.startswith("ema: α = min(1, alpha · batch / epochs · period) is 1 at this scale") for w in
               s["warnings"]), s["warnings"]


def test_an_ema_still_mostly_the_initial_model_is_not_the_study_error(tmp_path, train_here):
    # No warm-up copy and a tiny α: after its updates the EMA is ~100% the untrained model.
    out = train_here(tmp_path, "epochs=1", "schedule.warmup_epochs=0", "ema.alpha=1e-9")
    run = only_run(tmp_path)
    s = summary(run)
    [row] = metrics(run)
    assert row["ema_test_error"] > 80 and row["ema_initial_share"] > 0.99  # what the EMA really is
    assert s["best_ema_error"] is None and s["final_ema_error"] is None
    assert s["study_error_source"] == "model" and s["study_error"] == s["best_error"] < 80, s
    assert any("the EMA will still be 100% the untrained initial model" in w for w in s["warnings"]), s["warnings"]
    assert "the EMA will still be 100% the untrained initial model" in out
    assert f"best top-1 error {s['best_error']:.2f}% (the study's error: no meaningful EMA)" in out
