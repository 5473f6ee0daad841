"""studies/smoke.toml with real training and profiling, through the command line.

The smoke study is run twice: once by ``unetbench sweep`` in a subprocess (the user's path),
once by ``run_sweep`` in this process; the second run checks reproducibility (same configs in
the same order, same Dice on CPU with deterministic settings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from unetbench.sweep import load_study_spec, run_sweep
from unetbench.sweep.record import row_of

SMOKE = Path(__file__).parent.parent / "studies" / "smoke.toml"


@pytest.fixture(scope="module")
def smoke_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    results = tmp_path_factory.mktemp("smoke-cli")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unetbench.cli.main",
            "sweep",
            str(SMOKE),
            "--results-dir",
            str(results),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return results, proc.stdout


def test_smoke_study_leaves_trials_parquet_and_database(smoke_cli: tuple[Path, str]) -> None:
    results, stdout = smoke_cli
    spec = load_study_spec(SMOKE)
    frame = pd.read_parquet(results / "smoke" / "trials.parquet")
    n_confirm = spec.confirm_top
    assert (frame["role"] == "search").sum() == spec.n_trials
    assert (frame["role"] == "confirm").sum() == n_confirm
    assert (frame["trial_state"] == "COMPLETE").all()
    assert frame[frame["role"] == "search"]["config_key"].is_unique
    trained = frame[frame["status"] == "ok"]
    assert len(trained) >= 1 and trained["feasible"].all()
    assert trained["val_dice"].between(0, 1).all() and trained["val_iou"].between(0, 1).all()
    assert (trained["steps_done"] == trained["train_steps"]).all()
    assert (trained["train_steps"] == spec.steps).all()
    positive = ["peak_mem_train_bytes", "params", "train_s", "profile_s", "estimate_s",
                "est_peak_mem_train_bytes", "est_total_train_bytes",
                "peak_mem_train_bytes__blocks"]  # fmt: skip
    searched = trained[trained["role"] == "search"]
    for col in positive:
        assert (searched[col] > 0).all(), col
    confirmed = trained[trained["role"] == "confirm"]  # profile copied from the search trial
    assert confirmed["profile_from"].isin(searched["trial_number"]).all()
    assert confirmed["profile_s"].isna().all() and (confirmed["peak_mem_train_bytes"] > 0).all()
    for mode in ("none", "blocks"):
        assert (trained[f"status__{mode}"] == "ok").all()
    assert (trained["peak_mem_train_bytes__blocks"] < trained["peak_mem_train_bytes__none"]).all()
    assert set(trained["checkpointing"]) <= {"none", "blocks"}
    assert "illegal" not in set(frame["status"])
    runs = pd.read_parquet(results / "smoke" / "runs.parquet")
    assert len(runs) == spec.n_trials * spec.repeats + n_confirm * (
        spec.confirm_repeats - spec.repeats
    )
    assert runs["val_dice"].between(0, 1).all() and not runs["capped"].any()
    assert (runs["steps_done"] == runs["train_steps"]).all()
    confirm = runs[runs["role"] == "confirm"]
    assert set(confirm["config_key"]) <= set(runs[runs["role"] == "search"]["config_key"])
    assert set(confirm["train_seed"]) == {1000 * spec.seed + spec.repeats}
    assert f"optuna-dashboard sqlite:///{results.resolve()}" in stdout


def test_running_the_finished_smoke_study_again_adds_nothing(smoke_cli: tuple[Path, str]) -> None:
    results, _ = smoke_cli
    before = pd.read_parquet(results / "smoke" / "trials.parquet")
    result = run_sweep(SMOKE, results_dir=results, show_progress=False)
    after = pd.read_parquet(results / "smoke" / "trials.parquet")
    assert (result.n_complete, result.n_confirm) == (3, 1)
    assert len(after) == len(before)
    pd.testing.assert_series_equal(after["val_dice"], before["val_dice"])


def test_smoke_study_opens_as_a_plain_optuna_study(smoke_cli: tuple[Path, str]) -> None:
    results, _ = smoke_cli
    url = f"sqlite:///{results / 'smoke' / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    assert summary.study_name == "smoke" and summary.n_trials == 4  # 3 searched, 1 confirmed
    study = optuna.load_study(study_name="smoke", storage=url)
    assert study.metric_names == ["val_dice", "peak_mem_train_bytes"]
    for t in study.trials:
        json.dumps(t.user_attrs, allow_nan=False)
        assert len(t.constraints) == 2  # memory_over_budget, failed
        assert t.system_attrs["constraints"] == row_of(t)["constraints"]  # dashboard reads it
    assert study.best_trials


def test_same_spec_and_seed_give_same_configs_and_dice(
    smoke_cli: tuple[Path, str], tmp_path: Path
) -> None:
    results, _ = smoke_cli
    run_sweep(SMOKE, results_dir=tmp_path, show_progress=False)
    first = pd.read_parquet(results / "smoke" / "trials.parquet")
    second = pd.read_parquet(tmp_path / "smoke" / "trials.parquet")
    fields = ["up_mode", "merge_mode", "attention", "status"]
    assert first[fields].equals(second[fields])
    pd.testing.assert_series_equal(first["val_dice"], second["val_dice"], rtol=0, atol=1e-9)
    pd.testing.assert_series_equal(first["train_loss"], second["train_loss"], rtol=0, atol=1e-9)


def test_optuna_dashboard_serves_the_study(smoke_cli: tuple[Path, str]) -> None:
    dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    results, _ = smoke_cli
    app = dashboard.wsgi(f"sqlite:///{results / 'smoke' / 'study.db'}")

    def get(path: str) -> dict[str, Any]:
        env: dict[str, Any] = {}
        setup_testing_defaults(env)
        env["PATH_INFO"] = path
        status: list[str] = []
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        assert status == ["200 OK"], body[:500]
        return dict(json.loads(body))

    (summary,) = get("/api/studies")["study_summaries"]
    study = get(f"/api/studies/{summary['study_id']}")
    assert study["objective_names"] == ["val_dice", "peak_mem_train_bytes"]
    assert len(study["trials"]) == 4
    for trial in study["trials"]:
        assert len(trial["constraints"]) == 2
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert set(attrs) >= {"role", "config_key", "record"}
        assert all(k in str(attrs["record"]) for k in ("status", "reason", "feasible"))
