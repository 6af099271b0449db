"""A plan as text: one line per run, one line of cost. `stemsweep plan` and `stemsweep study plan` print
through it, so a run reads the same in both."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stemsweep.plan.cost import UNITS, Cost, hours
from stemsweep.plan.runs import PlannedRun


def run_line(run: PlannedRun, common: Iterable[str] = ()) -> str:
    """signature (or `(after tune)`), record status, cost, where the cost and the lr/wd come from, and the
    run's own overrides (less `common`, those every run of the plan shares)."""
    shared = set(common)
    return (f"{run.signature or '(after tune)':12s} {run.status or 'new':9s} {hours(run.cost.device_hours):>8s} "
            f"{run.cost.unit}  {run.cost.source:28s} lr/wd: {run.lrwd_label:16s} "
            f"{' '.join(o for o in run.overrides if o not in shared)}").rstrip()


def cost_line(costs: Sequence[Cost], wall: float | None, parallel: int) -> str:
    """'12.3 GPU-h + 0.4 CPU-h, wall 5.1 h at 64 at once' (unknown where any run's cost is)."""
    parts = []
    for device, unit in UNITS.items():
        those = [c for c in costs if c.device == device]
        if those:
            known = all(c.known for c in those)
            parts.append(f"{hours(sum(c.device_hours or 0 for c in those) if known else None)} {unit}")
    return f"{' + '.join(parts) or '0'}, wall {hours(wall)} h at {parallel} at once"
