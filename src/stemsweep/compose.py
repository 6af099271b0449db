"""Hydra's composition of conf/ (and sweeps/), the one way every command gets a run's config.

A run's config is what `python -m stemsweep.run OVERRIDES` composes: Hydra's own config loader over
conf/ and the sweeps/ search path, its own override grammar (`OverridesParser`) and its own sweep
expansion (`BasicSweeper.split_arguments`). Planning, launching, studies and the `${run_signature:…}`
resolver all compose through this module, so that what is planned is what trains.

It sits just above identity: it composes and validates, and knows nothing of records, launchers or
training.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.version import __version__ as omegaconf_version

from stemsweep.config import (
    CONF_DIR,
    SWEEPS_DIR,
    ConfigError,
    RunConfig,
    paths_unchecked,
    register_configs,
    validated_config,
)
from stemsweep.identity import run_signature

OMEGACONF_2_4 = tuple(int(part) for part in omegaconf_version.split(".")[:2]) >= (2, 4)


# --- overrides: Hydra's grammar, parsed once -------------------------------------------------------
@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


@functools.lru_cache(maxsize=65536)  # sweeps repeat the same overrides job after job
def parse_override(text: str) -> Override:
    """One override as Hydra parses it; one that does not parse raises ConfigError with Hydra's first line."""
    try:
        [override] = _parser().parse_overrides([text])
    except OverrideParseException as exc:
        raise ConfigError(f"override {text!r} is not allowed: {str(exc).splitlines()[0]}; give KEY=VALUE (or "
                          "+KEY=VALUE, ~KEY), as on the run command line") from None
    return override


def override_key(text: str) -> str:
    """The key (or config group) an override sets, without its +, ++ or ~ (`+stage=x` → `stage`)."""
    return parse_override(text).key_or_group


def override_value(text: str) -> str | None:
    """The value an override gives, as typed (None for a deletion `~key`)."""
    override = parse_override(text)
    return None if override.is_delete() else override.get_value_element_as_str()


def last_value(overrides: Sequence[str], key: str) -> str | None:
    """The value the last override of `key` gives (Hydra's rule: the last one wins), or None."""
    value = None
    for text in overrides:
        if override_key(text) == key:
            value = override_value(text)
    return value


# --- the config loader and the resolver --------------------------------------------------------------
def register_with_omegaconf() -> None:
    """What composing conf/ needs registered first (idempotent): the schema its defaults list names,
    and the `${run_signature:…}` resolver of its fine-tuning stage."""
    register_configs()
    if not OmegaConf.has_resolver("run_signature"):
        # omegaconf 2.4 names it register_resolver and deprecates register_new_resolver (with a warning
        # on every command); 2.3's register_resolver is the legacy one, of strings only.
        register = OmegaConf.register_resolver if OMEGACONF_2_4 else OmegaConf.register_new_resolver
        register("run_signature", signature_of_overrides, use_cache=True)


def config_loader() -> ConfigLoaderImpl:
    """A Hydra config loader over conf/ (and sweeps/, through the search-path plugin)."""
    register_with_omegaconf()
    return ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))


def raw_overrides(sweep_config: DictConfig, kind: str) -> list[str]:
    """The command line's `hydra` or `task` overrides as typed (Hydra passes them on unresolved: an
    interpolation in them refers to the job's config, which the sweep's config does not have yet)."""
    return list(OmegaConf.to_container(sweep_config.hydra.overrides[kind], resolve=False))


