"""Which trials a sweep runs: legal and new configs only, seeds, the confirmation round, the
time guard, objective values, and mistakes in the data found before any trial.

Training is test_sweep_mechanics.FakeEvaluator except where a test says otherwise.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from test_sweep_mechanics import FakeEvaluator, fake_spec, load

from unetbench import ConfigError
from unetbench.sweep import StudySpec, load_study_spec, run_sweep
from unetbench.sweep.confirm import pareto_ranked
from unetbench.sweep.describe import stored_description
from unetbench.sweep.record import row_of
from unetbench.sweep.storage import open_storage

STUDIES = Path(__file__).parent.parent / "studies"
# 8 combinations, 6 legal: resize-conv cannot merge by addition.
SMALL = {
    "up_mode": ["transpose", "resizeconv_nearest"],
    "merge_mode": ["concat", "add"],
    "start_filts": [4, 16],
}
TRAIN = {"patch_shape": [8, 32, 32], "batch_size": 1, "steps": 2}


def sweep(spec: StudySpec, tmp: Path, evaluator: Any = None, **kw: Any) -> Any:
    evaluator = FakeEvaluator() if evaluator is None else evaluator
    return run_sweep(spec, results_dir=tmp, evaluator=evaluator, show_progress=False, **kw)


def frames(tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = tmp / "fake"
    return pd.read_parquet(d / "trials.parquet"), pd.read_parquet(d / "runs.parquet")


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "grid"])
def test_whole_legal_space_runs_each_config_once_and_caps_n_trials(
    tmp_path: Path, sampler: str
) -> None:
    spec = fake_spec(n_trials=50, search=SMALL, sampler={"name": sampler})
    result = sweep(spec, tmp_path)
    trials, _ = frames(tmp_path)
    assert result.n_complete == len(trials) == 6  # capped to the legal space
    assert "illegal" not in set(trials["status"])
    assert trials["config_key"].is_unique and "reused_from" not in trials.columns


def test_grid_with_fewer_trials_runs_distinct_configs_and_resumes(tmp_path: Path) -> None:
    spec = fake_spec(n_trials=3, search=SMALL, sampler={"name": "grid"})
    sweep(spec, tmp_path)
    sweep(fake_spec(n_trials=5, search=SMALL, sampler={"name": "grid"}), tmp_path)
    trials, _ = frames(tmp_path)
    assert len(trials) == 5 and trials["config_key"].is_unique
    assert "illegal" not in set(trials["status"])


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_sampled_search_proposes_no_illegal_and_no_repeated_config(
    tmp_path: Path, sampler: str
) -> None:
    spec = fake_spec(n_trials=20, sampler={"name": sampler})  # 48 legal of 64 combinations
    sweep(spec, tmp_path)
    trials, _ = frames(tmp_path)
    assert len(trials) == 20 and (trials["trial_state"] == "COMPLETE").all()
    assert "illegal" not in set(trials["status"])
    assert trials["config_key"].is_unique


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_studies_propose_no_illegal_config(tmp_path: Path, path: Path) -> None:
    """The search proposals of every shipped study (its confirmation is tested elsewhere)."""
    spec = dataclasses.replace(load_study_spec(path), confirm_top=0)
    sweep(spec, tmp_path, n_trials=min(spec.n_trials, 12))
    frame = pd.read_parquet(tmp_path / spec.name / "trials.parquet")
    assert "illegal" not in set(frame["status"])
    assert frame[frame["role"] == "search"]["config_key"].is_unique


def test_repeats_train_each_config_with_the_same_distinct_seeds(tmp_path: Path) -> None:
    spec = fake_spec(n_trials=3, seed=2, search=SMALL, train={**TRAIN, "repeats": 3})
    evaluator = FakeEvaluator()
    sweep(spec, tmp_path, evaluator)
    trials, runs = frames(tmp_path)
    assert len(runs) == 9 and set(runs["role"]) == {"search"}
    for _, group in runs.groupby("trial_number"):
        assert list(group["train_seed"]) == [2000, 2001, 2002]
    means = runs.groupby("trial_number")["val_dice"].mean()
    by_trial = trials.set_index("trial_number")
    assert (by_trial["n_seeds"] == 3).all() and (by_trial["train_seed"] == 2000).all()
    pd.testing.assert_series_equal(by_trial.loc[means.index, "val_dice"], means, check_names=False)
    values = {t.number: t.values[0] for t in load(tmp_path).get_trials()}
    assert values == pytest.approx(means.to_dict())  # the objective is the mean over seeds
    assert len(evaluator.seeds) == len(set(evaluator.seeds)) == 9


class InterruptedEvaluator(FakeEvaluator):
    """Ctrl-C during the training with seed ``at_seed`` (a confirmation's)."""

    def __init__(self, at_seed: int) -> None:
        super().__init__()
        self.at_seed = at_seed

    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, *, seed: int, **kw: Any
    ) -> dict[str, Any]:
        if seed == self.at_seed and len(self.seeds) > 7:
            raise KeyboardInterrupt
        return super().train(spec, config, data, checkpointing, seed=seed, **kw)


