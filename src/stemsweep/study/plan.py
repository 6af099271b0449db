"""What a study's stages expand to, and what they will cost, before anything is queued.

A sweep stage's jobs are its sweep file's grids with the study's, the stage's and the user's overrides on
top, planned by the spine (stemsweep.plan.runs) as `python -m stemsweep.run -m` would launch them. A tune
stage is pending while its tuning file is missing or its lr/wd sweeps have runs without a result: a later
stage's runs of a cell it tunes have no signature yet (they hash the tuned lr/wd) and are planned with
`tuning=none` for their cost only, shown as after tune. A stage that selects a tuning, written or
pending, and has a run the tuning has no entry for is refused here, unless the study file names that
model size under the stage's `untuned:`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from stemsweep.compose import override_key, override_value, parse_override
from stemsweep.errors import ConfigError
from stemsweep.plan.cost import MeasuredSpeeds, sweep_wall_hours
from stemsweep.plan.launcher import LauncherSettings
from stemsweep.plan.printer import cost_line, run_line
from stemsweep.plan.runs import PlannedRun, plan_sweep, refuse_shared_data_root, tuned_cell
from stemsweep.study.adaptive import Waves, cut_runs, expected_replicates, recorded_waves, stage_waves
from stemsweep.study.record import StudyRecord
from stemsweep.study.spec import Stage, Study, stage_order

Cells = set[tuple[str, str, str]]  # (model size, stem, optimizer): what a tuning has entries for


@dataclass
class StagePlan:
    stage: Stage
    runs: list[PlannedRun] = field(default_factory=list)
    waits_on: dict[str, Cells] = field(default_factory=dict)  # the pending tunings it selects, and their cells
    launcher: LauncherSettings | None = None  # the settings of the stage's sweep's launcher
    tune_stages: dict[str, str] = field(default_factory=dict)  # tuning → the stage that writes it
    waves: Waves | None = None  # a stage its study's comparisons name runs in waves (study/adaptive.py)
    recorded: list[dict] = field(default_factory=list)  # the waves decided so far
    cut: set[str] = field(default_factory=set)  # planned signatures that will never run (waves' decisions)

    @property
    def active_runs(self) -> list[PlannedRun]:
        """The runs it trains: all, less those its recorded wave decisions cut."""
        return [run for run in self.runs if run.planned_signature not in self.cut]

    @property
    def parallel(self) -> int:
        return self.launcher.parallel if self.launcher else 1

    @property
    def wall_hours(self) -> float | None:
        return sweep_wall_hours([r.cost for r in self.runs], self.parallel)

    @property
    def waits_on_tune(self) -> list[str]:
        """The tune stages some of its runs wait on (they have no signature before them)."""
        return sorted({self.tune_stages.get(run.after_tune, run.after_tune) for run in self.runs if run.after_tune})

    @property
    def final(self) -> bool:
        """Every run it trains has its result (and, in waves, every wave it needs is decided)."""
        waves_done = self.waves is None or (bool(self.recorded) and not self.recorded[-1]["active"])
        return waves_done and all(run.final for run in self.active_runs)


def stage_arguments(study: Study, stage: Stage, overrides: Sequence[str]) -> list[str]:
    """The command-line overrides of a sweep stage: the study's, the stage's, then the user's."""
    arguments = [*study.overrides, *stage.overrides, *overrides]
    if stage.sweep is None and not any(override_key(a) == "sweep" for a in arguments):
        arguments.append(f"sweep={study.sweep_name(stage)}")
    return arguments


def plan_stage(study: Study, stage: Stage, overrides: Sequence[str], measured: MeasuredSpeeds | None = None,
               pending: dict[str, Cells] | None = None) -> StagePlan:
    """A sweep stage, planned. `pending`: the tunings not written yet (or to be written again), with the
    cells each will have; the stage's `tuning=` choices among them are planned as `tuning=none`."""
    plan = StagePlan(stage, tune_stages={s.tuning: s.name for s in study.stages if s.kind == "tune"})
    if stage.kind != "sweep":
        return plan
    arguments = stage_arguments(study, stage, overrides)
    selected = {override_value(a) for a in arguments if override_key(a) == "tuning"}
    plan.waits_on = {name: cells for name, cells in (pending or {}).items() if name in selected}
    as_planned = untuned_arguments(arguments, plan.waits_on)
    sweep = plan_sweep(stage.sweep, as_planned, measured or MeasuredSpeeds([]), after_tune=plan.waits_on)
    plan.runs = [replace(run, overrides=job_overrides(run.overrides, arguments)) for run in sweep.runs]
    plan.launcher = sweep.launcher
    for run in plan.runs:
        if problem := untuned_problem(study, stage, run, plan.waits_on):
            raise ConfigError(problem)
    return plan


