"""What a sweep expands to: each run's overrides, signature and recorded status, before any launch.

A sweep file (sweeps/NAME.yaml) names its axes as a union of grids, `hydra.sweeper.grids`: the paper's
experiments are such unions (ViT {P,C} × sizes × epochs, and RegNetY × sizes × epochs, which has no
stem axis). Each grid is expanded with Hydra's own BasicSweeper rules (comma lists, range(...)); extra
command-line overrides compose on top, replacing a grid's axis of the same name.
"""

from __future__ import annotations

import functools
import getpass
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.version import __version__ as omegaconf_version

from stemsweep.record.rundir import RunDir
from stemsweep.sweep.kept import KeptCompositions

OMEGACONF_2_4 = tuple(int(part) for part in omegaconf_version.split(".")[:2]) >= (2, 4)


@dataclass
class PlannedRun:
    overrides: list[str]
    signature: str
    status: str | None  # the record's status; None when the run has no record yet
    runs_root: str
    config: Any = None  # the validated RunConfig, lr/wd resolved

    def should_launch(self, retry: bool) -> bool:
        """done: never again; failed/diverged: only with retry; running/broken/new: launch (resume)."""
        if self.status == "done":
            return False
        if self.status in ("failed", "diverged"):
            return retry
        return True


def expand_grids(grids: Sequence[dict[str, str]] | None, arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides: each grid × the arguments, in order, grid by grid (BasicSweeper's rules:
    a config a job appends, `+sweeps=NAME` or a grid's `+stage=…`, is composed in that order)."""
    parser = OverridesParser.create()
    argument_keys = {o.get_key_element() for o in parser.parse_overrides(list(arguments))}
    jobs: list[list[str]] = []
    for grid in grids or [{}]:
        params = [f"{k}={v}" for k, v in grid.items() if k not in argument_keys] + list(arguments)
        [batch] = BasicSweeper.split_arguments(parser.parse_overrides(params), None)
        jobs.extend(batch)
    return jobs


class JobComposer:
    """Composes each job's run config as Hydra does for the job, config groups once per distinct choice.

    Hydra composes a config from its config-group overrides (the defaults list: model=, stem=, +sweeps=
    ...) and then applies the plain value overrides (epochs=, lrwd.draw=, ...) to the result. Sweeps vary
    the values far more than the groups (64 lr/wd draws of one model), and composing the groups is most
    of a job's cost (docs/benchmarks.md), so it is done once per distinct group overrides and copied. `fixed` are
    overrides every job shares, given first (the hydra overrides of the command line, as Hydra's
    load_sweep_config prepends them). The `hydra` node is dropped: the task function never sees it.
    """

    def __init__(self, loader: Any, config_name: str = "config", fixed: Sequence[str] = (),
                 cache_from: DictConfig | None = None, kept: bool = False):
        self.loader, self.config_name, self.fixed, self.cache_from = loader, config_name, list(fixed), cache_from
        self.parser = OverridesParser.create()
        self.parsed: dict[str, Any] = {}  # each override parsed once: sweeps repeat them job after job
        # Each distinct composition, pickled: unpickling copies a config 5× faster than copy.deepcopy
        # (docs/benchmarks.md, "Studies"), and a job's value overrides must not reach the next job.
        self.bases: dict[tuple[str, ...], bytes] = {}
        self.kept = KeptCompositions.of(loader, config_name) if kept else None
        self.sweep_config: DictConfig | None = None  # the whole sweep's, `hydra` node included (compose_sweep)

    @classmethod
    def of_sweep(cls, loader: Any, sweep_config: DictConfig, kept: bool = False) -> JobComposer:
        """The composer of a multirun's jobs, as Hydra's launchers compose them (load_sweep_config): the
        command line's hydra overrides come first, unresolved, so that `hydra.sweep.subdir=${hydra.job.num}`
        or `${hydra.job.override_dirname}` are resolved per job, not in the sweep's config. `kept`: read
        and keep compositions on disk (sweep/kept.py), for planning commands."""
        composer = cls(loader, sweep_config.hydra.job.config_name, fixed=raw_overrides(sweep_config, "hydra"),
                       cache_from=sweep_config, kept=kept)
        composer.sweep_config = sweep_config
        return composer

    def full(self, overrides: Sequence[str]) -> DictConfig:
        """Hydra's own composition, `hydra` node included."""
        from hydra.types import RunMode

        return self.loader.load_configuration(self.config_name, [*self.fixed, *overrides], run_mode=RunMode.RUN,
                                              from_shell=False)

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        structural, values = [], []
        for override in map(self._parse, overrides):
            is_value = (not override.is_hydra_override() and override.package is None
                        and not self.loader.repository.group_exists(override.key_or_group))
            (values if is_value else structural).append(override)
        key = tuple(o.input_line for o in structural)
        if key not in self.bases:
            self.bases[key] = self._base(key)
        cfg = pickle.loads(self.bases[key])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # as Hydra applies them after composing
        if self.cache_from is not None:
            OmegaConf.copy_cache(from_config=self.cache_from, to_config=cfg)  # e.g. ${now:} as the sweep's
        return cfg

    def _parse(self, override: str) -> Any:
        if override not in self.parsed:
            [self.parsed[override]] = self.parser.parse_overrides([override])
        return self.parsed[override]

    def _base(self, key: tuple[str, ...]) -> bytes:
        """The composition of the config-group overrides `key`, pickled: kept on disk, else Hydra's."""
        every = [*self.fixed, *key]
        if self.kept is not None and (pickled := self.kept.get(every)) is not None:
            try:
                pickle.loads(pickled)
                return pickled
            except Exception:  # noqa: BLE001 - an entry cut short or from another pickle: compose again
                pass
        base = self.full(list(key))
        with open_dict(base):
            del base["hydra"]
        pickled = pickle.dumps(base)
        if self.kept is not None:
            self.kept.put(every, pickled)
        return pickled


def raw_overrides(sweep_config: DictConfig, kind: str) -> list[str]:
    """The command line's `hydra` or `task` overrides as typed (Hydra passes them on unresolved: an
    interpolation in them refers to the job's config, which the sweep's config does not have yet)."""
    return list(OmegaConf.to_container(sweep_config.hydra.overrides[kind], resolve=False))


def sweep_jobs(grids: Sequence[dict[str, str]] | None, params: dict[str, str] | None,
               arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides, as the stemsweep sweeper expands them: its grids × its params (as
    BasicSweeper's, `hydra.sweeper.params`) and the command line's task overrides (`arguments`)."""
    return expand_grids(grids, [*(f"{k}={v}" for k, v in (params or {}).items()), *arguments])


def plan_runs(jobs: Sequence[Sequence[str]], compose: Callable[[list[str]], DictConfig]) -> list[PlannedRun]:
    """Compose each job's config, validate it and find its record."""
    return [plan_run(overrides, compose(list(overrides))) for overrides in jobs]


def plan_run(overrides: Sequence[str], composed: DictConfig) -> PlannedRun:
    """One job, from its composed config."""
    run_dir, cfg = _run_dir_and_config(composed)
    summary = run_dir.summary_or_none()
    return PlannedRun(list(overrides), run_dir.signature, summary and summary["status"], run_dir.runs_root, cfg)


def run_dir_of(composed: DictConfig) -> RunDir:
    """The directory of the run a composed job config describes, once the config is validated (its
    data paths are not checked: planning reads no data)."""
    return _run_dir_and_config(composed)[0]


def _run_dir_and_config(composed: DictConfig) -> tuple[RunDir, Any]:
    from stemsweep.config import paths_unchecked, validated_config
    from stemsweep.identity import run_signature

    with paths_unchecked():
        cfg = validated_config(composed)
    return RunDir(cfg.runs_root, run_signature(cfg)), cfg


def live_runs(runs: Sequence[PlannedRun]) -> dict[str, str]:
    """{signature: why} of the runs something will train without a new launch: a process holds the
    run's lock (it is training now), or the SLURM job an earlier launch submitted for it is still in
    the queue (pending, running or requeued). Launched again, such a run would be trained twice or
    would take a queue slot only to find its lock held."""
    live: dict[str, str] = {}
    submitted: dict[str, str] = {}
    for run in runs:
        run_dir = RunDir(run.runs_root, run.signature)
        if run_dir.is_locked():
            live[run.signature] = f"training ({run_dir.lock_holder()})"
        elif job := run_dir.submitted_job():
            submitted[run.signature] = job
    if submitted:
        queued = slurm_queue()
        live.update({sig: f"SLURM job {job}" for sig, job in submitted.items() if job in queued})
    return live


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


def register_with_omegaconf() -> None:
    """What composing conf/ needs registered first (idempotent): the schema its defaults list names,
    and the `${run_signature:…}` resolver of its fine-tuning stage."""
    from stemsweep.config import register_configs

    register_configs()
    if not OmegaConf.has_resolver("run_signature"):
        # omegaconf 2.4 names it register_resolver and deprecates register_new_resolver (with a warning
        # on every command); 2.3's register_resolver is the legacy one, of strings only.
        register = OmegaConf.register_resolver if OMEGACONF_2_4 else OmegaConf.register_new_resolver
        register("run_signature", signature_of_overrides, use_cache=True)


def config_loader() -> Any:
    """A Hydra config loader over conf/ (and sweeps/, through the search-path plugin)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    from stemsweep.config import CONF_DIR

    register_with_omegaconf()
    return ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))


@functools.cache
def _composer() -> JobComposer:
    return JobComposer(config_loader(), kept=True)


def compose(overrides: Sequence[str]) -> Any:
    """The config one run with these overrides composes to, as `python -m stemsweep.run …` composes it
    (not validated: `run_dir_of` or `stemsweep.config.validated_config` do that)."""
    return _composer()(list(overrides))


def signature_of_overrides(overrides: str) -> str:
    """The signature of the run that these overrides (space-separated, Hydra's syntax) describe: how a
    fine-tuning config names the pre-training run it starts from (the `${run_signature:'…'}` resolver)."""
    return run_dir_of(compose(overrides.split())).signature


def compose_sweep(sweep: str | None, overrides: Sequence[str],
                  kept: bool = True) -> tuple[list[list[str]], JobComposer]:
    """The jobs of `python -m stemsweep.run -m +sweeps=NAME OVERRIDES` (None: of the overrides alone, a
    grid of the command line), and a function composing one job's config: the sweep's config is
    composed for a multirun (sweeping overrides such as `seed=0,1` or `seed=range(3)` are allowed) and
    expanded as the sweeper expands it, so each job has the overrides, and the run the signature, that
    the sweep launches.

    Composes with a config loader of its own, as the sweeper does inside Hydra, not through
    hydra.initialize: that sets a process-wide GlobalHydra which a second call would find taken. The
    jobs' compositions are kept on disk between commands unless `kept` is false (sweep/kept.py).
    """
    from hydra.types import RunMode

    loader = config_loader()
    sweep_file = [f"+sweeps={sweep}"] if sweep else []
    sweep_config = loader.load_configuration("config", [*sweep_file, *overrides], run_mode=RunMode.MULTIRUN,
                                             from_shell=False)
    sweeper = sweep_config.hydra.sweeper
    jobs = sweep_jobs(sweeper.get("grids"), sweeper.get("params"), raw_overrides(sweep_config, "task"))
    return jobs, JobComposer.of_sweep(loader, sweep_config, kept=kept)


def sweep_file_problem(name: str) -> str | None:
    """What keeps sweeps/NAME.yaml from being read, in one line (file:line:column for YAML), or None.

    Hydra would report a YAML error as a long traceback with the position on its last lines; every
    entry point (`python -m stemsweep.run -m +sweeps=NAME`, `stemsweep plan`, `stemsweep status`)
    checks the file first and says it in one line instead."""
    import yaml

    from stemsweep.config import SWEEPS_DIR

    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
        return f"sweep {name!r} is not allowed: there is no {path}; the sweeps are: {names}"
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        return f"sweep file {where}: not valid YAML: {what}"
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return f"sweep file {path}: not valid YAML: {exc}".splitlines()[0]
    if content is not None and not isinstance(content, dict):
        return f"sweep file {path}: not allowed: a sweep file is a mapping (keys: defaults, hydra, …), not a " \
               f"{type(content).__name__}"
    return None


def print_plan(sweep: str, overrides: Sequence[str]) -> int:
    problem = sweep_file_problem(sweep)
    if problem:
        print(f"stemsweep plan: error: {problem}", file=sys.stderr)
        return 2
    try:
        jobs, compose_job = compose_sweep(sweep, overrides)
    except Exception as exc:  # a sweep file that does not compose (an unknown option, a bad override)
        print(f"stemsweep plan: error: sweep {sweep!r}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    from stemsweep.study.cost import MeasuredSpeeds, estimate, hours, sweep_wall_hours
    from stemsweep.study.plan import cost_line, launcher_parallelism

    measured = None
    costs = []
    for run in plan_runs(jobs, compose_job):
        if measured is None:  # the speeds are measured on the finished runs of the same runs_root
            measured = MeasuredSpeeds.from_runs_roots([run.runs_root])
        cost = estimate(run.config, measured, run.status)
        costs.append(cost)
        print(f"{run.signature}  {run.status or 'new':8s}  {hours(cost.device_hours):>8s} {cost.unit}  "
              f"{cost.source:28s} {' '.join(run.overrides)}")
    parallel = launcher_parallelism(compose_job.sweep_config.hydra.launcher)
    print(f"{len(jobs)} runs: {cost_line(costs, sweep_wall_hours(costs, parallel), parallel)}")
    return 0
