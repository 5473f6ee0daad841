"""Successive-halving rungs: every config trains at the first rung, the best 1/eta of each rung
go on to the next, continuing from their stored state."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tomllib
from optuna.trial import TrialState
from test_sweep_mechanics import FAKE_SPEC, FakeEvaluator, load

from unetbench import ConfigError
from unetbench.sweep import StudySpec, run_sweep
from unetbench.sweep.record import role_of, row_of
from unetbench.sweep.rungs import rung_of, rung_ranked
from unetbench.sweep.states import StateStore

SEARCH = {
    "up_mode": ["transpose", "resizeconv_nearest"],
    "merge_mode": ["concat", "add"],
    "start_filts": [4, 8, 16],
    "attention": [False],
}  # fmt: skip  9 legal configs


def rung_spec(**train: Any) -> StudySpec:
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=9, search=SEARCH, sampler={"name": "grid"})
    raw["train"].update({"steps": [2, 4, 8], **train})
    return StudySpec.from_dict(raw, "<fake>")


def test_rungs_are_read_and_checked() -> None:
    spec = rung_spec(eta=2)
    assert (spec.rungs, spec.steps, spec.eta, spec.top_rung) == ((2, 4, 8), 8, 2, 2)
    assert [spec.rung_steps(k) for k in range(3)] == [2, 4, 8]
    for bad, match in (([4, 2], "each larger than the one before"), ([5], "at least two")):
        with pytest.raises(ConfigError, match=match):
            rung_spec(steps=bad)
    with pytest.raises(ConfigError, match=r"train.eta must be an integer >= 1"):
        rung_spec(eta=0)
    assert rung_spec(eta=1).eta == 1  # every config to the top: the reference run
    plain = tomllib.loads(FAKE_SPEC)
    plain["train"]["eta"] = 3
    with pytest.raises(ConfigError, match=r"train.eta needs rungs"):
        StudySpec.from_dict(plain, "<fake>")


def test_the_best_third_of_each_rung_continue_from_their_state(tmp_path: Path) -> None:
    evaluator = FakeEvaluator()
    result = run_sweep(rung_spec(), results_dir=tmp_path, evaluator=evaluator,
                       show_progress=False)  # fmt: skip
    spec = rung_spec()
    trials = load(tmp_path).get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)
    by_rung = {k: [t for t in trials if rung_of(t) == k] for k in range(3)}
    assert [len(by_rung[k]) for k in range(3)] == [9, 3, 1]
    assert {role_of(t) for t in by_rung[0]} == {"search"}
    assert {role_of(t) for t in by_rung[1] + by_rung[2]} == {"promote"}
    # Only the extra steps are trained: 9 x 2, then 3 x (4 - 2), then 1 x (8 - 4).
    assert evaluator.steps_trained == 9 * 2 + 3 * 2 + 1 * 4
    for t in by_rung[1] + by_rung[2]:
        row = row_of(t)
        source = next(s for s in trials if s.number == row["promoted_from"])
        assert (
            rung_of(source) == rung_of(t) - 1 and row["config_key"] == row_of(source)["config_key"]
        )
        assert row["state_missing"] is False and row["train_steps"] == spec.rung_steps(rung_of(t))
        # Promoted as ASHA does: among the best 1/eta of what had finished that rung by then.
        before = [s for s in trials if s.number < t.number]
        ranked = rung_ranked(spec, before, rung_of(source))
        assert source.number in [s.number for s in ranked[: max(1, len(ranked) // spec.eta)]]
    runs = pd.read_parquet(tmp_path / "fake" / "runs.parquet")
    promoted = runs[runs["rung"] > 0]
    assert len(promoted) == 4 and promoted["resumed_steps"].tolist() == [
        spec.rung_steps(int(r) - 1) for r in promoted["rung"]
    ]
    frame = pd.read_parquet(tmp_path / "fake" / "trials.parquet")
    assert frame.groupby("rung")["train_steps"].unique().map(list).to_dict() == {
        0: [2],
        1: [4],
        2: [8],
    }
    assert result.best["rung"] == 2  # the best config is judged at the top rung
    assert result.n_complete == 9


def test_a_missing_state_retrains_from_the_start_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored states are deleted just before a promotion reads them, as when it runs on
    a machine that cannot see the folder."""
    read = StateStore.load

    def lose_then_read(self: StateStore, artifact_id: str) -> bytes | None:
        shutil.rmtree(self.root)
        return read(self, artifact_id)

    monkeypatch.setattr(StateStore, "load", lose_then_read)
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=3, search={**SEARCH, "merge_mode": ["concat"], "up_mode": ["transpose"]},
               sampler={"name": "grid"})  # fmt: skip
    raw["train"]["steps"] = [2, 4]
    evaluator = FakeEvaluator()
    run_sweep(StudySpec.from_dict(raw, "<fake>"), results_dir=tmp_path, evaluator=evaluator,
              show_progress=False)  # fmt: skip
    promoted = [t for t in load(tmp_path).get_trials() if role_of(t) == "promote"]
    assert len(promoted) == 1  # a closed rung promotes at least one config
    row = row_of(promoted[0])
    assert row["state_missing"] is True and row["status"] == "ok"
    assert [(r["resumed_steps"], r["train_seed"]) for r in row["runs"]] == [(0, 3000)]
    assert evaluator.steps_trained == 3 * 2 + 4  # all 4 steps again, with the same seed
