"""`stemsweep plan SWEEP [OVERRIDES]`: the runs `python -m stemsweep.run -m +sweeps=SWEEP OVERRIDES`
launches, each with its signature, its record's status, its cost and where its lr/wd come from."""

from __future__ import annotations

from collections.abc import Sequence

from stemsweep.compose import sweep_file_problem
from stemsweep.errors import ConfigError
from stemsweep.plan.cost import sweep_wall_hours
from stemsweep.plan.printer import cost_line, run_line
from stemsweep.plan.runs import plan_sweep, refuse_shared_data_root


def print_plan(sweep: str, overrides: Sequence[str]) -> None:
    if problem := sweep_file_problem(sweep):
        raise ConfigError(problem)
    plan = plan_sweep(sweep, overrides)
    refuse_shared_data_root(overrides, plan.runs)
    for run in plan.runs:
        print(run_line(run))
    costs = [run.cost for run in plan.runs]
    parallel = plan.launcher.parallel
    print(f"{len(plan.runs)} runs: {cost_line(costs, sweep_wall_hours(costs, parallel), parallel)}")
