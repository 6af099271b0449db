"""A run's identity from its composed config: validated, resolved, hashed.

The application (`stemsweep.run`) and the sweep code (`stemsweep.sweep`, the Hydra plugins) both start
from here, and neither imports the other for it: config → identity → run directory reads one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stemsweep.config import ConfigError, RunConfig, resolve_hyperparameters, to_run_config
from stemsweep.record.signature import is_signature, run_identity, run_signature


def validated_config(cfg: DictConfig) -> RunConfig:
    """The composed config checked and with its lr/wd resolved; a bad value exits with one line."""
    try:
        return resolve_hyperparameters(to_run_config(cfg))
    except ConfigError as exc:
        raise SystemExit(f"stemsweep: {exc}") from None


def init_signature(cfg: RunConfig) -> str | None:
    """The signature of the run a fine-tuning run starts from (part of the new run's identity):
    init_from names a checkpoint file, or a run by its signature (which may not have run yet when a
    sweep is planned; training checks that its checkpoint exists)."""
    if cfg.init_from is None:
        return None
    path = Path(cfg.init_from)
    if path.is_file():
        from stemsweep.record.checkpoint import checkpoint_signature

        return checkpoint_signature(path)
    if not is_signature(cfg.init_from):
        raise SystemExit(f"stemsweep: init_from={cfg.init_from} is not allowed: give a checkpoint file or a "
                         "run signature (10 hex digits)")
    return cfg.init_from


def identity_of(cfg: RunConfig) -> dict[str, Any]:
    return run_identity(cfg, init_signature(cfg))


def signature_of(cfg: RunConfig) -> str:
    return run_signature(identity_of(cfg))