def assert_confirmed_top(spec: StudySpec, trials: list[Any], top: int) -> None:
    """The round's promise: the ``top`` best configs by their means over every seed are
    confirmed (or ``2 * top`` configs were), each once."""
    confirmed = [
        row_of(t)["config_key"]
        for t in trials
        if row_of(t).get("role") == "confirm" and t.state == TrialState.COMPLETE
    ]
    assert len(confirmed) == len(set(confirmed)) <= 2 * top
    best = {row_of(t)["config_key"] for t in pareto_ranked(spec, trials)[:top]}
    assert best <= set(confirmed) or len(confirmed) == 2 * top


def test_confirmation_round_trains_the_best_with_further_seeds_and_resumes(
    tmp_path: Path,
) -> None:
    spec = fake_spec(
        n_trials=6, seed=1, search=SMALL, train={**TRAIN, "repeats": 2},
        confirm={"top": 3, "repeats": 4},
    )  # fmt: skip
    first = InterruptedEvaluator(at_seed=1002)
    with pytest.raises(KeyboardInterrupt):
        sweep(spec, tmp_path, first)
    study = load(tmp_path)
    assert [t.state for t in study.get_trials()].count(TrialState.FAIL) == 1
    second = FakeEvaluator()
    result = sweep(spec, tmp_path, second)
    trials = load(tmp_path).get_trials()
    confirm = [t for t in trials if row_of(t).get("role") == "confirm"]
    done = [t for t in confirm if t.state == TrialState.COMPLETE]
    assert_confirmed_top(spec, trials, top=3)
    best = {row_of(t)["config_key"] for t in done}
    assert result.n_complete == 6 and result.n_confirm == len(done) == len(best)
    for t in done:
        assert row_of(t)["train_seed"] == 1002 and row_of(t)["n_seeds"] == 2
        source = trials[row_of(t)["profile_from"]]
        assert row_of(t)["peak_mem_train_bytes"] == row_of(source)["peak_mem_train_bytes"]
    # The resumed sweep trained only what the interrupted one had not finished.
    assert {key for key, _ in second.seeds} <= set(best)
    n = len(done)
    assert len(first.seeds) + len(second.seeds) == 6 * 2 + n * 2 + 1 - 1
    _, runs = frames(tmp_path)
    assert len(runs) == 6 * 2 + n * 2
    assert sorted(runs[runs["role"] == "confirm"]["train_seed"]) == [1002] * n + [1003] * n
    # The sweep's "best" is the best config by its mean over every seed, not one trial's value.
    best_mean = runs.groupby("config_key")["val_dice"].mean().max()
    assert result.best["val_dice"] == pytest.approx(best_mean)
    again = FakeEvaluator()
    sweep(spec, tmp_path, again)
    assert again.seeds == [] and len(load(tmp_path).get_trials()) == len(trials)


def test_two_workers_share_the_grid_and_the_confirmation_round(tmp_path: Path) -> None:
    spec = fake_spec(n_trials=6, search=SMALL, confirm={"top": 2, "repeats": 2})
    result = sweep(spec, tmp_path, FakeEvaluator(delay=0.5), workers=2,
                   storage=str(tmp_path / "s.journal"))  # fmt: skip
    n = result.n_confirm
    assert result.n_complete == 6 and 2 <= n <= 4
    store = open_storage(str(tmp_path / "s.journal"), tmp_path / "fake")
    study = optuna.load_study(study_name="fake", storage=store.storage)
    assert_confirmed_top(spec, study.get_trials(), top=2)
    trials, runs = frames(tmp_path)
    assert (trials["trial_state"] == "COMPLETE").all() and len(trials) == 6 + n
    assert trials.groupby("role")["config_key"].nunique().to_dict() == {"confirm": n, "search": 6}
    assert len(runs) == 6 + n


def test_capped_runs_are_marked_infeasible_and_off_the_front(tmp_path: Path) -> None:
    spec = fake_spec(n_trials=6, search=SMALL, train={**TRAIN, "seconds": 5})
    sweep(spec, tmp_path, FakeEvaluator(slow_filts=(16,)))
    trials, runs = frames(tmp_path)
    capped = trials[trials["start_filts"] == 16]
    assert (capped["status"] == "capped").all() and not capped["feasible"].any()
    assert (capped["steps_done"] < capped["train_steps"]).all()
    assert capped["reason"].str.contains("train.seconds=5.0 stopped the run").all()
    assert runs["capped"].equals(runs["start_filts"] == 16)
    front = {t.number for t in load(tmp_path).best_trials}
    assert front and not front & set(capped["trial_number"])
    for t in load(tmp_path).get_trials():
        assert (max(t.constraints.values()) > 0) == (row_of(t)["start_filts"] == 16)


