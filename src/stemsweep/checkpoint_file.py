"""A checkpoint file: its names in a run directory and how it is read.

Below identity, which reads one thing from it: a fine-tune whose init_from names a checkpoint file takes
its source's signature from the file (record/checkpoint.py writes them; train/ reads them whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


class CorruptCheckpoint(ValueError):
    """A checkpoint file that exists but cannot be read; the message names the file, in one line."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file's state (tensors on the CPU); CorruptCheckpoint when it cannot be read."""
    import torch  # deferred: reading a run's record or planning a sweep never needs torch (seconds to import)

    try:
        # weights_only: a checkpoint holds tensors, numbers, strings, lists and dicts, nothing to execute.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a damaged file
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint ({problem})") from None
    if not isinstance(state, dict) or "signature" not in state:
        raise CorruptCheckpoint(f"{path}: not a stemsweep checkpoint (no signature)")
    return state


def checkpoint_signature(path: Path) -> str:
    """The signature of the run that wrote a checkpoint file."""
    return load_checkpoint(path)["signature"]
