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
first. Written as plain YAML, read with PyYAML: a study is not a Hydra config, its stages are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemsweep.config import LOCAL_CONF_DIR, SWEEPS_DIR, ConfigError

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

    @property
    def tuning_file(self) -> Path:
        """Where `tune` writes: conf/local/tuning/, outside the tracked tree (a `git pull` never conflicts
        with it), where `tuning=NAME` finds it first (hydra_plugins/stemsweep_plugins/searchpath.py)."""
        return LOCAL_CONF_DIR / "tuning" / f"{self.tuning}.yaml"


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    stages: tuple[Stage, ...]
    overrides: tuple[str, ...] = ()
    description: str = ""
    runs_root_default: str = field(default="runs")

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def runs_root(self, overrides: Sequence[str] = ()) -> str:
        """The runs folder every stage shares: the last `runs_root=` of the study's and the user's
        overrides."""
        root = self.runs_root_default
        for override in (*self.overrides, *overrides):
            key, _, value = override.partition("=")
            if key.lstrip("+") == "runs_root":
                root = value
        return root

    def sweep_name(self, stage: Stage) -> str:
        """The `sweep` label its runs carry: its `sweep=` override, the sweep file's name, else
        STUDY.STAGE."""
        for override in reversed(stage.overrides):
            key, _, value = override.partition("=")
            if key == "sweep":
                return value
        return stage.sweep or f"{self.name}.{stage.name}"

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
    unknown = set(content) - {"description", "overrides", "stages"}
    if unknown:
        raise ConfigError(f"study file {path}: key {sorted(unknown)[0]!r} is not allowed "
                          "(allowed: description, overrides, stages)")
    stages = tuple(_stage(path, name, body) for name, body in content["stages"].items())
    study = Study(name=name, path=path, stages=stages, overrides=tuple(_strings(path, "overrides",
                  content.get("overrides"))), description=str(content.get("description") or "").strip(),
                  runs_root_default=f"runs/{name}")
    _check_graph(study)
    return study


def _stage(path: Path, name: str, body: Any) -> Stage:
    where = f"study file {path}: stage {name!r}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: not allowed: a stage is a mapping (sweep/overrides, tune or report; needs)")
    kinds = [k for k in ("tune", "report") if k in body]
    if len(kinds) > 1 or (kinds and ({"sweep", "overrides"} & set(body))):
        raise ConfigError(f"{where}: is one kind of stage: a sweep (sweep/overrides), tune or report, not several")
    allowed = {"needs"} | ({kinds[0]} if kinds else {"sweep", "overrides"})
    if extra := set(body) - allowed:
        raise ConfigError(f"{where}: key {sorted(extra)[0]!r} is not allowed (allowed: {', '.join(sorted(allowed))})")
    needs = tuple(_strings(path, f"{name}.needs", body.get("needs")))
    if not kinds:
        sweep = body.get("sweep")
        if sweep is not None:
            from stemsweep.sweep.plan import sweep_file_problem

            if problem := sweep_file_problem(str(sweep)):
                raise ConfigError(f"{where}: {problem}")
        overrides = tuple(_strings(path, f"{name}.overrides", body.get("overrides")))
        if sweep is None and not overrides:
            raise ConfigError(f"{where}: a sweep stage names a sweep file (sweep: NAME) or overrides")
        return Stage(name, "sweep", sweep=sweep and str(sweep), overrides=overrides, needs=needs)
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
