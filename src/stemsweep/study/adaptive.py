"""A stage that runs in waves, and the decisions that stop its cells (issue: adaptive studies).

A stage that a study's comparisons name (study/spec.py) runs along its replicate axis (`lrwd.draw`,
`seed`) in waves of `wave` replicates. Its cells are its runs less that axis (a model, stem and optimizer
of an lr/wd sweep; a model and optimizer of a seed sweep). After each wave every open comparison is
decided from the records so far (analysis/sequential.py: anytime-valid, so the error rate holds however
many waves are looked at), and the decision is recorded in the study's record. A cell goes on to the
next wave while an open comparison needs it, or while it is tuned (a `tune` stage takes its best draw)
and more draws would still improve its expected best by `tuning_epsilon` points or more (Dodge et al.
2019); every other cell stops, and its later waves never run. A study stopped and run again goes on from
its recorded decisions, which are never recomputed, and the decisions are pure functions of the records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemsweep import PAPER_DIR
from stemsweep.compose import last_value, override_key, override_value
from stemsweep.config import RunConfig
from stemsweep.errors import ConfigError
from stemsweep.plan.runs import PlannedRun, tuned_cell
from stemsweep.study.record import StudyRecord, utc_now
from stemsweep.study.spec import Stage, Study, StudyComparison

Cell = tuple[str, ...]  # a run's overrides less the replicate's


def replicate_of(cfg: RunConfig, key: str) -> int:
    """The replicate a run is (its `lrwd.draw`, its `seed`): an integer ≥ 0."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part, None)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"replicate {key}={value!r} is not allowed: a stage that runs in waves numbers its "
                          f"replicates 0, 1, … in {key}")
    return value


def cell_of(run: PlannedRun, replicate: str) -> Cell:
    return tuple(o for o in run.overrides if override_key(o) != replicate)


def label(cell: Cell) -> str:
    """A cell as its record shows it: its overrides, less the study's and the stage's common ones."""
    return " ".join(cell)


def matches(cell: Cell, overrides: Iterable[str]) -> bool:
    return all(last_value(cell, override_key(o)) == override_value(o) for o in overrides)


@dataclass
class Waves:
    """A stage's runs as cells × replicates, and its waves."""

    stage: Stage
    comparisons: list[StudyComparison]
    replicate: str
    wave: int
    max: int  # the most replicates a comparison of the stage takes: replicates past it never run
    cells: dict[Cell, dict[int, PlannedRun]] = field(default_factory=dict)
    tuned: set[Cell] = field(default_factory=set)  # cells a `tune` stage takes its best draw of

    @property
    def count(self) -> int:
        return math.ceil(self.max / self.wave)

    def wave_of(self, replicate: int) -> int | None:
        return replicate // self.wave if replicate < self.max else None

    def runs(self, wave: int, cells: Iterable[Cell] | None = None) -> list[PlannedRun]:
        """The runs of one wave, of `cells` (all cells by default), in the stage's order."""
        chosen = set(self.cells if cells is None else cells)
        return [run for cell, by in self.cells.items() if cell in chosen
                for replicate, run in sorted(by.items()) if self.wave_of(replicate) == wave]

    def groups(self, comparison: StudyComparison) -> tuple[list[Cell], list[Cell]]:
        """Group A's and B's cells: one each, or for a gap the two cells it subtracts (first, second)."""
        return tuple(self._group(comparison, overrides) for overrides in (comparison.a, comparison.b))  # type: ignore

    def _group(self, comparison: StudyComparison, overrides: tuple[str, ...]) -> list[Cell]:
        found = [cell for cell in self.cells if matches(cell, overrides)]
        parts = [[cell for cell in found if matches(cell, [g])] for g in comparison.gap] if comparison.gap else [found]
        if any(len(part) != 1 for part in parts):
            what = " and ".join(comparison.gap) if comparison.gap else "its overrides"
            raise ConfigError(f"comparison {comparison.name!r}: group {' '.join(overrides)} matches "
                              f"{' / '.join(str(len(p)) for p in parts)} cells of stage {self.stage.name} by {what}, "
                              "where it takes one each: name more overrides (the cells: "
                              f"{'; '.join(map(label, self.cells)) or 'none'})")
        return [part[0] for part in parts]

    def needed(self) -> set[Cell]:
        """The cells some comparison compares."""
        return {cell for c in self.comparisons for group in self.groups(c) for cell in group}


def stage_waves(study: Study, stage: Stage, runs: Sequence[PlannedRun]) -> Waves | None:
    """The waves of a sweep stage that comparisons name; None for a stage that runs as a whole."""
    comparisons = study.comparisons_of(stage)
    if not comparisons:
        return None
    first = comparisons[0].test
    waves = Waves(stage, comparisons, first.replicate, first.wave, max(c.test.max_replicates for c in comparisons))
    for run in runs:
        waves.cells.setdefault(cell_of(run, waves.replicate), {})[replicate_of(run.config, waves.replicate)] = run
    tuned_from = {name for s in study.stages if s.kind == "tune" for name in s.tune_from}
    if stage.name in tuned_from:
        waves.tuned = {cell for cell, by in waves.cells.items() if any(r.lrwd_origin == "draw" for r in by.values())}
    waves.needed()  # each group names its cells: one line now, not in a job later
    return waves


# --- what it is expected to cost (planning reads; it never simulates) ------------------------------------
SIMULATED = PAPER_DIR.parent / "data" / "adaptive.json"  # bench/bench_adaptive.py --write: its `expected`


def expected_replicates(study: Study, waves: Waves, recorded: list[dict[str, Any]]) -> tuple[dict[Cell, float], str]:
    """Per cell, the replicates it is expected to take, and where that comes from. A cell a recorded decision
    stopped took what it took; for the others, the mean a simulation of this study found (docs/data/
    adaptive.json, `expected`), else the maximum; a cell no comparison or tuning needs stops after a wave."""
    try:
        simulated = json.loads(SIMULATED.read_text()).get("expected", {}).get(study.name)
    except (OSError, json.JSONDecodeError):
        simulated = None
    stopped = {cell: entry["replicates"] for entry in recorded for cell in entry["stopped"]}
    needed = {c.name: {cell for group in waves.groups(c) for cell in group} for c in waves.comparisons}
    out: dict[Cell, float] = {}
    for cell, runs in waves.cells.items():
        means = [float((simulated or {}).get("comparisons", {}).get(name, waves.max))
                 for name, cells in needed.items() if cell in cells]
        if cell in waves.tuned:
            key = " ".join(tuned_cell(next(iter(runs.values())).config))
            means.append(float((simulated or {}).get("tuned", {}).get(key, waves.max)))
        out[cell] = float(stopped.get(label(cell), max(means, default=float(waves.wave))))
    source = "its records" if recorded else "a simulation (docs/data/adaptive.json)" if simulated else \
        "the maximum (no simulation of this study is stored)"
    return out, source


# --- the recorded decisions ---------------------------------------------------------------------------
def recorded_waves(record: StudyRecord, stage: Stage) -> list[dict[str, Any]]:
    return list(record.stages.get(stage.name, {}).get("waves", []))


def active_cells(waves: Waves, recorded: list[dict[str, Any]]) -> set[Cell]:
    """The cells that go on to the next wave after the recorded ones (all before the first)."""
    if not recorded:
        return set(waves.cells)
    active = set(recorded[-1]["active"])
    return {cell for cell in waves.cells if label(cell) in active}


def cut_runs(waves: Waves, recorded: list[dict[str, Any]]) -> set[str]:
    """The planned signatures of the runs that will never run: past the maximum, or of a cell stopped by
    a recorded decision, in the waves after it stopped."""
    cut = set()
    stopped_after: dict[str, int] = {}
    for entry in recorded:
        for cell in entry["stopped"]:
            stopped_after.setdefault(cell, entry["wave"])
    for cell, by in waves.cells.items():
        for replicate, run in by.items():
            wave = waves.wave_of(replicate)
            if wave is None or (label(cell) in stopped_after and wave > stopped_after[label(cell)]):
                cut.add(run.planned_signature)
    return cut


