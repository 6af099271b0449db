"""What a sweep expands to: each run's overrides, signature and recorded status, before any launch.

A sweep file (sweeps/NAME.yaml) names its axes as a union of grids, `hydra.sweeper.grids`: the paper's
experiments are such unions (ViT {P,C} × sizes × epochs, and RegNetY × sizes × epochs, which has no
stem axis). Each grid is expanded with Hydra's own BasicSweeper rules (comma lists, range(...)); extra
command-line overrides compose on top, replacing a grid's axis of the same name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from stemsweep.record.rundir import CorruptRecord, RunDir


@dataclass
class PlannedRun:
    overrides: list[str]
    signature: str
    status: str | None  # the record's status; None when the run has no record yet
    runs_root: str

    def should_launch(self, retry: bool) -> bool:
        """done: never again; failed/diverged: only with retry; running/broken/new: launch (resume)."""
        if self.status == "done":
            return False
        if self.status in ("failed", "diverged"):
            return retry
        return True


def expand_grids(grids: Sequence[dict[str, str]] | None, arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides: each grid × the arguments, in order, grid by grid."""
    parser = OverridesParser.create()
    argument_keys = {o.get_key_element() for o in parser.parse_overrides(list(arguments))}
    jobs: list[list[str]] = []
    for grid in grids or [{}]:
        params = [f"{k}={v}" for k, v in grid.items() if k not in argument_keys] + list(arguments)
        [batch] = BasicSweeper.split_arguments(parser.parse_overrides(params), None)
        jobs.extend(batch)
    return jobs


def plan_runs(jobs: Sequence[Sequence[str]], compose: Callable[[list[str]], DictConfig]) -> list[PlannedRun]:
    """Compose each job's config, validate it and find its record."""
    from stemsweep.config import paths_unchecked
    from stemsweep.run import signature_of, validated_config

    planned = []
    for overrides in jobs:
        with paths_unchecked():
            cfg = validated_config(compose(list(overrides)))
        signature = signature_of(cfg)
        try:
            summary = RunDir(cfg.runs_root, signature).read_summary()
        except CorruptRecord:
            summary = None  # launched again, it resumes from its checkpoint and rewrites the record
        planned.append(PlannedRun(list(overrides), signature, summary and summary["status"], cfg.runs_root))
    return planned


def compose_sweep(sweep: str, overrides: Sequence[str]) -> tuple[list[list[str]], Callable]:
    """The jobs of sweep file NAME with extra overrides, and a function composing one job's config.

    Composes with a config loader of its own, as the sweeper does inside Hydra, not through
    hydra.initialize: that sets a process-wide GlobalHydra which a second call would find taken.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import open_dict

    from stemsweep.run import CONF_DIR

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))

    def compose(job_overrides: list[str]) -> DictConfig:
        return loader.load_configuration("config", [f"+sweeps={sweep}", *job_overrides], run_mode=RunMode.RUN,
                                         from_shell=False)

    hydra_cfg = compose(list(overrides)).hydra
    grids = hydra_cfg.sweeper.get("grids")
    params = hydra_cfg.sweeper.get("params")
    sweep_args = [f"{k}={v}" for k, v in (params or {}).items()]
    jobs = expand_grids(grids, [*sweep_args, *overrides])

    def compose_job(job: list[str]) -> DictConfig:
        cfg = compose(job)
        with open_dict(cfg):
            del cfg["hydra"]  # the run's config, as its task function sees it
        return cfg

    return jobs, compose_job


def print_plan(sweep: str, overrides: Sequence[str]) -> int:
    try:
        jobs, compose_job = compose_sweep(sweep, overrides)
    except Exception as exc:  # a sweep file that does not parse or compose
        print(f"stemsweep plan: error: sweep {sweep!r}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    for run in plan_runs(jobs, compose_job):
        print(f"{run.signature}  {run.status or 'new':8s}  {' '.join(run.overrides)}")
    print(f"{len(jobs)} runs")
    return 0
