"""Sweeps across machines on a real PostgreSQL server: real `unetbench sweep` processes.

Machines are simulated with UTS namespaces (`unshare --uts`, root only): each worker process
has its own host name, so the only thing the workers share is the database, as on a cluster.
Trials really train (tiny nets, a few seconds each); the heartbeat is shortened to 1 s with a
4 s grace period so a dead machine is noticed within seconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from unetbench.sweep.record import row_of
from unetbench.sweep.storage import open_storage

pytestmark = pytest.mark.postgres

STUDY = """
name = "multi"
n_trials = {n}
seed = 0
memory_budget = "2GiB"

[search]
up_mode = ["transpose", "resizeconv_nearest"]
start_filts = [2, 3, 4, 5]
attention = [false, true]

[fixed]
n_blocks = 2
merge_mode = "concat"

[data]
kind = "synthetic"
seed = 0
shape = [16, 48, 48]
n_train = 1
n_val = 1

[train]
patch_shape = [8, 32, 32]
batch_size = 1
steps = {steps}
threads = 1

[profile]
checkpointing = ["none"]
options = {{ timing = false, count_flops = false }}

[objectives]
val_dice = "maximize"
peak_mem_train_bytes = "minimize"

[sampler]
name = "random"
"""
# UNETBENCH_TEST_HEARTBEAT=60,180 runs the dead-machine tests with the defaults, to measure
# the recovery time a user sees (the test prints it with -s).
_BEAT = os.environ.get("UNETBENCH_TEST_HEARTBEAT", "1,4").split(",")
FAST_HEARTBEAT = ["--heartbeat-interval", _BEAT[0], "--grace-period", _BEAT[1]]
CLI = [sys.executable, "-m", "unetbench.cli.main"]


def write_study(tmp: Path, n: int, steps: int) -> Path:
    path = tmp / "multi.toml"
    path.write_text(STUDY.format(n=n, steps=steps))
    return path


def require_unshare() -> None:
    """Skip without `unshare --uts` (root only), except in CI, which must run these tests."""
    try:
        ok = subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail("unshare --uts is not permitted here (needs root); CI must run this test")
        pytest.skip("unshare --uts needs root: cannot simulate separate machines")


def on_machine(host: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start argv in its own UTS namespace named ``host`` and its own process group."""
    script = 'hostname "$0" && exec "$@"'
    return subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", script, host, *argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def load(url: str, name: str = "multi") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def wait_all(procs: dict[str, subprocess.Popen[bytes]], logs: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for host, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                with_group(p, signal.SIGKILL)
            pytest.fail(f"{host} still running after {timeout} s:\n{tail(logs / f'{host}.log')}")


def with_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def sweep_argv(spec: Path, storage: str, results: Path, *extra: str) -> list[str]:
    """`unetbench sweep` on ``storage`` writing to ``results``, without a progress bar."""
    return [*CLI, "sweep", str(spec), "--storage", storage, "--no-progress",
            "--results-dir", str(results), *extra]  # fmt: skip


