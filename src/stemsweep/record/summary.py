"""A run's summary.json (docs/record.md): every change a run makes to it, and how older ones are read.

A run starts its record (`start`, with its data's fingerprint), adds what it learns once its data is
loaded (`prepared`), notes where it resumes from (`resumed`) and each stop (`interrupted`), takes its
results from the per-epoch metrics after every epoch and at its end (`with_results`, `finished`), or
records why it failed (`failed`) or could not write its record (`record_unwritten`). Each operation
returns the new summary; the caller writes it (RunDir.write_summary). Every reader reads a record
through `upgrade`, which brings a record of any older schema to this one.

This module imports nothing from training: the analyses read records without torch.
"""

from __future__ import annotations

import os
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import stemsweep
from stemsweep.config import RunConfig
from stemsweep.identity import identity_signature, is_signature, run_identity, setting_signature
from stemsweep.models import SIZES, paper_name
from stemsweep.models.stems import record_stem
from stemsweep.record.checkpoint import LAST_CHECKPOINT_NOT_WRITTEN, RECORD_NOT_WRITTEN

SCHEMA_VERSION = 2  # records from before it was written are version 0; 2 adds `data`
# Fields that say how the record was written, not what the run is: not columns of the analyses' tables.
BOOKKEEPING_FIELDS = ("schema_version",)

# An EMA whose weights are still more than this share the untrained initial model's is not a result:
# its error is not reported as the EMA error, and the model's own stands in.
MAX_INITIAL_SHARE = 0.01
# The EMA model's errors, and the model's own that stands in for each when the EMA has none (EMA off,
# or never mostly trained weights).
MODEL_ERROR = {"best_ema_error": "best_error", "final_ema_error": "final_error"}
DIVERGED_ERROR = 100.0  # what a sweeper sees for a diverged run: no better than the worst


# --- the operations of a run -------------------------------------------------------------------------

