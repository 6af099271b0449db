"""Shared pytest fixtures.

SLURM: tests marked ``@pytest.mark.slurm`` (or asking for ``slurm_cluster``) run against the real
single-node cluster of ``scripts/local-slurm.sh`` (``make test`` brings it up and down). Without a
cluster they are skipped, unless ``CI=true`` or ``STEMSWEEP_REQUIRE_SLURM=1`` (run-tests.sh sets it):
then they fail. Deselect them with ``-m "not slurm"``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# `make test` runs the tests on two workers side by side (pytest-xdist: -n 2 --dist loadfile
# --no-loadscope-reorder, scripts/run-tests.sh): the suite waits on subprocesses, kernels and SLURM jobs
# for much of its time, one core idle, and a second worker fills it. A unit of work is a test file, so
# its module fixtures are made once, except that every SLURM test file is in one unit, run one after
# another on one worker: they share the one node's 4 CPUs and some count on them. The slowest units go
# first (measured: docs/benchmarks.md, "The test suite"), the rest in file order, so that neither worker
# is left with a long unit at the end.
SLURM_UNIT = "slurm"
SLOWEST_FIRST = (SLURM_UNIT, "tests/analysis/test_notebooks.py", "tests/test_interrupt.py",
                 "tests/study/test_study_local.py", "tests/bench/test_gpu_check.py", "tests/sweep/test_launch.py",
                 "tests/test_run.py", "tests/train/test_ddp.py")


def work_unit(nodeid: str) -> str:
    """The unit a test runs in: its file, or SLURM_UNIT for tests/slurm/ and *_slurm.py files."""
    path = nodeid.split("::", 1)[0]
    return SLURM_UNIT if path.startswith("tests/slurm/") or path.endswith("_slurm.py") else path


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is a dev dependency; without it the tests run one after another
    pass
else:
    class WorkUnits(LoadScopeScheduling):
        """xdist's loadfile with the SLURM files as one unit. (Not loadgroup with xdist_group marks: from
        pytest 9 on a node's id is no longer `_nodeid`, which loadgroup rewrites, so its groups split.)"""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        return WorkUnits(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    misplaced = [item.nodeid for item in items if (item.get_closest_marker("slurm") or "slurm_cluster" in
                 getattr(item, "fixturenames", ())) and work_unit(item.nodeid) != SLURM_UNIT]
    if misplaced:
        raise pytest.UsageError(f"{misplaced[0]} needs SLURM: put it in tests/slurm/ or a *_slurm.py file, so "
                                "that it runs in the one unit of SLURM tests (tests/conftest.py)")
    order = {unit: rank for rank, unit in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: order.get(work_unit(item.nodeid), len(order)))  # stable: file order otherwise


def pytest_unconfigure(config):
    if not any(line.startswith("slurm:") for line in config.getini("markers")):  # pyproject has it
        config.addinivalue_line(
            "markers", "slurm: needs the local single-node SLURM cluster (scripts/local-slurm.sh up)"
        )


@dataclass(frozen=True)
class SlurmCluster:
    partition: str  # the default partition: pass it as slurm_partition / hydra.launcher.partition
    node: str
    cpus: int  # CPUs the node advertises (more than 1-CPU jobs can then run side by side)


def _slurm_required() -> bool:
    return (
        os.environ.get("CI", "").lower() in ("1", "true", "yes")
        or os.environ.get("STEMSWEEP_REQUIRE_SLURM") == "1"
        or os.environ.get("STEMSWEEP_SLURM_UP_FAILED") == "1"  # set by scripts/run-tests.sh
    )


def _find_cluster() -> SlurmCluster | str:
    """The cluster if sinfo shows a usable node, else why not."""
    why = ""
    for _ in range(20):  # a node that just started may take a moment to register
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%P|%N|%t|%c"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"sinfo did not run: {e}"
        if out.returncode != 0:
            return f"sinfo failed: {out.stderr.strip()}"
        for line in out.stdout.split():
            part, node, state, cpus = line.split("|")
            if part.endswith("*") and state in ("idle", "mix", "alloc"):
                return SlurmCluster(partition=part.rstrip("*"), node=node, cpus=int(cpus))
        why = f"no usable node in the default partition: sinfo says {out.stdout.strip()!r}"
        time.sleep(0.5)
    return why


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM cluster (a SlurmCluster); skips, or fails in CI, when there is none.

    If the shell has not been set up (``eval "$(scripts/local-slurm.sh env)"``), this puts the
    cluster's client wrappers first in PATH for the session; submitted jobs inherit that PATH.
    """
    saved = {k: os.environ.get(k) for k in ("PATH", "SLURM_CONF")}
    state_dir = Path(os.environ.get("STEMSWEEP_SLURM_DIR", "/tmp/stemsweep-slurm"))
    if (state_dir / "bin" / "sinfo").exists() and "SLURM_CONF" not in os.environ:
        os.environ["PATH"] = f"{state_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
        os.environ["SLURM_CONF"] = str(state_dir / "etc" / "slurm.conf")
    try:
        found = _find_cluster()
        if isinstance(found, str):
            msg = f"no local SLURM cluster ({found}); run `scripts/local-slurm.sh up` or `make test`"
            if os.environ.get("STEMSWEEP_SLURM_UP_FAILED"):
                msg = f"scripts/local-slurm.sh up failed (see its output above); {found}"
            if _slurm_required():
                pytest.fail(f"{msg}  [CI or STEMSWEEP_REQUIRE_SLURM=1: failing, not skipping]", pytrace=False)
            pytest.skip(msg)
        yield found
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _slurm_marker_needs_cluster(request):
    """Tests marked ``slurm`` get the cluster check even when they don't ask for the fixture."""
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm_cluster")


@pytest.fixture
def run_in_process(caplog):
    """`run()` in this process on the config `python -m stemsweep.run OVERRIDES` composes: a real training
    without a process (and its torch import) of its own. Returns what the run logged."""
    import torch

    from stemsweep.compose import compose
    from stemsweep.run import run

    threads = torch.get_num_threads()  # a run's `threads` sets it for the whole process

    def train(*overrides: str) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="stemsweep"):
            run(compose(list(overrides)))
        return caplog.text
    yield train
    torch.set_num_threads(threads)
