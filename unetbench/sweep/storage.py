"""Where a study lives, and how RUNNING trials of dead workers are found and failed.

Storage strings:

* ``None`` -> embedded SQLite at ``<results_dir>/<study>/study.db``.
* ``journal:PATH``, or a path ending in ``.journal`` or ``.log`` -> an Optuna journal file
  (:class:`optuna.storages.journal.JournalFileBackend`), for several processes on one machine.
* any other URL (``sqlite:///...``, ``postgresql+psycopg2://...``, ``mysql+pymysql://...``) ->
  :class:`optuna.storages.RDBStorage`. Server databases get Optuna's heartbeat, so the trials of
  a machine that died are failed after the grace period by any other worker.

Each trial records its worker (``worker_host``, ``worker_pid``, ``worker_start``). On the same
host a RUNNING trial whose process is gone (or whose PID now belongs to a newer process) is
failed at once on resume; that is what makes SQLite and journal files safe to resume after a
SIGKILL. Trials of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from unetbench._errors import UsageError

__all__ = ["fail_dead_trials", "open_storage", "owner_alive", "worker_identity"]

_LOG = logging.getLogger(__name__)
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
# A RUNNING trial that never recorded its worker is dead after this long (it is set at once).
_ORPHAN_AGE_S = 120.0


class StudyStorage:
    """An Optuna storage plus the local lock file that serialises trial creation.

    The lock file is ``<storage file>.trials-lock``; not ``.lock``, which Optuna's journal
    backend uses for its own symlink lock.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, url: str, lock: Path | None):
        self.storage = storage
        self.url = url  # what optuna-dashboard is given to open it
        self.lock_path = lock

    @contextlib.contextmanager
    def creation_lock(self) -> Iterator[None]:
        """Hold the lock (local storages only) while counting trials and creating one."""
        if self.lock_path is None:
            yield
            return
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def open_storage(url: str | None, study_dir: Path) -> StudyStorage:
    """Resolve a storage string (see the module docstring)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    journal = _journal_path(url)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(journal))
        return StudyStorage(JournalStorage(backend), str(journal), Path(f"{journal}.trials-lock"))
    if "://" not in url:
        raise UsageError(
            f"--storage {url!r} is neither a database URL (sqlite:///file.db, "
            "postgresql+psycopg2://user:pw@host/db) nor a journal file (*.journal, journal:PATH)"
        )
    try:
        if url.startswith("sqlite:"):
            db = Path(url.split(":///", 1)[-1])
            db.parent.mkdir(parents=True, exist_ok=True)
            storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
            _sqlite_wal(storage)
            return StudyStorage(storage, url, Path(f"{db}.trials-lock"))
        storage = RDBStorage(
            url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S
        )
    except ImportError as exc:
        raise UsageError(f"--storage {url!r} needs a database driver: {exc}") from None
    return StudyStorage(storage, url, None)


def _sqlite_wal(storage: Any) -> None:
    """WAL mode with synchronous=NORMAL: a commit costs ~2 ms instead of ~20 ms (an fsync).

    Survives a killed process (not a power cut, which may lose the last commits); like any
    SQLite database it needs a local disk, not NFS.
    """
    import sqlalchemy

    def on_connect(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect, so every connection gets the pragmas


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url[len("journal:") :].removeprefix("//"))
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url)
    return None


def _start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell reused PIDs apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def worker_identity() -> dict[str, Any]:
    """User attributes that let a later run tell whether this trial's process still lives."""
    pid = os.getpid()
    return {
        "worker_host": socket.gethostname(),
        "worker_pid": pid,
        "worker_start": _start_ticks(pid),
    }


def owner_alive(attrs: dict[str, Any]) -> bool | None:
    """True/False for a trial of this host; None when its worker is on another machine."""
    if attrs.get("worker_host") != socket.gethostname() or "worker_pid" not in attrs:
        return None
    pid = int(attrs["worker_pid"])
    if Path("/proc").is_dir():
        ticks = _start_ticks(pid)
        return ticks is not None and ticks == attrs.get("worker_start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL every RUNNING trial whose worker is known dead; returns their numbers."""
    if isinstance(study._storage, optuna.storages.RDBStorage):
        with contextlib.suppress(Exception):
            optuna.storages.fail_stale_trials(study)  # heartbeat (server databases only)
    failed = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = owner_alive(t.user_attrs)
        started = t.datetime_start.timestamp() if t.datetime_start else now
        orphan = "worker_pid" not in t.user_attrs and now - started > _ORPHAN_AGE_S
        if alive is False or orphan:
            attrs = t.user_attrs
            who = f"process {attrs.get('worker_pid', '?')} on {attrs.get('worker_host', '?')}"
            with contextlib.suppress(Exception):
                study._storage.set_trial_user_attr(t._trial_id, "reason", f"worker {who} died")
                study._storage.set_trial_user_attr(t._trial_id, "status", "error")
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker finished or failed it first
            _LOG.warning(
                "trial %d was left RUNNING by a dead worker (%s): marked FAIL", t.number, who
            )
            failed.append(t.number)
    return failed