# --- sweeps -----------------------------------------------------------------------------------------
def _grid_value(value: Any) -> str:
    """A grid's value as an override's value. An interpolation (`${run_signature:'… seed=${seed}'}`) is
    quoted, so that the grammar keeps it whole and each job resolves it in its own config."""
    text = str(value)
    if "${" in text and not (text.startswith(("'", '"')) and text.endswith(text[0])):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def expand_grids(grids: Sequence[dict[str, Any]] | None, arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides: each grid × the arguments, in order, grid by grid (BasicSweeper's rules:
    a config a job appends, `+sweeps=NAME` or a grid's `+stage=…`, is composed in that order). An
    argument replaces a grid's axis of the same key. Grids must be given unresolved (see _grid_value)."""
    argument_keys = {override_key(a) for a in arguments}
    jobs: list[list[str]] = []
    for grid in grids or [{}]:
        params = [f"{k}={_grid_value(v)}" for k, v in grid.items() if override_key(f"{k}=x") not in argument_keys]
        parsed = [parse_override(p) for p in params + list(arguments)]
        [batch] = BasicSweeper.split_arguments(parsed, None)
        jobs.extend(batch)
    return jobs


def sweep_grids(sweep_config: DictConfig) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """A composed sweep config's `hydra.sweeper.grids` and `params`, unresolved: Hydra resolves a
    plugin's config when it instantiates it, which would fix an interpolation for every job at once."""
    sweeper = sweep_config.hydra.sweeper
    grids = sweeper.get("grids")
    params = sweeper.get("params")
    return (OmegaConf.to_container(grids, resolve=False) if grids is not None else None,
            OmegaConf.to_container(params, resolve=False) if params is not None else None)


def sweep_jobs(grids: Sequence[dict[str, Any]] | None, params: dict[str, Any] | None,
               arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides, as the stemsweep sweeper expands them: its grids × its params (as
    BasicSweeper's, `hydra.sweeper.params`) and the command line's task overrides (`arguments`)."""
    return expand_grids(grids, [*(f"{k}={_grid_value(v)}" for k, v in (params or {}).items()), *arguments])


class JobComposer:
    """Composes each job's run config as Hydra does for the job, config groups once per distinct choice.

    Hydra composes a config from its config-group overrides (the defaults list: model=, stem=, +sweeps=
    ...) and then applies the plain value overrides (epochs=, lrwd.draw=, ...) to the result. Sweeps vary
    the values far more than the groups (64 lr/wd draws of one model), and composing the groups is most
    of a job's cost (docs/benchmarks.md), so it is done once per distinct group overrides and copied
    (Hydra keeps no compositions between jobs, hence this). `fixed` are overrides every job shares,
    given first (the hydra overrides of the command line, as Hydra's load_sweep_config prepends them).
    The `hydra` node is dropped: the task function never sees it; its config-group choices are kept
    (`choices`).
    """

    def __init__(self, loader: ConfigLoaderImpl, config_name: str = "config", fixed: Sequence[str] = (),
                 cache_from: DictConfig | None = None):
        self.loader, self.config_name, self.fixed, self.cache_from = loader, config_name, list(fixed), cache_from
        # Each distinct composition, pickled: unpickling copies a config 5× faster than copy.deepcopy
        # (docs/benchmarks.md, "Studies"), and a job's value overrides must not reach the next job.
        self.bases: dict[tuple[str, ...], tuple[bytes, dict[str, Any]]] = {}
        self.sweep_config: DictConfig | None = None  # the whole sweep's, `hydra` node included (compose_sweep)

    @classmethod
    def of_sweep(cls, loader: ConfigLoaderImpl, sweep_config: DictConfig) -> JobComposer:
        """The composer of a multirun's jobs, as Hydra's launchers compose them (load_sweep_config): the
        command line's hydra overrides come first, unresolved, so that `hydra.sweep.subdir=${hydra.job.num}`
        or `${hydra.job.override_dirname}` are resolved per job, not in the sweep's config."""
        composer = cls(loader, sweep_config.hydra.job.config_name, fixed=raw_overrides(sweep_config, "hydra"),
                       cache_from=sweep_config)
        composer.sweep_config = sweep_config
        return composer

    def full(self, overrides: Sequence[str]) -> DictConfig:
        """Hydra's own composition, `hydra` node included."""
        with hydra_errors_in_one_line(" ".join(overrides) or "the config"):
            return self.loader.load_configuration(self.config_name, [*self.fixed, *overrides],
                                                  run_mode=RunMode.RUN, from_shell=False)

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        structural, values = self._split(overrides)
        pickled, _ = self._base(tuple(o.input_line for o in structural))
        cfg = pickle.loads(pickled)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # as Hydra applies them after composing
        if self.cache_from is not None:
            OmegaConf.copy_cache(from_config=self.cache_from, to_config=cfg)  # e.g. ${now:} as the sweep's
        return cfg

    def choices(self, overrides: Sequence[str]) -> dict[str, Any]:
        """The config-group choices of a job (`tuning`: `none`, `mini`, …), as Hydra records them."""
        structural, _ = self._split(overrides)
        return self._base(tuple(o.input_line for o in structural))[1]

    def _split(self, overrides: Sequence[str]) -> tuple[list[Override], list[Override]]:
        structural, values = [], []
        for override in map(parse_override, overrides):
            is_value = (not override.is_hydra_override() and override.package is None
                        and not self.loader.repository.group_exists(override.key_or_group))
            (values if is_value else structural).append(override)
        return structural, values

    def _base(self, key: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
        if key not in self.bases:
            base = self.full(list(key))
            choices = OmegaConf.to_container(base.hydra.runtime.choices)
            with open_dict(base):
                del base["hydra"]
            self.bases[key] = (pickle.dumps(base), choices)
        return self.bases[key]


def compose_sweep(sweep: str | None, overrides: Sequence[str]) -> tuple[list[list[str]], JobComposer]:
    """The jobs of `python -m stemsweep.run -m +sweeps=NAME OVERRIDES` (None: of the overrides alone, a
    grid of the command line), and the composer of one job's config: the sweep's config is composed for a
    multirun (sweeping overrides such as `seed=0,1` or `seed=range(3)` are allowed) and expanded as the
    sweeper expands it, so each job has the overrides, and the run the signature, that the sweep launches.

    Composes with a config loader of its own, as the sweeper does inside Hydra, not through
    hydra.initialize: that sets a process-wide GlobalHydra which a second call would find taken.
    """
    loader = config_loader()
    sweep_file = [f"+sweeps={sweep}"] if sweep else []
    with hydra_errors_in_one_line(f"sweep {sweep!r}" if sweep else "the overrides"):
        sweep_config = loader.load_configuration("config", [*sweep_file, *overrides], run_mode=RunMode.MULTIRUN,
                                                 from_shell=False)
    jobs = sweep_jobs(*sweep_grids(sweep_config), raw_overrides(sweep_config, "task"))
    return jobs, JobComposer.of_sweep(loader, sweep_config)


@contextlib.contextmanager
def hydra_errors_in_one_line(what: str) -> Iterator[None]:
    """Hydra's refusal of what a user composes (an unknown option, an override that does not parse or
    apply) as ConfigError, with Hydra's first line: the user's input, not a bug."""
    try:
        yield
    except HydraException as exc:
        raise ConfigError(f"{what}: {str(exc).splitlines()[0]}") from None


@functools.cache
def _composer() -> JobComposer:
    return JobComposer(config_loader())


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config one run with these overrides composes to, as `python -m stemsweep.run …` composes it
    (not validated: stemsweep.config.validated_config does that)."""
    return _composer()(list(overrides))


def planned_config(composed: DictConfig) -> RunConfig:
    """A composed job's validated config, its data folders not checked: plans are made where the data
    may not be (a login node, a laptop)."""
    with paths_unchecked():
        return validated_config(composed)


def signature_of_overrides(overrides: str) -> str:
    """The signature of the run that these overrides (space-separated, Hydra's syntax) describe: how a
    fine-tuning config names the pre-training run it starts from (the `${run_signature:'…'}` resolver)."""
    return run_signature(planned_config(compose(overrides.split())))


def sweep_file_problem(name: str) -> str | None:
    """What keeps sweeps/NAME.yaml from being read, in one line (file:line:column for YAML), or None.

    Hydra would report a YAML error as a long traceback with the position on its last lines; every
    entry point (`python -m stemsweep.run -m +sweeps=NAME`, `stemsweep plan`, `stemsweep status`, a
    study) checks the file first and says it in one line instead."""
    import yaml

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