def run_workers(spec: Path, url: str, tmp: Path, n: int) -> None:
    """``n`` sweep workers of ``spec`` started at once on this machine; all must succeed."""
    procs = {
        f"w{i}": subprocess.Popen(
            sweep_argv(spec, url, tmp / f"w{i}"),
            stdout=(tmp / f"w{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(n)
    }
    wait_all(procs, tmp, timeout=300)
    for host, proc in procs.items():
        assert proc.returncode == 0, tail(tmp / f"{host}.log")


def trial_in_training(
    url: str, victim: subprocess.Popen[bytes], log: Path, owned: Callable[[dict[str, Any]], bool]
) -> int:
    """Number of a trial the victim's worker (``owned`` by its identity) has been training
    for a second; waits up to 180 s."""
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, tail(log)
        assert victim.poll() is None, tail(log)
        for t in load(url).get_trials() if _exists(url) else []:
            started = t.datetime_start.timestamp() if t.datetime_start else time.time()
            if (
                t.state == TrialState.RUNNING
                and owned(row_of(t).get("worker", {}))
                and "config_key" in row_of(t)
                and time.time() - started > 1.0
            ):
                return t.number
        time.sleep(0.2)


def trained_keys(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """config_key of every COMPLETE trial that trained (not a reused result)."""
    return [
        row_of(t)["config_key"]
        for t in trials
        if t.state == TrialState.COMPLETE
        and "reused_from" not in row_of(t)
        and "config_key" in row_of(t)
    ]


def test_three_machines_one_dies_mid_trial(tmp_path: Path, pg_url: str) -> None:
    require_unshare()
    n = 8
    spec = write_study(tmp_path, n, steps=60)
    hosts = ("machine-a", "machine-b", "machine-c")
    procs = {
        h: on_machine(
            h,
            sweep_argv(spec, pg_url, tmp_path / h, *FAST_HEARTBEAT),
            tmp_path / f"{h}.log",
        )
        for h in hosts
    }
    victim = procs["machine-b"]
    # Wait until machine-b has been training one of its trials for a moment, then kill it.
    killed_trial = trial_in_training(
        pg_url, victim, tmp_path / "machine-b.log", lambda w: w.get("host") == "machine-b"
    )
    with_group(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(timeout=30)
    failed_at = None
    while failed_at is None and time.monotonic() - killed_at < 120 + 2 * int(_BEAT[1]):
        if load(pg_url).get_trials()[killed_trial].state == TrialState.FAIL:
            failed_at = time.monotonic()
        time.sleep(0.2)
    survivors = {h: p for h, p in procs.items() if h != "machine-b"}
    wait_all(survivors, tmp_path, timeout=300 + 2 * int(_BEAT[1]))
    finished_at = time.monotonic()

    for host, proc in survivors.items():
        assert proc.returncode == 0, tail(tmp_path / f"{host}.log")
    trials = load(pg_url).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == n
    assert TrialState.RUNNING not in states
    assert trials[killed_trial].state == TrialState.FAIL
    # The reason is a user attribute of the trial when a unetbench worker failed it, and a
    # study attribute when Optuna did so itself as another worker started a trial (the
    # trial takes no attributes once failed); trials.parquet shows it either way.
    expected = (
        f"worker {victim.pid} on host machine-b stopped sending heartbeats (none for {_BEAT[1]} s)"
    )
    assert failed_at is not None, "the dead machine's trial was never failed"
    keys = trained_keys(trials)
    assert len(keys) == len(set(keys)), "a config was trained twice"
    assert {row_of(t)["worker"]["host"] for t in trials} == set(hosts)
    complete = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    for host in survivors:
        frame = pd.read_parquet(tmp_path / host / "multi" / "trials.parquet")
        done = frame[frame["trial_state"] == "COMPLETE"]
        assert set(done["trial_number"]) == set(complete)
        row = frame.set_index("trial_number").loc[killed_trial]
        assert (row["trial_state"], row["status"], row["reason"]) == ("FAIL", "error", expected)
    print(
        f"\nheartbeat {_BEAT[0]} s, grace {_BEAT[1]} s: the dead machine's trial was failed "
        f"{failed_at - killed_at:.1f} s after the kill; the survivors ended the study "
        f"{finished_at - killed_at:.1f} s after the kill"
    )


def _exists(url: str) -> bool:
    try:
        load(url)
    except KeyError:
        return False
    return True


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_five_workers_started_at_once_on_an_empty_database(tmp_path: Path, pg_url: str) -> None:
    n = 5
    spec = write_study(tmp_path, n, steps=2)
    run_workers(spec, pg_url, tmp_path, 5)
    trials = load(pg_url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n
    keys = trained_keys(trials)
    assert len(keys) == len(set(keys))


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_grid_on_four_workers_trains_every_legal_config_exactly_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Workers proposing at the same moment claim configs atomically on the server."""
    spec = tmp_path / "multi.toml"
    spec.write_text(STUDY.format(n=16, steps=1).replace('name = "random"', 'name = "grid"'))
    run_workers(spec, pg_url, tmp_path, 4)
    trials = load(pg_url).get_trials()
    keys = trained_keys(trials)
    assert len(keys) == len(set(keys)) == 16  # 2 x 4 x 2 legal configs, none twice
    assert all("reused_from" not in row_of(t) for t in trials)


def _open_and_create(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    store = open_storage(url, Path("."))
    optuna.create_study(storage=store.storage, study_name="race", load_if_exists=True)


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_schema_creation_from_eight_processes_at_the_same_instant(pg_url: str) -> None:
    """Optuna's table creation races on an empty PostgreSQL database; the lock serialises it."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_open_and_create, args=(pg_url, barrier)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    assert len(optuna.get_all_study_summaries(pg_url)) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("foo://x/y", "unknown scheme 'foo'"),
        ("results/x.txt", "neither a database URL nor a journal file"),
        ("{wrong_password}", 'password authentication failed for user "postgres"'),
        ("{missing_db}", 'database "no_such_db" does not exist'),
        ("{server_down}", "Connection refused"),
        ("{missing_driver}", "needs the database driver pg8000"),
        ("grpc://localhost", "grpc://HOST:PORT"),
    ],
    ids=["scheme", "not-a-url", "password", "database", "server-down", "driver", "grpc-port"],
)
def test_storage_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, postgres_server: object, storage: str, message: str
) -> None:
    server = postgres_server
    url = server.url("postgres")  # type: ignore[attr-defined]
    storage = storage.format(
        wrong_password=url.replace(server.password, "wrong"),  # type: ignore[attr-defined]
        missing_db=server.url("no_such_db"),  # type: ignore[attr-defined]
        server_down=url.replace(f":{server.port}/", f":{_closed_port()}/"),  # type: ignore[attr-defined]
        missing_driver=server.url("postgres", driver="pg8000"),  # type: ignore[attr-defined]
    )
    spec = write_study(tmp_path, 1, steps=1)
    proc = subprocess.run(
        [*CLI, "sweep", str(spec), "--storage", storage, "--results-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("unetbench sweep: error:") and message in lines[0]
    assert server.password not in lines[0]  # type: ignore[attr-defined]
    assert not (tmp_path / "r").exists()  # nothing created


def test_postgres_scheme_is_read_as_postgresql(pg_url: str) -> None:
    store = open_storage(pg_url.replace("postgresql+psycopg2://", "postgres://"), Path("."))
    assert store.kind == "server" and store.url.startswith("postgresql+psycopg2://")
    optuna.create_study(storage=store.storage, study_name="s")


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_hundreds_of_workers_path_three_workers_through_the_grpc_proxy(
    tmp_path: Path, pg_url: str
) -> None:
    """`unetbench storage-server` in front of PostgreSQL; one machine dies mid-trial.

    The proxy has no heartbeat of its own: the workers' heartbeat counter must free the trial.
    """
    require_unshare()
    port = _closed_port()
    server = subprocess.Popen(
        [*CLI, "storage-server", "--storage", pg_url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=(tmp_path / "server").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        n = 6
        spec = write_study(tmp_path, n, steps=60)
        grpc_url = f"grpc://127.0.0.1:{port}"
        procs = {
            f"w{i}": on_machine(
                f"w{i}",
                sweep_argv(spec, grpc_url, tmp_path / f"w{i}", *FAST_HEARTBEAT),
                tmp_path / f"w{i}.log",
            )
            for i in range(3)
        }
        victim = procs.pop("w2")
        killed_trial = trial_in_training(
            pg_url, victim, tmp_path / "w2.log", lambda w: w.get("pid") == victim.pid
        )
        with_group(victim, signal.SIGKILL)
        victim.wait(timeout=30)
        wait_all(procs, tmp_path, timeout=180)
        for host, proc in procs.items():
            assert proc.returncode == 0, tail(tmp_path / f"{host}.log")
    finally:
        with_group(server, signal.SIGINT)
        server.wait(timeout=30)
    trials = load(pg_url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed_trial].state == TrialState.FAIL
    reason = row_of(trials[killed_trial])["reason"]
    assert reason == (
        f"worker {victim.pid} on host w2 stopped sending heartbeats (none for {_BEAT[1]} s)"
    )
    keys = trained_keys(trials)
    assert len(keys) == len(set(keys))
    # No claim studies are left once the study is done.
    assert [s.study_name for s in optuna.get_all_study_summaries(pg_url)] == ["multi"]


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_eight_workers_on_a_fresh_database_run_exactly_n_search_trials_and_the_confirmations(
    tmp_path: Path, pg_url: str
) -> None:
    """Workers racing for the last search trial and for each confirmation: exactly n search
    trials COMPLETE, each confirmation once, every trial created with its role."""
    n = 8
    argv = [sys.executable, str(Path(__file__).parent / "fake_sweep.py"), "--n", str(n),
            "--storage", pg_url, "--delay", "0.3", "--confirm"]  # fmt: skip
    procs = {
        f"w{i}": subprocess.Popen(
            [*argv, "--results", str(tmp_path / f"w{i}")],
            stdout=(tmp_path / f"w{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(8)
    }
    wait_all(procs, tmp_path, timeout=300)
    for host, proc in procs.items():
        assert proc.returncode == 0, tail(tmp_path / f"{host}.log")
    trials = load(pg_url, "fake").get_trials()
    assert all("role" in t.user_attrs for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    search = [row_of(t)["config_key"] for t in done if row_of(t)["role"] == "search"]
    confirm = [row_of(t)["config_key"] for t in done if row_of(t)["role"] == "confirm"]
    assert len(search) == len(set(search)) == n
    assert 2 <= len(confirm) == len(set(confirm)) <= 4  # top 2, at most 2 x 2 in all
    assert set(confirm) <= set(search)
    failed = [row_of(t) for t in trials if t.state == TrialState.FAIL]
    assert all(r["status"] == "surplus" for r in failed), failed
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [s.study_name for s in optuna.get_all_study_summaries(pg_url)] == ["fake"]
