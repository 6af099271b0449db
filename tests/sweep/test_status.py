"""`stemsweep status`: one row per run, its state read from the record and the run's lock."""

from __future__ import annotations

import multiprocessing

import pytest

from stemsweep.cli import main as cli
from stemsweep.plan.runs import plan_sweep
from stemsweep.record.rundir import RunDir
from stemsweep.sweep.status import status_rows


def record(runs, signature, status, **fields) -> RunDir:
    """A hand-written summary.json, as training writes it."""
    run = RunDir(runs, signature)
    summary = {
        "signature": signature, "status": status, "model": "ViT_C-XS", "size": "vit_xs", "stem": "conv",
        "optimizer": "adamw", "lr": 0.016, "wd": 0.05, "epochs": 4, "epochs_done": 0, "final_error": None,
        "best_error": None, "final_ema_error": None, "best_ema_error": None, "diverged_epoch": None,
        "error_message": None, "slurm_job_id": None, "log_path": None, **fields,
    }
    run.write_summary(summary)
    return run


def hold_lock(runs, signature, locked, release):
    with RunDir(runs, signature).lock() as acquired:
        assert acquired
        locked.set()
        release.wait(30)


@pytest.fixture
def runs(tmp_path):
    """One run in every state the table knows; a process holds the lock of the running one."""
    record(tmp_path, "aaaaaaaaa1", "done", epochs_done=4, final_error=30.5, best_error=29.25,
           final_ema_error=28.0, best_ema_error=27.5, slurm_job_id="4242_3",
           bad_files={"count": 2, "first": ["/data/train/a/1.jpg", "/data/val/b/2.jpg"]})
    record(tmp_path, "aaaaaaaaa2", "running", epochs_done=2, final_error=40.0, best_error=40.0,
           final_ema_error=None, best_ema_error=None, slurm_job_id="4243")  # EMA off: the model's errors
    record(tmp_path, "aaaaaaaaa3", "running", epochs_done=1, slurm_job_id="4244")  # its process died
    (tmp_path / "aaaaaaaaa3" / "lock").write_text("node1 12345\n")
    record(tmp_path, "aaaaaaaaa4", "failed", error_message="RuntimeError: CUDA out of memory",
           slurm_job_id="4245_0", log_path="/sweeps/x/.submitit/4245_0/4245_0_0_log.err")
    record(tmp_path, "aaaaaaaaa5", "diverged", epochs_done=3, diverged_epoch=3)
    (tmp_path / "aaaaaaaaa6").mkdir()
    (tmp_path / "aaaaaaaaa6" / "summary.json").write_text('{"status": "runn')  # cut off mid-write
    (tmp_path / "aaaaaaaaa7").mkdir()  # queued by a sweep, not started
    record(tmp_path, "aaaaaaaaa8", "failed", error_message="ValueError: bad")  # no log_path: its error.log
    (tmp_path / ".hydra").mkdir()  # Hydra's own folder is not a run

    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(tmp_path, "aaaaaaaaa2", locked, release))
    holder.start()
    assert locked.wait(30)
    yield tmp_path
    release.set()
    holder.join(30)


def test_each_run_state_comes_from_its_record_and_its_lock(runs):
    rows = {row["signature"]: row for row in status_rows(str(runs))}
    assert {sig: row["state"] for sig, row in rows.items()} == {
        "aaaaaaaaa1": "done", "aaaaaaaaa2": "running", "aaaaaaaaa3": "interrupted", "aaaaaaaaa4": "failed",
        "aaaaaaaaa5": "diverged", "aaaaaaaaa6": "corrupt", "aaaaaaaaa7": "pending", "aaaaaaaaa8": "failed"}

    done = rows["aaaaaaaaa1"]
    assert (done["model"], done["stem"], done["optimizer"], done["epochs"], done["lr"], done["wd"]) == (
        "ViT_C-XS", "conv", "adamw", 4, "0.016", "0.05")
    assert (done["done"], done["latest"], done["best"], done["job"]) == (4, "28.00", "27.50", "4242_3")
    assert done["bad"] == "2"  # files of the data that could not be read
    running = rows["aaaaaaaaa2"]
    assert (running["latest"], running["best"], running["job"], running["bad"]) == ("40.00", "40.00", "4243", "-")
    assert rows["aaaaaaaaa3"]["latest"] == "-"
    assert rows["aaaaaaaaa4"]["log"] == "/sweeps/x/.submitit/4245_0/4245_0_0_log.err"  # where the error is
    assert rows["aaaaaaaaa8"]["log"] == str(runs / "aaaaaaaaa8" / "error.log")
    assert rows["aaaaaaaaa5"]["log"] == "diverged at epoch 3"
    assert "summary.json" in rows["aaaaaaaaa6"]["log"]  # names the broken file


def test_the_table_has_one_line_per_run_and_counts_them(runs, capsys):
    assert cli(["status", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["signature", "model", "stem", "optimizer", "epochs", "lr", "wd", "state", "done",
                                "latest", "best", "bad", "restarts", "job", "log"]
    assert len(lines) == 1 + 8 + 1
    assert lines[-1] == "8 runs: 1 corrupt, 1 diverged, 1 done, 2 failed, 1 interrupted, 1 pending, 1 running"
    failed = next(line for line in lines if line.startswith("aaaaaaaaa4")).split()
    assert failed[7] == "failed" and failed[-2:] == ["4245_0", "/sweeps/x/.submitit/4245_0/4245_0_0_log.err"]


def test_a_sweep_name_lists_every_run_it_expands_to(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the sweep's runs_root is runs/, relative to where it is launched
    planned = plan_sweep("mini_peak", []).runs
    first = planned[0]
    record(tmp_path / first.runs_root, first.signature, "done", epochs_done=8, final_error=20.0, best_error=19.0)

    assert cli(["status", "mini_peak"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{len(planned)} runs: 1 done, {len(planned) - 1} pending"
    pending = [line for line in lines[1:-1] if line.split()[0] != first.signature]
    assert all(" ".join(run.overrides) in "\n".join(pending) for run in planned[1:])  # what each one is


def test_a_record_with_little_more_than_a_status_still_gets_a_row(tmp_path):
    (tmp_path / "bbbbbbbbb1").mkdir()
    (tmp_path / "bbbbbbbbb1" / "summary.json").write_text('{"status": "done"}')
    [row] = status_rows(str(tmp_path))
    assert row["state"] == "done" and row["lr"] == "-" and row["best"] == "-"


def test_a_path_that_is_neither_runs_nor_a_sweep_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_runs"
    assert cli(["status", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "neither a runs directory nor a sweep name" in err


def test_no_runs_yet_is_an_empty_table(tmp_path, capsys):
    assert cli(["status", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 runs"


def test_a_submitted_run_is_queued_while_its_job_is_and_not_started_once_it_left(tmp_path, monkeypatch):
    import stemsweep.sweep.status as status

    for signature, job in (("ccccccccc1", "77_0"), ("ccccccccc2", "77_1"), ("ccccccccc3", None)):
        run = RunDir(tmp_path, signature)
        run.path.mkdir(parents=True)
        if job:
            run.slurm_job.write_text(f"{job}\n")
    monkeypatch.setattr(status, "slurm_queue", lambda: {"77_0"})  # task 1 left the queue without a record
    states = {row["signature"]: row["state"] for row in status_rows(str(tmp_path))}
    assert states == {"ccccccccc1": "queued", "ccccccccc2": "not started", "ccccccccc3": "pending"}