def untuned_arguments(arguments: Sequence[str], pending: dict[str, Cells]) -> list[str]:
    """The arguments a stage is planned with while the tunings in `pending` are not written: `tuning=none`
    in their place (the same grid, resources and cost; the lr/wd of the cells they tune are unknown)."""
    return [a if not (override_key(a) == "tuning" and override_value(a) in pending) else "tuning=none"
            for a in arguments]


def job_overrides(planned: Sequence[str], arguments: Sequence[str]) -> tuple[str, ...]:
    """A job's own overrides, from those it was planned with (untuned_arguments): a job ends with the
    task arguments it was expanded from, one for one (compose.expand_grids; the hydra ones are not a
    job's), so they are put back."""
    task = [a for a in arguments if not parse_override(a).is_hydra_override()]
    head = list(planned[:len(planned) - len(task)])
    return tuple(head + [a if p == "tuning=none" else p for p, a in zip(planned[len(head):], task)])


def untuned_problem(study: Study, stage: Stage, run: PlannedRun, waits_on: dict[str, Cells]) -> str | None:
    """One line when a run of a stage that selects a tuning would train at its model's own lr/wd (the
    tuning has no entry for it) and the study file does not say that is meant (`untuned:`)."""
    tuning = run.tuning if run.tuning != "none" else next(iter(waits_on), None)
    if tuning is None or run.after_tune or run.lrwd_origin != "model" or run.config.model.size in stage.untuned:
        return None
    size, stem, optimizer = tuned_cell(run.config)
    return (f"stage {stage.name}: run `{' '.join(run.overrides)}` selects tuning={tuning}, which has no entry for "
            f"{size} {stem} {optimizer}: it would train at {size}'s own lr/wd (conf/model/); if that is meant, "
            f"name {size} under the stage's `untuned:` in {study.path}, else tune it")


def pending_tunings(study: Study, stages: dict[str, StagePlan]) -> dict[str, Cells]:
    """The tunings a study's `tune` stages will (re)write, each with the cells it will have: a tuning
    file that is missing, or whose lr/wd sweeps have runs without a result. `stages`: the plans of the
    stages before (stage order puts a tune stage's sources first)."""
    pending: dict[str, Cells] = {}
    for stage in study.stages:
        if stage.kind != "tune" or not all(name in stages for name in stage.tune_from):
            continue
        sources = [run for name in stage.tune_from for run in stages[name].active_runs]
        if not stage.tuning_file.exists() or not all(stages[name].final for name in stage.tune_from):
            pending[stage.tuning] = {tuned_cell(run.config) for run in sources if run.lrwd_origin == "draw"}
    return pending


def study_plans(study: Study, overrides: Sequence[str], until: Stage | None = None, through: bool = False,
                measured: MeasuredSpeeds | None = None) -> dict[str, StagePlan]:
    """The study's stages in order, each planned, up to `until` (included with `through`; None: all); a
    stage in waves with what its recorded decisions cut."""
    record = StudyRecord(study, study.runs_root(overrides))
    plans: dict[str, StagePlan] = {}
    for stage in stage_order(study):
        if stage == until and not through:
            break
        plan = plan_stage(study, stage, overrides, measured, pending_tunings(study, plans))
        plan.waves = stage_waves(study, stage, plan.runs) if stage.kind == "sweep" else None
        if plan.waves is not None:
            plan.recorded = recorded_waves(record, stage)
            plan.cut = cut_runs(plan.waves, plan.recorded)
        plans[stage.name] = plan
        if stage == until:
            break
    return plans


def plan_study(study: Study, overrides: Sequence[str] = ()) -> list[StagePlan]:
    """Every stage in order, planned (a `data.root` of the study's or the user's overrides that would
    reach two data sets is refused)."""
    plans = study_plans(study, overrides, measured=MeasuredSpeeds.from_runs_roots([study.runs_root(overrides)]))
    refuse_shared_data_root([*study.overrides, *overrides], (run for p in plans.values() for run in p.runs))
    return list(plans.values())


