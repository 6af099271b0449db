"""What SLURM has queued, and its limits: asked, never assumed (a login node may have no SLURM)."""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize: an array's highest index is one less


def slurm_queue() -> set[str]:
    """This user's jobs in the SLURM queue, one id per array task (1234_5); empty where there is no
    SLURM or it does not answer (then nothing counts as queued: a duplicate job is harmless, a run
    never launched is not)."""
    if shutil.which("squeue") is None:
        return set()
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--user={getpass.getuser()}"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(out.stdout.split()) if out.returncode == 0 else set()


def in_queue(job: str, queued: set[str]) -> bool:
    """Whether job `job` (an array `123`, a task `123_4`, a plain job) still has anything in the queue."""
    return job in queued or any(q.startswith(f"{job}_") for q in queued)


def max_array_size() -> int:
    """The cluster's MaxArraySize (an array's highest index is one less); SLURM's default if unknown."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE
