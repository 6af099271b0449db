"""Where a run's metrics go besides its own record: Weights & Biases, or nowhere.

The run directory is the source of truth; a tracker is a copy. A W&B failure is logged as a warning
and turns the tracker off; it never stops training.

SLURM signals every process of a job, W&B's own too: its service (wandb-core) and the service's
system-metrics helper (wandb/wandb#9963). What each signal does to them, and what the tracker does:

- SIGUSR1/SIGUSR2 (a time-out, `scancel --signal=USR1`, a preemption's USR signal): wandb-core, a Go
  program, ignores them, but its helper dies of them. The service is started with them blocked
  (`_usr_signals_blocked`); both inherit the block, so W&B stays whole.
- SIGTERM/SIGINT (`scontrol requeue`, `scancel`, a preemption in REQUEUE mode, `scancel --full`'s
  step abort): wandb-core exits at once and loses what it had not written yet (a Go program cannot be
  kept from SIGTERM: its runtime unblocks it). The run's process finishes its checkpoint regardless;
  launched again, the tracker logs from metrics.jsonl the epochs W&B lacks (`resume`).
- A run stopped by a signal is marked preempting and finished with exit code 128 + signal number,
  W&B's contract for a run that is resumed later (`Run.mark_preempting`;
  https://docs.wandb.ai/models/sweeps/signal-handling-sweep-runs), and W&B is torn down before the
  process ends: neither a dead service nor the SIGTERM of the requeue that follows leaves W&B's exit
  hook with a traceback in the job's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from stemsweep.config import LoggerConfig
from stemsweep.record.rundir import FINAL

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def resume(self, metrics: list[dict[str, Any]]) -> None: ...
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


class NoTracker:
    def resume(self, metrics: list[dict[str, Any]]) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


class WandbTracker:
    """One W&B run per stemsweep run: id = signature, resume allowed, so a resumed or requeued run
    continues the same W&B run; group = the sweep's name. Each epoch is one W&B step (its number)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, signature: str, name: str, group: str | None,
                 config: dict[str, Any]):
        self._run = None
        self._written: int | None = None  # the last step the earlier starts' offline files hold
        mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
        try:  # read before this start writes files of its own
            self._written = last_step_written(run_dir / "wandb", signature)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B: could not read its earlier offline files (%s); no epoch is logged again", exc)
        try:
            import wandb

            with _usr_signals_blocked():  # W&B's service starts here (see the module)
                self._run = wandb.init(
                    project=cfg.project, entity=cfg.entity, id=signature, resume="allow", name=name,
                    group=group, config=config, dir=str(run_dir), mode=mode, reinit="finish_previous",
                )
        except Exception as exc:  # noqa: BLE001 - any W&B failure must leave training running
            log.warning("W&B is off for this run: wandb.init failed: %s", exc)

    def resume(self, metrics: list[dict[str, Any]]) -> None:
        """As the run resumes, with `metrics` the epochs it has trained (metrics.jsonl): log those W&B
        does not hold, lost with a W&B service that a signal ended. Online, W&B's server says what it
        holds (a resumed run starts at its last step + 1); offline, the earlier starts' files do."""
        if self._run is None:
            return
        held = self._written if self._run.offline else self._run.starting_step - 1
        if held is None:
            return
        missing = [row for row in metrics if row["epoch"] > held]
        if missing:
            log.info("W&B lacks epochs %d-%d of this run: logging them from metrics.jsonl", missing[0]["epoch"],
                     missing[-1]["epoch"])
        for row in missing:
            self.log(row, step=row["epoch"])

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is None:
            return
        try:
            self._run.log(metrics, step=step)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B is off for this run: log failed: %s", exc)
            self._run = None

    def finish(self, summary: dict[str, Any]) -> None:
        """Copy the summary's fields and end this piece of the W&B run (a resumable run is marked
        preempting and ends with the signal's exit code: see the module), then W&B's service."""
        try:
            if self._run is not None:
                for key, value in summary.items():
                    if isinstance(value, (int, float, str, bool)) or value is None:
                        self._run.summary[key] = value
                if summary.get("status") == "resumable":
                    self._run.mark_preempting()
                self._run.finish(exit_code=wandb_exit_code(summary))
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B finish failed: %s%s", exc, "; launched again, the run logs what W&B lacks"
                        if summary.get("status") == "resumable" else "")
        self._run = None
        with contextlib.suppress(Exception):  # a service a signal ended: nothing left to tear down
            import wandb

            wandb.teardown()


