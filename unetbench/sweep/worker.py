"""The loop one sweep worker runs: search trials until the study has ``n_trials`` COMPLETE,
then the confirmation trials (see :mod:`unetbench.sweep.confirm`).

Workers never count on each other: each one, under the storage's creation lock (local
storages), fails the RUNNING trials of dead workers, counts COMPLETE and RUNNING search
trials, and either starts one more trial, waits for the running ones (failing them if their
worker dies meanwhile), or goes on to the confirmation round, where it enqueues and runs the
next confirmation no trial holds, waits for those under way, or stops. A search trial that a
remote worker started past ``n_trials`` (possible only on shared storages, which have no
shared lock) is failed as surplus before it trains, so the study never ends with more than
``n_trials`` COMPLETE search trials. Confirmation trials do not count toward ``n_trials``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from unetbench.sweep.claims import ConfigClaims
from unetbench.sweep.confirm import confirm_todo
from unetbench.sweep.evaluator import Evaluator
from unetbench.sweep.liveness import Liveness
from unetbench.sweep.objective import TrialObjective
from unetbench.sweep.sampling import SearchPlan, make_sampler, role_of, search_plan
from unetbench.sweep.spec import StudySpec
from unetbench.sweep.storage import StudyStorage, open_storage

__all__ = ["run_worker", "sampler_seed", "worker_process_main"]

_LOG = logging.getLogger(__name__)
POLL_S = 2.0


class SurplusTrialError(Exception):
    """A trial started after the study already had n_trials COMPLETE or running."""


class _Lock:
    """The storage's creation lock, releasable from inside the objective exactly once."""

    def __init__(self, storage: StudyStorage) -> None:
        self._cm = storage.creation_lock()
        self._held = False
        self._mutex = threading.Lock()

    def acquire(self) -> None:
        self._cm.__enter__()
        self._held = True

    def release(self) -> None:
        with self._mutex:
            if self._held:
                self._held = False
                self._cm.__exit__(None, None, None)


def cpu_threads(spec: StudySpec, workers: int) -> int | None:
    """Torch CPU threads for one worker: the spec's ``threads``, else cores // workers.

    With one worker and no ``threads`` key, torch's default is kept (None). Several workers
    that each use every core oversubscribe the CPU, and OpenMP's spinning threads then make
    every step many times slower.
    """
    if spec.threads is not None:
        return spec.threads
    if workers == 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


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
    seed_offset: int = 0,
    on_trial_end: Callable[[optuna.Study], None] | None = None,
    workers: int = 1,
    device: str | None = None,
    plan: SearchPlan | None = None,
    data: Any = None,
) -> int:
    """Run search trials until the study has ``n_trials`` COMPLETE, then the confirmation
    round; returns how many trials this worker ran.

    ``device`` overrides ``spec.device`` for this worker (``--devices``); ``plan`` is
    :func:`~unetbench.sweep.sampling.search_plan` (computed here if not given), which may
    lower ``n_trials``; ``data`` is the study's data if it is loaded already.
    """
    plan = search_plan(spec, n_trials) if plan is None else plan
    n_trials = min(n_trials, plan.n_trials)
    existing = len(
        optuna.load_study(study_name=spec.name, storage=storage.storage).get_trials(deepcopy=False)
    )
    seed = sampler_seed(spec, existing, seed_offset, storage.shared or workers > 1)
    study = optuna.load_study(
        study_name=spec.name, storage=storage.storage, sampler=make_sampler(spec, seed, plan)
    )
    if device is not None and device != spec.device:
        spec = dataclasses.replace(spec, device=device)
    liveness = Liveness(storage)
    claims = ConfigClaims(storage.storage, spec.name)
    objective = TrialObjective(spec, evaluator, liveness, claims, data=data)
    # Everything alive now (torch, optuna, the data) lives as long as the worker: moved out of
    # the collector's sight, the full collection between trials only scans what trials made.
    gc.collect()
    gc.freeze()
    ran = 0
    try:
        while True:
            lock = _Lock(storage)
            lock.acquire()
            try:
                liveness.fail_dead(study)
                trials = study.get_trials(deepcopy=False)
                search = [t for t in trials if role_of(t) == "search"]
                complete = sum(t.state == TrialState.COMPLETE for t in search)
                running = sum(t.state == TrialState.RUNNING for t in search)
                if complete + running >= n_trials > complete:
                    lock.release()
                    time.sleep(POLL_S)  # others are finishing the last trials; one may die
                    continue
                if complete < n_trials:
                    objective.on_start = functools.partial(
                        _start_or_surplus, n_trials=n_trials, lock=lock
                    )
                elif not _next_confirmation(study, spec, trials):
                    if any(t.state == TrialState.RUNNING for t in trials):
                        lock.release()
                        time.sleep(POLL_S)  # a confirmation under way may die and need a rerun
                        continue
                    return ran
                else:
                    objective.on_start = functools.partial(_start, lock=lock)
                _run_one(study, objective, claims)
                ran += 1
            finally:
                lock.release()
            if on_trial_end is not None:
                on_trial_end(study)

    finally:
        gc.unfreeze()  # a worker run in a longer-lived process leaves its heap as found


