"""What a study's stages expand to, and what they will cost, before anything is queued.

A sweep stage's jobs are its sweep file's grids with the study's and the user's overrides on top, as
`python -m stemsweep.run -m` composes them. A stage after `tune` whose tuning is not written yet has
no run signatures (they hash the tuned lr/wd): its runs are planned with `tuning=none` for their cost
only, and shown as waiting on tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stemsweep.study.cost import UNITS, Cost, MeasuredSpeeds, estimate, hours, sweep_wall_hours
from stemsweep.study.spec import Stage, Study, stage_order


@dataclass
class PlannedStageRun:
    overrides: list[str]
    signature: str | None  # None: not known until its upstream tune has written the tuning
    status: str | None
    cost: Cost
    config: Any = None  # the validated RunConfig (with tuning=none while its tune has not run)


@dataclass
class StagePlan:
    stage: Stage
    runs: list[PlannedStageRun] = field(default_factory=list)
    waits_on_tune: list[str] = field(default_factory=list)  # the tune stages whose tuning is not written yet
    parallel: int = 1  # runs at once, by the launcher's settings
    launcher: Any = None  # the composed `hydra.launcher` of the stage's sweep

    @property
    def wall_hours(self) -> float | None:
        return sweep_wall_hours([r.cost for r in self.runs], self.parallel)


def stage_arguments(study: Study, stage: Stage, overrides: Sequence[str]) -> list[str]:
    """The command-line overrides of a sweep stage: the study's, the stage's, then the user's."""
    arguments = [*study.overrides, *stage.overrides, *overrides]
    if stage.sweep is None and not any(a.partition("=")[0] == "sweep" for a in arguments):
        arguments.append(f"sweep={study.sweep_name(stage)}")
    return arguments


def plannable_arguments(study: Study, stage: Stage, overrides: Sequence[str]) -> tuple[list[str], list[Stage]]:
    """A sweep stage's arguments as they compose now, and the tune stages it waits on: a tuning that is
    not written yet is replaced by `tuning=none`, which gives the same grid, resources and cost."""
    pending = [t for t in study.upstream_tunes(stage) if not t.tuning_file.exists()]
    names = {s.tuning for s in pending}
    arguments = [a if not (a.partition("=")[0].lstrip("+~") == "tuning" and a.partition("=")[2] in names)
                 else "tuning=none" for a in stage_arguments(study, stage, overrides)]
    return arguments, pending


def plan_stage(study: Study, stage: Stage, overrides: Sequence[str], measured: MeasuredSpeeds) -> StagePlan:
    from stemsweep.config import paths_unchecked, validated_config
    from stemsweep.identity import run_signature
    from stemsweep.record.rundir import RunDir
    from stemsweep.sweep.plan import compose_sweep

    plan = StagePlan(stage)
    if stage.kind != "sweep":
        return plan
    arguments, pending = plannable_arguments(study, stage, overrides)
    plan.waits_on_tune = [t.name for t in pending]
    jobs, compose_job = compose_sweep(stage.sweep, arguments)
    plan.launcher = compose_job.sweep_config.hydra.launcher
    plan.parallel = launcher_parallelism(plan.launcher)
    with paths_unchecked():
        for job in jobs:
            cfg = validated_config(compose_job(job))
            signature = None if pending else run_signature(cfg)
            summary = RunDir(cfg.runs_root, signature).summary_or_none() if signature else None
            status = summary and summary["status"]
            plan.runs.append(PlannedStageRun(job, signature, status, estimate(cfg, measured, status), cfg))
    return plan


def launcher_parallelism(launcher) -> int:
    """How many runs a launcher trains at once: SLURM's array_parallelism, joblib's n_jobs, else one."""
    for key in ("array_parallelism", "n_jobs"):
        value = launcher.get(key) if hasattr(launcher, "get") else None
        if isinstance(value, int) and value > 0:
            return value
    return 1


def plan_study(study: Study, overrides: Sequence[str] = ()) -> list[StagePlan]:
    measured = MeasuredSpeeds.from_runs_roots([study.runs_root(overrides)])
    return [plan_stage(study, stage, overrides, measured) for stage in stage_order(study)]


def cost_line(costs: Sequence[Cost], wall: float | None, parallel: int) -> str:
    """'12.3 GPU-h + 0.4 CPU-h, wall 5.1 h at 64 at once' (unknown where any run's cost is)."""
    parts = []
    for device, unit in UNITS.items():
        those = [c for c in costs if c.device == device]
        if those:
            known = all(c.known for c in those)
            parts.append(f"{hours(sum(c.device_hours or 0 for c in those) if known else None)} {unit}")
    return f"{' + '.join(parts) or '0'}, wall {hours(wall)} h at {parallel} at once"


def print_study_plan(study: Study, overrides: Sequence[str], show_runs: bool = True) -> None:
    plans = plan_study(study, overrides)
    print(f"study {study.name} ({study.path}): {len(plans)} stages, runs_root={study.runs_root(overrides)}")
    all_costs: list[Cost] = []
    walls: list[float | None] = []
    for plan in plans:
        stage = plan.stage
        needs = f" after {', '.join(stage.needs)}" if stage.needs else ""
        if stage.kind != "sweep":
            what = f"conf/tuning/{stage.tuning}.yaml from {', '.join(stage.tune_from)}" if stage.kind == "tune" \
                else f"{stage.report_out}" + (f" (records exported to {stage.export})" if stage.export else "")
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
        if show_runs:
            common = {*study.overrides, *overrides}
            for run in plan.runs:
                print(f"  {run.signature or '(after tune)':12s} {run.status or 'new':9s} "
                      f"{hours(run.cost.device_hours):>8s} {run.cost.unit}  {run.cost.source:28s} "
                      f"{' '.join(o for o in run.overrides if o not in common)}")
    total_wall = None if any(w is None for w in walls) else sum(w or 0.0 for w in walls)
    print(f"\ntotal: {len(all_costs)} runs, {sum(c.source != 'done' for c in all_costs)} to train; "
          f"{cost_line(all_costs, total_wall, max((p.parallel for p in plans), default=1))} "
          "(stages one after another)")