def run_weights(study: Study, plan: StagePlan) -> dict[str, float]:
    """Per run (planned signature), the share of it a stage is expected to train: 1 for a run of a stage
    that runs as a whole; for one in waves, its cell's expected replicates over its maximum."""
    if plan.waves is None:
        return {run.planned_signature: 1.0 for run in plan.runs}
    waves = plan.waves
    expected, _ = expected_replicates(study, waves, plan.recorded)
    weights = {}
    for cell, by in waves.cells.items():
        kept = [run for r, run in by.items() if waves.wave_of(r) is not None]
        weights.update({run.planned_signature: min(1.0, expected[cell] / len(kept)) for run in kept})
    return weights


def weighted(runs: Sequence[PlannedRun], weights: dict[str, float]) -> list:
    return [replace(run.cost, device_hours=None if not run.cost.known else (run.cost.device_hours or 0.0) *
                    weights.get(run.planned_signature, 0.0)) for run in runs if run.planned_signature in weights]


def waves_line(study: Study, plan: StagePlan) -> str:
    """An adaptive stage's waves, and its GPU-hours at most and as expected (study/adaptive.py)."""
    waves = plan.waves
    assert waves is not None
    _, source = expected_replicates(study, waves, plan.recorded)
    weights = run_weights(study, plan)
    most = weighted(plan.runs, dict.fromkeys(weights, 1.0))
    names = ", ".join(c.name for c in waves.comparisons)
    return (f"in waves of {waves.wave} {waves.replicate} (up to {waves.max}; comparisons {names}): at most "
            f"{device_hours(most)}, expected {device_hours(weighted(plan.runs, weights))} (from {source})")


def device_hours(costs: Sequence) -> str:
    return cost_line(costs, None, 1).split(", wall")[0]


def print_study_plan(study: Study, overrides: Sequence[str], show_runs: bool = True) -> None:
    plans = plan_study(study, overrides)
    print(f"study {study.name} ({study.path}): {len(plans)} stages, runs_root={study.runs_root(overrides)}")
    all_costs = []
    walls: list[float | None] = []
    for plan in plans:
        stage = plan.stage
        needs = f" after {', '.join(stage.needs)}" if stage.needs else ""
        if stage.kind != "sweep":
            what = f"tuning {stage.tuning} ({stage.tuning_file}) from {', '.join(stage.tune_from)}" \
                if stage.kind == "tune" else \
                f"{stage.report_out}" + (f" (records exported to {stage.export})" if stage.export else "")
            print(f"\n[{stage.name}] {stage.kind}{needs}: {what}")
            continue
        costs = [r.cost for r in plan.runs]
        all_costs += costs
        walls.append(plan.wall_hours)
        new = sum(r.status != "done" for r in plan.runs)
        print(f"\n[{stage.name}] sweep {stage.sweep or '(overrides)'}{needs}: {len(plan.runs)} runs, {new} to train; "
              f"{cost_line(costs, plan.wall_hours, plan.parallel)}")
        if plan.waits_on_tune:
            print(f"  signatures: after {', '.join(plan.waits_on_tune)} (they hash the tuned lr/wd; costed "
                  "with tuning=none)")
        if stage.untuned:
            print(f"  at their own lr/wd, as the study file says: {', '.join(stage.untuned)}")
        if plan.waves is not None:
            print("  " + waves_line(study, plan))
        if show_runs:
            common = {*study.overrides, *overrides}
            for run in plan.runs:
                print("  " + run_line(run, common))
    total_wall = None if any(w is None for w in walls) else sum(w or 0.0 for w in walls)
    print(f"\ntotal: {len(all_costs)} runs, {sum(c.source != 'done' for c in all_costs)} to train; "
          f"{cost_line(all_costs, total_wall, max((p.parallel for p in plans), default=1))} "
          "(stages one after another)")
    runs: dict[str, PlannedRun] = {}
    weights: dict[str, float] = {}
    for plan in plans:
        runs.update({run.planned_signature: run for run in plan.runs})
        for signature, weight in run_weights(study, plan).items():
            weights[signature] = max(weight, weights.get(signature, 0.0))
    if len(runs) < len(all_costs) or any(p.waves is not None for p in plans):
        print(f"distinct runs (one that two stages name is trained once): {len(runs)}, "
              f"{device_hours(weighted(list(runs.values()), dict.fromkeys(runs, 1.0)))} at most"
              + (f", {device_hours(weighted(list(runs.values()), weights))} expected (stages in waves as expected)"
                 if any(p.waves is not None for p in plans) else ""))
