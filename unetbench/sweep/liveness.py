"""Which RUNNING trials belong to dead workers, and failing those with a reason.

Each trial records its worker as one user attribute, ``worker`` = ``{"host", "pid", "start"}``
(written in one storage call, so no reader ever sees half an identity). A worker is taken for
dead on one of three signals, by whichever live worker looks next:

* **same host**: its process is gone, or its PID now belongs to a newer process (the process
  start time differs). Immediate, and what makes SQLite and journal files safe to resume
  after a SIGKILL.
* **server database**: Optuna's heartbeat (:class:`optuna.storages.RDBStorage`): a running
  trial records a heartbeat every ``heartbeat_interval`` seconds, stamped with the database
  server's clock; one silent for ``grace_period`` seconds is stale.
* **gRPC proxy**, which has no heartbeat of its own: the worker writes a counter to the
  trial's system attribute ``unetbench:heartbeat`` every interval, and a reader takes the
  trial for dead when it has seen the same counter for longer than the grace period on its own
  monotonic clock, so clocks of different machines never need to agree.

Trials of live workers are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from unetbench.sweep.storage import StudyStorage

__all__ = [
    "HEARTBEAT_ATTR",
    "REASON_ATTR_PREFIX",
    "WORKER_ATTR",
    "Liveness",
    "note_stale_trial",
    "owner_alive",
    "worker_identity",
]

_LOG = logging.getLogger(__name__)
WORKER_ATTR = "worker"
HEARTBEAT_ATTR = "unetbench:heartbeat"
# Study system attribute ``<prefix><trial number>``: why a trial was failed after it finished.
REASON_ATTR_PREFIX = "unetbench:fail_reason:"
# On local storages, a RUNNING trial that never recorded its worker is dead after this long
# (the identity is the trial's first write, a few milliseconds after it is created).
_ORPHAN_AGE_S = 120.0


def _start_ticks(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot (Linux), to tell reused PIDs
    apart; None for no process or a zombie (killed, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def worker_identity() -> dict[str, Any]:
    """This process as a trial's ``worker`` attribute: host name, PID and start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def identity_of(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's worker identity, or None if it has not recorded one (yet)."""
    ident = attrs.get(WORKER_ATTR)
    if isinstance(ident, dict) and "host" in ident and "pid" in ident:
        return ident
    if {"worker_host", "worker_pid", "worker_start"} <= attrs.keys():  # studies before 0.2
        return {
            "host": attrs["worker_host"],
            "pid": attrs["worker_pid"],
            "start": attrs["worker_start"],
        }
    return None


def owner_alive(ident: dict[str, Any] | None) -> bool | None:
    """True/False for a worker of this host; None when it is unknown or on another machine."""
    if ident is None or ident.get("host") != socket.gethostname():
        return None
    pid = int(ident["pid"])
    if Path("/proc").is_dir():
        ticks = _start_ticks(pid)
        return ticks is not None and ticks == ident.get("start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(ident: dict[str, Any] | None) -> str:
    """``worker 123 on host gpu-07`` for messages."""
    if ident is None:
        return "a worker that never recorded itself"
    return f"worker {ident.get('pid', '?')} on host {ident.get('host', '?')}"


def note_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial it failed as stale: keep the reason with the study.

    Optuna fails stale trials itself when a worker starts a trial; the trial is then
    finished and takes no more attributes, so the reason goes to the study, where
    :func:`unetbench.sweep.export.trials_frame` finds it.
    """
    storage: Any = study._storage
    grace = getattr(storage, "grace_period", None) or getattr(
        getattr(storage, "_backend", None), "grace_period", "?"
    )
    reason = (
        f"{describe(identity_of(trial.user_attrs))} stopped sending heartbeats (none for {grace} s)"
    )
    with contextlib.suppress(Exception):
        storage.set_study_system_attr(
            study._study_id, f"{REASON_ATTR_PREFIX}{trial.number}", reason
        )
    _LOG.warning("trial %d marked FAIL: %s", trial.number, reason)


class Liveness:
    """Finds and fails the RUNNING trials of dead workers; sends heartbeats on gRPC storages.

    One per worker process: on gRPC storages it remembers when it first saw each trial's
    current heartbeat counter.
    """

    def __init__(self, store: StudyStorage) -> None:
        self.store = store
        self._seen: dict[int, tuple[Any, float]] = {}

    def fail_dead(self, study: optuna.Study) -> list[int]:
        """Mark FAIL every RUNNING trial whose worker is known dead; returns their numbers."""
        storage = study._storage
        dead: dict[int, str] = {}
        grace = self.store.grace_period
        if is_heartbeat_enabled(storage):
            for trial_id in storage._get_stale_trial_ids(study._study_id):  # type: ignore[attr-defined]
                dead[trial_id] = f"stopped sending heartbeats (none for {grace} s)"
        now = time.monotonic()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            if t._trial_id in dead:
                continue
            why = self._why_dead(t, now)
            if why is not None:
                dead[t._trial_id] = why
        live_ids = {t._trial_id for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in live_ids}
        return [
            n for n in (self._fail(storage, i, why) for i, why in dead.items()) if n is not None
        ]

    def _why_dead(self, t: FrozenTrial, now: float) -> str | None:
        ident = identity_of(t.user_attrs)
        alive = owner_alive(ident)
        if alive is False:
            return "died"
        if alive is True:
            return None
        if self.store.kind == "grpc":
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            seen = self._seen.get(t._trial_id)
            if seen is None or seen[0] != beat:
                self._seen[t._trial_id] = (beat, now)
            elif now - seen[1] > float(self.store.grace_period or 0):
                return f"stopped sending heartbeats (none for {self.store.grace_period} s)"
            return None
        orphan = not self.store.shared and ident is None and t.datetime_start is not None
        if orphan and time.time() - t.datetime_start.timestamp() > _ORPHAN_AGE_S:  # type: ignore[union-attr]
            return "died"
        return None

    def _fail(self, storage: Any, trial_id: int, why: str) -> int | None:
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                return None
            reason = f"{describe(identity_of(trial.user_attrs))} {why}"
            storage.set_trial_user_attr(trial_id, "status", "error")
            storage.set_trial_user_attr(trial_id, "reason", reason)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return None
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            return None  # another worker finished or failed it first
        _LOG.warning("trial %d marked FAIL: %s", trial.number, reason)
        return int(trial.number)

    @contextlib.contextmanager
    def heartbeat(self, trial_id: int) -> Iterator[None]:
        """While the block runs, beat for the trial (gRPC only: Optuna beats for RDB)."""
        if self.store.kind != "grpc":
            yield
            return
        stop = threading.Event()
        interval = float(self.store.heartbeat_interval or 60)
        storage = self.store.storage

        def beat() -> None:
            count = 0
            while True:
                try:
                    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, count)
                except Exception as exc:  # finished by now, or the proxy is restarting
                    if stop.is_set():
                        return
                    _LOG.debug("heartbeat of trial %d not sent: %s", trial_id, exc)
                count += 1
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=beat, name=f"unetbench-heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