def start(cfg: RunConfig, identity: dict[str, Any], log_path: str | None,
          previous: dict[str, Any] | None = None, init_source: dict[str, Any] | None = None,
          data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new launch's record of the run `cfg` describes; a run launched before (`previous`, its last
    record) keeps its history of interruptions and resumes. `init_source`: the checkpoint a fine-tune
    starts from (train.checkpoint.finetune_source). `data`: the fingerprint of the data it trains on
    (data/fingerprint.py; None where it could not be read)."""
    import torch  # deferred: reading and upgrading records (analysis, planning) never needs torch

    stem = record_stem(cfg.stem.name)
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    summary = {
        "schema_version": SCHEMA_VERSION,
        "signature": identity_signature(identity), "setting": setting_signature(identity),
        "status": "running", "model": paper_name(cfg.model.size, stem), "size": cfg.model.size,
        "family": SIZES[cfg.model.size].family, "stem": stem,
        "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "wd": cfg.optimizer.wd,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed, "ema_enabled": cfg.ema.enabled,
        "dataset": cfg.data.name, "train_subset": cfg.data.train_subset, "data": data, "aug": cfg.aug.name,
        "sweep": cfg.sweep, "init_from": cfg.init_from, "init_source": init_source,
        "epochs_done": 0, "final_error": None, "best_error": None, "final_ema_error": None,
        "best_ema_error": None, "diverged_epoch": None, "error_message": None,
        "slurm_job_id": job, "log_path": log_path, "host": socket.gethostname(),
        "versions": {"stemsweep": stemsweep.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    if previous:
        summary.update({key: previous[key] for key in ("interruptions", "resumes") if key in previous})
    return summary


def prepared(summary: dict[str, Any], complexity: dict[str, Any], dataset: str, data_pipeline: str,
             warnings: list[str], where: dict[str, Any]) -> dict[str, Any]:
    """What the run knows once its model and data are built: the model's complexity (flops_b,
    params_m, acts_m), the data set and pipeline, the settings that mean less at this scale, and where
    it trains (`where`: device, device_name, world_size, image_size; what a cost estimate matches
    finished runs on)."""
    return {**summary, **complexity, "dataset": dataset, "data_pipeline": data_pipeline, "warnings": warnings,
            **where}


def resumed(summary: dict[str, Any], previous_status: str | None, checkpoint: str | None, epoch: int, step: int,
            steps_per_epoch: int, trained_steps: int | None) -> dict[str, Any]:
    """Where the run resumes from (`checkpoint`'s file name, after `step` steps of epoch `epoch`;
    None: from the start), and a hard kill before it: the last record said `running` though no process
    trains it, so the steps trained after its checkpoint (`trained_steps`, its progress file) are lost."""
    resumed_at = epoch * steps_per_epoch + step
    interruptions = list(summary.get("interruptions", []))
    if previous_status == "running":
        interruptions.append({**_when(), "cause": "killed", "epoch": epoch + 1 if step else epoch,
                              "step": trained_steps,
                              "lost_steps": None if trained_steps is None else trained_steps - resumed_at})
    resumes = [*summary.get("resumes", []), {**_when(), "from_epoch": epoch, "from_step": step,
                                             "from_global_step": resumed_at, "checkpoint": checkpoint}]
    return {**summary, "interruptions": interruptions, "resumes": resumes}


def interrupted(summary: dict[str, Any], cause: str, signal: str | None, epoch: int, step: int) -> dict[str, Any]:
    """A stop signal after global step `step`, in epoch `epoch` (from 0); its checkpoint loses nothing."""
    entry = {**_when(), "cause": cause, "signal": signal, "epoch": epoch + 1, "step": step, "lost_steps": 0}
    return {**summary, "interruptions": [*summary.get("interruptions", []), entry]}


def last_checkpoint_unwritten(summary: dict[str, Any], error: str | None, step: int) -> dict[str, Any]:
    """The run trained to its end (global step `step`) but could not write its last checkpoint, even
    retried: it is resumable from the checkpoint it has, how many steps back is not known here."""

    entry = {**_when(), "cause": LAST_CHECKPOINT_NOT_WRITTEN, "signal": None, "epoch": summary["epochs"],
             "step": step, "lost_steps": None, "error": error}
    return {**summary, "interruptions": [*summary.get("interruptions", []), entry]}


def record_unwritten(summary: dict[str, Any], error: str) -> dict[str, Any]:
    """A write of the run's record failed on a full disk (`error`, one line) and the run stopped: it is
    resumable from the checkpoint it has, how many steps back is not known here."""

    entry = {**_when(), "cause": RECORD_NOT_WRITTEN, "signal": None, "epoch": summary.get("epochs_done", 0) + 1,
             "step": None, "lost_steps": None, "error": error}
    return {**summary, "status": "resumable", "interruptions": [*summary.get("interruptions", []), entry]}


def with_bad_files(summary: dict[str, Any], bad_files: dict[str, Any], test_images: int | None = None) -> dict:
    """The data's unreadable files met so far ({count, first}: data/bad_files.py) and the test images
    the last error was counted over."""
    counted = {} if test_images is None else {"test_images": test_images}
    return {**summary, "bad_files": bad_files, **counted}


def interruption_cause(summary: dict[str, Any], cause: str) -> dict[str, Any]:
    """The last interruption's cause, known only later (a preemption delivered as SIGTERM, then USR2)."""
    interruptions = summary["interruptions"]
    return {**summary, "interruptions": [*interruptions[:-1], {**interruptions[-1], "cause": cause}]}


def with_results(summary: dict[str, Any], metrics: list[dict[str, Any]], status: str, wall: float) -> dict:
    """The result fields from the per-epoch metrics. The EMA errors count only epochs whose EMA is
    mostly trained weights (MAX_INITIAL_SHARE); with none, they are null and the model's errors are the
    study's (`study_error_source`)."""
    def best(key, rows):
        values = [m[key] for m in rows if m.get(key) is not None]
        return min(values) if values else None

    meaningful = [m for m in metrics if (m.get("ema_initial_share") or 0.0) <= MAX_INITIAL_SHARE]
    last = metrics[-1] if metrics else {}
    diverged = status == "diverged"
    result = {
        **summary,
        "status": status,
        "epochs_done": len(metrics),
        "final_error": None if diverged else last.get("test_error"),
        "best_error": None if diverged else best("test_error", metrics),
        "final_ema_error": None if diverged or last not in meaningful else last.get("ema_test_error"),
        "best_ema_error": None if diverged else best("ema_test_error", meaningful),
        "wall_time_s": wall,
        "images_per_s": (sum(m["images_per_s"] for m in metrics) / len(metrics)) if metrics else None,
    }
    result["study_error"] = study_error(result)
    from_ema = result["best_ema_error"] is not None
    result["study_error_source"] = None if result["study_error"] is None else "ema" if from_ema else "model"
    return result


