"""A study file (studies/NAME.yaml): the stages of a study and what each needs.

    overrides: [runs_root=runs/mini-study, hydra/launcher=local_parallel]   # every sweep stage gets them
    stages:
      lrwd_adamw: {sweep: mini_lrwd_adamw}
      tune: {tune: {sweeps: [mini_lrwd_adamw], out: mini}, needs: [lrwd_adamw]}
      training_length: {sweep: mini_training_length, overrides: [tuning=mini], needs: [tune]}
      report: {report: {out: docs/mini-study, export: results/mini-study}, needs: [training_length]}

A stage is one of three kinds: a sweep (a file in sweeps/ and/or a Hydra grid given as `overrides`), `tune`
(`stemsweep tune` over the runs of the named stages' sweeps, written as conf/tuning/OUT.yaml), or `report`
(`stemsweep export`, then `stemsweep report` from the export). `needs` names the stages that must end
first. A sweep stage that selects a tuning may name the model sizes meant to train at their own lr/wd
(`untuned: [vit_1gf, …]`, conf/model/): any other run that the tuning has no entry for is refused at plan
time. Written as plain YAML, read with PyYAML: a study is not a Hydra config, its stages are.

An adaptive study also names its questions (study/adaptive.py, docs/adaptive.md):

    alpha: 0.05                    # the study's error rate, split over its comparisons (Bonferroni)
    diverged: stemsweep            # how diverged runs count (stemsweep | pycls), as in the report
    tuning_epsilon: 0.1            # a tuned cell stops drawing when more draws gain < ε points
    comparisons:
      lrwd_sgd:                    # is ViT_C's lr/wd EDF steeper than ViT_P's, with SGD?
        stage: lrwd_sgd            # its stage runs in waves along `replicate`
        a: [stem=conv]             # group A: the stage's runs with these overrides (as `plan` lists them)
        b: [stem=patch]
        statistic: lrwd_edf        # lrwd_edf | lrwd_spread | optimizer_gap | metric
        replicate: lrwd.draw       # lrwd.draw | seed: a config key numbering the replicates 0, 1, …
        wave: 8                    # replicates per wave; decided after each
        min: 8                     # no decision before
        max: 64                    # open at max
        paired: true               # replicate k of A and of B belong together (the same draw, the same seed)
        method: nonparametric      # per-seed statistics: nonparametric | normal
        gap: [epochs=1, epochs=4]  # metric (optimizer_gap: sgd, adamw): per seed, the first's error minus the second's
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stemsweep.compose import last_value, sweep_file_problem
from stemsweep.config import LOCAL_CONF_DIR, SWEEPS_DIR, ConfigError
from stemsweep.models import SIZES

STUDIES_DIR = SWEEPS_DIR.parent / "studies"
KINDS = ("sweep", "tune", "report")


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # one of KINDS
    sweep: str | None = None  # sweep stages: the sweep file, if any
    overrides: tuple[str, ...] = ()  # sweep stages: Hydra overrides (a grid: comma lists, range())
    needs: tuple[str, ...] = ()
    tune_from: tuple[str, ...] = ()  # tune: the sweep stages whose runs it tunes from
    tuning: str | None = None  # tune: the conf/tuning/ option it writes
    report_out: str | None = None  # report: the report's folder
    export: str | None = None  # report: where the records are exported to (the report is drawn from it)
    untuned: tuple[str, ...] = ()  # sweep stages: model sizes meant to train at their own lr/wd

    @property
    def tuning_file(self) -> Path:
        """Where `tune` writes: conf/local/tuning/, outside the tracked tree (a `git pull` never conflicts
        with it), where `tuning=NAME` finds it first (hydra_plugins/stemsweep_plugins/searchpath.py)."""
        return LOCAL_CONF_DIR / "tuning" / f"{self.tuning}.yaml"


COMPARISON_KEYS = ("stage", "a", "b", "statistic", "replicate", "wave", "min", "max", "paired", "method", "gap",
                   "margin", "within")
OPTIMIZER_GAP = ("optimizer=sgd", "optimizer=adamw")


@dataclass(frozen=True)
class StudyComparison:
    """One question of an adaptive study: its stage, its two groups of runs (by overrides), the gap its
    per-replicate value takes if any, and the test (analysis.sequential.Comparison)."""

    stage: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    gap: tuple[str, str] | None
    test: Any  # stemsweep.analysis.sequential.Comparison

    @property
    def name(self) -> str:
        return self.test.name


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    stages: tuple[Stage, ...]
    overrides: tuple[str, ...] = ()
    description: str = ""
    runs_root_default: str = field(default="runs")
    alpha: float = 0.05  # the study's error rate, over all its comparisons
    diverged: str = "stemsweep"  # how a diverged run counts in a comparison (stability.DIVERGED_CONVENTIONS)
    tuning_epsilon: float | None = None  # adaptive: a tuned cell stops drawing when more draws gain less
    comparisons: tuple[StudyComparison, ...] = ()

    def comparisons_of(self, stage: Stage) -> list[StudyComparison]:
        return [c for c in self.comparisons if c.stage == stage.name]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"stage {name!r} is not allowed: study file {self.path} has no such stage (its stages: "
                          f"{', '.join(s.name for s in self.stages)})")

    def runs_root(self, overrides: Sequence[str] = ()) -> str:
        """The runs folder every stage shares: the last `runs_root=` of the study's and the user's
        overrides."""
        return last_value([*self.overrides, *overrides], "runs_root") or self.runs_root_default

    def sweep_name(self, stage: Stage) -> str:
        """The `sweep` label its runs carry: its `sweep=` override, the sweep file's name, else
        STUDY.STAGE."""
        return last_value(stage.overrides, "sweep") or stage.sweep or f"{self.name}.{stage.name}"

    def upstream_tunes(self, stage: Stage) -> list[Stage]:
        """The tune stages a stage waits on, directly or through other stages."""
        seen: dict[str, Stage] = {}
        todo = list(stage.needs)
        while todo:
            upstream = self.stage(todo.pop())
            if upstream.name not in seen:
                seen[upstream.name] = upstream
                todo.extend(upstream.needs)
        return [s for s in seen.values() if s.kind == "tune"]


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def load_study(name: str) -> Study:
    """studies/NAME.yaml (or a path to a study file), checked: a problem raises ConfigError with one line naming it."""
    import yaml

    path = Path(name) if name.endswith((".yaml", ".yml")) else STUDIES_DIR / f"{name}.yaml"
    name = path.stem
    if not path.is_file():
        raise ConfigError(f"study {name!r} is not allowed: there is no {path}; the studies are: "
                          f"{', '.join(study_names()) or 'none'}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"study file {where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(content, dict) or not isinstance(content.get("stages"), dict) or not content["stages"]:
        raise ConfigError(f"study file {path}: not allowed: a study is a mapping with `stages:` "
                          "(a mapping of stage name to stage)")
    allowed = ("description", "overrides", "stages", "alpha", "diverged", "tuning_epsilon", "comparisons")
    unknown = set(content) - set(allowed)
    if unknown:
        raise ConfigError(f"study file {path}: key {sorted(unknown)[0]!r} is not allowed "
                          f"(allowed: {', '.join(allowed)})")
    stages = tuple(_stage(path, name, body) for name, body in content["stages"].items())
    alpha = _number(path, "alpha", content.get("alpha", 0.05), 0.0, 1.0)
    epsilon = content.get("tuning_epsilon")
    study = Study(name=name, path=path, stages=stages, overrides=tuple(_strings(path, "overrides",
                  content.get("overrides"))), description=str(content.get("description") or "").strip(),
                  runs_root_default=f"runs/{name}", alpha=alpha, diverged=str(content.get("diverged", "stemsweep")),
                  tuning_epsilon=None if epsilon is None else _number(path, "tuning_epsilon", epsilon, 0.0, None))
    if study.diverged not in ("stemsweep", "pycls"):
        raise ConfigError(f"study file {path}: diverged={study.diverged!r} is not allowed: choose stemsweep or pycls")
    _check_graph(study)
    comparisons = content.get("comparisons") or {}
    if not isinstance(comparisons, dict):
        raise ConfigError(f"study file {path}: comparisons is not allowed: {comparisons!r}; give a mapping of name "
                          "to comparison")
    for name, body in comparisons.items():  # each checked against those before it
        study = replace(study, comparisons=(*study.comparisons, _comparison(study, name, body)))
    return study


def _number(path: Path, key: str, value: Any, low: float, high: float | None) -> float:
    """A number in (low, high); one line otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > low and \
        (high is None or value < high)
    if not ok:
        where = f"({low}, {high})" if high is not None else f"> {low}"
        raise ConfigError(f"study file {path}: {key}={value!r} is not allowed: a number {where}")
    return float(value)