def test_infeasible_trials_get_objective_values_on_the_scale_of_the_others(
    tmp_path: Path,
) -> None:
    spec = fake_spec(n_trials=16)  # start_filts=64 is over budget, attention+8 runs out of memory
    raw = (*spec.objectives, ("train_step_s", "minimize"), ("train_voxels_per_s", "maximize"))
    spec = dataclasses.replace(spec, objectives=raw)
    sweep(spec, tmp_path)
    trials = load(tmp_path).get_trials()
    bad = [t for t in trials if not row_of(t)["feasible"]]
    good = [t for t in trials if row_of(t)["feasible"]]
    assert bad and good
    for i in range(len(raw)):
        top = max(t.values[i] for t in good)
        for t in bad:
            assert 0 <= t.values[i] <= max(top, row_of(t).get("est_peak_mem_train_bytes", 0))
    for t in bad:
        assert t.values[0] == 0.0 and t.values[3] == 0.0  # Dice and speed unmeasured: 0


def _data_case(tmp: Path, case: str) -> dict[str, Any]:
    import h5py
    import numpy as np

    path = tmp / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.random.default_rng(0).random((16, 40, 40), dtype=np.float32)
        f["label"] = np.zeros((16, 40, 40), dtype=np.int64)
    if case == "missing-file":
        return {"kind": "hdf5", "path": str(tmp / "nowhere.h5")}
    if case == "missing-dataset":
        return {"kind": "hdf5", "path": str(path), "label": "labels"}
    return {"kind": "hdf5", "path": str(path), "val_fraction": 0.5}  # trains on 8x40x40


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-file", "data file not found"),
        ("missing-dataset", "no dataset 'labels'"),
        ("patch", r"train.patch_shape \[16, 32, 32\] does not fit the data"),
    ],
)
def test_data_mistakes_are_found_before_anything_is_stored(
    tmp_path: Path, case: str, message: str
) -> None:
    from unetbench.sweep import TorchEvaluator

    train = {**TRAIN, "patch_shape": [16, 32, 32] if case == "patch" else [8, 32, 32]}
    spec = fake_spec(data=_data_case(tmp_path, case), train=train)
    with pytest.raises(ConfigError, match=message):
        sweep(spec, tmp_path / "r", TorchEvaluator())
    assert not (tmp_path / "r").exists()


BAD_DATA = """
name = "bad"
n_trials = 1
[search]
start_filts = [2, 4]
[fixed]
n_blocks = 2
[data]
kind = "hdf5"
path = "missing.h5"
[train]
patch_shape = [8, 32, 32]
steps = 1
[objectives]
val_dice = "maximize"
"""


def test_cli_data_mistake_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = BAD_DATA
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "unetbench.cli.main", "sweep", str(spec), "--results-dir",
         str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("unetbench sweep: error:") and "data file not found" in lines[0]
    assert not (tmp_path / "r").exists()


class DyingEvaluator(FakeEvaluator):
    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, *, seed: int, **kw: Any
    ) -> dict[str, Any]:
        raise KeyboardInterrupt


def test_a_study_without_complete_trials_may_rerun_with_a_corrected_spec(
    tmp_path: Path,
) -> None:
    with pytest.raises(KeyboardInterrupt):
        sweep(fake_spec(n_trials=2, search=SMALL), tmp_path, DyingEvaluator())
    corrected = fake_spec(n_trials=2, search=SMALL, train={**TRAIN, "steps": 3})
    result = sweep(corrected, tmp_path)
    assert result.n_complete == 2
    study = load(tmp_path)
    described = stored_description(study)
    assert described is not None and described.fingerprint == corrected.fingerprint()
    with pytest.raises(ConfigError, match="different spec"):
        sweep(fake_spec(n_trials=2, search=SMALL), tmp_path)


def test_same_config_and_seed_give_the_same_dice_on_cpu() -> None:
    from unetbench.sweep import TorchEvaluator
    from unetbench.sweep.space import build_config

    spec = fake_spec(
        search={"start_filts": [4]},
        data={"kind": "synthetic", "shape": [16, 48, 48], "n_train": 1, "n_val": 1},
        train={**TRAIN, "steps": 3},
    )
    evaluator = TorchEvaluator()
    data = evaluator.load_data(spec)
    config = build_config(spec, {"start_filts": 4})
    first, second, other = (evaluator.train(spec, config, data, "none", seed=s) for s in (7, 7, 8))
    assert first["steps_done"] == second["steps_done"] == 3
    assert first["val_dice"] == second["val_dice"] and first["train_loss"] == second["train_loss"]
    assert other["train_loss"] != first["train_loss"]


def test_confirm_table_mistakes() -> None:
    with pytest.raises(ConfigError, match=r"confirm.repeats must be an integer >= 3, got 2"):
        fake_spec(train={**TRAIN, "repeats": 2}, confirm={"top": 2, "repeats": 2})
    with pytest.raises(ConfigError, match=r"missing required key confirm\.top"):
        fake_spec(confirm={"repeats": 2})
    with pytest.raises(ConfigError, match=r"unknown key confirm\.seeds"):
        fake_spec(confirm={"top": 1, "repeats": 2, "seeds": 3})
