"""Which RUNNING trials belong to dead workers, failing those with a reason; heartbeats.

Each trial is created with its worker's identity (``worker``: host name, PID, process start
time, PID namespace and boot id; see :mod:`unetbench.sweep.record`). A worker is taken for
dead on one of two signals, by whichever live worker looks next:

* **same machine and PID namespace**: its process is gone, or its PID now belongs to a newer
  process (the start time differs). Immediate, and what makes SQLite and journal files safe
  to resume after a SIGKILL. Two containers with one host name but their own PID namespaces
  are not the same machine here. Where ``/proc`` is not this namespace's own (a PID namespace
  without its own ``/proc`` mount), only whether the PID exists is checked.
* **shared storages** (a database server, the gRPC proxy): the worker's own heartbeat thread
  bumps a counter (the trial's system attribute ``unetbench:heartbeat``) every
  ``heartbeat_interval`` seconds. A reader takes the trial for dead when it has seen the same
  counter for longer than the grace period on its own monotonic clock while the storage was
  reachable: clocks of different machines never need to agree, and after a storage outage
  every reader starts counting afresh, so an outage never makes a live worker look dead.

Trials of live workers are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from unetbench.sweep.record import (
    HEARTBEAT,
    _start_ticks,
    beat,
    identity_of,
    worker_identity,
    write_failure,
)

if TYPE_CHECKING:
    from unetbench.sweep.storage import StudyStorage

__all__ = ["Liveness", "describe", "owner_alive"]

_LOG = logging.getLogger(__name__)
# On local storages, a RUNNING trial that never recorded its worker (a trial enqueued by a
# user and popped by a worker that died at once) is dead after this long.
_ORPHAN_AGE_S = 120.0


def owner_alive(ident: dict[str, Any] | None) -> bool | None:
    """True/False for a worker this process can see (same host and PID namespace); None
    when it is unknown or elsewhere."""
    if ident is None:
        return None
    me = worker_identity()
    if ident.get("host") != me["host"]:
        return None
    for field in ("pidns", "boot"):  # recorded since 0.3; older identities: same host
        if ident.get(field) is not None and ident.get(field) != me[field]:
            return None
    pid = int(ident["pid"])
    if _proc_is_ours():
        ticks = _start_ticks(pid)
        return ticks is not None and ticks == ident.get("start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_is_ours() -> bool:
    """Whether ``/proc`` shows this process's PID namespace. Not so in a PID namespace that
    kept its parent's ``/proc`` (``unshare --pid --fork`` without ``--mount-proc``): there
    ``/proc/<pid>`` is another process, and only :func:`os.kill` sees this namespace's PIDs."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def describe(ident: dict[str, Any] | None) -> str:
    """``worker 123 on host gpu-07`` for messages."""
    if ident is None:
        return "a worker that never recorded itself"
    return f"worker {ident.get('pid', '?')} on host {ident.get('host', '?')}"


class Liveness:
    """Finds and fails the RUNNING trials of dead workers; runs the heartbeat of this one.

    One per worker process: it remembers when it first saw each trial's heartbeat counter.
    """

    def __init__(self, store: StudyStorage) -> None:
        self.store = store
        self._seen: dict[int, tuple[Any, float]] = {}
        recovered = getattr(store.storage, "on_recovered", None)
        if isinstance(recovered, list):
            recovered.append(self.forget)

    def forget(self) -> None:
        """Start counting silence afresh (called when the storage is back after an outage)."""
        self._seen = {}

    def fail_dead(self, study: optuna.Study) -> list[int]:
        """Mark FAIL every RUNNING trial whose worker is known dead; returns their numbers."""
        now = time.monotonic()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        dead = {t._trial_id: why for t in running if (why := self._why_dead(t, now)) is not None}
        live_ids = {t._trial_id for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in live_ids}
        return [n for n in (self.fail(study, i, why) for i, why in dead.items()) if n is not None]

    def _why_dead(self, t: FrozenTrial, now: float) -> str | None:
        ident = identity_of(t.user_attrs)
        alive = owner_alive(ident)
        if alive is False:
            return "died"
        if alive is True:
            return None
        if self.store.shared:
            beat = t.system_attrs.get(HEARTBEAT)
            seen = self._seen.get(t._trial_id)
            if seen is None or seen[0] != beat:
                self._seen[t._trial_id] = (beat, now)
            elif now - seen[1] > float(self.store.grace_period):
                return f"stopped sending heartbeats (none for {self.store.grace_period} s)"
            return None
        orphan = ident is None and t.datetime_start is not None
        if orphan and time.time() - t.datetime_start.timestamp() > _ORPHAN_AGE_S:  # type: ignore[union-attr]
            return "died"
        return None

    def fail(
        self, study: optuna.Study, trial_id: int, why: str, status: str = "error"
    ) -> int | None:
        """Fail a RUNNING trial with the reason ``<its worker> <why>`` and ``status``; its
        number, or None if another worker finished or failed it first."""
        storage = study._storage
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                return None
            reason = f"{describe(identity_of(trial.user_attrs))} {why}"
            write_failure(storage, trial_id, reason, status)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return None
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            return None
        _LOG.warning("trial %d marked FAIL: %s", trial.number, reason)
        return int(trial.number)

    @contextlib.contextmanager
    def heartbeat(self, trial_id: int) -> Iterator[None]:
        """While the block runs, bump the trial's heartbeat counter (shared storages).

        The thread outlives any storage error: it logs and tries again at the next beat.
        """
        if not self.store.shared:
            yield
            return
        stop = threading.Event()
        interval = float(self.store.heartbeat_interval)
        storage = self.store.storage

        def beats() -> None:
            count = 0
            while not stop.wait(interval):
                count += 1
                try:
                    beat(storage, trial_id, count)
                except optuna.exceptions.UpdateFinishedTrialError:
                    return  # failed by another worker: the main thread finds out
                except Exception as exc:  # the storage is away longer than the grace period
                    _LOG.debug("heartbeat of trial %d not sent: %s", trial_id, exc)

        thread = threading.Thread(target=beats, name=f"unetbench-heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1.0)  # a beat stuck in an outage is not waited for