def _comparison(study: Study, name: str, body: Any) -> StudyComparison:
    """A comparison of the study file, checked: the test's own checks (analysis.sequential) and the study's
    (its stage, its groups, one replicate axis and wave per stage)."""
    # deferred: pandas (a second to import), which planning a study without comparisons never needs
    from stemsweep.analysis.sequential import Comparison

    where = f"study file {study.path}: comparison {name!r}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: not allowed: a comparison is a mapping ({', '.join(COMPARISON_KEYS)})")
    if extra := set(body) - set(COMPARISON_KEYS):
        raise ConfigError(f"{where}: key {sorted(extra)[0]!r} is not allowed (allowed: {', '.join(COMPARISON_KEYS)})")
    for key in ("stage", "a", "b", "statistic"):
        if key not in body:
            raise ConfigError(f"{where}: it names its {key} (keys: {', '.join(COMPARISON_KEYS)})")
    stage = study.stage(str(body["stage"]))
    if stage.kind != "sweep":
        raise ConfigError(f"{where}: stage {stage.name!r} is not allowed: a comparison is of a sweep stage's runs")
    a, b = (tuple(_strings(study.path, f"{name}.{g}", body[g])) for g in ("a", "b"))
    statistic = str(body["statistic"])
    gap = body.get("gap", list(OPTIMIZER_GAP) if statistic == "optimizer_gap" else None)
    if gap is not None:
        gap = tuple(_strings(study.path, f"{name}.gap", gap))
        if len(gap) != 2 or statistic not in ("optimizer_gap", "metric"):
            raise ConfigError(f"{where}: gap={list(gap)} is not allowed: two overrides (the first's error minus the "
                              "second's, per replicate), for statistic optimizer_gap or metric")
    replicate = str(body.get("replicate", "lrwd.draw" if statistic.startswith("lrwd") else "seed"))
    wave = body.get("wave", 8)
    try:
        test = Comparison(name=name, a=" ".join(a), b=" ".join(b), statistic=statistic, replicate=replicate, wave=wave,
                          min_replicates=body.get("min", wave), max_replicates=body.get("max", 64),
                          paired=bool(body.get("paired", True)), method=str(body.get("method", "nonparametric")),
                          margin=body.get("margin"), within=tuple(body["within"]) if "within" in body else None)
    except ConfigError as exc:  # the test's own line, which names the comparison: prefixed with the file
        raise ConfigError(f"study file {study.path}: {exc}") from None
    for other in study.comparisons:
        if other.stage == stage.name and (other.test.replicate, other.test.wave) != (replicate, test.wave):
            raise ConfigError(f"{where}: replicate={replicate} wave={test.wave} is not allowed: comparison "
                              f"{other.name!r} of stage {stage.name} runs its waves along {other.test.replicate}, "
                              f"{other.test.wave} at a time; a stage has one replicate axis and wave")
    return StudyComparison(stage=stage.name, a=a, b=b, gap=gap, test=test)


