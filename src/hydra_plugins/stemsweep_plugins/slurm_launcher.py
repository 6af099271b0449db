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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from submitit.core.utils import UncompletedJobError

from stemsweep.compose import JobComposer, raw_overrides
from stemsweep.errors import ConfigError
from stemsweep.plan.launcher import command_line_launcher_keys, settings_from_params
from stemsweep.plan.queue import in_queue, slurm_queue
from stemsweep.plan.runs import PlannedRun, plan_jobs, queued_sources
from stemsweep.plan.submit import Submission

log = logging.getLogger(__name__)


@dataclass
class StemsweepSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.stemsweep_plugins.slurm_launcher.StemsweepSlurmLauncher"
    wait: bool = True  # false: return once the jobs are queued
    resources: str = "model"  # model: each run asks for its model's resources; launcher: these params for all


ConfigStore.instance().store(group="hydra/launcher", name="stemsweep_slurm", node=StemsweepSlurmConf,
                             provider="stemsweep")


class StemsweepSlurmLauncher(SlurmLauncher):
    def __init__(self, wait: bool = True, resources: str = "model", **params: Any) -> None:
        super().__init__(**params)
        self.wait, self.resources = wait, resources
        # The sweeper's plan of the runs it launches ({overrides: PlannedRun}); planned here otherwise
        # (Hydra's own sweepers).
        self.planned: Optional[Dict[tuple, PlannedRun]] = None

    def __getstate__(self) -> Dict[str, Any]:
        """What each job unpickles: the launcher without the sweep's plan (one job needs none of it)."""
        return {**self.__dict__, "planned": None}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        settings = settings_from_params({**self.params, "wait": self.wait, "resources": self.resources},
                                        command_line_launcher_keys(raw_overrides(self.config, "hydra")))
        runs = self._planned(job_overrides, settings)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        singleton_state = Singleton.get_state()  # a deep copy of Hydra's globals, the same for every job: once
        arguments = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            arguments.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", singleton_state))
        submission = Submission(folder=self.params["submitit_folder"], settings=settings)
        submission.add_runs(str(self.params.get("name") or "stemsweep"), self, runs, arguments,
                            known=dict(queued_sources(runs)))
        try:
            submitted = submission.commit()
        except ConfigError as exc:
            raise SystemExit(f"stemsweep: {exc}") from None
        job_of = {}
        for array, jobs in zip(submission.arrays, submitted):
            log.info("submitted %s with %s: %s", f"{len(jobs)} jobs" if not array.single else "1 job",
                     array.resources or "the launcher's resources", " ".join(job.job_id for job in jobs))
            job_of.update({run.overrides: job for run, job in zip(array.runs, jobs)})
        jobs = [job_of[run.overrides] for run in runs]
        if self.wait:
            return [job_result(job) for job in jobs]
        log.info("detached: %d jobs queued; follow them with `stemsweep status %s`", len(jobs),
                 self.config.get("runs_root", "runs"))
        return [JobReturn(overrides=list(o), status=JobStatus.UNKNOWN) for o in job_overrides]

    def _planned(self, job_overrides: Sequence[Sequence[str]], settings: Any) -> List[PlannedRun]:
        """Each job's planned run: the sweeper's, else planned here as the sweeper plans (each job's config
        composed as Hydra's launchers compose it, validated first: a bad config is one line, before
        anything is submitted)."""
        if self.planned is not None and all(tuple(o) in self.planned for o in job_overrides):
            return [self.planned[tuple(o)] for o in job_overrides]
        assert self.config is not None and self.hydra_context is not None
        composer = JobComposer.of_sweep(self.hydra_context.config_loader, self.config)
        try:
            return plan_jobs(job_overrides, composer, settings)
        except ConfigError as exc:
            raise SystemExit(f"stemsweep: {exc}") from None


def job_result(job: Any, settle_s: float = 10.0) -> Any:
    """`job.results()[0]`, waited for again while SLURM still has the job in its queue. submitit reads a
    requeued job's state from sacct; read between the end of the interrupted start (FAILED) and the
    requeue, that state looks final, submitit stops watching the job and raises, and a blocking sweep
    reported a failure while its run went on (seen on the local SLURM with `scancel --full --signal=USR1`).
    So on that error the queue is asked for up to `settle_s` (SLURM takes a moment to requeue), and a job
    found in it is waited for again, with submitit's cached states cleared."""
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
