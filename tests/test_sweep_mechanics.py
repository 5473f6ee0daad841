"""Sweep mechanics with a cheap deterministic evaluator: outcomes, reuse, storage, export.

:class:`FakeEvaluator` stands in for training and profiling (it is also used by
test_sweep_reliability.py), so these tests exercise Optuna and the storages, not torch.
The end-to-end test with real training is in test_sweep_end_to_end.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from unetbench import ConfigError
from unetbench.sweep import StudySpec, run_sweep, trials_frame
from unetbench.sweep.record import row_of
from unetbench.sweep.spec import tomllib

FAKE_SPEC = """
name = "fake"
n_trials = 10
seed = 3
memory_budget = "50MB"
[search]
up_mode = ["transpose", "resizeconv_nearest"]
merge_mode = ["concat", "add"]
normalization = ["batch", "none"]
start_filts = [4, 8, 32, 64]
attention = [false, true]
[fixed]
n_blocks = 2
[data]
kind = "synthetic"
[train]
patch_shape = [8, 32, 32]
batch_size = 1
steps = 2
[profile]
checkpointing = ["none", "blocks"]
[objectives]
val_dice = "maximize"
peak_mem_train_bytes = "minimize"
[sampler]
name = "nsga2"
population_size = 4
"""
SEARCHED = ("up_mode", "merge_mode", "normalization", "start_filts", "attention")


class FakeEvaluator:
    """Deterministic stand-in for training and profiling, with every kind of outcome.

    start_filts=64 does not fit the budget, 32 only with checkpointing; normalization='none'
    diverges; attention with start_filts=8 runs out of memory while training. ``delay``
    seconds per training, and a marker file per training start in ``marker_dir``; configs
    with start_filts in ``slow_filts`` stop one step short, as if the time guard stopped them.
    """

    def __init__(
        self, delay: float = 0.0, marker_dir: str | None = None, slow_filts: tuple[int, ...] = ()
    ) -> None:
        self.delay = delay
        self.marker_dir = marker_dir
        self.slow_filts = slow_filts
        self.trained: list[str] = []
        self.seeds: list[tuple[str, int]] = []  # (config, training seed) of every run
        self.train_modes: dict[tuple, str] = {}  # searched values -> mode trained with
        self.loads = 0
        self.steps_trained = 0  # training steps actually run (a continued run: the new ones)

    def load_data(self, spec: StudySpec) -> Any:
        self.loads += 1
        return "data"

    def estimate_memory(self, spec: StudySpec, config: Any, checkpointing: str) -> dict[str, int]:
        peak = config.start_filts * 1_000_000 * (2 if checkpointing == "none" else 1)
        return {"est_peak_mem_train_bytes": peak, "est_total_train_bytes": peak + 1000}

    def train(
        self,
        spec: StudySpec,
        config: Any,
        data: Any,
        checkpointing: str,
        *,
        seed: int,
        resume: bytes | None = None,
        keep_state: bool = False,
    ) -> dict[str, Any]:
        key = json.dumps(config.to_dict(), sort_keys=True)
        start = 0
        if resume is not None:  # a state this fake kept: the steps and seed it stopped at
            state = json.loads(resume)
            assert (state["key"], state["seed"]) == (key, seed) and state["steps"] < spec.steps
            start = state["steps"]
        self.steps_trained += spec.steps - start
        self.trained.append(key)
        self.seeds.append((key, seed))
        self.train_modes[tuple(getattr(config, f) for f in SEARCHED)] = checkpointing
        if self.marker_dir is not None:
            Path(self.marker_dir, f"train-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(self.delay)
        if config.attention and config.start_filts == 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        dice = int(hashlib.sha256(f"{key}:{seed}".encode()).hexdigest()[:6], 16) % 1000 / 1000
        if config.normalization == "none":
            nan = float("nan")
            return {"val_dice": 0.0, "val_iou": 0.0, "train_loss": nan, "steps_done": 1,
                    "train_s": 0.0, "status": "diverged", "reason": "loss is nan"}  # fmt: skip
        steps = spec.steps - (config.start_filts in self.slow_filts)  # the time guard stops it
        if spec.rungs:  # longer training helps, more for some configs than others
            dice = dice * steps / (steps + 4 * (1 + (dice * 7) % 3))
        out = {"val_dice": dice, "val_iou": dice / 2, "train_loss": 1 - dice, "steps_done": steps,
               "train_s": self.delay, "status": "ok", "reason": ""}  # fmt: skip
        if keep_state:
            out["state"] = json.dumps({"key": key, "seed": seed, "steps": steps}).encode()
        return out

    def choose_checkpointing(
        self, spec: StudySpec, config: Any, budget_bytes: int | None
    ) -> tuple[str, dict[str, int]]:
        """The first of none/blocks whose estimate fits, as the real ``auto`` prefers the
        fewest FLOPs that fit; blocks when neither does."""
        for mode in ("none", "blocks"):
            est = self.estimate_memory(spec, config, mode)
            if budget_bytes is None or est["est_total_train_bytes"] <= budget_bytes:
                return mode, est
        return "blocks", self.estimate_memory(spec, config, "blocks")

    def profile(self, spec: StudySpec, config: Any) -> list[dict[str, Any]]:
        # Like the real profiler, which the sweep calls without a budget: its records say
        # "no budget", and the sweep's rows must still carry the study's.
        return [
            {
                "checkpointing": m,
                "status": "ok",
                "reason": "",
                "memory_budget_bytes": float("nan"),
                "memory_headroom_bytes": 0,
                "peak_mem_train_bytes": self.estimate_memory(spec, config, m)[
                    "est_peak_mem_train_bytes"
                ],
                "train_voxels_per_s": 1e6 / config.start_filts,
                "train_step_s": 0.01,
            }
            for m in spec.checkpointing
        ]


def fake_spec(**changes: Any) -> StudySpec:
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(changes)
    return StudySpec.from_dict(raw, source="<fake>")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FakeEvaluator]:
    results = tmp_path_factory.mktemp("fake")
    spec = fake_spec(n_trials=14)
    (results / "fake").mkdir()
    study = optuna.create_study(
        study_name="fake",
        storage=f"sqlite:///{results / 'fake' / 'study.db'}",
        directions=spec.directions,
    )
    # One trial of each outcome, then a duplicate; the sampler proposes the rest.
    base = {"up_mode": "transpose", "merge_mode": "concat", "normalization": "batch",
            "start_filts": 4, "attention": False}  # fmt: skip
    for change in ({"up_mode": "resizeconv_nearest", "merge_mode": "add"}, {"start_filts": 64},
                   {"start_filts": 8, "attention": True}, {"normalization": "none"}, {},
                   {"start_filts": 32}, {}):  # fmt: skip
        study.enqueue_trial({**base, **change})
    evaluator = FakeEvaluator()
    run_sweep(spec, results_dir=results, evaluator=evaluator, show_progress=False)
    return results, evaluator


def load(results: Path, name: str = "fake") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / name / 'study.db'}")


def test_every_outcome_is_complete_and_feasibility_is_a_constraint(fake_run: Any) -> None:
    results, _ = fake_run
    trials = load(results).get_trials()
    assert len(trials) == 14
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        a = row_of(t)
        cfg = (a["up_mode"], a["merge_mode"], a["normalization"], a["start_filts"], a["attention"])
        if cfg[0] != "transpose" and cfg[1] == "add":
            expected = "illegal"
        elif cfg[3] == 64:
            expected = "oom"  # the estimate is over budget in every mode
        elif cfg[4] and cfg[3] == 8:
            expected = "oom"  # out of memory while training
        elif cfg[2] == "none":
            expected = "diverged"
        else:
            expected = "ok"
        assert a["status"] == expected, (t.number, cfg, a["reason"])
        assert a["feasible"] == (expected == "ok")
        assert (max(t.constraints.values()) <= 0) == (expected == "ok")
        assert expected == "ok" or a["reason"]
        assert all(v == v and abs(v) < float("inf") for v in t.values)  # finite, never NaN


def test_over_budget_trial_is_decided_by_the_estimate_alone(fake_run: Any) -> None:
    results, evaluator = fake_run
    trials = load(results).get_trials()
    big = [t for t in trials if row_of(t)["start_filts"] == 64 and "estimate_s" in row_of(t)]
    assert big, "the sampler never tried start_filts=64; change the seed"
    for t in big:
        assert row_of(t)["constraints"][0] > 0
        assert "val_dice" not in row_of(t)
        assert set(row_of(t)) >= {"est_total_train_bytes__blocks", "estimate_s"}
    assert not any('"start_filts": 64' in k for k in evaluator.trained)


def test_cheapest_fitting_checkpointing_mode_is_chosen(fake_run: Any) -> None:
    results, evaluator = fake_run
    chosen = set()
    for t in load(results).get_trials():
        a = row_of(t)
        if a["status"] != "ok":
            continue
        chosen.add(a["checkpointing"])
        none_fits = a["start_filts"] * 2_000_000 + 1000 <= 50_000_000
        assert a["checkpointing"] == ("none" if none_fits else "blocks")
        assert a["peak_mem_train_bytes"] == a[f"peak_mem_train_bytes__{a['checkpointing']}"]
        if "reused_from" not in a:  # trained with the mode that fits, not just profiled with it
            searched = tuple(a[f] for f in SEARCHED)
            assert evaluator.train_modes[searched] == a["checkpointing"]
    assert chosen == {"none", "blocks"}, "change the seed so that both cases occur"


def test_a_config_is_trained_once_and_its_result_reused(fake_run: Any) -> None:
    results, evaluator = fake_run
    trials = load(results).get_trials()
    assert len(evaluator.trained) == len(set(evaluator.trained))
    reused = [t for t in trials if "reused_from" in row_of(t)]
    assert reused, "no duplicate config was proposed; use more trials"
    by_number = {t.number: t for t in trials}
    for t in reused:
        source = by_number[row_of(t)["reused_from"]]
        assert row_of(t)["config_key"] == row_of(source)["config_key"]
        assert t.values == source.values
        assert "reused_from" not in row_of(source)


def test_data_is_loaded_once_per_worker(fake_run: Any) -> None:
    _, evaluator = fake_run
    assert evaluator.loads == 1 and len(evaluator.trained) > 1


def test_trials_parquet_has_one_flat_row_per_trial(fake_run: Any) -> None:
    results, _ = fake_run
    frame = pd.read_parquet(results / "fake" / "trials.parquet")
    assert list(frame["trial_number"]) == list(range(14))
    for col in ("trial_state", "feasible", "status", "reason", "val_dice", "up_mode",
                "planar_blocks", "checkpointing", "peak_mem_train_bytes", "trial_s"):  # fmt: skip
        assert col in frame.columns
    assert set(frame["trial_state"]) == {"COMPLETE"}
    assert frame["feasible"].dtype == bool
    ok = frame[frame["status"] == "ok"]
    assert ok["val_dice"].notna().all() and ok["feasible"].all()


def test_user_attrs_are_strict_json(fake_run: Any) -> None:
    results, _ = fake_run
    for t in load(results).get_trials():
        json.dumps(t.user_attrs, allow_nan=False)  # optuna-dashboard parses them in a browser


def test_same_seed_gives_same_sequence_of_configs(tmp_path: Path) -> None:
    runs = []
    for sub in ("a", "b"):
        run_sweep(fake_spec(n_trials=8), results_dir=tmp_path / sub, evaluator=FakeEvaluator(),
                  show_progress=False)  # fmt: skip
        runs.append([(t.params, t.values) for t in load(tmp_path / sub).get_trials()])
    assert runs[0] == runs[1]
    other = tmp_path / "c"
    run_sweep(fake_spec(n_trials=8, seed=4), results_dir=other, evaluator=FakeEvaluator(),
              show_progress=False)  # fmt: skip
    assert [p for p, _ in runs[0]] != [t.params for t in load(other).get_trials()]


def test_resume_runs_only_the_missing_trials(tmp_path: Path) -> None:
    evaluator = FakeEvaluator()
    first = run_sweep(fake_spec(n_trials=3), results_dir=tmp_path, evaluator=evaluator,
                      show_progress=False)  # fmt: skip
    again = run_sweep(fake_spec(n_trials=5), results_dir=tmp_path, evaluator=evaluator,
                      show_progress=False)  # fmt: skip
    assert (first.n_complete, again.n_complete) == (3, 5)
    assert len(load(tmp_path).get_trials()) == 5
    done = run_sweep(fake_spec(n_trials=5), results_dir=tmp_path, evaluator=evaluator,
                     show_progress=False)  # fmt: skip
    assert done.n_complete == 5 and len(load(tmp_path).get_trials()) == 5


def test_resuming_with_a_changed_spec_is_refused(tmp_path: Path) -> None:
    run_sweep(fake_spec(n_trials=1), results_dir=tmp_path, evaluator=FakeEvaluator(),
              show_progress=False)  # fmt: skip
    changed = tomllib.loads(FAKE_SPEC)
    changed["train"]["steps"] = 3
    with pytest.raises(ConfigError, match="different spec"):
        run_sweep(StudySpec.from_dict(changed, "<fake>"), results_dir=tmp_path,
                  evaluator=FakeEvaluator(), show_progress=False)  # fmt: skip


def test_trials_frame_of_empty_study_has_the_leading_columns() -> None:
    study = optuna.create_study()
    assert {"trial_number", "trial_state", "val_dice"} <= set(trials_frame(study).columns)


def test_each_worker_gets_its_own_device(tmp_path: Path) -> None:
    """--devices: worker i trains on devices[i]; the device is recorded per trial."""
    search = {"start_filts": [4, 8, 16], "merge_mode": ["concat", "add"]}
    spec = fake_spec(n_trials=4, search=search)
    result = run_sweep(spec, storage=str(tmp_path / "s.journal"), results_dir=tmp_path,
                       evaluator=FakeEvaluator(delay=1.5), show_progress=False,
                       devices="cpu:0,cpu:1")  # fmt: skip
    assert result.n_complete == 4
    from unetbench.sweep.storage import open_storage

    store = open_storage(str(tmp_path / "s.journal"), tmp_path)
    trials = optuna.load_study(study_name="fake", storage=store.storage).get_trials()
    by_pid: dict[int, set[str]] = {}
    for t in trials:
        by_pid.setdefault(row_of(t)["worker"]["pid"], set()).add(row_of(t)["device"])
    assert len(by_pid) == 2  # two workers by default: one per device
    assert sorted(d for devices in by_pid.values() for d in devices) == ["cpu:0", "cpu:1"]


class FailedMeanwhileEvaluator(FakeEvaluator):
    """While its first training runs, the trial is failed from outside, as another worker
    does when this one's heartbeat stopped for the grace period (a suspended machine)."""

    def __init__(self, storage_url: str) -> None:
        super().__init__()
        self.storage_url = storage_url
        self.failed_from_outside: list[int] = []

    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, *, seed: int, **kw: Any
    ) -> dict[str, Any]:
        if not self.failed_from_outside:
            study = optuna.load_study(study_name="fake", storage=self.storage_url)
            (trial,) = study.get_trials(states=(TrialState.RUNNING,))
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            self.failed_from_outside.append(trial.number)
        return super().train(spec, config, data, checkpointing, seed=seed, **kw)


