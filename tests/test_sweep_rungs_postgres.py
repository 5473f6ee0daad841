"""Successive halving across machines on a real PostgreSQL server: a machine killed while it
trains a promotion, the promotion retried by the other machine (issue 18).

Two fake-evaluator sweeps (tests/fake_sweep.py) in their own UTS namespaces, so each is a
"machine" with its own host name; they share the database and one artifacts folder (the
trained states), as machines share a network folder. Heartbeat 1 s, grace period 4 s.

Three configs with eta = 3: the first promotion can only start once all three finished rung 0
(3 // 3 = 1), so the config it promotes is the final best of rung 0 whatever the order, and
it is the one to retry; the study ends with exactly 3, 1 and 1 COMPLETE trials at rungs 0, 1
and 2 (a closed rung promotes at least one).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from test_sweep_postgres import on_machine, require_unshare, tail, wait_all, with_group

from unetbench.sweep.record import role_of, row_of
from unetbench.sweep.rungs import rung_of

pytestmark = pytest.mark.postgres

N = 3
RUNGS = "2,4,8"
HEARTBEAT, GRACE = 1, 4
PROMOTE_DELAY = 3.0  # seconds a promotion trains: long enough to be seen and killed


def fake_argv(tmp: Path, host: str, url: str) -> list[str]:
    markers = tmp / "markers" / host
    markers.mkdir(parents=True)
    return [sys.executable, str(Path(__file__).parent / "fake_sweep.py"), "--n", str(N),
            "--storage", url, "--results", str(tmp / host), "--delay", "0.2",
            "--rungs", RUNGS, "--eta", "3", "--artifacts", str(tmp / "artifacts"),
            "--promote-delay", str(PROMOTE_DELAY), "--markers", str(markers),
            "--heartbeat", str(HEARTBEAT), "--grace", str(GRACE)]  # fmt: skip


def first_promoter(tmp: Path, hosts: tuple[str, ...], procs: dict, timeout: float) -> str:
    """The machine that starts training a promotion first (its marker file appears)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in hosts:
            if any((tmp / "markers" / host).glob("promote-*")):
                return host
        for host, proc in procs.items():
            assert proc.poll() is None, f"{host} ended early:\n{tail(tmp / f'{host}.log')}"
        time.sleep(0.05)
    pytest.fail("no machine started a promotion:\n" + tail(tmp / f"{hosts[0]}.log"))


def test_a_promotion_whose_machine_is_killed_is_retried_on_the_other(
    tmp_path: Path, pg_url: str
) -> None:
    require_unshare()
    hosts = ("machine-a", "machine-b")
    procs = {h: on_machine(h, fake_argv(tmp_path, h, pg_url), tmp_path / f"{h}.log") for h in hosts}
    victim_host = first_promoter(tmp_path, hosts, procs, timeout=60)
    victim = procs.pop(victim_host)
    (survivor_host,) = procs
    with_group(victim, signal.SIGKILL)  # the machine dies while its promotion trains
    victim.wait(timeout=30)
    wait_all(procs, tmp_path, timeout=90)
    assert procs[survivor_host].returncode == 0, tail(tmp_path / f"{survivor_host}.log")

    trials = optuna.load_study(study_name="fake", storage=pg_url).get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    host_of = {t.number: row_of(t)["worker"]["host"] for t in trials}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, [row_of(t) for t in failed]
    killed = failed[0]
    assert (role_of(killed), rung_of(killed), host_of[killed.number]) == (
        "promote",
        1,
        victim_host,
    )
    # Exactly 3, 1 and 1 configs COMPLETE at rungs 0, 1 and 2, each config once per rung.
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = {k: [row_of(t)["config_key"] for t in done if rung_of(t) == k] for k in range(3)}
    assert [len(keys[k]) for k in range(3)] == [N, 1, 1]
    assert all(len(set(v)) == len(v) for v in keys.values())
    assert {role_of(t) for t in done if rung_of(t) == 0} == {"search"}
    # The killed promotion's config is promoted again, by the survivor, from the same rung-0
    # trial, and continues from its stored state in the shared folder (only the extra steps).
    (retry,) = [t for t in done if rung_of(t) == 1]
    row, killed_row = row_of(retry), row_of(killed)
    assert retry.number > killed.number and host_of[retry.number] == survivor_host
    assert (row["config_key"], row["promoted_from"]) == (
        killed_row["config_key"],
        killed_row["promoted_from"],
    )
    assert row["state_missing"] is False
    assert [r["resumed_steps"] for r in row["runs"]] == [2]
    (top,) = [t for t in done if rung_of(t) == 2]
    assert row_of(top)["config_key"] == row["config_key"] and row_of(top)["promoted_from"] == (
        retry.number
    )
    # The survivor's records say why the promotion failed, and name every rung.
    frame = pd.read_parquet(tmp_path / survivor_host / "fake" / "trials.parquet")
    failed_row = frame.set_index("trial_number").loc[killed.number]
    assert (failed_row["trial_state"], failed_row["status"], failed_row["reason"]) == (
        "FAIL",
        "error",
        f"worker {victim.pid} on host {victim_host} stopped sending heartbeats "
        f"(none for {GRACE} s)",
    )
    counts = frame[frame["trial_state"] == "COMPLETE"].groupby("rung").size().to_dict()
    assert counts == {0: N, 1: 1, 2: 1}
