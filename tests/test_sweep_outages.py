"""Storage outages, for real: PostgreSQL restarted and stopped, the gRPC proxy killed, a
server that never answers; and Ctrl-C or SIGTERM to a sweep's main process.

Every "machine" is a real process in its own UTS namespace (its own host name), running
tests/fake_sweep.py (a training takes ``DELAY`` seconds) or the real ``unetbench sweep``. The
server is stopped and started by the test (tests/pg_server.py), the proxy killed with SIGKILL.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from pg_server import PostgresServer
from test_sweep_postgres import (
    CLI,
    _closed_port,
    load,
    on_machine,
    require_unshare,
    sweep_argv,
    tail,
    wait_all,
    with_group,
    write_study,
)

from unetbench.sweep.record import row_of

TESTS = Path(__file__).parent
FAKE = [sys.executable, str(TESTS / "fake_sweep.py")]
DELAY = 2.0  # seconds per fake training


def fake_argv(n: int, storage: str, results: Path, grace: int, *extra: str) -> list[str]:
    return [*FAKE, "--n", str(n), "--storage", storage, "--results", str(results),
            "--delay", str(DELAY), "--heartbeat", "1", "--grace", str(grace), *extra]  # fmt: skip


def complete(url: str, name: str = "fake") -> int:
    try:
        return sum(t.state == TrialState.COMPLETE for t in load(url, name).get_trials())
    except Exception:  # not created yet, or the server is down
        return 0


def wait_complete(url: str, count: int, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while complete(url) < count:
        assert time.monotonic() < deadline, f"never reached {count} COMPLETE trials"
        assert all(p.poll() is None for p in procs.values()), "a worker ended early"
        time.sleep(0.2)


def rode_out(procs: dict[str, subprocess.Popen[bytes]], tmp_path: Path) -> str:
    """Every machine ended with 0 and no traceback; returns their logs together."""
    logs = ""
    for host, proc in procs.items():
        log = (tmp_path / f"{host}.log").read_text()
        assert proc.returncode == 0, tail(tmp_path / f"{host}.log")
        assert "Traceback" not in log, log[-3000:]
        logs += log
    return logs


def check_study(url: str, n: int, results: list[Path]) -> list[optuna.trial.FrozenTrial]:
    """Exactly n COMPLETE search trials, none trained twice, none RUNNING, no FAIL but a
    surplus one, and every machine's trials.parquet has the COMPLETE ones."""
    trials = load(url, "fake").get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == n
    assert all(row_of(t)["role"] == "search" for t in done)
    keys = [row_of(t)["config_key"] for t in done]
    assert len(set(keys)) == n, "a config was trained twice"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [row_of(t) for t in trials if t.state == TrialState.FAIL]
    assert all(r.get("status") == "surplus" for r in failed), failed
    for directory in results:
        frame = pd.read_parquet(directory / "fake" / "trials.parquet")
        assert set(frame[frame["trial_state"] == "COMPLETE"]["trial_number"]) == {
            t.number for t in done
        }
    return trials


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_postgres_restarted_and_stopped_mid_study_loses_no_trial_and_no_worker(
    tmp_path: Path, postgres_server: PostgresServer, pg_url: str
) -> None:
    """A restart (about a second down), then a stop longer than a trial (8 s) but shorter
    than the grace period (40 s): every worker waits and goes on."""
    require_unshare()
    n = 12
    hosts = ("machine-a", "machine-b", "machine-c")
    procs = {
        h: on_machine(h, fake_argv(n, pg_url, tmp_path / h, 40), tmp_path / f"{h}.log")
        for h in hosts
    }
    try:
        wait_complete(pg_url, 2, procs)
        postgres_server.stop()
        time.sleep(1.0)
        postgres_server.start()
        wait_complete(pg_url, 6, procs)
        postgres_server.stop()
        time.sleep(8.0)
        postgres_server.start()
        wait_all(procs, tmp_path, timeout=240)
    finally:
        for p in procs.values():
            with_group(p, signal.SIGKILL)
    logs = rode_out(procs, tmp_path)
    assert logs.count("reachable again after") >= 2  # each outage seen and ridden out
    check_study(pg_url, n, [tmp_path / h for h in hosts])


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_an_outage_longer_than_the_grace_period_stops_with_75_and_the_command_resumes(
    tmp_path: Path, postgres_server: PostgresServer, pg_url: str
) -> None:
    """Real `unetbench sweep` processes: one line, exit 75; the same command later finishes."""
    require_unshare()
    n = 4
    spec = write_study(tmp_path, n, steps=40)
    beat = ["--heartbeat-interval", "1", "--grace-period", "5"]
    hosts = ("machine-a", "machine-b")
    argv = {h: sweep_argv(spec, pg_url, tmp_path / h, *beat) for h in hosts}
    procs = {h: on_machine(h, argv[h], tmp_path / f"{h}.log") for h in hosts}
    try:
        deadline = time.monotonic() + 180
        while complete(pg_url, "multi") < 1:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values())
            time.sleep(0.2)
        postgres_server.stop()
        stopped = time.monotonic()
        wait_all(procs, tmp_path, timeout=60)
        took = time.monotonic() - stopped
    finally:
        for p in procs.values():
            with_group(p, signal.SIGKILL)
        postgres_server.start()
    assert took < 5 + 30  # the grace period, a last backoff and a trial's end
    for host, proc in procs.items():
        lines = (tmp_path / f"{host}.log").read_text().strip().splitlines()
        assert proc.returncode == 75, "\n".join(lines[-20:])
        assert "Traceback" not in "\n".join(lines)
        errors = [line for line in lines if line.startswith("unetbench sweep: error:")]
        assert errors == [lines[-1]], lines[-20:]
        assert "unreachable" in lines[-1] and "longer than the grace period (5 s)" in lines[-1]
    again = subprocess.run(
        argv["machine-a"], capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load(pg_url, "multi").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.fixture
def proxy(tmp_path: Path, pg_url: str) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`unetbench storage-server` in front of the test database; the list holds the running
    proxy, which a test may kill and replace."""
    port = _closed_port()
    argv = [*CLI, "storage-server", "--storage", pg_url, "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip
    running = [subprocess.Popen(argv, stdout=(tmp_path / "proxy.log").open("ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)]  # fmt: skip
    yield f"grpc://127.0.0.1:{port}", running
    for p in running:
        with_group(p, signal.SIGKILL)


@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_the_grpc_proxy_killed_and_restarted_loses_no_trial_and_no_worker(
    tmp_path: Path, pg_url: str, proxy: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    require_unshare()
    url, running = proxy
    n = 10
    hosts = ("w0", "w1", "w2")
    procs = {
        h: on_machine(h, fake_argv(n, url, tmp_path / h, 40), tmp_path / f"{h}.log") for h in hosts
    }
    try:
        wait_complete(pg_url, 2, procs)
        argv = running[0].args
        with_group(running[0], signal.SIGKILL)
        running[0].wait(timeout=30)
        time.sleep(8.0)
        running.append(
            subprocess.Popen(
                argv,
                stdout=(tmp_path / "proxy.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_all(procs, tmp_path, timeout=240)
    finally:
        for p in procs.values():
            with_group(p, signal.SIGKILL)
    assert rode_out(procs, tmp_path).count("reachable again after") >= len(hosts)
    check_study(pg_url, n, [tmp_path / h for h in hosts])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


@pytest.mark.parametrize(
    "scheme",
    ["postgresql+psycopg2://u:pw@127.0.0.1:{port}/db", "grpc://127.0.0.1:{port}"],
    ids=["postgres", "grpc"],
)
def test_a_silent_server_is_one_line_and_exit_2_within_15_s(
    tmp_path: Path, silent_port: int, scheme: str
) -> None:
    spec = write_study(tmp_path, 1, steps=1)
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            *CLI,
            "sweep",
            str(spec),
            "--storage",
            scheme.format(port=silent_port),
            "--results-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no warning before it
    assert lines[0].startswith("unetbench sweep: error:")
    assert "timeout" in lines[0] or "waited 5 s" in lines[0], lines[0]
    assert took < 15, took