def _next_confirmation(
    study: optuna.Study, spec: StudySpec, trials: list[optuna.trial.FrozenTrial]
) -> bool:
    """Enqueue the next confirmation trial unless one is waiting; False if none is left."""
    if any(t.state == TrialState.WAITING for t in trials):
        return True  # enqueued by a worker that did not get to run it: run it now
    todo, _ = confirm_todo(spec, trials)
    if not todo:
        return False
    item = todo[0]
    study.enqueue_trial(
        item.params,
        user_attrs={
            "role": "confirm",
            "config_key": item.config_key,
            "confirm_of": item.source,
            "repeat_start": item.repeat_start,
            "n_seeds": item.n_seeds,
        },
    )
    _LOG.info("confirming trial %d's config with %d more seed(s)", item.source, item.n_seeds)
    return True


def _run_one(study: optuna.Study, objective: TrialObjective, claims: ConfigClaims) -> None:
    """One trial; its config claim is released once the trial is finished, however it ends."""
    objective.trial_id = None
    try:
        study.optimize(objective, n_trials=1, catch=(SurplusTrialError,))
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        # Another worker failed this trial while it ran: this worker sent no heartbeat for
        # the grace period (a suspended or overloaded machine). Its result is dropped; Optuna
        # raises when the trial's attributes or result are written to the finished trial.
        tid = objective.trial_id
        if tid is None or study._storage.get_trial(tid).state != TrialState.FAIL:
            raise
        _LOG.warning(
            "trial %d was failed by another worker while this one ran it (no heartbeat for the "
            "grace period); its result is dropped",
            study._storage.get_trial(tid).number,
        )
    finally:
        if objective.claimed is not None:
            claims.release(*objective.claimed)
            objective.claimed = None


def _start(trial: optuna.Trial, lock: _Lock) -> None:
    """Called by the objective once its trial exists: release the lock."""
    lock.release()


def _start_or_surplus(trial: optuna.Trial, n_trials: int, lock: _Lock) -> None:
    """Called by the objective once its trial exists: release the lock, refuse surplus."""
    lock.release()
    if role_of(trial.study._storage.get_trial(trial._trial_id)) != "search":
        return  # a confirmation enqueued by another worker: never surplus
    ahead = sum(
        t.number < trial.number
        and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
        and role_of(t) == "search"
        for t in trial.study.get_trials(deepcopy=False)
    )
    if ahead >= n_trials:
        reason = f"surplus: the study already had {n_trials} trials when this one started"
        trial.set_user_attr("reason", reason)
        raise SurplusTrialError(f"trial {trial.number}: {reason}")


@dataclasses.dataclass(frozen=True)
class WorkerArgs:
    """What a spawned worker process needs (picklable)."""

    spec: StudySpec
    storage_url: str | None
    study_dir: str
    n_trials: int
    evaluator: Evaluator
    seed_offset: int
    workers: int
    device: str | None
    log_level: int
    threads: int | None
    heartbeat_interval: int | None
    grace_period: int | None
    plan: SearchPlan | None = None


def worker_process_main(args: WorkerArgs) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(
        args.storage_url, Path(args.study_dir), args.heartbeat_interval, args.grace_period
    )
    try:
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
            )
    except KeyboardInterrupt:
        _LOG.info("worker interrupted; its running trial is marked FAIL")
