"""Where a run's metrics go besides its own record: Weights & Biases, or nowhere.

The run directory is the source of truth; a tracker is a copy. A W&B failure is logged as a warning
and turns the tracker off; it never stops training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from stemsweep.config import LoggerConfig

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


class NoTracker:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


class WandbTracker:
    """One W&B run per stemsweep run: id = signature, resume allowed, so a resumed or requeued run
    continues the same W&B run; group = the sweep's name."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, signature: str, name: str, group: str | None,
                 config: dict[str, Any]):
        self._run = None
        mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
        try:
            import wandb

            self._run = wandb.init(
                project=cfg.project, entity=cfg.entity, id=signature, resume="allow", name=name,
                group=group, config=config, dir=str(run_dir), mode=mode, reinit="finish_previous",
            )
        except Exception as exc:  # noqa: BLE001 - any W&B failure must leave training running
            log.warning("W&B is off for this run: wandb.init failed: %s", exc)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is None:
            return
        try:
            self._run.log(metrics, step=step)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B is off for this run: log failed: %s", exc)
            self._run = None

    def finish(self, summary: dict[str, Any]) -> None:
        """Copy the summary's fields and end this piece of the W&B run; a resumable run is marked
        preempting, so W&B expects it back (the next start resumes the same id)."""
        if self._run is None:
            return
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    self._run.summary[key] = value
            if summary.get("status") == "resumable":
                self._run.mark_preempting()
            self._run.finish(exit_code=0 if summary.get("status") in ("done", "diverged") else 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B finish failed: %s", exc)
        self._run = None


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
