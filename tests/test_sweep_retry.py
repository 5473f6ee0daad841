"""Storage calls ride out an outage (unetbench.sweep.retry), with a storage that fails on cue.

The outages of real servers (PostgreSQL restarted or stopped, the gRPC proxy killed) are in
test_sweep_outages.py; here the logic: what is retried, for how long, what is said, and that
a call whose answer was lost is not done twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from unetbench.sweep.record import new_trial
from unetbench.sweep.retry import RetryingStorage, StorageUnreachable, is_transient


class Flaky:
    """Wraps a storage; every call fails with a connection error while it is "down", and
    ``lose_answers`` calls take effect but raise as if the answer was lost."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down_until = 0.0
        self.lose_answers = 0
        self.calls = 0

    def down_for(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if time.monotonic() < self.down_until:
                raise ConnectionError("server closed the connection unexpectedly")
            result = attr(*args, **kwargs)
            if self.lose_answers:
                self.lose_answers -= 1
                raise ConnectionError("connection reset while reading the answer")
            return result

        return call


def _storage(tmp_path: Path, patience: float) -> tuple[RetryingStorage, Flaky]:
    flaky = Flaky(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    return RetryingStorage(flaky, patience, "test-db"), flaky  # type: ignore[abstract]


def test_an_outage_shorter_than_the_grace_period_is_waited_out_with_two_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage, flaky = _storage(tmp_path, patience=10)
    study = optuna.create_study(storage=storage, study_name="s")
    flaky.down_for(1.5)
    caplog.set_level(logging.WARNING, logger="unetbench.sweep.retry")
    t0 = time.monotonic()
    assert study.get_trials() == []
    assert 1.5 <= time.monotonic() - t0 < 6
    messages = [r.getMessage() for r in caplog.records if r.name == "unetbench.sweep.retry"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("storage test-db unreachable (server closed the connection")
    assert messages[0].endswith("waiting up to 10 s for it")
    assert messages[1].startswith("storage test-db reachable again after ")
    assert storage.outages == 1


def test_an_outage_longer_than_the_grace_period_ends_with_one_error(tmp_path: Path) -> None:
    storage, flaky = _storage(tmp_path, patience=1)
    study = optuna.create_study(storage=storage, study_name="s")
    flaky.down_for(60)
    t0 = time.monotonic()
    with pytest.raises(StorageUnreachable, match=r"unreachable for \d+ s, longer than the grace"):
        study.get_trials()
    assert time.monotonic() - t0 < 8


def test_other_errors_are_raised_at_once(tmp_path: Path) -> None:
    storage, flaky = _storage(tmp_path, patience=30)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("no such study")
    assert flaky.calls == 1
    assert not is_transient(ValueError("invalid data"))
    assert is_transient(optuna.exceptions.StorageInternalError("x").with_traceback(None)) is False


def test_a_trial_whose_creation_answer_was_lost_is_created_once(tmp_path: Path) -> None:
    storage, flaky = _storage(tmp_path, patience=30)
    study = optuna.create_study(storage=storage, study_name="s")
    flaky.lose_answers = 1
    trial_id = new_trial(study, "search")
    assert [t._trial_id for t in study.get_trials()] == [trial_id]
    flaky.lose_answers = 1
    assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0]) is True
    assert study.get_trials()[0].state == TrialState.COMPLETE


def test_the_transient_errors_of_real_drivers() -> None:
    import grpc
    import psycopg2  # type: ignore[import-untyped]
    import sqlalchemy

    down = psycopg2.OperationalError("could not connect to server: Connection refused")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, down)
    internal = optuna.exceptions.StorageInternalError("invalid data in the commit")
    internal.__cause__ = wrapped
    assert is_transient(internal)

    class Unavailable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "failed to connect to all addresses"

    class ProxyDbDown(Unavailable):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNKNOWN

        def details(self) -> str:
            return "Exception calling application: An exception is raised ... StorageInternalError"

    class Bug(Unavailable):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNKNOWN

        def details(self) -> str:
            return "Exception calling application: division by zero"

    assert is_transient(Unavailable()) and is_transient(ProxyDbDown())
    assert not is_transient(Bug())
    data = sqlalchemy.exc.DataError("INSERT", {}, psycopg2.DataError("value too long"))
    assert not is_transient(data)
