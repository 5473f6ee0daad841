"""The loop one sweep worker runs, top to bottom: propose, measure, record, until done.

::

    while True:
        with the storage's lock (local storages only):
            proposal = proposer.next()      # fail dead workers' trials; start a trial, or
                                            # wait, or stop (unetbench.sweep.propose)
        if stop: return; if wait: sleep; continue
        with the trial's heartbeat:
            row, values = measure(proposal)  # train and profile (unetbench.sweep.measure)
        record(row); tell(values)            # one record, then COMPLETE (unetbench.sweep.record)
        release the trial's claim

Storage calls ride out outages (:mod:`unetbench.sweep.retry`); past the grace period the
worker stops with :class:`~unetbench.sweep.retry.StorageUnreachable`. SIGINT or SIGTERM
raise :class:`Interrupted` in the loop: the trial under way is failed with the signal as its
reason and its claim dropped, so the same command resumes the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from unetbench._errors import UnetbenchError
from unetbench.cpus import usable_cpus
from unetbench.sweep.claims import ConfigClaims
from unetbench.sweep.evaluator import Evaluator
from unetbench.sweep.liveness import Liveness
from unetbench.sweep.measure import TrialError, TrialMeasure
from unetbench.sweep.propose import Proposal, Proposer
from unetbench.sweep.record import write_failure, write_record
from unetbench.sweep.retry import RetryingStorage, StorageUnreachable
from unetbench.sweep.sampling import SearchPlan, make_sampler, search_plan
from unetbench.sweep.spec import StudySpec
from unetbench.sweep.states import StateStore
from unetbench.sweep.storage import StudyStorage, open_storage

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_STORAGE_LOST",
    "Interrupted",
    "RepeatedError",
    "WorkerArgs",
    "ignore_interrupts",
    "interrupts_raise",
    "run_worker",
    "sampler_seed",
    "worker_process_main",
]

_LOG = logging.getLogger(__name__)
POLL_S = 2.0
#: Consecutive trials of one worker that may crash with the same error before it stops.
SAME_ERROR_LIMIT = 2
# Exit status of a worker process (and of `unetbench sweep`) whose storage stayed unreachable
# for longer than the grace period: EX_TEMPFAIL, "try again later".
EXIT_STORAGE_LOST = 75
EXIT_INTERRUPTED = 128  # + the signal's number, as a shell reports a process a signal ended
# How long the storage calls that fail an interrupted trial may wait for the storage.
_CLEANUP_PATIENCE_S = 5.0


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """In the main thread, the first SIGINT or SIGTERM raises :class:`Interrupted`; later
    ones are ignored, so the cleanup it starts is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        ignore_interrupts()
        raise Interrupted(signum)

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def ignore_interrupts() -> None:
    """Ignore SIGINT and SIGTERM from now on: for a process that is ending because of one."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def cpu_threads(spec: StudySpec, workers: int) -> int | None:
    """Torch CPU threads for one worker: the spec's ``threads``, else usable CPUs // workers.

    With one worker and no ``threads`` key, torch's default is kept (None). Several workers
    that each use every core oversubscribe the CPU, and OpenMP's spinning threads then make
    every step many times slower.
    """
    if spec.threads is not None:
        return spec.threads
    if workers == 1:
        return None
    return max(1, usable_cpus() // workers)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, restoring the previous number afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _make_current(device: str) -> None:
    """A worker on ``cuda:N`` makes it its current device, so nothing it runs without a
    device argument touches another worker's GPU (nothing on the CPU, or without CUDA)."""
    if not device.startswith("cuda"):
        return
    import torch

    if torch.cuda.is_available():
        from unetbench.devices import make_current

        make_current(device)


def sampler_seed(spec: StudySpec, existing: int, offset: int, shared: bool) -> int:
    """The sampler seed of one worker.

    A lone worker on a local storage uses ``spec.seed`` plus the number of trials already
    stored (a fresh study is reproducible; a resumed one does not re-propose its first
    configs) and ``offset`` for the other processes of ``--workers``. Workers that may run
    beside others on a shared storage, on any machine, also mix in their host name and PID:
    machines started together would otherwise propose the same configs.
    """
    seed = spec.seed + existing + 7919 * offset
    if not shared:
        return seed
    text = f"{seed}:{socket.gethostname()}:{os.getpid()}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") >> 1


