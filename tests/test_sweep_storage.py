"""Storage strings, dead-worker detection and per-worker threads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState
from test_sweep_mechanics import fake_spec

from unetbench import UsageError
from unetbench.sweep.liveness import Liveness, owner_alive, worker_identity
from unetbench.sweep.record import HEARTBEAT, new_trial, row_of
from unetbench.sweep.retry import RetryingStorage
from unetbench.sweep.storage import StudyStorage, open_storage
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
    inner = store.storage.inner  # type: ignore[attr-defined]  # inside the retries
    assert isinstance(inner._backend if kind is RDBStorage else inner, kind)  # RDB: cached
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
    failed = row_of(study.get_trials()[1])
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


def test_reason_a_study_before_0_3_kept_with_the_study_reaches_trials_parquet(
    tmp_path: Path,
) -> None:
    """Optuna's own heartbeat (used before 0.3) failed stale trials itself and the reason
    went to a study attribute; trials.parquet still shows it."""
    from unetbench.sweep.export import trials_frame
    from unetbench.sweep.record import REASON_PREFIX

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'old.db'}")
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "gpu-07", "pid": 4242, "start": 1})
    study.tell(trial, state=TrialState.FAIL)
    reason = "worker 4242 on host gpu-07 stopped sending heartbeats (none for 1 s)"
    study._storage.set_study_system_attr(study._study_id, f"{REASON_PREFIX}0", reason)
    row = trials_frame(study).iloc[0]
    assert (row["trial_state"], row["status"], row["reason"]) == ("FAIL", "error", reason)
    assert (row["worker_host"], row["worker_pid"]) == ("gpu-07", 4242)


def _shared(tmp_path: Path, grace: int) -> tuple[StudyStorage, optuna.Study]:
    """A SQLite storage treated as a shared one (heartbeats, no PIDs of this machine)."""
    local = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", tmp_path)
    store = StudyStorage(local.storage, local.url, "server", None, 1, grace)
    return store, optuna.create_study(storage=store.storage)


def _elsewhere(study: optuna.Study) -> int:
    """A RUNNING trial of a worker on another machine, as the sweep creates it."""
    trial_id = new_trial(study, "search")
    study._storage.set_trial_user_attr(trial_id, "worker", {"host": "elsewhere", "pid": 1})
    return trial_id


def test_a_silent_heartbeat_fails_the_trial_after_the_grace_period(tmp_path: Path) -> None:
    store, study = _shared(tmp_path, grace=1)
    silent, beating = _elsewhere(study), _elsewhere(study)
    liveness = Liveness(store)
    assert liveness.fail_dead(study) == []  # first sight: counting starts now
    for count in (1, 2, 3):
        time.sleep(0.6)
        study._storage.set_trial_system_attr(beating, HEARTBEAT, count)
        liveness.fail_dead(study)
    states = {t._trial_id: t.state for t in study.get_trials()}
    assert (states[silent], states[beating]) == (TrialState.FAIL, TrialState.RUNNING)
    reason = row_of(study._storage.get_trial(silent))["reason"]
    assert reason == "worker 1 on host elsewhere stopped sending heartbeats (none for 1 s)"


def test_after_an_outage_the_silence_is_counted_afresh(tmp_path: Path) -> None:
    """A reader that waited for the storage does not fail trials whose workers waited too."""
    from test_sweep_retry import Flaky

    store, study = _shared(tmp_path, grace=1)
    flaky = Flaky(store.storage)
    store.storage = RetryingStorage(flaky, patience=30, name="flaky")  # type: ignore[abstract]
    trial_id = _elsewhere(study)
    liveness = Liveness(store)
    liveness.fail_dead(study)
    flaky.down_for(1.5)  # longer than the grace period, which counts only while it is up
    assert liveness.fail_dead(study) == []
    assert study._storage.get_trial(trial_id).state == TrialState.RUNNING
    time.sleep(1.2)
    assert liveness.fail_dead(study) == [0]


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


def test_a_restarted_proxy_sets_parameters_of_trials_it_has_not_seen(tmp_path: Path) -> None:
    """Optuna's cache raises KeyError there; the proxy's reads the study first."""
    from optuna.distributions import CategoricalDistribution

    from unetbench.sweep.storage import proxy_backend

    url = f"sqlite:///{tmp_path / 'p.db'}"
    before = open_storage(url, tmp_path)
    study = optuna.create_study(storage=before.storage, study_name="s")
    trial_id = new_trial(study, "search")
    restarted = proxy_backend(open_storage(url, tmp_path))
    dist = CategoricalDistribution(["a", "b"])
    restarted.set_trial_param(trial_id, "x", 1.0, dist)
    assert study._storage.get_trial(trial_id).params == {"x": "b"}