def test_a_live_worker_whose_trial_was_failed_meanwhile_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fake' / 'study.db'}"
    (tmp_path / "fake").mkdir()
    evaluator = FailedMeanwhileEvaluator(url)
    spec = fake_spec(n_trials=3, search={"start_filts": [4, 8, 16], "normalization": ["batch"]})
    result = run_sweep(spec, results_dir=tmp_path, evaluator=evaluator, show_progress=False)
    trials = load(tmp_path).get_trials()
    assert result.n_complete == 3
    assert trials[evaluator.failed_from_outside[0]].state == TrialState.FAIL
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["fake"]


class PrecisionEvaluator(FakeEvaluator):
    """Records the precision each training ran at; chooses 'blocks' for auto."""

    def __init__(self) -> None:
        super().__init__()
        self.precisions: list[tuple[int, str]] = []
        self.auto_budgets: list[int | None] = []

    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, *, seed: int, **kw: Any
    ) -> dict[str, Any]:
        self.precisions.append((config.start_filts, spec.precision))
        return super().train(spec, config, data, checkpointing, seed=seed, **kw)

    def choose_checkpointing(
        self, spec: StudySpec, config: Any, budget_bytes: int | None
    ) -> tuple[str, dict[str, int]]:
        self.auto_budgets.append(budget_bytes)
        return "blocks", self.estimate_memory(spec, config, "blocks")


