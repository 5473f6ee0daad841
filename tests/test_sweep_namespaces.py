"""Workers in separate PID namespaces with one host name, on one PostgreSQL storage.

Kubernetes pods with a fixed host name (or ``hostNetwork``) look like one machine by host
name, yet each has its own PID namespace: PID 1 in one pod is not PID 1 in the other. Here
each worker runs under ``unshare --pid --fork --uts --mount-proc`` (root only) with the same
host name ``pod``, so both are PID 1 in their namespace and both read their own ``/proc``.
A worker that took the other's PID 1 for its own would fail the other's live trials at once
as ``died`` (or, were the start times equal, never fail a killed worker's trial). Liveness
must instead see that the identity's PID namespace is not its own and let the heartbeat
decide: no live trial is ever failed, and a killed worker's trial is failed after the grace
period and its config rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from unetbench.sweep.record import row_of

TESTS = Path(__file__).parent
HOST = "pod"
HEARTBEAT_S, GRACE_S = 1, 4
DELAY_S = 1.5  # one fake training
N = 16  # every config of fake_sweep.ALL_TRAIN: exhaustive, so a failed config is rerun
UNSHARE = ["unshare", "--pid", "--fork", "--uts", "--mount-proc"]


def require_pid_namespaces(unshare: list[str] = UNSHARE) -> None:
    """Skip without ``unshare`` for a PID namespace (root only), except in CI."""
    try:
        probe = subprocess.run([*unshare, "sh", "-c", "echo $$"], capture_output=True, text=True)
        ok = probe.returncode == 0 and probe.stdout.strip() == "1"
    except FileNotFoundError:
        ok = False
    if not ok:
        why = f"{' '.join(unshare)} is not permitted here (needs root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI must run this test")
        pytest.skip(f"{why}: cannot give workers their own PID namespaces")


def in_pod(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``argv`` as PID 1 of a new PID and UTS namespace named ``pod``, with its own /proc."""
    return subprocess.Popen(
        [*UNSHARE, "sh", "-c", 'hostname "$0" && exec "$@"', HOST, *argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pid_namespace(unshare: subprocess.Popen[bytes]) -> int:
    """Inode of the PID namespace of ``unshare``'s child (the worker), seen from here."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == unshare.pid:
                    return (entry / "ns" / "pid").stat().st_ino
        time.sleep(0.05)
    raise AssertionError("unshare never started its child")


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="fake", storage=url)


def trials_or_none(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return load(url).get_trials()
    except KeyError:  # not created yet
        return []


def worker(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return dict(row_of(t).get("worker", {}))


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.slow  # minutes of real processes: CI runs it with -m slow
def test_pods_with_one_host_name_fail_only_the_killed_workers_trial(
    tmp_path: Path, pg_url: str
) -> None:
    require_pid_namespaces()
    beat = ["--heartbeat", str(HEARTBEAT_S), "--grace", str(GRACE_S)]
    argv = [sys.executable, str(TESTS / "fake_sweep.py"), "--n", str(N), "--storage", pg_url,
            "--delay", str(DELAY_S), *beat]  # fmt: skip
    pods: dict[str, subprocess.Popen[bytes]] = {}
    ns: dict[str, int] = {}
    try:
        for name in ("a", "b"):
            pods[name] = in_pod(
                [*argv, "--results", str(tmp_path / name)], tmp_path / f"{name}.log"
            )
            ns[name] = pid_namespace(pods[name])
            time.sleep(0.2)  # the two PIDs 1 differ in start time, as pods do
        assert ns["a"] != ns["b"]
        owner = {v: k for k, v in ns.items()}

        # Both train side by side for longer than the grace period; then kill b mid-trial.
        deadline = time.monotonic() + 180
        victim_trial = None
        while victim_trial is None:
            for name, proc in pods.items():
                assert proc.poll() is None, tail(tmp_path / f"{name}.log")
            assert time.monotonic() < deadline, "the two pods never trained side by side"
            trials = trials_or_none(pg_url)
            done = [owner.get(worker(t).get("pidns")) for t in trials
                    if t.state == TrialState.COMPLETE]  # fmt: skip
            if done.count("a") >= 3 and done.count("b") >= 3:
                for t in trials:
                    started = t.datetime_start.timestamp() if t.datetime_start else time.time()
                    if (
                        t.state == TrialState.RUNNING
                        and owner.get(worker(t).get("pidns")) == "b"
                        and "config_key" in t.user_attrs
                        and time.time() - started > 0.3
                    ):
                        victim_trial = t.number
            time.sleep(0.1)
        kill_group(pods["b"])
        pods["b"].wait(timeout=30)
        try:
            pods["a"].wait(timeout=120)
        except subprocess.TimeoutExpired:
            states = {t.number: t.state.name for t in load(pg_url).get_trials()}
            pytest.fail(f"pod a did not finish the study: {states}\n{tail(tmp_path / 'a.log')}")
        assert pods["a"].returncode == 0, tail(tmp_path / "a.log")
    finally:
        for proc in pods.values():
            kill_group(proc)

    trials = load(pg_url).get_trials()
    idents = [worker(t) for t in trials]
    # One host name, the same PID (1) in both namespaces: only the namespace tells them apart.
    assert {(w["host"], w["pid"]) for w in idents} == {(HOST, 1)}
    assert {w["pidns"] for w in idents} == set(ns.values())
    # Exactly one trial failed, the killed one, by heartbeat: no live trial was ever failed.
    failed = [t for t in trials if t.state != TrialState.COMPLETE]
    assert [t.number for t in failed] == [victim_trial]
    assert failed[0].state == TrialState.FAIL
    assert (row_of(failed[0])["status"], row_of(failed[0])["reason"]) == (
        "error",
        f"worker 1 on host {HOST} stopped sending heartbeats (none for {GRACE_S} s)",
    )
    # Every config trained once, the killed trial's config again after it was failed.
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = [row_of(t)["config_key"] for t in done]
    assert len(done) == len(set(keys)) == N
    rerun = next(t for t in done if row_of(t)["config_key"] == row_of(failed[0])["config_key"])
    assert rerun.number > victim_trial and worker(rerun)["pidns"] == ns["a"]
    frame = pd.read_parquet(tmp_path / "a" / "fake" / "trials.parquet")
    assert frame.set_index("trial_number").loc[victim_trial, "trial_state"] == "FAIL"
    assert (frame["trial_state"] == "COMPLETE").sum() == N


# Run as PID 1 of a PID namespace that kept this machine's /proc: a sibling worker's identity
# is read while it lives and after it was killed.
SIBLING = """
import json, subprocess, sys
from unetbench.sweep.liveness import owner_alive
code = "import json; from unetbench.sweep.record import worker_identity; "
code += "print(json.dumps(worker_identity()), flush=True)"
child = subprocess.Popen([sys.executable, "-c", code + "; input()"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
ident = json.loads(child.stdout.readline())
alive = owner_alive(ident)
child.kill()
child.wait()
print(json.dumps({"pid": ident["pid"], "alive": alive, "after_kill": owner_alive(ident)}))
"""


def test_a_pid_namespace_without_its_own_proc_sees_a_killed_sibling_dead() -> None:
    """``unshare --pid --fork`` without ``--mount-proc``: ``/proc/<pid>`` is the parent
    namespace's process of that number, so liveness must not read it (it did: the killed
    sibling stayed alive for ever, its trial never failed, the heartbeat never asked)."""
    unshare = ["unshare", "--pid", "--fork"]
    require_pid_namespaces(unshare)
    proc = subprocess.run([*unshare, sys.executable, "-c", SIBLING], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["pid"] < 10  # a PID of the new namespace, not of this one
    assert (seen["alive"], seen["after_kill"]) == (True, False)