def _stage(path: Path, name: str, body: Any) -> Stage:
    where = f"study file {path}: stage {name!r}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: not allowed: a stage is a mapping (sweep/overrides, tune or report; needs)")
    kinds = [k for k in ("tune", "report") if k in body]
    if len(kinds) > 1 or (kinds and ({"sweep", "overrides"} & set(body))):
        raise ConfigError(f"{where}: is one kind of stage: a sweep (sweep/overrides), tune or report, not several")
    allowed = {"needs"} | ({kinds[0]} if kinds else {"sweep", "overrides", "untuned"})
    if extra := set(body) - allowed:
        raise ConfigError(f"{where}: key {sorted(extra)[0]!r} is not allowed (allowed: {', '.join(sorted(allowed))})")
    needs = tuple(_strings(path, f"{name}.needs", body.get("needs")))
    if not kinds:
        sweep = body.get("sweep")
        if sweep is not None:
            if problem := sweep_file_problem(str(sweep)):
                raise ConfigError(f"{where}: {problem}")
        overrides = tuple(_strings(path, f"{name}.overrides", body.get("overrides")))
        if sweep is None and not overrides:
            raise ConfigError(f"{where}: a sweep stage names a sweep file (sweep: NAME) or overrides")
        untuned = tuple(_strings(path, f"{name}.untuned", body.get("untuned")))
        if unknown := [size for size in untuned if size not in SIZES]:
            raise ConfigError(f"{where}: untuned model {unknown[0]!r} is not allowed: name model sizes "
                              f"({', '.join(sorted(SIZES))})")
        return Stage(name, "sweep", sweep=sweep and str(sweep), overrides=overrides, needs=needs, untuned=untuned)
    spec = body[kinds[0]] or {}
    if kinds[0] == "tune":
        if not isinstance(spec, dict) or set(spec) - {"from", "out"} or "out" not in spec or "from" not in spec:
            raise ConfigError(f"{where}: tune is {{from: [sweep stages], out: TUNING_NAME}}")
        return Stage(name, "tune", needs=needs, tune_from=tuple(_strings(path, f"{name}.tune.from", spec["from"])),
                     tuning=str(spec["out"]))
    if not isinstance(spec, dict) or set(spec) - {"out", "export"} or "out" not in spec:
        raise ConfigError(f"{where}: report is {{out: FOLDER, export: FOLDER (optional)}}")
    return Stage(name, "report", needs=needs, report_out=str(spec["out"]), export=spec.get("export"))


