"""A sweeper that knows runs by their signature: it expands a union of grids, and skips what is done.

Hydra's BasicSweeper expands one grid (a cartesian product) and launches every job. The paper's
experiments are unions of grids (ViT has a stem axis, RegNetY has none), and a sweep launched again
must skip finished runs without launching a job for them; no maintained sweeper does either, so this
one extends BasicSweeper with both and keeps its expansion rules (comma lists, range(...)).
"""


import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from stemsweep.compose import JobComposer, sweep_grids, sweep_jobs
from stemsweep.errors import ConfigError
from stemsweep.plan.launcher import launcher_settings
from stemsweep.plan.runs import data_mismatches, live_runs, plan_jobs, refuse_shared_data_root, tuned_cell
from stemsweep.record.checkpoint import NoFinalCheckpoint
from stemsweep.sweep.progress import Progress
from stemsweep.train.interrupt import SWEEP_PID_VARIABLE, RunInterrupted

log = logging.getLogger(__name__)

CHECKPOINT_WAIT_S = 120  # how long a stopped sweep waits for its runs' processes to checkpoint and exit


@dataclass
class StemsweepSweeperConf:
    _target_: str = "hydra_plugins.stemsweep_plugins.sweeper.StemsweepSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None  # one grid, as BasicSweeper's params
    grids: Optional[List[Dict[str, str]]] = None  # a union of grids; params apply to each
    only: Optional[str] = None  # a file of run signatures, one a line: the sweep launches only those (a wave)


ConfigStore.instance().store(group="hydra/sweeper", name="stemsweep", node=StemsweepSweeperConf,
                             provider="stemsweep")


@contextlib.contextmanager
def signals_stop_the_sweep(runs: List[Any]) -> Iterator[None]:
    """SIGTERM to the sweep process (`kill PID`, `timeout`, a supervisor) or Ctrl-C stops its runs, and
    lets those training in other processes write their checkpoints first.

    With the joblib launcher the runs train in loky worker processes, which joblib ends with SIGKILL
    when a KeyboardInterrupt unwinds it, and which a SIGTERM to the sweep process alone does not reach.
    So the sweep first passes a SIGTERM on to each process on this host that holds the lock of one of
    its `runs` (Ctrl-C reaches them by itself: they are in its process group), waits until they let
    their locks go (they stop after the step in flight and write a checkpoint: train/interrupt.py), then
    raises RunInterrupted. A second signal stops it at once. A run training in the sweep process itself
    (the basic launcher) has its own handlers installed meanwhile. Launched again, the sweep resumes the runs.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return

    stopping = []

    def stop(signum: int, frame: Any) -> None:
        if stopping:
            raise RunInterrupted(signum)
        stopping.append(signum)
        name = signal.Signals(signum).name
        log.warning("%s: stopping the sweep and its runs (launched again, it resumes them)", name)
        training = [run.run_dir for run in runs if run.run_dir is not None and run.run_dir.is_locked()]
        if signum == signal.SIGTERM:
            for run in training:
                with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                    host, pid = run.lock_holder().split()
                    if host == socket.gethostname() and int(pid) != os.getpid():  # not a SLURM job's elsewhere
                        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + CHECKPOINT_WAIT_S
        while any(run.is_locked() for run in training) and time.monotonic() < deadline:
            time.sleep(0.2)
        raise RunInterrupted(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    os.environ[SWEEP_PID_VARIABLE] = str(os.getpid())  # the workers it starts know whom to wait for
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.environ.pop(SWEEP_PID_VARIABLE, None)


class StemsweepSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[List[Dict[str, str]]] = None, only: Optional[str] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.only = only

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        tic = time.perf_counter()
        # The grids as written, not as Hydra's instantiate resolved them for this sweeper: an
        # interpolation in a grid is resolved per job (compose.sweep_grids).
        jobs = sweep_jobs(*sweep_grids(self.config), arguments)
        composer = JobComposer.of_sweep(self.hydra_context.config_loader, self.config)
        try:  # every job composed and validated, as Hydra's load_sweep_config composes it, before any launch
            settings = launcher_settings(self.config)
            planned = plan_jobs(jobs, composer, settings)
            if self.only is not None:  # a study's wave: the runs it names, out of the whole grid
                wanted = set(Path(self.only).read_text().split())
                planned = [run for run in planned if run.planned_signature in wanted]
            refuse_shared_data_root(arguments, planned)
            if mismatches := data_mismatches(planned):
                more = f" (and {len(mismatches) - 1} more runs likewise)" if len(mismatches) > 1 else ""
                raise ConfigError(mismatches[0] + more)
        except ConfigError as exc:  # a bad value in one job: one line, before anything is launched
            raise SystemExit(f"stemsweep: {exc}") from None
        for run in planned:
            if run.tuning != "none" and run.lrwd_origin == "model":
                log.warning("run %s selects tuning=%s, which has no entry for %s %s %s: it trains at the model's "
                            "own lr/wd (conf/model/)", run.signature, run.tuning, *tuned_cell(run.config))
        retry = bool(self.config.get("retry", False))
        launching = [run for run in planned if run.should_launch(retry)]
        skipped = len(planned) - len(launching)
        live = live_runs(launching)  # never train a run twice at once, even with retry=true
        for signature, why in live.items():
            log.info("run %s is not launched again: %s", signature, why)
        launching = [run for run in launching if run.signature not in live]
        log.info("%d runs in the sweep: %d skipped (%s), %s%d to launch; planned in %.2f s", len(planned), skipped,
                 "done" if retry else "done, failed or diverged: retry=true runs those again",
                 f"{len(live)} training or queued already, " if live else "", len(launching),
                 time.perf_counter() - tic)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        to_launch = [list(run.overrides) for run in launching]
        if hasattr(self.launcher, "planned"):  # the SLURM launcher submits what was planned here
            self.launcher.planned = {run.overrides: run for run in launching}
        self.overrides = list(self.split_overrides_to_chunks(to_launch, self.max_batch_size)) if to_launch else []
        returns = []
        initial_job_idx = 0
        unfinished = 0  # runs that wait for a person: a fine-tune's source not done, a checkpoint not written
        detached = settings.is_slurm and not settings.wait
        with signals_stop_the_sweep(launching), (contextlib.nullcontext() if detached else Progress(launching)):
            while not self.is_done():
                batch = self.get_job_batch()  # already composed and validated by plan_jobs
                results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
                for r in results:
                    if r.status == JobStatus.UNKNOWN:  # detached, still queued
                        continue
                    try:
                        _ = r.return_value  # raises if the job failed
                    except NoFinalCheckpoint as exc:  # the other runs go on; its line is shown
                        log.error("stemsweep: %s", exc)
                        unfinished += 1
                initial_job_idx += len(batch)
                returns.append(results)
        if unfinished:
            raise SystemExit(f"stemsweep: {unfinished} of the {len(to_launch)} runs launched did not finish (the "
                             "lines above say why and what to do); launched again, the sweep trains them")
        return returns