def finished(summary: dict[str, Any], metrics: list[dict[str, Any]], status: str, wall: float,
             diverged_epoch: int | None) -> dict[str, Any]:
    """The record of a launch that ended: done, diverged (in `diverged_epoch`) or resumable."""
    return {**with_results(summary, metrics, status, wall), "diverged_epoch": diverged_epoch}


def failed(summary: dict[str, Any], exc: BaseException, line: str | None = None) -> dict[str, Any]:
    """A run that raised: its last record, with the error in one line (the traceback: error.log), or
    with `line`, the line it was stopped with."""
    message = line if line is not None else f"{type(exc).__name__}: {exc}"
    return {**summary, "status": "failed", "error_message": message.splitlines()[0]}


# --- reading -----------------------------------------------------------------------------------------

def ema_else_model(summary: dict[str, Any], ema_field: str = "best_ema_error") -> float | None:
    """The EMA model's error (`best_ema_error` or `final_ema_error`), else the model's own (the record
    holds null, not no key, where the EMA has none)."""
    error = summary.get(ema_field)
    return summary.get(MODEL_ERROR[ema_field]) if error is None else error


def study_error(summary: dict[str, Any]) -> float | None:
    """The error the study uses: the EMA model's best top-1 error, else the model's (None: no result)."""
    return ema_else_model(summary, "best_ema_error")


def sweep_objective(summary: dict[str, Any]) -> float | None:
    """What a sweeper minimises: the study error, DIVERGED_ERROR for a diverged run."""
    return DIVERGED_ERROR if summary["status"] == "diverged" else study_error(summary)


def upgrade(summary: dict[str, Any], config: Path | None = None, signature: str | None = None) -> dict:
    """A record written by any older version, as this version writes it. Every reader reads through it.

    Version 0 (no `schema_version`) lacks fields this version writes: study_error and
    study_error_source (`study_error` derives them alike for every version), data_pipeline, warnings,
    interruptions and resumes (absent: readers take them as unknown or none). The oldest lack `setting`,
    taken from the run's `config` (config.yaml) when it can be read, and `signature`, taken from the run
    directory's name (`signature`). Versions 0 and 1 lack `data`, the fingerprint of the run's data
    (absent: unknown; such a record is reused without checking its data, and its next launch records
    the data it trains on)."""
    if summary.get("schema_version", 0) >= SCHEMA_VERSION:
        return summary
    upgraded = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in summary.items() if k != "schema_version"}}
    if "signature" not in upgraded and signature is not None:
        upgraded["signature"] = signature
    if "setting" not in upgraded and config is not None:
        upgraded["setting"] = setting_from_config(config)
    return upgraded


def setting_from_config(config: Path) -> str | None:
    """The setting of a run from its config.yaml; None when that cannot be read, or names its
    fine-tuning source by a checkpoint file (whose signature is in the checkpoint): such a run then
    groups by its summary's columns alone."""

    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(config)))
    except Exception:  # noqa: BLE001 - a missing, corrupt or outdated config: no setting
        return None
    if cfg.init_from is not None and not is_signature(cfg.init_from):
        return None
    return setting_signature(run_identity(cfg))


def _when() -> dict[str, Any]:
    job = os.environ.get("SLURM_JOB_ID")
    restart = os.environ.get("SLURM_RESTART_COUNT")
    return {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "slurm_job_id": job,
            "slurm_restart": int(restart) if restart else None}