def run_worker(
    spec: StudySpec,
    storage: StudyStorage,
    n_trials: int,
    evaluator: Evaluator,
    *,
    seed_offset: int = 0,
    on_trial_end: Callable[[optuna.Study], None] | None = None,
    workers: int = 1,
    device: str | None = None,
    plan: SearchPlan | None = None,
    data: Any = None,
    artifacts: str | None = None,
) -> int:
    """Run search trials until the study has ``n_trials`` COMPLETE, then the confirmation
    round; returns how many trials this worker ran.

    ``device`` overrides ``spec.device`` for this worker (``--devices``); ``plan`` is
    :func:`~unetbench.sweep.sampling.search_plan` (computed here if not given), which may
    lower ``n_trials``; ``data`` is the study's data if it is loaded already; ``artifacts``
    is the folder of the runs' states, for a study with rungs.
    """
    plan = search_plan(spec, n_trials) if plan is None else plan
    n_trials = min(n_trials, plan.n_trials)
    if device is not None and device != spec.device:
        spec = dataclasses.replace(spec, device=device)
    _make_current(spec.device)
    claims = ConfigClaims(storage.storage, spec.name)
    existing = storage.storage.get_n_trials(storage.storage.get_study_id_from_name(spec.name), None)
    seed = sampler_seed(spec, existing, seed_offset, storage.shared or workers > 1)
    study = optuna.load_study(
        study_name=spec.name,
        storage=storage.storage,
        sampler=make_sampler(spec, seed, plan, claims),
    )
    liveness = Liveness(storage)
    proposer = Proposer(spec, study, n_trials, claims, liveness)
    states = StateStore(artifacts) if spec.rungs and artifacts is not None else None
    measure = TrialMeasure(spec, evaluator, liveness, claims, data=data, states=states)
    # Everything alive now (torch, optuna, the data) lives as long as the worker: moved out of
    # the collector's sight, the full collection between trials only scans what trials made.
    gc.collect()
    gc.freeze()
    ran = 0
    streak = _ErrorStreak()
    try:
        while True:
            lost = False  # the storage is gone: nothing more can be written
            try:
                with storage.creation_lock():
                    proposal = proposer.next()
                if proposal.action == "stop":
                    return ran
                if proposal.action == "wait":
                    time.sleep(POLL_S)  # others are finishing the last trials; one may die
                    continue
                crash = None
                with liveness.heartbeat(proposal.trial._trial_id):  # type: ignore[union-attr]
                    try:
                        row, values = measure(proposal)
                    except TrialError as exc:
                        crash = exc
                if crash is None:
                    _record(study, proposal, row, values)
                else:
                    _record_crash(study, proposal, crash)
                streak.add(proposal, crash)
            except KeyboardInterrupt as exc:
                _abandon(study, storage, liveness, proposer.started, _why(exc), "interrupted")
                raise
            except StorageUnreachable:
                lost = True  # its trial is failed later by a live worker; its claim with it
                raise
            except Exception as exc:  # a bug: the trial is failed with it, never left RUNNING
                _abandon(study, storage, liveness, proposer.started, f"stopped: {exc!r}"[:300])
                raise
            finally:
                proposer.started = None
                if not lost:
                    with contextlib.suppress(StorageUnreachable):
                        claims.release_all()
            ran += 1
            if on_trial_end is not None:
                on_trial_end(study)
            streak.check()
    finally:
        gc.unfreeze()  # a worker run in a longer-lived process leaves its heap as found


def _record(
    study: optuna.Study, proposal: Proposal, row: dict[str, Any], values: list[float]
) -> None:
    """Store the row and finish the trial COMPLETE, unless another worker failed it while it
    ran (this worker looked dead: no heartbeat for the grace period); then its result is
    dropped."""
    trial = proposal.trial
    assert trial is not None
    try:
        write_record(study._storage, trial._trial_id, row, row["constraints"])
        state = study.tell(trial, values, skip_if_finished=True).state
    except optuna.exceptions.UpdateFinishedTrialError:
        state = study._storage.get_trial(trial._trial_id).state
    if state != TrialState.COMPLETE:
        _LOG.warning(
            "trial %d was failed by another worker while this one ran it (no heartbeat for the "
            "grace period); its result is dropped",
            trial.number,
        )


