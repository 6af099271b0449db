"""summary.json's operations (record/summary.py) and the upgrade of every record older code wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_configs import make_config

from stemsweep.identity import identity_signature, run_identity, setting_signature
from stemsweep.record import summary as record
from stemsweep.record.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
# the records written before summaries had a schema_version (results/mini-adaptive is of this version)
COMMITTED = sorted(ROOT.glob("results/mini-study*/*/summary.json"))


def test_start_writes_the_schema_version_and_keeps_the_runs_history(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    cfg = make_config(**{"stem.name": "none", "model.size": "regnety_xs"})
    identity = run_identity(cfg)
    earlier = {"interruptions": [{"cause": "killed"}], "resumes": [{"from_step": 5}], "status": "running"}
    summary = record.start(cfg, identity, "/logs/x.err", previous=earlier)
    assert summary["schema_version"] == record.SCHEMA_VERSION
    assert summary["signature"] == identity_signature(identity) and summary["setting"] == setting_signature(identity)
    assert (summary["status"], summary["model"], summary["stem"], summary["family"]) == (
        "running", "RegNetY-XS", None, "regnety")
    assert (summary["slurm_job_id"], summary["log_path"]) == ("77_3", "/logs/x.err")
    assert summary["interruptions"] == earlier["interruptions"] and summary["resumes"] == earlier["resumes"]
    assert "interruptions" not in record.start(cfg, identity, None)


def test_resume_after_a_kill_counts_the_lost_steps_and_a_stop_loses_none():
    summary = record.resumed({}, "running", "checkpoint.pt", epoch=1, step=4, steps_per_epoch=10, trained_steps=17)
    [kill] = summary["interruptions"]
    assert (kill["cause"], kill["epoch"], kill["step"], kill["lost_steps"]) == ("killed", 2, 17, 3)
    [resume] = summary["resumes"]
    assert (resume["from_epoch"], resume["from_step"], resume["from_global_step"], resume["checkpoint"]) == (
        1, 4, 14, "checkpoint.pt")
    unknown = record.resumed({}, "running", None, 0, 0, 10, trained_steps=None)
    assert unknown["interruptions"][0]["lost_steps"] is None and unknown["resumes"][0]["checkpoint"] is None
    assert record.resumed({}, "resumable", "checkpoint.pt", 1, 0, 10, None)["interruptions"] == []

    stopped = record.interrupted(summary, "SIGTERM", "SIGTERM", epoch=2, step=23)
    assert stopped["interruptions"][0] == kill  # the history goes on, unchanged
    assert {k: stopped["interruptions"][1][k] for k in ("cause", "signal", "epoch", "step", "lost_steps")} == {
        "cause": "SIGTERM", "signal": "SIGTERM", "epoch": 3, "step": 23, "lost_steps": 0}
    corrected = record.interruption_cause(stopped, "preemption")
    assert corrected["interruptions"][-1]["cause"] == "preemption"
    assert stopped["interruptions"][-1]["cause"] == "SIGTERM"  # operations return a new summary


def test_results_take_the_ema_error_only_from_epochs_whose_ema_is_mostly_trained():
    rows = [{"epoch": 1, "test_error": 50.0, "ema_test_error": 89.0, "ema_initial_share": 0.5, "images_per_s": 1},
            {"epoch": 2, "test_error": 40.0, "ema_test_error": 38.0, "ema_initial_share": 0.001, "images_per_s": 3}]
    both = record.with_results({}, rows, "running", 1.0)
    assert (both["best_ema_error"], both["final_ema_error"], both["study_error"], both["study_error_source"]) == (
        38.0, 38.0, 38.0, "ema")
    assert (both["epochs_done"], both["images_per_s"], both["status"]) == (2, 2.0, "running")
    first = record.with_results({}, rows[:1], "done", 1.0)
    assert (first["best_ema_error"], first["final_ema_error"], first["study_error"], first["study_error_source"]) == (
        None, None, 50.0, "model")
    off = record.with_results({}, [{**rows[0], "ema_test_error": None, "ema_initial_share": None}], "done", 1.0)
    assert (off["study_error"], off["study_error_source"]) == (50.0, "model")
    diverged = record.finished({}, rows, "diverged", 1.0, diverged_epoch=3)
    assert (diverged["study_error"], diverged["best_error"], diverged["diverged_epoch"]) == (None, None, 3)
    assert record.sweep_objective(diverged) == record.DIVERGED_ERROR
    assert record.sweep_objective({**both, "status": "done"}) == 38.0


def test_failed_keeps_the_record_and_names_the_error_in_one_line():
    failed = record.failed({"status": "running", "epochs_done": 2}, RuntimeError("CUDA out of memory\nmore"))
    assert failed == {"status": "failed", "epochs_done": 2, "error_message": "RuntimeError: CUDA out of memory"}


def test_ema_else_model_takes_the_models_error_where_the_ema_has_none():
    summary = {"best_ema_error": None, "best_error": 31.0, "final_ema_error": 29.0, "final_error": 30.0}
    assert record.ema_else_model(summary, "best_ema_error") == 31.0 == record.study_error(summary)
    assert record.ema_else_model(summary, "final_ema_error") == 29.0


def old_study_error(summary: dict) -> float | None:
    """stemsweep.run.study_error as it was before record/summary.py, for a record without study_error."""
    if summary["status"] == "diverged":
        return record.DIVERGED_ERROR
    error = summary.get("best_ema_error")
    return summary.get("best_error") if error is None else error


def test_every_committed_record_upgrades_to_this_schema_with_its_study_error_unchanged():
    assert len(COMMITTED) >= 255
    for path in COMMITTED:
        old = json.loads(path.read_text())
        assert "schema_version" not in old  # written before it existed: version 0
        new = RunDir(path.parent.parent, path.parent.name).read_summary()
        assert new == {"schema_version": record.SCHEMA_VERSION, **old}, path
        assert record.sweep_objective(new) == old_study_error(old), path
        assert record.upgrade(new) is new  # already current: read as it is


def test_a_run_records_its_datas_fingerprint_and_a_record_from_before_reads_as_unknown_data():
    cfg = make_config()
    fingerprint = {"name": "synthetic", "num_classes": None, "in_chans": 3, "image_size": None, "num_train": 512,
                   "num_test": 256}
    assert record.start(cfg, run_identity(cfg), None, data=fingerprint)["data"] == fingerprint
    version_1 = {"schema_version": 1, "status": "done", "signature": "0123456789", "setting": "9876543210"}
    upgraded = record.upgrade(version_1)
    assert upgraded == {**version_1, "schema_version": record.SCHEMA_VERSION} and "data" not in upgraded


def test_a_record_that_could_not_be_written_is_resumable_and_says_why():
    summary = record.record_unwritten({"status": "running", "epochs_done": 3}, "OSError: [Errno 28] No space")
    assert summary["status"] == "resumable"
    [entry] = summary["interruptions"]
    assert {k: entry[k] for k in ("cause", "epoch", "step", "lost_steps", "error")} == {
        "cause": "record not written", "epoch": 4, "step": None, "lost_steps": None,
        "error": "OSError: [Errno 28] No space"}


@pytest.mark.parametrize("path", COMMITTED[:3], ids=lambda p: p.parent.name)
def test_a_record_from_before_setting_and_signature_takes_them_from_its_run_directory(path):
    old = json.loads(path.read_text())
    older = {k: v for k, v in old.items() if k not in ("setting", "signature")}
    upgraded = record.upgrade(older, config=path.parent / "config.yaml", signature=path.parent.name)
    assert (upgraded["setting"], upgraded["signature"]) == (old["setting"], old["signature"])
    assert record.upgrade(older, config=path.parent / "no-such.yaml")["setting"] is None