def decide_wave(study: Study, waves: Waves, wave: int, recorded: list[dict[str, Any]],
                table: Any) -> dict[str, Any]:
    """The record of wave `wave`'s decisions, from the runs' records (`table`: load_runs of the runs_root,
    with_error_before_divergence for pycls's convention). A comparison decided at an earlier wave keeps
    that decision; one decided now is settled, open at its maximum, or open."""
    from stemsweep.analysis import sequential as sq  # deferred: pandas and scipy, for the decision jobs only

    alphas = sq.bonferroni(study.alpha, [c.test for c in study.comparisons])
    earlier = recorded[-1]["decisions"] if recorded else {}
    seen = (wave + 1) * waves.wave
    decisions: dict[str, dict[str, Any]] = {}
    for comparison in waves.comparisons:
        if earlier.get(comparison.name, {}).get("final"):
            decisions[comparison.name] = earlier[comparison.name]
            continue
        a, b = (values(study, waves, cells, table, seen) for cells in waves.groups(comparison))
        decision = sq.decide(comparison.test, a, b, alphas[comparison.name])
        final = decision.settled or decision.at_max or seen >= comparison.test.max_replicates
        test = comparison.test
        decisions[comparison.name] = {  # what the report and `study status` show, with no study file at hand
            "a": test.a, "b": test.b, "statistic": test.statistic, "replicate": test.replicate,
            "max": test.max_replicates, "alpha": alphas[comparison.name],
            "outcome": decision.outcome, "n": decision.n, "evidence": decision.evidence,
            "threshold": decision.threshold, "final": final, "wave": wave,
            "left_out": {"a": list(decision.left_out_a), "b": list(decision.left_out_b)}}
    active = {cell for c in waves.comparisons if not decisions[c.name]["final"] for g in waves.groups(c) for cell in g}
    if study.tuning_epsilon is not None:
        active |= {cell for cell in waves.tuned if not tuning_settled(study, waves, cell, table, seen)}
    else:
        active |= waves.tuned & active_cells(waves, recorded)  # tuned cells run every wave without an ε
    if seen >= waves.max:
        active = set()
    previous = active_cells(waves, recorded)
    return {"wave": wave, "replicates": seen, "decided_utc": utc_now(), "decisions": decisions,
            "active": sorted(label(c) for c in active), "stopped": sorted(label(c) for c in previous - active),
            # what the report needs without the study: the runs this wave trained, and the fixed design's size
            "runs": sorted(run.planned_signature for run in waves.runs(wave, previous)),
            "cells": len(waves.cells), "max": waves.max}


def values(study: Study, waves: Waves, cells: list[Cell], table: Any, seen: int) -> Any:
    """A group's value per replicate, the first `seen`: a run's error (inf: diverged, by the study's
    convention; NaN: failed, left out), or for a gap the first cell's error minus the second's."""
    from stemsweep.analysis import sequential as sq  # deferred: pandas

    per_cell = []
    for cell in cells:
        signatures = {run.planned_signature: r for r, run in waves.cells[cell].items() if r < seen}
        rows = table[table["signature"].isin(signatures)].copy()
        rows[waves.replicate] = rows["signature"].map(signatures)
        found = sq.replicate_values(rows, waves.replicate, study.diverged).values
        full = [math.nan] * seen
        full[:min(len(found), seen)] = list(found[:seen])
        per_cell.append(full)
    return sq.optimizer_gaps(*per_cell) if len(per_cell) == 2 else per_cell[0]


def tuning_settled(study: Study, waves: Waves, cell: Cell, table: Any, seen: int) -> bool:
    """Whether one more wave of draws would improve the cell's expected best error by less than ε."""
    from stemsweep.analysis import sequential as sq  # deferred: pandas

    errors = [e for e in values(study, waves, [cell], table, seen) if not math.isnan(e)]
    return bool(errors) and sq.tuning_settled(errors, waves.wave, study.tuning_epsilon or 0.0)
