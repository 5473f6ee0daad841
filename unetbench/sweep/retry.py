"""Storage calls that ride out an outage: retried with backoff for up to the grace period.

A database server restarting, a network blip or the gRPC proxy being restarted make storage
calls fail for seconds. :class:`RetryingStorage` wraps any Optuna storage: a call that fails
because the storage cannot be reached is retried, with exponential backoff (0.5 s doubling to
5 s, with jitter), until the storage has been unreachable for ``patience`` seconds (the grace
period); then :class:`StorageUnreachable` is raised. One line is logged when the wait starts
and one when the storage is back, however many threads wait.

Only errors that say "unreachable" are retried (a refused or dropped connection, a server
shutting down, the proxy's UNAVAILABLE, or the proxy reporting that its own database is
down); anything else (a bad value, a finished trial) is raised at once. Two calls that are not
idempotent are made safe to repeat: a trial created with a ``token`` system attribute is
looked up before it is created again (the first call may have committed before its answer was
lost), and setting a trial's state that a lost answer already set counts as done.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage

from unetbench._errors import UnetbenchError
from unetbench.sweep.record import TOKEN

__all__ = ["RetryingStorage", "StorageUnreachable", "is_transient"]

_LOG = logging.getLogger(__name__)
_FIRST_S, _CAP_S = 0.5, 5.0
_GRPC_RETRY = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# The proxy reports an exception of its own database as UNKNOWN with the exception's text.
_PROXY_DB_DOWN = ("StorageInternalError", "OperationalError", "could not connect", "terminating")


class StorageUnreachable(UnetbenchError):
    """The storage stayed unreachable for longer than the grace period.

    The command line exits with 75 (EX_TEMPFAIL: try again later) rather than 2: nothing was
    wrong with the command, and running it again resumes the study.
    """

    exit_code = 75


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the storage is unreachable."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        module = type(e).__module__
        if module.startswith(("sqlalchemy", "psycopg", "pymysql", "sqlite3")) and name in (
            "OperationalError",
            "InterfaceError",
            "DisconnectionError",
            "AdminShutdown",
        ):
            return True
        if isinstance(e, ConnectionError):
            return True
        grpc = sys.modules.get("grpc")  # imported by a gRPC storage, and only then
        code = getattr(e, "code", None)
        if grpc is not None and isinstance(e, grpc.RpcError) and callable(code):
            status = getattr(code(), "name", "")
            details = str(getattr(e, "details", lambda: "")() or "")
            if status in _GRPC_RETRY or (
                status == "UNKNOWN" and any(s in details for s in _PROXY_DB_DOWN)
            ):
                return True
        e = e.__cause__ or e.__context__
    return False


class RetryingStorage(BaseStorage):
    """``inner`` with every call retried while the storage is unreachable (see module doc).

    ``patience`` is the grace period in seconds; ``name`` is how messages call the storage
    (its URL without password).
    """

    def __init__(self, inner: BaseStorage, patience: float, name: str) -> None:
        self.inner = inner
        self.patience = float(patience)
        self.name = name
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.outages = 0  # how many times the storage went away and came back (for tests)
        self.on_recovered: list[Callable[[], None]] = []  # called when it is back

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        delay = _FIRST_S
        retried = False
        while True:
            try:
                if retried:
                    done, value = self._already_done(method, args, kwargs)
                    if done:
                        self._back()
                        return value
                value = getattr(self.inner, method)(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    if retried:
                        self._back()
                    raise
                waited = self._waiting(exc)
                if waited > self.patience:
                    raise StorageUnreachable(
                        f"storage {self.name} unreachable for {waited:.0f} s, longer than the "
                        f"grace period ({self.patience:.0f} s): {_first_line(exc)}"
                    ) from None
                time.sleep(min(delay, _CAP_S) * random.uniform(0.8, 1.2))
                delay *= 2
                retried = True
                continue
            if retried:
                self._back()
            return value

    def _waiting(self, exc: BaseException) -> float:
        """Seconds the storage has been unreachable; logs the start of an outage once."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                _LOG.warning(
                    "storage %s unreachable (%s); waiting up to %.0f s for it",
                    self.name, _first_line(exc), self.patience,
                )  # fmt: skip
            return now - self._down_since

    def _back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            waited = time.monotonic() - self._down_since
            self._down_since = None
            self.outages += 1
        _LOG.warning("storage %s reachable again after %.0f s", self.name, waited)
        for callback in self.on_recovered:
            callback()

    def _already_done(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        """After a lost answer: whether the call took effect already, and its result."""
        if method == "create_new_trial":
            study_id = args[0] if args else kwargs["study_id"]
            template = args[1] if len(args) > 1 else kwargs.get("template_trial")
            token = None if template is None else template.system_attrs.get(TOKEN)
            if token is not None:
                for t in self.inner.get_all_trials(study_id, deepcopy=False):
                    if t.system_attrs.get(TOKEN) == token:
                        return True, t._trial_id
        if method == "set_trial_state_values":
            trial_id = args[0] if args else kwargs["trial_id"]
            state = args[1] if len(args) > 1 else kwargs["state"]
            if self.inner.get_trial(trial_id).state == state and state.is_finished():
                return True, True
        return False, None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["on_recovered"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _forward(method: str) -> Callable[..., Any]:
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(method, args, kwargs)

    call.__name__ = method
    return call


# Every public method of Optuna's storage interface goes through _call.
for _name in [n for n in vars(BaseStorage) if not n.startswith("_")]:
    setattr(RetryingStorage, _name, _forward(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def _first_line(exc: BaseException) -> str:
    """The driver's own message: the innermost cause, first non-empty line."""
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    inner = getattr(inner, "orig", None) or inner
    for line in str(inner).splitlines():
        line = line.strip()
        if line and not line.startswith("(Background on this error"):
            return line[:200]
    return type(inner).__name__