def _strings(path: Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"study file {path}: {key} is not allowed: {value!r}; give a list of strings")
    return [str(v) for v in value]


def _check_graph(study: Study) -> None:
    names = [s.name for s in study.stages]
    for stage in study.stages:
        for upstream in (*stage.needs, *stage.tune_from):
            if upstream not in names:
                raise ConfigError(f"study file {study.path}: stage {stage.name!r} needs {upstream!r}, which is not "
                                  f"a stage (the stages: {', '.join(names)})")
        for source in stage.tune_from:
            if study.stage(source).kind != "sweep":
                raise ConfigError(f"study file {study.path}: stage {stage.name!r} tunes from {source!r}, which is "
                                  "not a sweep stage")
            if source not in stage.needs:
                raise ConfigError(f"study file {study.path}: stage {stage.name!r} tunes from {source!r}: "
                                  "list it under needs too")
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"study file {study.path}: stages {name!r} … need each other in a circle")
        visiting.add(name)
        for upstream in study.stage(name).needs:
            visit(upstream)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)


def stage_order(study: Study) -> list[Stage]:
    """The stages in an order where each comes after what it needs (the file's order among equals)."""
    order: list[Stage] = []
    while len(order) < len(study.stages):
        for stage in study.stages:
            if stage not in order and all(study.stage(n) in order for n in stage.needs):
                order.append(stage)
                break
    return order
