"""Reliability of sweeps: SIGKILL and resume, Ctrl-C, two worker processes on one journal.

Training is replaced by test_sweep_mechanics.FakeEvaluator with a delay, so a kill lands in
the middle of a trial without costing real training time.
"""

from __future__ import annotations

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

from unetbench.sweep import StudySpec, run_sweep
from unetbench.sweep.record import row_of
from unetbench.sweep.spec import tomllib

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # spawned workers unpickle FakeEvaluator from here

from test_sweep_mechanics import FAKE_SPEC, FakeEvaluator  # noqa: E402

# Every config is legal and trains, so every new config is a trial that can be killed.
ALL_TRAIN = {
    "up_mode": ["transpose"],
    "merge_mode": ["concat", "add"],
    "normalization": ["batch"],
    "start_filts": [4, 8, 16],
    "attention": [False],
}
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_sweep_reliability import kill_spec
from test_sweep_mechanics import FakeEvaluator
from unetbench.sweep import run_sweep
run_sweep(kill_spec({n}), storage={storage!r}, results_dir={results!r}, show_progress=False,
          evaluator=FakeEvaluator(delay={delay}, marker_dir={markers!r}))
"""


def kill_spec(n_trials: int) -> StudySpec:
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=n_trials, search=ALL_TRAIN)
    return StudySpec.from_dict(raw, source="<fake>")


def start(
    tmp: Path, n: int, storage: str | None, delay: float
) -> tuple[subprocess.Popen[bytes], Path]:
    markers = tmp / "markers"
    markers.mkdir(exist_ok=True)
    code = SCRIPT.format(tests=str(TESTS), n=n, storage=storage, results=str(tmp / "results"),
                         delay=delay, markers=str(markers))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp, stderr=subprocess.PIPE)
    return proc, markers


def wait_for_markers(proc: subprocess.Popen[bytes], markers: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(markers.iterdir())) < count:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the sweep never reached the trial to interrupt"
        time.sleep(0.1)
    time.sleep(0.3)  # well inside the training delay


def open_study(tmp: Path, storage: str | None) -> optuna.Study:
    from unetbench.sweep.storage import open_storage

    store = open_storage(storage, tmp / "results" / "fake")
    return optuna.load_study(study_name="fake", storage=store.storage)


def states(study: optuna.Study) -> dict[int, TrialState]:
    return {t.number: t.state for t in study.get_trials()}


@pytest.mark.parametrize("journal", [False, True], ids=["sqlite", "journal"])
def test_sigkill_mid_trial_then_resume(tmp_path: Path, journal: bool) -> None:
    storage = str(tmp_path / "study.journal") if journal else None
    n = 5
    proc, markers = start(tmp_path, n, storage, delay=3.0)
    wait_for_markers(proc, markers, 2)  # the second training is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    study = open_study(tmp_path, storage)
    before = {t.number: t.values for t in study.get_trials() if t.state == TrialState.COMPLETE}
    running = [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(running) == 1 and len(before) >= 1

    result = run_sweep(kill_spec(n), storage=storage, results_dir=tmp_path / "results",
                       evaluator=FakeEvaluator(), show_progress=False)  # fmt: skip

    after = open_study(tmp_path, storage).get_trials()
    assert result.n_complete == n == sum(t.state == TrialState.COMPLETE for t in after)
    assert states(open_study(tmp_path, storage))[running[0]] == TrialState.FAIL
    assert not [t for t in after if t.state == TrialState.RUNNING]
    assert len(after) == n + 1  # the n complete ones plus the killed one, nothing else
    assert {t.number: t.values for t in after if t.number in before} == before
    killed = next(t for t in after if t.number == running[0])
    assert "died" in row_of(killed)["reason"]
    frame = pd.read_parquet(tmp_path / "results" / "fake" / "trials.parquet")
    assert list(frame["trial_state"]).count("COMPLETE") == n
    assert frame.set_index("trial_number").loc[running[0], "trial_state"] == "FAIL"


def test_ctrl_c_saves_finished_trials_and_fails_the_running_one(tmp_path: Path) -> None:
    proc, markers = start(tmp_path, 5, None, delay=3.0)
    wait_for_markers(proc, markers, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    study = open_study(tmp_path, None)
    by_state = pd.Series([t.state.name for t in study.get_trials()]).value_counts().to_dict()
    assert by_state.get("RUNNING", 0) == 0 and by_state["FAIL"] == 1
    frame = pd.read_parquet(tmp_path / "results" / "fake" / "trials.parquet")
    assert len(frame) == len(study.get_trials())
    assert (frame["trial_state"] == "COMPLETE").sum() == by_state["COMPLETE"] >= 1


def test_two_workers_on_one_journal(tmp_path: Path) -> None:
    journal = str(tmp_path / "study.journal")
    n = 6
    result = run_sweep(kill_spec(n), workers=2, storage=journal, results_dir=tmp_path / "results",
                       evaluator=FakeEvaluator(delay=1.5), show_progress=False)  # fmt: skip
    trials = open_study(tmp_path, journal).get_trials()
    assert result.n_complete == n
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n  # none surplus, none failed
    trained = [row_of(t)["config_key"] for t in trials if "reused_from" not in row_of(t)]
    assert len(trained) == len(set(trained))  # no config trained twice
    pids: set[Any] = {row_of(t)["worker"]["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids


def _fake_sweep(tmp_path: Path, *extra: str) -> list[str]:
    """tests/fake_sweep.py: 6 trials, SQLite under ``tmp_path``."""
    return [sys.executable, str(TESTS / "fake_sweep.py"), "--n", "6",
            "--results", str(tmp_path / "results"), *extra]  # fmt: skip


def _both_training(proc: subprocess.Popen[bytes], markers: Path, delay: float) -> None:
    """Wait until two worker processes each started a training under ``delay - 2`` s ago."""
    deadline = time.monotonic() + 120
    while True:
        newest: dict[str, float] = {}
        for m in markers.iterdir():  # train-<pid>-<ns>
            pid = m.name.split("-")[1]
            newest[pid] = max(newest.get(pid, 0.0), m.stat().st_mtime)
        if len(newest) >= 2 and all(time.time() - t < delay - 2 for t in newest.values()):
            return
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the two workers never trained at the same time"
        time.sleep(0.1)


def _interrupt(tmp_path: Path, sig: int, group: bool) -> tuple[int, str, float]:
    """Two workers training; ``sig`` to the main process (or its whole process group, as
    Ctrl-C in a terminal does); returns the exit status, stderr and seconds to exit."""
    markers = tmp_path / "markers"
    markers.mkdir()
    argv = _fake_sweep(tmp_path, "--workers", "2", "--delay", "5", "--markers", str(markers))
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True)
    _both_training(proc, markers, delay=5.0)
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode(), time.monotonic() - t0


# Two worker processes and a third run to resume, three times: with -m slow (CI runs it);
# the default run has Ctrl-C to a one-worker sweep (test_ctrl_c_saves_finished_trials...).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "group"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["sigterm-to-main", "sigint-to-main", "ctrl-c-to-group"],
)
def test_a_signal_ends_every_worker_fails_their_trials_and_the_command_resumes(
    tmp_path: Path, sig: int, group: bool
) -> None:
    code, err, took = _interrupt(tmp_path, sig, group)
    name = signal.Signals(sig).name
    assert code == 128 + sig, err
    assert took < 10, took
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"unetbench sweep: interrupted ({name})"
    study = open_study(tmp_path, None)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [row_of(t) for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2  # one per worker
    for row in failed:
        pid, host = row["worker"]["pid"], row["worker"]["host"]
        assert row["reason"] == f"worker {pid} on host {host} was interrupted ({name})"
        assert row["status"] == "interrupted"
    url = f"sqlite:///{tmp_path / 'results' / 'fake' / 'study.db'}"
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["fake"]  # no claims

    again = subprocess.run(
        _fake_sweep(tmp_path, "--delay", "0"),  # one worker, in the main process
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    done = [t for t in open_study(tmp_path, None).get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 6 and len({row_of(t)["config_key"] for t in done}) == 6
