"""Planned runs: what a sweep, or a study's stage, will train, before anything is launched.

A sweep file (sweeps/NAME.yaml) names its axes as a union of grids, `hydra.sweeper.grids`; extra
command-line overrides compose on top (stemsweep.compose expands them with Hydra's own rules). Each job
is composed and validated here, once, into a PlannedRun: its signature (or, for a run whose lr/wd a
study's `tune` has not written yet, "after tune"), overrides, validated config, where its lr/wd come
from, its resources, its record's status and its cost. The sweeper, the SLURM launcher, `stemsweep
plan` and `status`, and the study commands all plan through `plan_jobs`, so what is planned is what trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from stemsweep.compose import JobComposer, compose_sweep, override_key, override_value
from stemsweep.config import RunConfig, lrwd_origin, paths_unchecked, resolve_hyperparameters, to_run_config
from stemsweep.data.fingerprint import data_mismatch
from stemsweep.errors import ConfigError
from stemsweep.identity import run_signature, source_signature
from stemsweep.plan.cost import Cost, MeasuredSpeeds, estimate
from stemsweep.plan.launcher import LauncherSettings, launcher_settings
from stemsweep.plan.queue import in_queue, slurm_queue
from stemsweep.record.rundir import FINAL, RETRIED, RunDir

IMAGE_FOLDERS = ("imagenet", "imagenet21k")  # the data sets read from a folder a user names (data_roots)


@dataclass(frozen=True)
class PlannedRun:
    overrides: tuple[str, ...]
    config: RunConfig  # validated, lr/wd resolved (a tuning not written yet taken as none)
    planned_signature: str  # the signature of `config`: the run's own, unless it waits on a tune
    after_tune: str | None  # the tuning its lr/wd wait on (not written yet); None: its lr/wd are known
    status: str | None  # its record's status; None: no record (or after tune)
    lrwd_origin: str  # draw | given | tuning | model (stemsweep.config.lrwd_origin)
    tuning: str  # the tuning option the run selects (conf/tuning/: none, mini, …)
    source: str | None  # a fine-tune's source run (its signature), else None
    resources: tuple[tuple[str, object], ...]  # what it asks SLURM for; (): the launcher's own values
    cost: Cost

    @property
    def signature(self) -> str | None:
        """The run's signature, or None while it waits on `tune` (its lr/wd are hashed)."""
        return None if self.after_tune else self.planned_signature

    @property
    def runs_root(self) -> str:
        return self.config.runs_root

    @property
    def run_dir(self) -> RunDir | None:
        return RunDir(self.runs_root, self.planned_signature) if self.after_tune is None else None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def should_launch(self, retry: bool) -> bool:
        """done: never again; failed/diverged: only with retry; running/broken/new: launch (resume)."""
        if self.status == "done":
            return False
        if self.status in RETRIED:
            return retry
        return True

    @property
    def lrwd_label(self) -> str:
        """Where its lr/wd come from, for a plan: `draw 12`, `tuning mini`, `model`, `given`, `after tune X`."""
        if self.after_tune:
            return f"after tune {self.after_tune}"
        if self.lrwd_origin == "draw":
            return f"draw {self.config.lrwd.draw}"
        if self.lrwd_origin == "tuning":
            return f"tuning {self.tuning}"
        return self.lrwd_origin


def tuned_cell(cfg: RunConfig) -> tuple[str, str, str]:
    """The (model size, stem, optimizer) a tuning has one entry for (conf/tuning/)."""
    return cfg.model.size, cfg.stem.name, cfg.optimizer.name


def plan_jobs(jobs: Iterable[Sequence[str]], composer: Callable[[list[str]], DictConfig],
              launcher: LauncherSettings, measured: MeasuredSpeeds | None = None,
              after_tune: dict[str, set[tuple[str, str, str]]] | None = None) -> list[PlannedRun]:
    """Each job composed, validated and found in the records. `after_tune`: the tunings a study's `tune`
    has not written yet (the jobs were composed with tuning=none in their place), each with the cells it
    will have an entry for; a run of such a cell waits on that tune (no signature yet)."""
    measured = measured or MeasuredSpeeds([])
    choices = getattr(composer, "choices", None)
    planned = []
    for overrides in jobs:
        composed = composer(list(overrides))
        with paths_unchecked():  # planning reads no data: a plan is made where the data may not be
            unresolved = to_run_config(composed)
            origin = lrwd_origin(unresolved)
            cfg = resolve_hyperparameters(unresolved)
            signature = run_signature(cfg)
        tuning = str((choices(list(overrides)) if choices else {}).get("tuning") or "none")
        waits = next((name for name, cells in (after_tune or {}).items()
                      if tuning == "none" and origin in ("model", "tuning") and tuned_cell(cfg) in cells), None)
        status = None
        if waits is None:
            summary = RunDir(cfg.runs_root, signature).summary_or_none()
            status = summary and summary["status"]
        planned.append(PlannedRun(
            overrides=tuple(overrides), config=cfg, planned_signature=signature, after_tune=waits, status=status,
            lrwd_origin=origin if waits is None else "tuning", tuning=waits or tuning,
            source=source_signature(cfg), resources=launcher.job_resources(cfg.model.resources),
            cost=estimate(cfg, measured, status)))
    return planned


