"""Signals that stop a run at the next step boundary, and how its process then ends.

SIGTERM (preemption, `scancel`, `scontrol requeue`, `kill`), SIGINT (Ctrl-C), SIGUSR1 and SIGUSR2 (the
signal SLURM sends before the time limit: submitit asks for USR2, `$SUBMITIT_PREEMPT_SIGNAL` or a
site's `--signal` may make it USR1) only set a flag. The training loop looks at it after every step
(with several processes they agree on the step: distributed.AnyProcess), writes a mid-epoch
checkpoint and returns the run as `resumable`; `end_process` then ends the process:

- under submitit (the SLURM launcher), a USR signal goes to submitit's own handler, which tells a
  time-out from a preemption by the job's wall time, pickles the launcher's call again
  (`checkpoint()`), runs `scontrol requeue` once and exits; a time-out beyond `max_num_timeout` ends
  the job instead. A SIGTERM is not requeued here: SLURM itself requeues (`scontrol requeue`,
  preemption in REQUEUE mode) or cancels (`scancel`) the job and kills it `KillWait` later. The
  process waits for that, in case a USR signal follows (a preemption delivered as TERM then USR2);
- anywhere else it raises RunInterrupted, a KeyboardInterrupt: a single run or a sweep stops there
  with one line and the shell's status 128 + signal, and launched again it resumes. A run in a worker
  process of a local sweep first waits for the sweep to end it (see `_wait_for_the_sweep`).

A second SIGINT or SIGTERM while the run is stopping ends the process at once (Python's defaults): a
person at a terminal asking twice. Under SLURM a SIGTERM after the first signal is SLURM's, not a
person's (e.g. `scancel --full --signal=USR1`: the batch shell dies of USR1 and SLURM then aborts the
step with SIGTERM), so it lets the stop checkpoint finish: SLURM's SIGKILL, `KillWait` later (30 s by
default), bounds the wait.

SLURM delivers a signal to every process of the job step, not to the run's process alone (`scancel
--full` reaches the batch shell too, and a shell that dies of it makes SLURM abort the step with
SIGTERM); `kill -TERM -- -PGID` and `timeout` signal the whole process group. Only the run's process
decides: its DataLoader workers leave the stop signals to it (`leave_stop_signals_to`, with the
signals blocked while they start: `started`), so a worker no longer dies of SIGTERM mid-epoch and fails
the run ("DataLoader worker ... is killed by signal: Terminated"); they end when the loader does. W&B's
service is kept out of the USR signals and re-logs what a SIGTERM cost it (record/trackers.py).

SLURM sends its time-limit signal up to a minute before `signal_delay_s` asks (it checks limits on a
30-60 s tick), so a short job can get it while it is still starting, before submitit has installed its
handler: Python's default for USR1/USR2 would end the job as FAILED. `keep_start_up_signals` keeps
such a signal from the moment the SLURM launcher's module is imported (the first import of the job's
unpickling); the run then stops after its first step and is requeued like any other.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
WAIT_AFTER_SIGTERM_S = 90  # under SLURM: longer than KillWait (30 s by default), so SLURM's SIGKILL ends it
SWEEP_PID_VARIABLE = "STEMSWEEP_SWEEP_PID"  # set by the sweep process for the workers it starts
WAIT_FOR_THE_SWEEP_S = 180  # longer than the sweep waits for its workers' checkpoints

T = TypeVar("T")

_start_up_signals: list[int] = []  # USR signals that came while a submitit job was starting


def keep_start_up_signals() -> None:
    """In a submitit job that has not installed its handlers yet: keep a USR signal instead of dying of
    it (see the module); StopSignals acts on it when the run starts."""
    if "SUBMITIT_FOLDER" not in os.environ or threading.current_thread() is not threading.main_thread():
        return
    for signum in REQUEUE_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _keep_start_up_signal)


def _keep_start_up_signal(signum: int, frame: FrameType | None) -> None:
    _start_up_signals.append(signum)


def leave_stop_signals_to(main_pid: int, worker_id: int) -> None:
    """A DataLoader's `worker_init_fn`, bound to the pid of the process that iterates the loader: the
    worker leaves the stop signals to that process (see the module). It ignores SIGINT, SIGUSR1 and
    SIGUSR2. SIGTERM stays blocked (`started` blocked it) and a thread takes it: from that process it
    ends the worker, as PyTorch's own worker handler does, so the loader's `terminate()` of a hung
    worker and multiprocessing's of its children at exit still work; from anyone else it is ignored."""
    others = set(STOP_SIGNALS) - {signal.SIGTERM}
    for signum in others:
        signal.signal(signum, signal.SIG_IGN)
    # A forked worker also runs the Python handlers it inherited; submitit's for SIGCONT (which SLURM
    # sends before its SIGTERM) would log "Bypassing signal SIGCONT" once per worker.
    signal.signal(signal.SIGCONT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # in every thread the worker starts
    signal.pthread_sigmask(signal.SIG_UNBLOCK, others)
    threading.Thread(target=_end_at_sigterm_from, args=(main_pid,), name="sigterm", daemon=True).start()


def _end_at_sigterm_from(main_pid: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != main_pid:
        pass
    os._exit(0)


def started(loader: Iterable[T]) -> Iterator[T]:
    """`iter(loader)`, which starts a DataLoader's workers, with the stop signals blocked meanwhile: a
    worker inherits the block, so a signal to the whole job between its start and `leave_stop_signals_to`
    waits instead of killing it. This process takes any such signal once the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def under_slurm() -> bool:
    """Whether this process is part of a SLURM job (a batch job, srun or salloc)."""
    return "SLURM_JOB_ID" in os.environ


class RunInterrupted(KeyboardInterrupt):
    """The run stopped at a signal after writing its checkpoint; launched again, it resumes."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Installs the stop handlers while a run trains (a context manager) and keeps what arrived."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the stop signal that decides how the run ends
        self.first: int | None = None  # the one that stopped it, which the record names
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread takes signals
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._received)
        if _start_up_signals:
            self.signum = self.first = _start_up_signals.pop()
            _start_up_signals.clear()
            log.warning("%s came while the job was starting: the run stops after its first step and writes "
                        "a checkpoint", self.name)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = self.first = signum
            log.warning("%s: the run stops after this step and writes a checkpoint",
                        signal.Signals(signum).name)
        elif signum == signal.SIGTERM and under_slurm():
            log.warning("SIGTERM while the run stops: it writes its checkpoint first (SLURM kills it "
                        "KillWait after the SIGTERM)")
        elif signum in (signal.SIGINT, signal.SIGTERM):  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        elif signum in REQUEUE_SIGNALS and self.signum not in REQUEUE_SIGNALS:
            self.signum = signum  # TERM then USR2 is a preemption: the USR signal decides how it ends

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        """The name of the signal that stopped the run: a preemption's SIGTERM stays its signal even when
        its USR2 comes before the checkpoint is written (a slow step) and decides how the run ends."""
        return None if self.first is None else signal.Signals(self.first).name

    def cause(self) -> str:
        """What the interruption was, for the record: time-out, preemption or the signal's name."""
        handler = self._submitit_handler()
        if self.signum in REQUEUE_SIGNALS and handler is not None:
            return "time-out" if handler.has_timed_out() else "preemption"
        return self.name or "unknown"

    def end_process(self, recorded: Callable[[str], None]) -> None:
        """After the checkpoint is written and the record says why (see the module): end this process
        as the signal asks. `recorded(cause)` corrects the record's cause when a USR signal followed
        a SIGTERM (a preemption delivered as TERM, then USR2)."""
        assert self.signum is not None
        handler = self._submitit_handler()
        if handler is not None:
            if self.signum == signal.SIGTERM:
                self._wait_for_slurm()  # returns only if a USR signal arrived meanwhile
                recorded(self.cause())
            if self.signum in REQUEUE_SIGNALS:
                # submitit's handlers again (its SIGTERM one ignores the SIGTERM that the requeue itself
                # sends); its USR handler requeues once and exits with SystemExit (or raises
                # UncompletedJobError past max_num_timeout); on ranks other than 0 it returns.
                self._restore()
                handler.checkpoint_and_try_requeue(self.signum)
                raise SystemExit(0)
        self._wait_for_the_sweep()
        raise RunInterrupted(self.signum)

    def _wait_for_the_sweep(self) -> None:
        """In a worker process of a local sweep (joblib): wait until the sweep process ends it. A run that
        raised at once would make joblib abort, and SIGKILL the other workers before they could write
        their checkpoints; the sweep waits for all of them first (hydra_plugins/.../sweeper.py)."""
        sweep = os.environ.get(SWEEP_PID_VARIABLE)
        if not sweep or int(sweep) == os.getpid() or os.getppid() != int(sweep):
            return
        deadline = time.monotonic() + WAIT_FOR_THE_SWEEP_S
        while os.getppid() == int(sweep) and time.monotonic() < deadline:
            time.sleep(0.2)

    def _wait_for_slurm(self) -> None:
        deadline = time.monotonic() + WAIT_AFTER_SIGTERM_S
        log.info("waiting for SLURM to requeue or cancel the job (or for a USR signal)")
        while time.monotonic() < deadline and self.signum not in REQUEUE_SIGNALS:
            time.sleep(0.2)

    def _submitit_handler(self) -> Any:
        """submitit's SignalHandler when this process is a submitit job (it registered one for its
        preemption signal before the job started), else None."""
        for signum in (*REQUEUE_SIGNALS, signal.SIGTERM):
            handler = getattr(self._previous.get(signum), "__self__", None)
            if type(handler).__name__ == "SignalHandler" and hasattr(handler, "checkpoint_and_try_requeue"):
                return handler
        return None
