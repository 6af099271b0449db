"""SLURM through submitit, with resources per model size and a detached mode.

hydra-submitit-launcher submits a sweep as one job array with one set of resources and then blocks
until every job ends. A study mixes model sizes (an 18GF run needs more GPUs and time than a 1GF run)
and runs for days, so this launcher submits one array per distinct `model.resources` (conf/model/)
and, with `wait: false`, returns as soon as the jobs are queued (`stemsweep status` follows them).
Requeue on preemption and time-out is submitit's (the launcher is checkpointable); the run resumes
from its own checkpoint when the job starts again.
"""

# First, before the imports below take their seconds: a job unpickles this module before submitit
# installs its signal handlers, and SLURM's time-limit signal may already come (train/interrupt.py).
from stemsweep.train.interrupt import keep_start_up_signals

keep_start_up_signals()

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class StemsweepSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.stemsweep_plugins.slurm_launcher.StemsweepSlurmLauncher"
    wait: bool = True  # false: return once the jobs are queued
    resources: str = "model"  # model: each run asks for its model's resources; launcher: these params for all


ConfigStore.instance().store(group="hydra/launcher", name="stemsweep_slurm", node=StemsweepSlurmConf,
                             provider="stemsweep")


def slurm_parameters(resources: Any) -> Dict[str, Any]:
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


def job_resources(mode: str, composed: Any, typed: set) -> tuple:
    """What a run asks SLURM for: its model's resources, less the keys the command line set (`typed`,
    e.g. `hydra.launcher.timeout_min=30`: what a user types for this launch wins over the model's
    defaults); none with `resources: launcher` (the launcher's own values for every run)."""
    if mode != "model":
        return ()
    return tuple(sorted((k, v) for k, v in slurm_parameters(composed.model.resources).items() if k not in typed))


class StemsweepSlurmLauncher(SlurmLauncher):
    def __init__(self, wait: bool = True, resources: str = "model", **params: Any) -> None:
        super().__init__(**params)
        self.wait, self.resources = wait, resources

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        from stemsweep.config import ConfigError
        from stemsweep.sweep.plan import run_dir_of

        groups: Dict[tuple, List[int]] = defaultdict(list)
        compose = self._job_composer()
        typed = self._command_line_keys()
        run_dirs = []
        for i, overrides in enumerate(job_overrides):
            composed = compose(list(overrides))
            try:  # validated first: a bad config is one line, before anything is submitted, not a KeyError
                run_dirs.append(run_dir_of(composed))
            except ConfigError as exc:
                raise SystemExit(f"stemsweep: {exc}") from None
            groups[self._job_resources(composed, typed)].append(i)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs: List[Any] = [None] * len(job_overrides)
        singleton_state = Singleton.get_state()  # a deep copy of Hydra's globals, the same for every job: once
        for resources, indices in groups.items():
            executor = self._executor(submitit, dict(resources))
            args = []
            for i in indices:
                idx = initial_job_idx + i
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(job_overrides[i])))
                args.append((list(job_overrides[i]), "hydra.sweep.dir", idx, f"job_id_for_{idx}", singleton_state))
            submitted = executor.map_array(self, *zip(*args))
            for i, job in zip(indices, submitted):
                jobs[i] = job
                # A launch while this job is queued must not submit the run again (plan.live_runs).
                run_dirs[i].path.mkdir(parents=True, exist_ok=True)
                run_dirs[i].slurm_job.write_text(f"{job.job_id}\n")
            log.info("submitted %d jobs with %s: %s", len(submitted), dict(resources) or "the launcher's resources",
                     " ".join(job.job_id for job in submitted))
        if self.wait:
            return [job_result(job) for job in jobs]
        log.info("detached: %d jobs queued; follow them with `stemsweep status %s`", len(jobs),
                 self.config.get("runs_root", "runs"))
        return [JobReturn(overrides=list(o), status=JobStatus.UNKNOWN) for o in job_overrides]

    def _job_composer(self) -> Any:
        """Each job's config, composed as the sweeper composed it (JobComposer, not Hydra's
        load_sweep_config per job: docs/benchmarks.md, "Sweeps and launching")."""
        from stemsweep.sweep.plan import JobComposer

        assert self.config is not None and self.hydra_context is not None
        return JobComposer.of_sweep(self.hydra_context.config_loader, self.config)

    def _job_resources(self, composed: Any, typed: set) -> tuple:
        return job_resources(self.resources, composed, typed)

    def _command_line_keys(self) -> set:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from stemsweep.sweep.plan import raw_overrides

        assert self.config is not None
        overrides = OverridesParser.create().parse_overrides(raw_overrides(self.config, "hydra"))
        prefix = "hydra.launcher."
        return {o.key_or_group[len(prefix):] for o in overrides if o.key_or_group.startswith(prefix)}

    def _executor(self, submitit: Any, resources: Dict[str, Any]) -> Any:
        return slurm_executor(self.params["submitit_folder"], self.params, resources)


def job_result(job: Any, settle_s: float = 10.0) -> Any:
    """`job.results()[0]`, waited for again while SLURM still has the job in its queue. submitit reads a
    requeued job's state from sacct; read between the end of the interrupted start (FAILED) and the
    requeue, that state looks final, submitit stops watching the job and raises, and a blocking sweep
    reported a failure while its run went on (seen on the local SLURM with `scancel --full --signal=USR1`).
    So on that error the queue is asked for up to `settle_s` (SLURM takes a moment to requeue), and a job
    found in it is waited for again, with submitit's cached states cleared."""
    import time

    from submitit.core.utils import UncompletedJobError

    from stemsweep.sweep.plan import in_queue, slurm_queue

    while True:
        try:
            return job.results()[0]
        except UncompletedJobError:
            deadline = time.monotonic() + settle_s
            while not in_queue(job.job_id, slurm_queue()):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
            log.info("job %s is back in the queue (requeued): waiting for it again", job.job_id)
            job.watcher.clear()


def slurm_executor(folder: str, params: Dict[str, Any], resources: Dict[str, Any]) -> Any:
    """An executor with a launcher's parameters, a run's resources on top (as the base launcher does:
    BaseQueueConf's keys as they are, the others with submitit's "slurm_" prefix). The study's SLURM
    chain (stemsweep.study.slurm) submits through it too."""
    import submitit

    executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                     slurm_max_num_timeout=params.get("max_num_timeout", 0))
    base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k: v for k, v in params.items() if k not in ("submitit_folder", "max_num_timeout")}
    params.update(resources)
    executor.update_parameters(**{k if k in base_keys else f"slurm_{k}": v for k, v in params.items()})
    return executor
