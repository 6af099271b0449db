"""A run's identity: the resolved config's meaning, hashed.

Everything in the config is part of a run's identity unless listed in NOT_IDENTITY: paths, worker
counts, logging, launching and execution details do not change what is trained, so they do not change
the signature. New config fields are identity by default, so adding one never aliases two runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from typing import Any

from stemsweep.config import RunConfig

NOT_IDENTITY = {
    "runs_root", "sweep", "retry", "device", "amp", "compile", "threads", "eval_batch_size",
    "logger", "checkpoint", "lrwd", "tuning",  # a draw's or tuning's (lr, wd) are resolved into optimizer.lr / .wd
    "model.tuned", "model.lrwd_intervals", "model.resources",
    "data.root", "data.num_workers", "data.pipeline", "data.download", "data.max_bad_files",
    "aug.name",  # a label; the aug flags are the meaning
}
SYNTHETIC_ONLY = {"num_classes", "in_chans", "num_train", "num_test"}
LENGTH = 10


def run_identity(cfg: RunConfig, init_signature: str | None = None) -> dict[str, Any]:
    """The config's meaning as a plain dict; ``init_from`` is replaced by the source run's signature."""
    full = asdict(cfg)
    identity: dict[str, Any] = {}
    for key, value in full.items():
        if key in NOT_IDENTITY:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in NOT_IDENTITY}
        identity[key] = value
    if cfg.data.name != "synthetic":
        identity["data"] = {k: v for k, v in identity["data"].items() if k not in SYNTHETIC_ONLY}
    identity["init_from"] = init_signature
    return identity


def is_signature(text: str) -> bool:
    """Whether `text` has a signature's form (LENGTH hex digits), as init_from may name a run."""
    return re.fullmatch(f"[0-9a-f]{{{LENGTH}}}", text) is not None


def run_signature(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:LENGTH]


def setting_signature(identity: dict[str, Any]) -> str:
    """The identity without the seed, hashed: runs with equal settings differ only by seed. Analysis
    groups seed repeats by it, so two runs that differ in a field the summary does not carry (warm-up,
    EMA, label smoothing…) are never read as repeats of one setting."""
    return run_signature({key: value for key, value in identity.items() if key != "seed"})
