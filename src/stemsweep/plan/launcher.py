"""A launcher's settings, typed: what planning, costing and submitting need from `hydra.launcher`.

The Hydra plugin's schema (hydra_plugins.stemsweep_plugins.slurm_launcher.StemsweepSlurmConf, a
hydra-submitit-launcher SlurmQueueConf) is what a user writes; this is what the spine reads from it,
for a plain sweep and a study alike, so that both submit the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf

from stemsweep.compose import override_key, raw_overrides
from stemsweep.config import Resources
from stemsweep.errors import ConfigError

HYDRA_LAUNCHER = "hydra.launcher."
# Keys the spine reads itself; every other key of a SLURM launcher is a submitit parameter as it is
# (partition, account, qos, setup, signal_delay_s, additional_parameters, …).
OWN_KEYS = ("_target_", "wait", "resources", "submitit_folder", "name", "max_num_timeout", "array_parallelism")


@dataclass(frozen=True)
class LauncherSettings:
    target: str = "basic"  # the launcher's _target_ (Hydra's basic launcher when none is named)
    parallel: int = 1  # runs at once: SLURM's array_parallelism, joblib's n_jobs, else one
    wait: bool = False  # SLURM: block until the jobs end
    resources: str = "model"  # SLURM: model (each run asks for its model's resources) | launcher
    typed: frozenset[str] = frozenset()  # launcher keys the command line set: they win over a model's
    max_num_timeout: int = 0  # SLURM: requeues after a time-out (submitit's)
    submitit: Mapping[str, Any] = field(default_factory=dict)  # SLURM: the other parameters, as given

    @property
    def is_slurm(self) -> bool:
        return "slurm" in self.target.lower()

    def job_resources(self, resources: Resources) -> tuple[tuple[str, Any], ...]:
        """What one run asks SLURM for: its model's resources (conf/model/), less the keys the command
        line set (`hydra.launcher.timeout_min=30`: what a user types for this launch wins over the
        model's defaults); none with `resources: launcher` (the launcher's own values for every run)."""
        if self.resources != "model":
            return ()
        return tuple(sorted((k, v) for k, v in slurm_parameters(resources).items() if k not in self.typed))


def slurm_parameters(resources: Resources) -> dict[str, Any]:
    """A model's `resources` as submitit parameters: one task per GPU (DDP), or one CPU task."""
    gpus = int(resources.gpus)
    return {
        "nodes": int(resources.nodes),
        "tasks_per_node": max(gpus, 1),
        "gpus_per_node": gpus or None,
        "cpus_per_task": int(resources.cpus_per_task),
        "mem_gb": int(resources.mem_gb),
        "timeout_min": int(resources.timeout_min),
    }


def settings_from_params(params: Mapping[str, Any], typed: Sequence[str] = ()) -> LauncherSettings:
    """Typed settings from a launcher's resolved parameters (a Hydra launcher's `self.params`, or a
    composed `hydra.launcher` as plain values). `typed`: the `hydra.launcher.*` keys of the command line."""
    target = str(params.get("_target_") or "basic")
    parallel = next((int(params[k]) for k in ("array_parallelism", "n_jobs")
                     if isinstance(params.get(k), int) and params[k] > 0), 1)
    resources = str(params.get("resources") or "model")
    if resources not in ("model", "launcher"):
        raise ConfigError(f"hydra.launcher.resources={resources} is not allowed: choose model or launcher")
    submitit = {k: v for k, v in params.items() if k not in OWN_KEYS}
    if parallel and "slurm" in target.lower():
        submitit["array_parallelism"] = parallel
    return LauncherSettings(target=target, parallel=parallel, wait=bool(params.get("wait", False)),
                            resources=resources, typed=frozenset(typed),
                            max_num_timeout=int(params.get("max_num_timeout") or 0), submitit=submitit)


def launcher_settings(sweep_config: DictConfig) -> LauncherSettings:
    """The settings of a composed sweep's `hydra.launcher`, without the two values only a Hydra run
    resolves (its submitit_folder and its job name: the spine's callers name those)."""
    launcher = sweep_config.hydra.launcher
    params = {}
    for key in launcher:
        if key in ("submitit_folder", "name"):
            continue
        value = launcher[key]
        params[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
    return settings_from_params(params, command_line_launcher_keys(raw_overrides(sweep_config, "hydra")))


def command_line_launcher_keys(hydra_overrides: Sequence[str]) -> list[str]:
    """The launcher keys (`timeout_min`, …) that the command line's hydra overrides set."""
    keys = (override_key(o) for o in hydra_overrides)
    return [k[len(HYDRA_LAUNCHER):] for k in keys if k.startswith(HYDRA_LAUNCHER)]
