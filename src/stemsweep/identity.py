"""A run's identity: the validated config's meaning, hashed into the signature that names its directory.

Everything in the config is part of a run's identity unless listed in NOT_IDENTITY: paths, worker
counts, logging, launching and execution details do not change what is trained, so they do not change
the signature. New config fields are identity by default, so adding one never aliases two runs.

The application (`stemsweep.run`), the sweep code (`stemsweep.sweep`, the Hydra plugins) and the
analysis all start from here, and none imports another for it: config → identity → run directory
reads one way. Bad values raise ConfigError; the entry points say them in one line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stemsweep.checkpoint_file import checkpoint_signature
from stemsweep.config import ConfigError, RunConfig

NOT_IDENTITY = {
    "runs_root", "sweep", "retry", "device", "amp", "compile", "threads", "eval_batch_size",
    "data_roots",  # where each data set is; a run's record keeps its data's fingerprint (data/fingerprint.py)
    "logger", "checkpoint", "lrwd", "tuning",  # a draw's or tuning's (lr, wd) are resolved into optimizer.lr / .wd
    "model.tuned", "model.lrwd_intervals", "model.resources",
    "data.root", "data.num_workers", "data.pipeline", "data.download", "data.max_bad_files",
    "data.check_shape",
    "aug.name",  # a label; the aug flags are the meaning
}
SYNTHETIC_ONLY = {"num_classes", "in_chans", "num_train", "num_test"}
SIGNATURE_LENGTH = 10  # hex digits


def is_signature(text: str) -> bool:
    """Whether `text` has a signature's form (SIGNATURE_LENGTH hex digits), as init_from may name a run."""
    return re.fullmatch(f"[0-9a-f]{{{SIGNATURE_LENGTH}}}", text) is not None


def source_signature(cfg: RunConfig) -> str | None:
    """The signature of the run a fine-tuning run starts from (part of the new run's identity), None
    when it starts from scratch. init_from names a checkpoint file, or a run by its signature (which
    may not have run yet when a sweep is planned; training checks that its checkpoint exists)."""
    if cfg.init_from is None:
        return None
    if Path(cfg.init_from).is_file():
        return checkpoint_signature(Path(cfg.init_from))
    if not is_signature(cfg.init_from):
        raise ConfigError(f"init_from={cfg.init_from} is not allowed: give a checkpoint file or a run signature "
                          f"({SIGNATURE_LENGTH} hex digits)")
    return cfg.init_from


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """The config's meaning as a plain dict; ``init_from`` is replaced by the source run's signature
    (read from the checkpoint when init_from names a file)."""
    identity: dict[str, Any] = {}
    for key, value in asdict(cfg).items():
        if key in NOT_IDENTITY:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in NOT_IDENTITY}
        identity[key] = value
    if cfg.data.name != "synthetic":
        identity["data"] = {k: v for k, v in identity["data"].items() if k not in SYNTHETIC_ONLY}
    identity["init_from"] = source_signature(cfg)
    return identity


def identity_signature(identity: dict[str, Any]) -> str:
    """The run's signature: its identity hashed."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:SIGNATURE_LENGTH]


def setting_signature(identity: dict[str, Any]) -> str:
    """The identity without the seed, hashed: runs with equal settings differ only by seed. Analysis
    groups seed repeats by it, so two runs that differ in a field the summary does not carry (warm-up,
    EMA, label smoothing…) are never read as repeats of one setting."""
    return identity_signature({key: value for key, value in identity.items() if key != "seed"})


def run_signature(cfg: RunConfig) -> str:
    """The signature of the run this validated config describes: the name of its directory."""
    return identity_signature(run_identity(cfg))
