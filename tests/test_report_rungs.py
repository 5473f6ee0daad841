"""The report of a study with successive-halving rungs, end to end on a fake-evaluator sweep:
one row per config, the front at the top rung, Kendall's tau between rungs with bootstrap
intervals, and the plots attached to the study as Optuna artifacts for optuna-dashboard."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import tomllib
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from scipy.stats import kendalltau
from test_sweep_mechanics import FAKE_SPEC, FakeEvaluator

from unetbench.cli import main as cli_main
from unetbench.report import build_report, load_study_info
from unetbench.report.artifacts import attach_plots
from unetbench.report.rungs import (
    RESAMPLES,
    agreement_sentences,
    bootstrap_tau,
    kendall_tau_b,
    rank_agreement,
)
from unetbench.report.stats import option_differences
from unetbench.report.tables import pareto_mask
from unetbench.studyinfo import Objective
from unetbench.sweep import StudySpec, run_sweep

SEARCH = {
    "up_mode": ["transpose", "resizeconv_nearest"],
    "merge_mode": ["concat", "add"],
    "start_filts": [4, 8, 16],
    "attention": [False],
}  # fmt: skip  9 legal configs
RUNGS = (2, 4, 8)
OBJECTIVES = (Objective("val_dice", "maximize"), Objective("peak_mem_train_bytes", "minimize"))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """9 configs on rungs 2/4/8 with eta 2 (9, 4 and 2 configs per rung), two seeds each, and
    a confirmation of the best config with a third seed at the top rung."""
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=9, search=SEARCH, sampler={"name": "grid"})
    raw["train"].update(steps=list(RUNGS), eta=2, repeats=2)
    raw["confirm"] = {"top": 1, "repeats": 3}
    results = tmp_path_factory.mktemp("rungs")
    result = run_sweep(StudySpec.from_dict(raw, "<fake>"), results_dir=results,
                       evaluator=FakeEvaluator(), show_progress=False)  # fmt: skip
    return results / "fake", result


@pytest.fixture(scope="module")
def report(study: tuple[Path, Any]) -> dict[str, pd.DataFrame]:
    return build_report(study[0])


def test_one_row_per_config_with_its_dice_at_every_rung(
    study: tuple[Path, Any], report: dict[str, pd.DataFrame]
) -> None:
    results, _ = study
    trials = pd.read_parquet(results / "trials.parquet")
    runs = pd.read_parquet(results / "runs.parquet")
    configs = report["configs"]
    assert (trials["role"] == "promote").sum() == 4 + 2  # promotions are trials, not configs
    assert len(configs) == 9 and configs["config_key"].is_unique
    assert set(configs["trial_number"]) == set(
        trials.loc[trials["role"] == "search", "trial_number"]
    )
    assert configs["top_rung"].value_counts().sort_index().tolist() == [5, 2, 2]
    for row in configs.to_dict("records"):
        for k, steps in enumerate(RUNGS):
            reached = k <= row["top_rung"]
            assert (row[f"steps_rung{k}"] == steps) if reached else np.isnan(row[f"steps_rung{k}"])
            if not reached:
                assert np.isnan(row[f"val_dice_rung{k}"])
                continue
            # The seed mean of the runs at that rung: the rung's trial, and at the top rung
            # the config's confirmation (recorded with rung 0, trained at the top).
            mine = runs[runs["config_key"] == row["config_key"]]
            at = mine[(mine["rung"] == k) & (mine["role"] != "confirm")]
            if k == len(RUNGS) - 1:
                at = pd.concat([at, mine[mine["role"] == "confirm"]])
            assert row[f"val_dice_rung{k}"] == pytest.approx(at["val_dice"].mean(), abs=1e-12)
        top = row["top_rung"]
        assert row["val_dice"] == row[f"val_dice_rung{top}"]  # its accuracy: the highest rung
        assert row["steps_done"] == RUNGS[top]
    best = configs.loc[configs["val_dice_rung2"].notna() & configs["n_seeds"].eq(3)]
    assert len(best) == 1  # the confirmed config: 2 seeds of its promotion + 1 confirmation


def test_the_front_is_computed_at_the_top_rung(
    study: tuple[Path, Any], report: dict[str, pd.DataFrame]
) -> None:
    results, result = study
    configs, front = report["configs"], report["pareto"]
    at_top = configs[configs["top_rung"] == 2]
    assert set(front["trial_number"]) <= set(at_top["trial_number"])
    expected = at_top[pareto_mask(at_top, OBJECTIVES)]
    assert sorted(front["trial_number"]) == sorted(expected["trial_number"])
    assert result.best["config_key"] in set(front["config_key"])  # the sweep's answer is on it
    md = (results / "report" / "report.md").read_text()
    assert "**The Pareto front is computed only over the 2 configs that reached the top rung" in md
    assert "on the Pareto front (over the 2 configs at the top rung)" in md
    assert "training: rungs of 2, 4, 8 steps: configs trained 9 at 2, 4 at 4, 2 at 8" in md


def test_the_rung_tables_and_tau_agree_with_scipy(
    study: tuple[Path, Any], report: dict[str, pd.DataFrame]
) -> None:
    results, _ = study
    ladder = pd.read_csv(results / "report" / "rungs.csv")
    agreement = pd.read_csv(results / "report" / "rank_agreement.csv")
    assert ladder.groupby("rung")["config_key"].nunique().tolist() == [9, 4, 2]
    assert (ladder.groupby("rung")["train_steps"].unique().map(list).tolist()
            == [[2], [4], [8]])  # fmt: skip
    assert ladder.loc[ladder["rung"] < 2, "promoted"].sum() == 4 + 2
    pairs = list(
        zip(agreement["comparison"], agreement["rung_a"], agreement["rung_b"], strict=True)
    )
    assert pairs == [("next", 0, 1), ("next", 1, 2), ("top", 0, 2)]
    first, *rest = agreement.to_dict("records")
    a = ladder[ladder["rung"] == 0].set_index("config_key")["val_dice"]
    b = ladder[ladder["rung"] == 1].set_index("config_key")["val_dice"]
    x, y = a[b.index].to_numpy(), b.to_numpy()
    assert first["n_configs"] == 4
    assert first["kendall_tau"] == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert first["p_value"] == pytest.approx(kendalltau(x, y).pvalue, abs=1e-12)
    assert first["tau_ci95_low"] <= first["kendall_tau"] <= first["tau_ci95_high"]
    assert first["n_resamples"] == RESAMPLES
    interval = (first["tau_ci95_low"], first["tau_ci95_high"], first["n_resamples_defined"])
    assert interval == pytest.approx(bootstrap_tau(x, y), abs=1e-12)  # reproducible
    for row in rest:  # two configs reach the top: no tau, and no number printed for it
        assert row["n_configs"] == 2 and np.isnan(row["kendall_tau"])
        assert row["note"] == "2 common configs: tau needs at least 3"
    md = (results / "report" / "report.md").read_text()
    tau, low, high = (f"{first[c]:.2f}" for c in ("kendall_tau", "tau_ci95_low", "tau_ci95_high"))
    verb = "agreed with" if first["tau_ci95_low"] > 0 else "did not clearly agree with"
    assert (
        f"The ranking at 2 steps {verb} the ranking at 4 steps: tau = {tau} [{low}, {high}] "
        "over 4 configs." in md
    )
    assert (
        "The ranking at 4 steps and the ranking at 8 steps: tau cannot be computed "
        "(2 common configs: tau needs at least 3)." in md
    )
    assert "![rung_agreement](rung_agreement.png)" in md
    assert (results / "report" / "rung_agreement.png").stat().st_size > 10_000


def test_factor_effects_on_accuracy_are_at_the_first_rung(
    study: tuple[Path, Any], report: dict[str, pd.DataFrame]
) -> None:
    results, _ = study
    effects = report["factor_effects"]
    dice = effects[effects["objective"] == "val_dice"]
    assert dice["rung"].eq(0).all() and dice["train_steps"].eq(2).all()
    assert effects.loc[effects["objective"] != "val_dice", "rung"].isna().all()
    configs = report["configs"]
    at_first = configs.assign(val_dice=configs["val_dice_rung0"])
    info = load_study_info(results)
    order = {f: [str(v) for v in choices] for f, choices in info.search.items()}
    expected = option_differences(at_first, list(info.searched_fields), "val_dice", order)
    pd.testing.assert_frame_equal(
        dice[expected.columns].reset_index(drop=True), expected, check_dtype=False
    )
    md = (results / "report" / "report.md").read_text()
    assert "Effects on accuracy are computed at rung 0 (2 steps)" in md


def test_tau_between_every_rung_and_the_top_on_made_up_rungs() -> None:
    """Twelve configs at every rung: consecutive rungs agree, the top reverses rung 1's order,
    and a rung where every config has the same Dice has no tau."""
    rng = np.random.default_rng(5)
    base = np.arange(12.0)
    dice = {0: base + rng.normal(0, 2, 12), 1: base, 2: -base, 3: np.full(12, 0.5)}
    ladder = pd.DataFrame(
        [
            {"config_key": f"c{i}", "rung": k, "train_steps": 10 * 2**k, "val_dice": v[i]}
            for k, v in dice.items()
            for i in range(12)
        ]
    )
    rungs = (10, 20, 40, 80)
    table = rank_agreement(ladder, rungs)
    assert list(zip(table["comparison"], table["rung_a"], table["rung_b"], strict=True)) == [
        ("next", 0, 1), ("next", 1, 2), ("next", 2, 3), ("top", 0, 3), ("top", 1, 3),
    ]  # fmt: skip
    for row in table.to_dict("records"):
        x, y = dice[row["rung_a"]], dice[row["rung_b"]]
        if row["rung_b"] == 3:
            assert np.isnan(row["kendall_tau"]) and "tau is undefined" in row["note"]
            continue
        assert row["kendall_tau"] == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
        # (within rounding: tau of a reversed order is -1 up to the last bit)
        assert row["tau_ci95_low"] - 1e-12 <= row["kendall_tau"] <= row["tau_ci95_high"] + 1e-12
    assert table.loc[1, ["kendall_tau", "tau_ci95_high"]].tolist() == pytest.approx([-1, -1])
    again = rank_agreement(ladder, rungs)
    pd.testing.assert_frame_equal(table, again)  # the same seed: the same intervals
    other = rank_agreement(ladder, rungs, seed=1)
    assert other.loc[0, "tau_ci95_low"] != table.loc[0, "tau_ci95_low"]
    lines = agreement_sentences(table)
    assert lines[0].startswith("- The ranking at 10 steps agreed with the ranking at 20 steps")
    assert lines[1] == (
        "- The ranking at 20 steps disagreed with the ranking at 40 steps: "
        "tau = -1.00 [-1.00, -1.00] over 12 configs."
    )
    assert "tau cannot be computed (every config has the same value" in lines[2]


def test_the_resamples_tau_b_is_scipys() -> None:
    """Many rows at once, with ties in x, in y and in both, and a row without tau."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(200, 9)).astype(float)
    y = np.where(rng.random((200, 9)) < 0.5, x, rng.integers(0, 4, size=(200, 9)))
    x[0] = 1.0  # every config equal: no tau
    expected = [kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(kendall_tau_b(x, y), expected, rtol=0, atol=1e-12)
    assert np.isnan(kendall_tau_b(x, y)[0])


def _dashboard_get(app: Any, path: str) -> tuple[str, bytes]:
    from wsgiref.util import setup_testing_defaults

    env: dict[str, Any] = {}
    setup_testing_defaults(env)
    env["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    return status[0], body


def test_plots_are_attached_to_the_study_once_and_the_dashboard_lists_them(
    study: tuple[Path, Any], report: dict[str, pd.DataFrame]
) -> None:
    results, _ = study
    pngs = sorted(p.name for p in (results / "report").glob("*.png"))
    assert len(pngs) == 5 and report["artifacts"]["action"].eq("added").all()
    storage = f"sqlite:///{results / 'study.db'}"
    folder = results / "artifacts"  # where the sweep keeps the runs' states

    def attached() -> dict[str, str]:
        loaded = optuna.load_study(study_name="fake", storage=storage)
        return {m.filename: m.artifact_id for m in get_all_artifact_meta(loaded)}

    first = attached()
    assert sorted(first) == pngs
    # Again: nothing piles up; a stored plot that differs (an older report) is replaced.
    (folder / first["rung_agreement.png"]).write_bytes(b"an older plot")
    tables = build_report(results)
    actions = dict(zip(tables["artifacts"]["file"], tables["artifacts"]["action"], strict=True))
    assert actions.pop("rung_agreement.png") == "replaced"
    assert set(actions.values()) == {"unchanged"}
    assert attached() == first
    assert (folder / first["rung_agreement.png"]).read_bytes() == (
        results / "report" / "rung_agreement.png"
    ).read_bytes()

    dashboard = pytest.importorskip("optuna_dashboard")
    app = dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(folder))
    status, body = _dashboard_get(app, "/api/studies")
    assert status == "200 OK"
    (summary,) = [s for s in json.loads(body)["study_summaries"] if s["study_name"] == "fake"]
    status, body = _dashboard_get(app, f"/api/studies/{summary['study_id']}")
    listed = {a["filename"]: a for a in json.loads(body)["artifacts"]}
    assert sorted(listed) == pngs and {a["mimetype"] for a in listed.values()} == {"image/png"}
    status, body = _dashboard_get(
        app, f"/artifacts/{summary['study_id']}/{listed['dice_vs_memory.png']['artifact_id']}"
    )
    assert status == "200 OK" and body == (results / "report" / "dice_vs_memory.png").read_bytes()


def test_without_a_storage_the_report_is_written_and_attaches_nothing(
    study: tuple[Path, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "fake"
    shutil.copytree(study[0], copy, ignore=shutil.ignore_patterns("study.db*", "artifacts"))
    tables = build_report(copy)
    assert tables["artifacts"]["action"].eq("not attached").all()
    md = (copy / "report" / "report.md").read_text()
    assert "Plots not attached to the study as Optuna artifacts: no storage" in md
    assert not (copy / "artifacts").exists() and len(list((copy / "report").glob("*.png"))) == 5
    # A storage without this study: said so, nothing written to it.
    other = tmp_path / "other.db"
    optuna.create_study(study_name="other", storage=f"sqlite:///{other}")
    pngs = sorted((copy / "report").glob("*.png"))
    table = attach_plots(pngs, study="fake", storage=f"sqlite:///{other}", artifact_dir=tmp_path)
    assert set(table["action"]) == {"not attached"}
    assert set(table["reason"]) == {"the storage has no study named 'fake'"}


def test_cli_attaches_and_prints_the_dashboard_command(
    study: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, _ = study
    out = tmp_path / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "SUBCOMMANDS", ("report",))
        assert cli_main.main(["report", str(results), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert re.search(
            r"plots attached to study fake as Optuna artifacts \(5 unchanged\); see them with: "
            r"optuna-dashboard sqlite:///\S+/study.db --artifact-dir \S+/artifacts\n",
            printed,
        )


def test_a_study_with_rungs_in_which_every_trial_crashed_still_reports(
    study: tuple[Path, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "fake"
    shutil.copytree(study[0], copy, ignore=shutil.ignore_patterns("study.db*", "artifacts"))
    trials = pd.read_parquet(copy / "trials.parquet")
    trials = trials[trials["role"] == "search"].drop(columns=["val_dice", "val_iou", "train_loss"])
    trials = trials.assign(trial_state="FAIL", status="error", reason="RuntimeError: boom")
    trials.to_parquet(copy / "trials.parquet")
    (copy / "runs.parquet").unlink()
    tables = build_report(copy, plots=False)
    assert len(tables["configs"]) == 9 and tables["configs"]["top_rung"].eq(0).all()
    assert tables["pareto"].empty and tables["rungs"].empty
    assert tables["rank_agreement"]["note"].eq("0 common configs: tau needs at least 3").all()
    md = (copy / "report" / "report.md").read_text()
    assert "computed only over the 0 configs that reached the top rung" in md
