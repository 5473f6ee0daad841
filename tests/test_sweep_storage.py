"""Storage strings, dead-worker detection and per-worker threads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState
from test_sweep_mechanics import fake_spec

from unetbench import UsageError
from unetbench.sweep.liveness import Liveness, owner_alive, worker_identity
from unetbench.sweep.storage import open_storage
from unetbench.sweep.worker import cpu_threads, torch_threads


@pytest.mark.parametrize(
    ("url", "kind", "lock"),
    [
        (None, RDBStorage, "study.db.trials-lock"),
        ("{tmp}/x.journal", JournalStorage, "x.journal.trials-lock"),
        ("{tmp}/x.log", JournalStorage, "x.log.trials-lock"),
        ("journal:{tmp}/y.journal", JournalStorage, "y.journal.trials-lock"),
        ("sqlite:///{tmp}/z.db", RDBStorage, "z.db.trials-lock"),
    ],
)
def test_storage_strings(tmp_path: Path, url: str | None, kind: type, lock: str) -> None:
    store = open_storage(None if url is None else url.format(tmp=tmp_path), tmp_path)
    assert isinstance(store.storage, kind)
    assert store.lock_path is not None and store.lock_path.name == lock
    with store.creation_lock():
        assert store.lock_path.exists()


def test_bad_storage_string(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither a database URL"):
        open_storage("results/study.txt", tmp_path)


def test_dead_worker_is_recognised_even_if_its_pid_is_reused() -> None:
    me = worker_identity()
    assert owner_alive(me) is True
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_alive({**me, "pid": dead.pid}) is False
    assert owner_alive({**me, "start": me["start"] - 1}) is False  # reused PID
    assert owner_alive({**me, "host": socket.gethostname() + "-elsewhere"}) is None
    assert owner_alive(None) is None  # no identity recorded (yet): never taken for dead


def test_fail_dead_trials_fails_only_trials_of_dead_workers(tmp_path: Path) -> None:
    store = open_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    study = optuna.create_study(storage=store.storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owners = [
        worker_identity(),
        {**worker_identity(), "pid": dead.pid},
        {**worker_identity(), "host": "elsewhere"},
    ]
    for ident in owners:
        study.ask().set_user_attr("worker", ident)
    assert Liveness(store).fail_dead(study) == [1]
    assert [t.state for t in study.get_trials()] == [
        TrialState.RUNNING,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]
    failed = study.get_trials()[1].user_attrs
    assert failed["reason"] == f"worker {dead.pid} on host {socket.gethostname()} died"
    assert failed["status"] == "error"


def test_threads_per_worker() -> None:
    import torch

    spec = fake_spec()
    assert cpu_threads(spec, 1) is None
    assert cpu_threads(spec, 2) == max(1, (os.cpu_count() or 1) // 2)
    raw_threads = fake_spec(train={**_train(), "threads": 3})
    assert cpu_threads(raw_threads, 2) == 3
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _train() -> dict[str, object]:
    return {"patch_shape": [8, 32, 32], "batch_size": 1, "steps": 2}


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        ("cpu,cpu", ["cpu", "cpu"]),
        (" cpu , cpu:1 ", ["cpu", "cpu:1"]),
        (["cpu"], ["cpu"]),
        ("", "--devices is empty"),
        ("tpu:0", "unknown device|unsupported device"),
        ("all", None),
        ("cuda:0,cuda:1", None),
    ],
)
def test_devices_list(devices: str | list[str], expected: list[str] | str | None) -> None:
    import torch

    from unetbench.profiler.devices import resolve_devices

    if expected is None:  # CUDA devices: exist only on a GPU machine
        if torch.cuda.is_available():
            assert all(d.startswith("cuda:") for d in resolve_devices(devices))
            return
        expected = "no CUDA"
    if isinstance(expected, str):
        with pytest.raises(UsageError, match=expected):
            resolve_devices(devices)
    else:
        assert resolve_devices(devices) == expected


def test_reason_of_a_trial_optuna_failed_as_stale_reaches_trials_parquet(tmp_path: Path) -> None:
    """Optuna fails stale trials itself when a worker starts a trial; the reason survives."""
    import time
    import warnings

    from unetbench.sweep.export import trials_frame
    from unetbench.sweep.liveness import note_stale_trial

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            f"sqlite:///{tmp_path / 'hb.db'}",
            heartbeat_interval=1,
            grace_period=1,
            heartbeat_stale_trial_callback=note_stale_trial,
        )
    study = optuna.create_study(storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "heartbeat is for Study.optimize"
        trial = study.ask()
    trial.set_user_attr("worker", {"host": "gpu-07", "pid": 4242, "start": 1})
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    row = trials_frame(study).iloc[0]
    assert row["trial_state"] == "FAIL" and row["status"] == "error"
    assert row["reason"] == "worker 4242 on host gpu-07 stopped sending heartbeats (none for 1 s)"
    assert (row["worker_host"], row["worker_pid"]) == ("gpu-07", 4242)


@pytest.mark.parametrize(
    ("url", "beat", "grace", "match"),
    [
        (None, 5, None, "apply to server databases and grpc:// only"),
        ("{tmp}/x.journal", None, 30, "local journal storage"),
        ("postgresql+psycopg2://u:p@127.0.0.1:1/db", 10, 5, "must be longer than"),
        ("postgresql+psycopg2://u:p@127.0.0.1:1/db", 0, 5, "whole number of seconds >= 1"),
    ],
)
def test_heartbeat_settings_are_checked_before_anything_is_created(
    tmp_path: Path, url: str | None, beat: int | None, grace: int | None, match: str
) -> None:
    study_dir = tmp_path / "study"
    with pytest.raises(UsageError, match=match):
        open_storage(None if url is None else url.format(tmp=study_dir), study_dir, beat, grace)
    assert not study_dir.exists()
