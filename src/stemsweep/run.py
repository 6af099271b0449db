"""The Hydra application: one training run per call.

    python -m stemsweep.run model=vit_4gf stem=conv optimizer=sgd epochs=50
    python -m stemsweep.run -m stem=patch,conv optimizer=adamw,sgd

identity → data → lock → build → train → record. A run whose record is done returns its recorded error at
once; a broken one resumes from its checkpoint; failed and diverged ones run again only with retry=true.
A record of other data than the config names now is neither (data/fingerprint.py).
Returns the error the study uses (the EMA model's best top-1 error), for Hydra's sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from stemsweep.compose import override_key, register_with_omegaconf, sweep_file_problem
from stemsweep.config import CONF_DIR, ConfigError, RunConfig, validated_config
from stemsweep.data.fingerprint import mismatch_line, readable_fingerprint, shape_problem
from stemsweep.identity import identity_signature, run_identity
from stemsweep.record import summary as record
from stemsweep.record.checkpoint import LAST_CHECKPOINT_NOT_WRITTEN, NoFinalCheckpoint, RecordNotWritten
from stemsweep.record.files import disk_full
from stemsweep.record.rundir import RETRIED, CorruptRecord, RunDir

log = logging.getLogger("stemsweep")

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
    # deferred: training imports torch (seconds); a sweep or study imports this module to plan, without it
    from stemsweep.train.checkpoint import finetune_source
    from stemsweep.train.distributed import AnyProcess, init_distributed, shutdown
    from stemsweep.train.interrupt import StopSignals
    from stemsweep.train.loop import pick_device

    device = pick_device(cfg.device)
    env = init_distributed(device.type)
    identity = run_identity(cfg)  # once: init_from may name a checkpoint file to read
    signature = identity_signature(identity)
    run_dir = RunDir(cfg.runs_root, signature)
    try:
        previous = run_dir.read_summary()
    except CorruptRecord as exc:
        log.warning("%s; the run resumes from its checkpoint and rewrites it", exc)
        previous = None
    # Before the record is reused: the signature leaves out where the data is.
    data = readable_fingerprint(cfg.data, cfg.runs_root)
    if previous and data and (mismatch := mismatch_line(cfg, signature, previous.get("data"), data)):
        raise ConfigError(mismatch)
    if previous and (previous["status"] == "done" or
                     (previous["status"] in RETRIED and not cfg.retry)):
        log.info("run %s is %s: %s; record in %s%s", signature, previous["status"], _result(previous),
                 run_dir.path, "" if previous["status"] == "done" else " (retry=true runs it again)")
        return record.sweep_objective(previous) if previous["status"] != "failed" else None
    if data and (problem := shape_problem(cfg.data, data)):
        raise ConfigError(problem)
    # Before the lock and the record: a fine-tune whose source is not finished leaves no trace of itself.
    init_source = finetune_source(cfg.init_from, cfg.runs_root) if cfg.init_from else None

    lock = run_dir.lock() if env.is_main else contextlib.nullcontext(True)
    with StopSignals() as stop:
        with lock as acquired:
            if AnyProcess(env).now(not acquired)[0]:  # only process 0 takes the lock: the others pass
                log.warning("run %s is being trained by another process (%s); not training it twice",
                            signature, run_dir.lock_holder())
                return None
            summary = record.start(cfg, identity, _log_path(), previous, init_source, data)
            if env.is_main:
                try:
                    run_dir.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
                    run_dir.write_summary(summary)
                except OSError as exc:
                    if (full := disk_full(exc)) is None:
                        raise
                    raise _stopped_by_full_disk(run_dir, summary, full, env.is_main) from None
            summary = _train_and_record(cfg, run_dir, summary, env, stop, previous and previous["status"])
        if summary["status"] == "resumable":  # checkpointed and recorded; the lock is let go
            shutdown(env)
            last = summary["interruptions"][-1]
            if last["cause"] == LAST_CHECKPOINT_NOT_WRITTEN:  # not a signal: a person must act
                raise NoFinalCheckpoint(
                    f"run {signature} trained {summary['epochs_done']}/{summary['epochs']} epochs but could not "
                    f"write its last checkpoint ({last['error']}); it is recorded resumable: once it can write to "
                    f"{run_dir.path}, launch it again and it resumes from the checkpoint it has")

            def recorded(cause: str) -> None:
                if env.is_main:
                    run_dir.write_summary(record.interruption_cause(summary, cause))
            stop.end_process(recorded)  # requeues (SLURM), or raises RunInterrupted
    shutdown(env)
    return record.sweep_objective(summary)


def _train_and_record(cfg: RunConfig, run_dir: RunDir, summary: dict[str, Any], env, stop,
                      previous_status: str | None) -> dict[str, Any]:
    from stemsweep.record.trackers import NoTracker, flatten, open_tracker  # deferred: W&B (seconds)
    from stemsweep.train.loop import train  # deferred: torch

    flat = flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    config = {**flat, "signature": run_dir.signature, "setting": summary["setting"]}
    tracker = open_tracker(cfg.logger, run_dir.path, run_dir.signature, summary["model"], cfg.sweep,
                           config) if env.is_main else NoTracker()
    try:
        summary = train(cfg, run_dir, summary, tracker, env, stop, previous_status)
        if env.is_main:
            run_dir.write_summary(summary)
    except Exception as exc:
        if (full := disk_full(exc)) is not None:
            stopped = _stopped_by_full_disk(run_dir, summary, full, env.is_main)
            tracker.finish(run_dir.summary_or_none() or summary)
            raise stopped from None
        if env.is_main:
            from stemsweep.data.bad_files import TooManyBadFiles

            run_dir.error_log.write_text(traceback.format_exc())
            # too many unreadable files: the record says the stop line as it is printed
            failed = record.failed(run_dir.summary_or_none() or summary, exc,
                                   line=str(exc) if isinstance(exc, TooManyBadFiles) else None)
            run_dir.write_summary(failed)
            tracker.finish(failed)
        if isinstance(exc, ConfigError):  # found once the data is loaded, e.g. a subset too large
            raise SystemExit(f"stemsweep: {exc}") from None
        raise
    if env.is_main:
        tracker.finish(summary)
        log.info("run %s %s: %s; record in %s", run_dir.signature, summary["status"], _result(summary),
                 run_dir.path)
    return summary


def _stopped_by_full_disk(run_dir: RunDir, summary: dict[str, Any], error: OSError,
                          is_main: bool) -> RecordNotWritten:
    """What a run stopped by a full disk (or quota) at a write of its record says: process 0 records it
    resumable (record/summary.py, record_unwritten), in place if need be; the line for every process."""
    problem = f"{type(error).__name__}: {error}"
    written = None
    if is_main:
        written = run_dir.write_summary_on_full_disk(record.record_unwritten(run_dir.summary_or_none() or summary,
                                                                             problem))
    said = "it is recorded resumable" if written is None else f"its record could not say so either ({written})"
    return RecordNotWritten(f"run {run_dir.signature} stopped: the disk is full ({problem}); {said}: once "
                            f"{run_dir.path} has space, launch it again and it resumes from its checkpoint")


def _result(summary: dict[str, Any]) -> str:
    if summary["status"] == "diverged":
        return f"diverged at epoch {summary.get('diverged_epoch')}"
    if summary["status"] == "failed":
        return f"failed: {summary.get('error_message')}"
    parts = [f"{summary['epochs_done']}/{summary['epochs']} epochs"]
    if summary["status"] == "resumable":
        last = summary["interruptions"][-1]
        if last["cause"] == LAST_CHECKPOINT_NOT_WRITTEN:
            parts.append(f"its last checkpoint could not be written ({last['error']}); launched again, it "
                         "resumes from the checkpoint it has")
        else:
            parts.append(f"stopped by {last['cause']} after step {last['step']}; launched again, it resumes there")
    if summary.get("final_error") is not None:
        parts.append(f"final top-1 error {summary['final_error']:.2f}%")
    if summary.get("best_ema_error") is not None:
        parts.append(f"best EMA top-1 error {summary['best_ema_error']:.2f}%")
    elif summary.get("study_error_source") == "model" and summary.get("best_error") is not None:
        parts.append(f"best top-1 error {summary['best_error']:.2f}% (the study's error: "
                     f"{'the EMA is off' if not summary.get('ema_enabled', True) else 'no meaningful EMA'})")
    return ", ".join(parts)


# The resolver's function comes from an importable module, not this one: run as __main__, it would not
# unpickle in joblib workers.
register_with_omegaconf()


# Hydra 1.3 takes 1.1's defaults unless the version base is named; Hydra 1.4 has only 1.3's, and warns
# (on every command) when it is named.
VERSION_BASE = {"version_base": "1.3"} if tuple(int(p) for p in hydra.__version__.split(".")[:2]) < (1, 4) else {}


@hydra.main(config_path=CONF_DIR, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return run(cfg)
    except NoFinalCheckpoint as exc:  # RecordNotWritten too
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the job fails with it; the sweep shows its line and launches its other runs
        raise SystemExit(f"stemsweep: {exc}") from None
    except ConfigError as exc:  # a bad value (library code raises): one line, not a traceback
        raise SystemExit(f"stemsweep: {exc}") from None


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
    for argument in arguments:
        key, _, value = argument.partition("=")
        if "=" in argument and not argument.startswith("-") and override_key(argument) == "sweeps" and value:
            for name in value.split(","):  # a sweep over sweep files, +sweeps=a,b
                if problem := sweep_file_problem(name.strip()):
                    raise SystemExit(f"stemsweep: {problem}")


if __name__ == "__main__":
    check_sweep_files(sys.argv[1:])
    try:
        main()
    except KeyboardInterrupt as exc:
        interrupted(exc)