def last_step_written(wandb_dir: Path, run_id: str) -> int:
    """The last step the offline files of W&B run `run_id` in `wandb_dir` hold (0: none). Each start
    writes its own offline-run-<time>-<id>/ folder and first logs what the earlier ones lack, so the
    steps grow from folder to folder: the newest folder with a history holds the last."""
    for folder in sorted(wandb_dir.glob(f"offline-run-*-{run_id}"), reverse=True):
        log = folder / f"run-{run_id}.wandb"
        if steps := list(history_steps(log)) if log.exists() else []:
            return max(steps)
    return 0


def wandb_exit_code(summary: dict[str, Any]) -> int:
    """0 for a finished run (done, diverged); 128 + signal number for a run a signal stopped, as a
    shell reports it; 1 otherwise (failed, or its last checkpoint not written)."""
    if summary.get("status") in FINAL:
        return 0
    stops = summary.get("interruptions") or [{}]
    name = stops[-1].get("signal") if summary.get("status") == "resumable" else None
    return 128 + signal.Signals[name] if name in signal.Signals.__members__ else 1


@contextlib.contextmanager
def _usr_signals_blocked() -> Iterator[None]:
    """SIGUSR1/SIGUSR2 blocked in this thread meanwhile: a process started now (W&B's service) inherits
    the block, and so does what it starts. This process takes such a signal once the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# A W&B transaction log (`run-<id>.wandb`): a 7-byte header, then LevelDB's log format (blocks of
# 32 KiB; each record a crc32 of its type and data, its length, its type: whole, first, middle or last
# piece of one protobuf `Record`). Read by hand, in this process: recent wandb ships no Python reader
# (wandb/sdk/internal/datastore.py, which documents the format, went with its Python internals), and
# its own reader is a command of wandb >= 0.29 (`wandb leet inspect`), which the tests check this against.
_LOG_HEADER = struct.Struct("<4sHB")  # ":W&B", 0xBEE1, version 0
_RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32768
_WHOLE, _FIRST, _LAST = 1, 2, 4


def history_steps(path: Path) -> Iterator[int]:
    """The steps of the history records a W&B transaction log holds, in order."""
    return (record.history.step.num for record in transaction_log(path)
            if record.WhichOneof("record_type") == "history")


def transaction_log(path: Path) -> Iterator[Any]:
    """The records (wandb_internal_pb2.Record) of a W&B transaction log, in order. A log whose writer
    was killed ends at its last whole record; one with no header holds nothing."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:_LOG_HEADER.size] != _LOG_HEADER.pack(b":W&B", 0xBEE1, 0):
        return
    at, pieces = _LOG_HEADER.size, b""
    while at + _RECORD_HEADER.size <= len(data):
        if _BLOCK - at % _BLOCK < _RECORD_HEADER.size:  # a block's tail too short for a header: padding
            at += _BLOCK - at % _BLOCK
            continue
        crc, length, kind = _RECORD_HEADER.unpack_from(data, at)
        body = data[at + _RECORD_HEADER.size:at + _RECORD_HEADER.size + length]
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            return
        at += _RECORD_HEADER.size + length
        pieces = body if kind in (_WHOLE, _FIRST) else pieces + body
        if kind in (_WHOLE, _LAST):
            yield wandb_internal_pb2.Record.FromString(pieces)


def open_tracker(cfg: LoggerConfig, run_dir: Path, signature: str, name: str, group: str | None,
                 config: dict[str, Any]) -> Tracker:
    if cfg.name == "wandb":
        return WandbTracker(cfg, run_dir, signature, name, group, config)
    return NoTracker()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (`optimizer.lr`): the run config as a tracker gets it, and a W&B run's config and
    summary as the analyses read them back. Anything with keys() is a tree: W&B's summary and its
    nested parts are dict-like, not dicts."""
    flat: dict[str, Any] = {}
    for key in tree.keys():
        value = tree[key]
        if hasattr(value, "keys"):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
