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
    assert "died" in killed.user_attrs["reason"]
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
    trained = [t.user_attrs["config_key"] for t in trials if "reused_from" not in t.user_attrs]
    assert len(trained) == len(set(trained))  # no config trained twice
    pids: set[Any] = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