def _record_crash(study: optuna.Study, proposal: Proposal, crash: TrialError) -> None:
    """Fail a trial that crashed: its partial row (the config), then the error's type,
    message and traceback as its failure, then the state FAIL (never a result)."""
    trial = proposal.trial
    assert trial is not None
    storage = study._storage
    row = {**crash.row, "status": "error", "reason": str(crash), "feasible": False}
    _LOG.error("trial %d crashed: %s\n%s", trial.number, crash, crash.traceback)
    try:
        write_record(storage, trial._trial_id, row, [0.0, 1.0])
        write_failure(
            storage,
            trial._trial_id,
            str(crash),
            "error",
            error_type=crash.error_type,
            traceback=crash.traceback,
        )
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker failed it first (this one looked dead)


class RepeatedError(UnetbenchError):
    """Consecutive trials of one worker crashed with the same error: the worker stops
    rather than fail trial after trial."""

    exit_code = 1


class _ErrorStreak:
    """The crashes of a worker's consecutive trials; :meth:`check` raises
    :class:`RepeatedError` once :data:`SAME_ERROR_LIMIT` in a row are the same."""

    def __init__(self) -> None:
        self.trials: list[int] = []
        self.last: TrialError | None = None

    def add(self, proposal: Proposal, crash: TrialError | None) -> None:
        same = crash is not None and self.last is not None
        if not same or crash.signature != self.last.signature:  # type: ignore[union-attr]
            self.trials = []
        self.last = crash
        if crash is not None and proposal.trial is not None:
            self.trials.append(proposal.trial.number)

    def check(self) -> None:
        if len(self.trials) >= SAME_ERROR_LIMIT and self.last is not None:
            numbers = ", ".join(str(n) for n in self.trials)
            raise RepeatedError(
                f"this worker stopped: trials {numbers} in a row crashed with the same error "
                f"({self.last}); its traceback is in trials.parquet (column traceback) and in "
                "`unetbench report`"
            )


def _why(exc: BaseException) -> str:
    name = signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"
    return f"was interrupted ({name})"


def _abandon(
    study: optuna.Study,
    storage: StudyStorage,
    liveness: Liveness,
    trial_id: int | None,
    why: str,
    status: str = "error",
) -> None:
    """Fail the trial this worker had started, waiting only briefly for the storage."""
    if trial_id is None:
        return
    if isinstance(storage.storage, RetryingStorage):
        storage.storage.patience = min(storage.storage.patience, _CLEANUP_PATIENCE_S)
    try:
        liveness.fail(study, trial_id, why, status)
    except Exception as exc:  # the storage is away: another worker fails it later
        _LOG.warning("could not mark trial %d FAIL: %s", trial_id, exc)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerArgs:
    """What a spawned worker process needs (picklable)."""

    spec: StudySpec
    storage_url: str | None
    study_dir: str
    n_trials: int
    evaluator: Evaluator
    seed_offset: int = 0
    workers: int = 1
    device: str | None = None
    log_level: int = logging.INFO
    threads: int | None = None
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    connect_timeout: float | None = None
    plan: SearchPlan | None = None
    artifacts: str | None = None


def worker_process_main(args: WorkerArgs) -> None:
    """Entry point of a spawned worker process; exits with :data:`EXIT_STORAGE_LOST` when
    the storage stays away, and 128 + the signal's number when interrupted."""
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with interrupts_raise():
            storage = open_storage(
                args.storage_url,
                Path(args.study_dir),
                args.heartbeat_interval,
                args.grace_period,
                args.connect_timeout,
            )
            with torch_threads(args.threads):
                run_worker(
                    args.spec,
                    storage,
                    args.n_trials,
                    args.evaluator,
                    seed_offset=args.seed_offset,
                    workers=args.workers,
                    device=args.device,
                    plan=args.plan,
                    artifacts=args.artifacts,
                )
    except StorageUnreachable as exc:
        _LOG.debug("worker stops: %s", exc)  # the parent says it, once
        raise SystemExit(EXIT_STORAGE_LOST) from None
    except RepeatedError as exc:
        _LOG.error("%s", exc)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        ignore_interrupts()  # a second signal (the parent passes it on) must not cut the exit
        raise SystemExit(EXIT_INTERRUPTED + getattr(exc, "signum", signal.SIGINT)) from None
