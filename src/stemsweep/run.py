"""The Hydra application: one training run per call.

    python -m stemsweep.run model=vit_4gf stem=conv optimizer=sgd epochs=50
    python -m stemsweep.run -m stem=patch,conv optimizer=adamw,sgd

identity → lock → build → train → record. A run whose record is done returns its recorded error at
once; a broken one resumes from its checkpoint; failed and diverged ones run again only with retry=true.
Returns the error the study uses (the EMA model's best top-1 error), for Hydra's sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import stemsweep
from stemsweep.config import CONF_DIR, ConfigError, RunConfig
from stemsweep.identity import identity_of, validated_config
from stemsweep.record.rundir import CorruptRecord, RunDir
from stemsweep.record.signature import run_signature, setting_signature
from stemsweep.sweep.plan import register_with_omegaconf

log = logging.getLogger("stemsweep")

DIVERGED_ERROR = 100.0  # what a sweeper sees for a diverged run: no better than the worst


def study_error(summary: dict[str, Any]) -> float | None:
    """The sweep metric: the EMA model's best top-1 error; the model's when the EMA is off or was
    never meaningful (summary.json's `study_error_source` says which)."""
    if summary["status"] == "diverged":
        return DIVERGED_ERROR
    if "study_error" in summary:
        return summary["study_error"]
    error = summary.get("best_ema_error")  # a record from before `study_error`
    return summary.get("best_error") if error is None else error


def base_summary(cfg: RunConfig, identity: dict[str, Any]) -> dict[str, Any]:
    import torch

    from stemsweep.models import SIZES, paper_name

    stem = None if cfg.stem.name == "none" else cfg.stem.name
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return {
        "signature": run_signature(identity), "setting": setting_signature(identity),
        "status": "running", "model": paper_name(cfg.model.size, stem), "size": cfg.model.size,
        "family": SIZES[cfg.model.size].family, "stem": stem,
        "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "wd": cfg.optimizer.wd,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed, "ema_enabled": cfg.ema.enabled,
        "dataset": cfg.data.name, "train_subset": cfg.data.train_subset, "aug": cfg.aug.name,
        "sweep": cfg.sweep, "init_from": cfg.init_from,
        "epochs_done": 0, "final_error": None, "best_error": None, "final_ema_error": None,
        "best_ema_error": None, "diverged_epoch": None, "error_message": None,
        "slurm_job_id": job, "log_path": _log_path(), "host": socket.gethostname(),
        "versions": {"stemsweep": stemsweep.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }


def _log_path() -> str | None:
    """Where this process's output goes: submitit's log under SLURM, else Hydra's job log."""
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # noqa: BLE001 - not a submitit job
        pass
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return str(Path(hc.runtime.output_dir) / f"{hc.job.name}.log")
    except Exception:  # noqa: BLE001 - not under Hydra
        return None


def run(cfg_dict: DictConfig) -> float | None:
    cfg = validated_config(cfg_dict)
    from stemsweep.train.distributed import broadcast_flag, init_distributed, shutdown
    from stemsweep.train.interrupt import StopSignals
    from stemsweep.train.loop import init_checkpoint, pick_device

    device = pick_device(cfg.device)
    env = init_distributed(device.type)
    identity = identity_of(cfg)  # once: init_from may name a checkpoint file to read
    signature = run_signature(identity)
    if cfg.init_from and not init_checkpoint(cfg).exists():
        raise SystemExit(f"stemsweep: init_from={cfg.init_from} is not allowed: run {cfg.init_from} has no "
                         f"checkpoint under runs_root={cfg.runs_root} (train it first)")
    run_dir = RunDir(cfg.runs_root, signature)
    try:
        previous = run_dir.read_summary()
    except CorruptRecord as exc:
        log.warning("%s; the run resumes from its checkpoint and rewrites it", exc)
        previous = None
    if previous and (previous["status"] == "done" or
                     (previous["status"] in ("failed", "diverged") and not cfg.retry)):
        log.info("run %s is %s: %s; record in %s%s", signature, previous["status"], _result(previous),
                 run_dir.path, "" if previous["status"] == "done" else " (retry=true runs it again)")
        return study_error(previous) if previous["status"] != "failed" else None

    lock = run_dir.lock() if env.is_main else contextlib.nullcontext(True)
    with StopSignals() as stop:
        with lock as acquired:
            if not broadcast_flag(acquired, env, device):
                log.warning("run %s is being trained by another process (%s); not training it twice",
                            signature, run_dir.lock_holder())
                return None
            summary = base_summary(cfg, identity)
            if previous:  # the run's history of interruptions and resumes goes on
                summary.update({key: previous[key] for key in ("interruptions", "resumes") if key in previous})
            if env.is_main:
                run_dir.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
                run_dir.write_summary(summary)
            summary = _train_and_record(cfg, run_dir, summary, env, stop, previous and previous["status"])
        if summary["status"] == "resumable":  # checkpointed and recorded; the lock is let go
            shutdown(env)

            def recorded(cause: str) -> None:
                summary["interruptions"][-1]["cause"] = cause
                if env.is_main:
                    run_dir.write_summary(summary)
            stop.end_process(recorded)  # requeues (SLURM), or raises RunInterrupted
    shutdown(env)
    return study_error(summary)


def _train_and_record(cfg: RunConfig, run_dir: RunDir, summary: dict[str, Any], env, stop,
                      previous_status: str | None) -> dict[str, Any]:
    from stemsweep.record.trackers import NoTracker, open_tracker
    from stemsweep.train.loop import train

    flat = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    config = {**flat, "signature": run_dir.signature, "setting": summary["setting"]}
    tracker = open_tracker(cfg.logger, run_dir.path, run_dir.signature, summary["model"], cfg.sweep,
                           config) if env.is_main else NoTracker()
    try:
        summary = train(cfg, run_dir, summary, tracker, env, stop, previous_status)
    except Exception as exc:
        if env.is_main:
            run_dir.error_log.write_text(traceback.format_exc())
            failed = {**(run_dir.summary_or_none() or summary), "status": "failed",
                      "error_message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            run_dir.write_summary(failed)
            tracker.finish(failed)
        if isinstance(exc, ConfigError):  # found once the data is loaded, e.g. a subset too large
            raise SystemExit(f"stemsweep: {exc}") from None
        raise
    if env.is_main:
        run_dir.write_summary(summary)
        tracker.finish(summary)
        log.info("run %s %s: %s; record in %s", run_dir.signature, summary["status"], _result(summary),
                 run_dir.path)
    return summary


def _result(summary: dict[str, Any]) -> str:
    if summary["status"] == "diverged":
        return f"diverged at epoch {summary.get('diverged_epoch')}"
    if summary["status"] == "failed":
        return f"failed: {summary.get('error_message')}"
    parts = [f"{summary['epochs_done']}/{summary['epochs']} epochs"]
    if summary["status"] == "resumable":
        last = summary["interruptions"][-1]
        parts.append(f"stopped by {last['cause']} after step {last['step']}; launched again, it resumes there")
    if summary.get("final_error") is not None:
        parts.append(f"final top-1 error {summary['final_error']:.2f}%")
    if summary.get("best_ema_error") is not None:
        parts.append(f"best EMA top-1 error {summary['best_ema_error']:.2f}%")
    elif summary.get("study_error_source") == "model" and summary.get("best_error") is not None:
        parts.append(f"best top-1 error {summary['best_error']:.2f}% (the study's error: "
                     f"{'the EMA is off' if not summary.get('ema_enabled', True) else 'no meaningful EMA'})")
    return ", ".join(parts)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# The resolver's function comes from an importable module, not this one: run as __main__, it would not
# unpickle in joblib workers.
register_with_omegaconf()


# Hydra 1.3 takes 1.1's defaults unless the version base is named; Hydra 1.4 has only 1.3's, and warns
# (on every command) when it is named.
VERSION_BASE = {"version_base": "1.3"} if tuple(int(p) for p in hydra.__version__.split(".")[:2]) < (1, 4) else {}


@hydra.main(config_path=CONF_DIR, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


def interrupted(exc: KeyboardInterrupt) -> None:
    """Ctrl-C or SIGTERM: one line, not Python's traceback, and the shell's exit status 128 + signal
    (130 for Ctrl-C). A run stopped by the signal wrote a checkpoint of its last step and says
    `resumable`; launched again, the unfinished runs resume."""
    from stemsweep.train.interrupt import RunInterrupted

    signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
    print(f"stemsweep: interrupted ({signal.Signals(signum).name}); launched again, the unfinished runs "
          "resume from their checkpoints", file=sys.stderr)
    sys.exit(128 + signum)


def check_sweep_files(arguments: list[str]) -> None:
    """A sweep file named on the command line (`+sweeps=NAME`) that cannot be read: one line, before
    Hydra composes it into a long traceback."""
    from stemsweep.sweep.plan import sweep_file_problem

    for argument in arguments:
        key, _, value = argument.partition("=")
        if key.lstrip("+~") == "sweeps" and value:
            for name in value.split(","):  # a sweep over sweep files, +sweeps=a,b
                if problem := sweep_file_problem(name.strip()):
                    raise SystemExit(f"stemsweep: {problem}")


if __name__ == "__main__":
    check_sweep_files(sys.argv[1:])
    try:
        main()
    except KeyboardInterrupt as exc:
        interrupted(exc)