def test_precision_is_searched_and_trained_at(tmp_path: Path) -> None:
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=4, search={"start_filts": [4, 8], "precision": ["fp32", "bf16"]})
    raw["profile"] = {"checkpointing": "auto"}
    raw["memory_headroom"] = "1MB"
    spec = StudySpec.from_dict(raw, "<fake>")
    evaluator = PrecisionEvaluator()
    (tmp_path / "fake").mkdir()
    study = optuna.create_study(
        study_name="fake", storage=f"sqlite:///{tmp_path / 'fake' / 'study.db'}",
        directions=spec.directions,
    )  # fmt: skip
    for filts in (4, 8):
        for precision in ("fp32", "bf16"):
            study.enqueue_trial({"start_filts": filts, "precision": precision})
    run_sweep(spec, results_dir=tmp_path, evaluator=evaluator, show_progress=False)
    trials = load(tmp_path).get_trials()
    got = sorted((row_of(t)["start_filts"], row_of(t)["precision"]) for t in trials)
    assert got == [(4, "bf16"), (4, "fp32"), (8, "bf16"), (8, "fp32")]
    assert "reused_from" not in str([row_of(t) for t in trials])  # 4 distinct results
    assert sorted(evaluator.precisions) == got  # trained at the trial's precision
    assert evaluator.auto_budgets == [50_000_000 - 1_000_000] * 4  # budget less headroom
    for t in trials:
        assert (row_of(t)["checkpointing"], row_of(t)["checkpointing_chosen"]) == (
            "auto",
            "blocks",
        )
        assert row_of(t)["memory_headroom_bytes"] == 1_000_000
    frame = pd.read_parquet(tmp_path / "fake" / "trials.parquet")
    assert set(frame["precision"]) == {"fp32", "bf16"}
