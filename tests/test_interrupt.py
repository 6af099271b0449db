"""Signals and kills lose nothing: real runs in subprocesses, stopped mid-epoch, resumed, compared with
the same run trained without interruption (docs/record.md, "Interruptions").

Only what a signal or a kill does needs a process of its own: the uninterrupted references train in
subprocesses beside the tests (on the core the tests leave idle), and the resumes are `run()` in this
process, as `python -m stemsweep.run` would call it on the same record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from stemsweep.sweep.status import status_rows

pytestmark = pytest.mark.processes

BASE = ["data.train_subset=640", "data.test_subset=250", "batch_size=32", "threads=1", "logger=none",
        "epochs=2"]  # 20 steps an epoch
CASES = {  # every architecture; augmentation (per-image and per-batch draws) and DataLoader workers
    "patch+paper-aug+workers": ["model=vit_xs", "stem=patch", "aug=paper", "data.num_workers=2"],
    "conv": ["model=vit_xs", "stem=conv"],
    "regnety+paper-aug": ["model=regnety_xs", "stem=none", "optimizer=sgd", "aug=paper"],
}
# An ImageNet-style folder read by DataLoader workers (image_folder: 4 classes of 80 + 20 small JPEGs);
# its data.root is added where it is launched.
FOLDER = "conv+image-folder+workers"
FOLDER_RUN = ["model=vit_xs", "stem=conv", "data=imagenet", "data.check_shape=false", "data.num_workers=2",
              "data.train_subset=320", "data.test_subset=null", "batch_size=16"]  # 20 steps an epoch
COMPARED = ("epoch", "train_loss", "train_error", "test_error", "ema_test_error", "lr")


def start(runs: Path, case: str, *extra: str, log: Path, before: tuple[str, ...] = (),
          session: bool = False) -> subprocess.Popen:
    """`python -m stemsweep.run` on the case, after the command `before` (e.g. `timeout 600`); with
    `session`, in a process group of its own."""
    overrides = FOLDER_RUN if case == FOLDER else CASES[case]
    cmd = [*before, sys.executable, "-m", "stemsweep.run", f"runs_root={runs}", *BASE, *overrides, *extra]
    env = {**os.environ, "WANDB_MODE": "offline"}
    with log.open("w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=session)


def finish(run_in_process, runs: Path, case: str, *extra: str) -> str:
    """The run launched again, to its end; what it logged."""
    return run_in_process(f"runs_root={runs}", *BASE, *(FOLDER_RUN if case == FOLDER else CASES[case]), *extra)


def the_run(runs: Path) -> Path:
    [run] = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def metrics(run: Path) -> list[dict]:
    return [{k: row[k] for k in COMPARED} for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def assert_equal_metrics(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), (a, b)


def trained_steps(runs: Path) -> int:
    """What the training process's progress file says (0 before it has one)."""
    for progress in runs.glob("*/progress"):
        text = progress.read_text().split()
        return int(text[0]) if text else 0
    return 0


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    from stemsweep.data.imagenet import write_fashion_mnist_folder

    return write_fashion_mnist_folder(tmp_path_factory.mktemp("images"), num_classes=4, train_per_class=80,
                                      val_per_class=20, size=32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, image_folder):
    """The metrics of each case trained without interruption: all train at once, in subprocesses beside
    the tests (single-threaded, as the tests' own runs), and are waited for when first asked."""
    started = {}
    for case in (*CASES, FOLDER):
        runs = tmp_path_factory.mktemp(f"reference-{case}")
        roots = [f"data.root={image_folder}"] if case == FOLDER else []
        started[case] = (runs, start(runs, case, *roots, log=runs / "train.log"))
    trained: dict[str, list[dict]] = {}

    def metrics_of(case: str) -> list[dict]:
        if case not in trained:
            runs, proc = started[case]
            assert proc.wait(timeout=600) == 0, (runs / "train.log").read_text()[-3000:]
            trained[case] = metrics(the_run(runs))
        return trained[case]
    yield metrics_of
    for _, proc in started.values():
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("case", list(CASES))
def test_sigterm_mid_epoch_stops_in_seconds_resumable_and_resumes_to_the_uninterrupted_metrics(tmp_path, case,
                                                                                              reference,
                                                                                              run_in_process):
    log = tmp_path / "first.log"
    proc = start(tmp_path, case, log=log)
    wait_for(lambda: "epoch 1/2 [6/20]" in log.read_text(), proc, log)
    sent = datetime.now()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    out = log.read_text()
    # It stopped after the step it was in: the checkpoint is written seconds after the signal (what comes
    # after it, the interpreter's teardown of its workers, takes as long as a loaded machine makes it).
    [stopped] = [line for line in out.splitlines() if "checkpoint written" in line]
    written = datetime.strptime(stopped[1:24], "%Y-%m-%d %H:%M:%S,%f")
    assert (written - sent).total_seconds() < 30, f"it did not stop after the step it was in: {stopped}"
    assert "Traceback" not in out and "stemsweep: interrupted (SIGTERM)" in out, out[-2000:]
    run = the_run(tmp_path)
    s = summary(run)
    [stop] = s["interruptions"]
    assert s["status"] == "resumable" and stop["cause"] == "SIGTERM" and stop["lost_steps"] == 0, s
    assert 6 <= stop["step"] <= 9 and stop["epoch"] == 1  # mid-epoch 1, within a step or two of the signal
    assert not (run / "metrics.jsonl").exists() or metrics(run) == []
    assert [row["state"] for row in status_rows(str(tmp_path))] == ["resumable"]

    again = finish(run_in_process, tmp_path, case)
    assert f"resuming {run.name} from checkpoint.pt after epoch 0, step {stop['step']}/20 of epoch 1" in again
    s = summary(run)
    assert s["status"] == "done" and s["resumes"][-1]["from_global_step"] == stop["step"]
    assert_equal_metrics(metrics(run), reference(case))
    [row] = status_rows(str(tmp_path))
    assert row["state"] == "done" and row["restarts"] == f"1 (last: SIGTERM at step {stop['step']}, resumed from " \
                                                         f"step {stop['step']})"