@dataclass
class SweepPlan:
    """A whole sweep planned: its runs, its composer and its launcher's settings."""

    runs: list[PlannedRun]
    composer: JobComposer
    launcher: LauncherSettings
    arguments: tuple[str, ...]  # the command line's (or the stage's) overrides


def plan_sweep(sweep: str | None, arguments: Sequence[str], measured: MeasuredSpeeds | None = None,
               after_tune: dict[str, set[tuple[str, str, str]]] | None = None) -> SweepPlan:
    """`python -m stemsweep.run -m [+sweeps=NAME] ARGUMENTS`, planned (see compose.compose_sweep)."""
    jobs, composer = compose_sweep(sweep, arguments)
    assert composer.sweep_config is not None
    settings = launcher_settings(composer.sweep_config)
    if measured is None:  # the speeds are measured on the finished runs of the sweep's runs_root
        measured = MeasuredSpeeds.from_runs_roots([composer.sweep_config.get("runs_root", "runs")])
    runs = plan_jobs(jobs, composer, settings, measured, after_tune)
    return SweepPlan(runs, composer, settings, tuple(arguments))


def shared_data_root_problem(arguments: Sequence[str], runs: Iterable[PlannedRun]) -> str | None:
    """One line when a `data.root=` among `arguments` (a sweep's or a study's command line) would reach
    runs of two data sets: an ImageNet-21k pre-training would then train on ImageNet-1k's folder under
    the 21k run's signature (data.root is not part of a run's identity). Each data set's root is named
    on its own instead (`data_roots.NAME=…`)."""
    roots = [a for a in arguments if override_key(a) == "data.root"]
    if not roots:
        return None
    names = sorted({run.config.data.name for run in runs})
    if len(names) < 2:
        return None
    value = override_value(roots[-1])
    instead = " ".join(f"data_roots.{n}=…" for n in names if n in IMAGE_FOLDERS)
    return (f"data.root={value} is not allowed here: it would reach runs of {len(names)} data sets "
            f"({', '.join(names)}); name each data set's root instead ({instead}), on the command line or in "
            "conf/local/")


def refuse_shared_data_root(arguments: Sequence[str], runs: Iterable[PlannedRun]) -> None:
    if problem := shared_data_root_problem(arguments, runs):
        raise ConfigError(problem)


def live_runs(runs: Iterable[PlannedRun]) -> dict[str, str]:
    """{signature: why} of the runs something will train without a new launch: a process holds the
    run's lock (it is training now), or the SLURM job an earlier launch submitted for it is still in
    the queue (pending, running or requeued). Launched again, such a run would be trained twice or
    would take a queue slot only to find its lock held."""
    live: dict[str, str] = {}
    submitted: dict[str, str] = {}
    for run in runs:
        run_dir = run.run_dir
        if run_dir is None:
            continue
        if run_dir.is_locked():
            live[run_dir.signature] = f"training ({run_dir.lock_holder()})"
        elif job := run_dir.submitted_job():
            submitted[run_dir.signature] = job
    if submitted:
        queued = slurm_queue()
        live.update({sig: f"SLURM job {job}" for sig, job in submitted.items() if in_queue(job, queued)})
    return live


def queued_sources(runs: Sequence[PlannedRun]) -> dict[str, str]:
    """{signature: SLURM job} of the fine-tuning sources, not among `runs`, that an earlier submission
    queued and that are still in the queue: their fine-tunes wait on those jobs."""
    planned = {run.planned_signature for run in runs}
    submitted = {}
    for run in runs:
        if run.source is not None and run.source not in planned:
            job = RunDir(run.runs_root, run.source).submitted_job()
            if job:
                submitted[run.source] = job
    if not submitted:
        return {}
    queued = slurm_queue()
    return {source: job for source, job in submitted.items() if in_queue(job, queued)}


def data_mismatches(runs: Iterable[PlannedRun]) -> list[str]:
    """The lines of the runs whose record was trained on other data than the data they name here: such a
    record is neither skipped as done nor resumed (data/fingerprint.py). Checked where the data can be
    read; elsewhere each run checks when it starts."""
    lines = []
    for run in runs:
        summary = run.run_dir.summary_or_none() if run.status is not None and run.run_dir is not None else None
        if summary is not None and (line := data_mismatch(run.config, summary)):
            lines.append(line)
    return lines
