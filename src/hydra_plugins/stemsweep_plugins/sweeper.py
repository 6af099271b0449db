"""A sweeper that knows runs by their signature: it expands a union of grids, and skips what is done.

Hydra's BasicSweeper expands one grid (a cartesian product) and launches every job. The paper's
experiments are unions of grids (ViT has a stem axis, RegNetY has none), and a sweep launched again
must skip finished runs without launching a job for them; no maintained sweeper does either, so this
one extends BasicSweeper with both and keeps its expansion rules (comma lists, range(...)).
"""


import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class StemsweepSweeperConf:
    _target_: str = "hydra_plugins.stemsweep_plugins.sweeper.StemsweepSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None  # one grid, as BasicSweeper's params
    grids: Optional[List[Dict[str, str]]] = None  # a union of grids; params apply to each


ConfigStore.instance().store(group="hydra/sweeper", name="stemsweep", node=StemsweepSweeperConf,
                             provider="stemsweep")


@contextlib.contextmanager
def sigterm_stops_the_sweep() -> Iterator[None]:
    """SIGTERM to the sweep process (`kill PID`, `timeout`, a supervisor) stops its runs as Ctrl-C does.

    With the joblib launcher the runs train in loky worker processes of their own. Ctrl-C reaches them
    through the process group, and joblib terminates its workers when KeyboardInterrupt unwinds it; a
    SIGTERM to the sweep process alone killed only that process, and its workers went on training
    orphaned, run after queued run. Raising KeyboardInterrupt here takes Ctrl-C's path. The runs stop
    where they are; launched again, the sweep resumes them from their checkpoints.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return

    from stemsweep.train.interrupt import RunInterrupted

    def stop(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping the sweep and its runs (launched again, it resumes them)")
        raise RunInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StemsweepSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[List[Dict[str, str]]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = [dict(g) for g in grids] if grids else None

    def sweep(self, arguments: List[str]) -> Any:
        from stemsweep.record.rundir import RunDir
        from stemsweep.sweep.plan import JobComposer, expand_grids, live_runs, plan_runs

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        tic = time.perf_counter()
        jobs = expand_grids(self.grids, [*self._parse_config(), *arguments])
        compose = JobComposer(self.hydra_context.config_loader, self.config.hydra.job.config_name,
                              fixed=list(self.config.hydra.overrides.hydra), cache_from=self.config)
        planned = plan_runs(jobs, compose)  # as Hydra's load_sweep_config composes each job
        retry = bool(self.config.get("retry", False))
        launching = [run for run in planned if run.should_launch(retry)]
        skipped = len(planned) - len(launching)
        live = live_runs(launching)  # never train a run twice at once, even with retry=true
        for signature, why in live.items():
            log.info("run %s is not launched again: %s", signature, why)
        launching = [run for run in launching if run.signature not in live]
        for run in launching:  # `stemsweep status RUNS_ROOT` lists a queued run as pending
            RunDir(run.runs_root, run.signature).path.mkdir(parents=True, exist_ok=True)
        to_launch = [run.overrides for run in launching]
        log.info("%d runs in the sweep: %d skipped (%s), %s%d to launch; planned in %.2f s", len(planned), skipped,
                 "done" if retry else "done, failed or diverged: retry=true runs those again",
                 f"{len(live)} training or queued already, " if live else "", len(to_launch),
                 time.perf_counter() - tic)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.overrides = list(self.split_overrides_to_chunks(to_launch, self.max_batch_size)) if to_launch else []
        returns = []
        initial_job_idx = 0
        with sigterm_stops_the_sweep():
            while not self.is_done():
                batch = self.get_job_batch()  # already composed and validated by plan_runs
                results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
                for r in results:
                    if r.status != JobStatus.UNKNOWN:  # UNKNOWN: detached, still queued
                        _ = r.return_value  # raises if the job failed
                initial_job_idx += len(batch)
                returns.append(results)
        return returns