def test_a_run_whose_dataloader_workers_get_the_signal_too_stops_resumable_and_resumes_exactly(
        tmp_path, image_folder, reference, run_in_process):
    """`timeout` and `kill -TERM -- -PGID` signal every process of the group, as SLURM signals every
    process of a job: the DataLoader workers too, which used to die of it and fail the run. Stopped by
    the one in epoch 1 and the other in epoch 2, the run ends as if never interrupted."""
    root = f"data.root={image_folder}"
    log = tmp_path / "timeout.log"
    proc = start(tmp_path, FOLDER, root, log=log, before=("timeout", "600"))  # its own process group
    wait_for(lambda: trained_steps(tmp_path) >= 6, proc, log)
    proc.send_signal(signal.SIGALRM)  # `timeout`'s time is up: it sends SIGTERM to its process group
    assert proc.wait(timeout=60) == 124, log.read_text()[-3000:]
    run = the_run(tmp_path)
    s = summary(run)
    assert s["status"] == "resumable", s.get("error_message")
    [stop] = s["interruptions"]
    assert stop["signal"] == "SIGTERM" and 6 <= stop["step"] < 20 and stop["lost_steps"] == 0, stop

    log = tmp_path / "kill.log"
    proc = start(tmp_path, FOLDER, root, log=log, session=True)
    wait_for(lambda: trained_steps(tmp_path) >= 26, proc, log)
    os.killpg(proc.pid, signal.SIGTERM)  # kill -TERM -- -PGID
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    out = log.read_text()
    assert "Traceback" not in out and "killed by signal" not in out, out[-3000:]
    s = summary(run)
    assert s["status"] == "resumable" and len(s["interruptions"]) == 2, s
    stop = s["interruptions"][-1]
    assert stop["signal"] == "SIGTERM" and 26 <= stop["step"] < 40 and stop["epoch"] == 2, stop

    finish(run_in_process, tmp_path, FOLDER, root)
    assert summary(run)["status"] == "done"
    assert_equal_metrics(metrics(run), reference(FOLDER))


def test_kill_9_loses_at_most_checkpoint_every_steps(tmp_path, reference, run_in_process):
    every = 3
    log = tmp_path / "first.log"
    proc = start(tmp_path, "conv", f"checkpoint.every_steps={every}", log=log)
    wait_for(lambda: trained_steps(tmp_path) >= 8, proc, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    run = the_run(tmp_path)
    trained = trained_steps(tmp_path)
    assert summary(run)["status"] == "running"  # a hard kill leaves the record as it was

    finish(run_in_process, tmp_path, "conv", f"checkpoint.every_steps={every}")
    s = summary(run)
    [kill] = s["interruptions"]
    resumed = s["resumes"][-1]["from_global_step"]
    assert kill["cause"] == "killed" and kill["step"] == trained, kill
    assert kill["lost_steps"] == trained - resumed and 0 <= kill["lost_steps"] <= every, (kill, resumed)
    assert resumed % every == 0 and resumed > 0
    assert_equal_metrics(metrics(run), reference("conv"))  # checkpoint.every_steps is not part of the identity


@pytest.fixture(scope="module")
def stopped_with_two_checkpoints(tmp_path_factory) -> Path:
    """A run stopped by SIGTERM at step 8, with checkpoints every 2 steps: its runs_root (copy it to change it)."""
    runs = tmp_path_factory.mktemp("stopped")
    log = runs.parent / f"{runs.name}.log"
    proc = start(runs, "conv", "checkpoint.every_steps=2", log=log)
    wait_for(lambda: "epoch 1/2 [8/20]" in log.read_text(), proc, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    run = the_run(runs)
    assert (run / "checkpoint.pt").exists() and (run / "checkpoint.prev.pt").exists()
    return runs


@pytest.mark.parametrize("cut", ["latest", "both"])
def test_a_cut_checkpoint_is_one_line_and_the_run_falls_back_to_the_previous(tmp_path, cut, reference,
                                                                             stopped_with_two_checkpoints,
                                                                             run_in_process):
    runs = tmp_path / "runs"
    shutil.copytree(stopped_with_two_checkpoints, runs)
    run = the_run(runs)
    cut_files = [run / "checkpoint.pt"] + ([run / "checkpoint.prev.pt"] if cut == "both" else [])
    for path in cut_files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # cut short, as a full disk or a copy gone wrong leaves it

    out = finish(run_in_process, runs, "conv", "checkpoint.every_steps=2")
    problems = [line for line in out.splitlines() if "not a readable checkpoint" in line]
    assert len(problems) == len(cut_files), out
    assert all("Traceback" not in line and str(run) in line for line in problems)
    assert "checkpoint.pt: not a readable checkpoint" in problems[0]
    assert "falling back to checkpoint.prev.pt" in problems[0]
    if cut == "latest":
        assert f"resuming {run.name} from checkpoint.prev.pt after epoch 0, step " in out
    else:
        assert f"restarting {run.name} from its first step: it has no readable checkpoint" in out
    assert summary(run)["status"] == "done"
    assert_equal_metrics(metrics(run), reference("conv"))
