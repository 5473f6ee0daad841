"""Report tables on synthetic trial records that use the contract's exact column names."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetbench import ConfigError, UNetConfig, UsageError
from unetbench.report import (
    Objective,
    build_report,
    checkpointing_savings,
    factor_effects,
    failures,
    load_study_info,
    pareto_front,
    pareto_mask,
    parse_bytes,
    parse_objectives,
)

MIB = 2**20
DICE_MEM = (Objective("val_dice", "maximize"), Objective("peak_mem_train_bytes", "minimize"))


def make_trials(seed: int = 0) -> pd.DataFrame:
    """A sweep-like table: 3 n_blocks x 3 start_filts x 2 attention, each with and without
    checkpointing, a few failures and over-budget trials. Values scale like real U-Nets."""
    rng = np.random.default_rng(seed)
    defaults = UNetConfig().to_dict()
    rows = []
    grid = itertools.product((2, 3, 4), (8, 16, 32), (False, True), ("none", "blocks"))
    for number, (n_blocks, filts, attention, cp) in enumerate(grid):
        params = int(filts**2 * 30 * 4 ** (n_blocks - 1) * (1.1 if attention else 1.0))
        mem = 40 * MIB * filts / 8 * (1 + 0.3 * n_blocks) * (0.55 if cp == "blocks" else 1.0)
        step = 0.02 * filts / 8 * n_blocks * (1.3 if cp == "blocks" else 1.0)
        flops = 4.0e9 * filts / 8 * n_blocks
        row = {
            **defaults,
            "planar_blocks": [],
            "n_blocks": n_blocks,
            "start_filts": filts,
            "attention": attention,
            "batch_size": 1,
            "input_shape": "32x64x64",
            "output_shape": "32x64x64",
            "checkpointing": cp,
            "device": "cpu",
            "dtype": "float32",
            "status": "ok",
            "reason": "",
            "params": params,
            "fwd_macs": int(flops / 6),
            "fwd_flops": int(flops / 3),
            "train_flops": int(flops),
            "peak_mem_train_bytes": mem * rng.uniform(0.98, 1.02),
            "est_peak_mem_train_bytes": int(mem),
            "train_step_s": step * rng.uniform(0.95, 1.05),
            "train_voxels_per_s": 32 * 64 * 64 / step,
            "trial_number": number,
            "val_dice": min(0.95, 0.6 + 0.05 * n_blocks + 0.003 * filts + 0.02 * attention)
            + rng.normal(0, 0.01),
            "val_iou": np.nan,
            "trial_state": "COMPLETE",
            "feasible": mem <= 150 * MIB,
        }
        row["val_iou"] = row["val_dice"] / (2 - row["val_dice"])
        rows.append(row)
    df = pd.DataFrame(rows)
    # Two failures: an out-of-memory and an error (no metrics), one pruned trial.
    for idx, status, reason in (
        (5, "oom", "CUDA out of memory. Tried to allocate 2 GiB"),
        (9, "error", "RuntimeError: boom\ntraceback line"),
    ):
        df.loc[idx, ["status", "reason", "trial_state", "feasible"]] = [
            status,
            reason,
            "FAIL",
            False,
        ]
        df.loc[idx, ["val_dice", "peak_mem_train_bytes", "train_step_s"]] = np.nan
    df.loc[12, ["trial_state", "reason"]] = ["PRUNED", "pruned at step 20"]
    over = (df["status"] == "ok") & ~df["feasible"].astype(bool)
    df.loc[over, "reason"] = "peak_mem_train_bytes over budget"
    return df


def brute_force_front(df: pd.DataFrame) -> set[int]:
    ok = df[(df.status == "ok") & (df.trial_state == "COMPLETE") & df.feasible.astype(bool)]
    front = set()
    for i, a in ok.iterrows():
        dominated = any(
            b.val_dice >= a.val_dice
            and b.peak_mem_train_bytes <= a.peak_mem_train_bytes
            and (b.val_dice > a.val_dice or b.peak_mem_train_bytes < a.peak_mem_train_bytes)
            for _, b in ok.iterrows()
        )
        if not dominated:
            front.add(int(df.loc[i, "trial_number"]))
    return front


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pareto_front_matches_definition_and_excludes_infeasible(seed: int) -> None:
    df = make_trials(seed)
    front = pareto_front(df, DICE_MEM)
    assert set(front["trial_number"]) == brute_force_front(df)
    assert front["feasible"].astype(bool).all() and (front["status"] == "ok").all()
    assert front["val_dice"].is_monotonic_decreasing  # best first on the first objective


def test_pareto_respects_directions() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    both_max = pareto_mask(df, [Objective("a", "maximize"), Objective("b", "maximize")])
    assert both_max.tolist() == [False, False, True]
    both_min = pareto_mask(df, [Objective("a", "minimize"), Objective("b", "minimize")])
    assert both_min.tolist() == [True, False, False]
    trade = pareto_mask(df, [Objective("a", "maximize"), Objective("b", "minimize")])
    assert trade.tolist() == [True, True, True]


def test_pareto_keeps_ties_and_needs_known_columns() -> None:
    df = pd.DataFrame({"a": [1.0, 1.0, 0.5], "b": [2.0, 2.0, 3.0]})
    mask = pareto_mask(df, [Objective("a", "maximize"), Objective("b", "minimize")])
    assert mask.tolist() == [True, True, False]
    with pytest.raises(ConfigError, match="'val_dice'"):
        pareto_mask(df, [Objective("val_dice", "maximize")])
    with pytest.raises(ConfigError, match="at least one objective"):
        pareto_mask(df, [])


def test_factor_effects_mean_and_std_per_choice() -> None:
    df = make_trials()
    effects = factor_effects(df, DICE_MEM)
    assert set(effects["field"]) == {"n_blocks", "start_filts", "attention", "checkpointing"}
    done = df[(df.status == "ok") & (df.trial_state == "COMPLETE")]
    row = effects[(effects.field == "start_filts") & (effects.value == "16")].iloc[0]
    chosen = done[done.start_filts == 16]
    assert row["n"] == len(chosen)
    assert row["val_dice_mean"] == pytest.approx(chosen.val_dice.mean())
    assert row["peak_mem_train_bytes_std"] == pytest.approx(chosen.peak_mem_train_bytes.std())
    only = factor_effects(df, DICE_MEM, fields=["attention"])
    assert only["value"].tolist() == ["False", "True"]


def test_checkpointing_savings_per_config() -> None:
    df = make_trials()
    table = checkpointing_savings(df)
    # 18 configs; those whose none or blocks row failed/was pruned are still matched if ok.
    assert (table["checkpointing"] == "blocks").all()
    row = table[
        (table.n_blocks == "3") & (table.start_filts == "16") & (table.attention == "True")
    ].iloc[0]
    base = df[(df.n_blocks == 3) & (df.start_filts == 16) & df.attention]
    none = base[base.checkpointing == "none"].iloc[0]
    cp = base[base.checkpointing == "blocks"].iloc[0]
    assert row["mem_saved_pct"] == pytest.approx(
        100 * (1 - cp.peak_mem_train_bytes / none.peak_mem_train_bytes)
    )
    assert row["step_time_added_pct"] == pytest.approx(
        100 * (cp.train_step_s / none.train_step_s - 1)
    )
    assert 40 < row["mem_saved_pct"] < 50 and 20 < row["step_time_added_pct"] < 40
    assert "n_blocks=3" in row["label"] and "attention=True" in row["label"]
    with pytest.raises(ConfigError, match="checkpointing"):
        checkpointing_savings(df.drop(columns="checkpointing"))


def test_failures_grouped_by_kind_and_reason() -> None:
    df = make_trials()
    table = failures(df)
    kinds = dict(zip(table["reason"], table["kind"], strict=True))
    assert kinds["CUDA out of memory. Tried to allocate 2 GiB"] == "oom"
    assert kinds["RuntimeError: boom"] == "error"  # first line only
    assert kinds["pruned at step 20"] == "pruned"
    over = table[table["kind"] == "infeasible"].iloc[0]
    n_over = int(((df.status == "ok") & ~df.feasible.astype(bool)).sum())
    assert over["count"] == n_over and over["reason"] == "peak_mem_train_bytes over budget"
    assert table["count"].sum() == n_over + 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GiB", 8 * 2**30),
        ("512 MiB", 512 * MIB),
        ("2GB", 2e9),
        (1024, 1024),
        ("1.5gib", 1.5 * 2**30),
    ],
)
def test_parse_bytes(text: object, expected: float) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["8 parsecs", "", "GiB", True])
def test_parse_bytes_rejects(bad: object) -> None:
    with pytest.raises(UsageError, match="memory budget"):
        parse_bytes(bad)


@pytest.mark.parametrize(
    "spec",
    [
        {"val_dice": "maximize", "peak_mem_train_bytes": "minimize"},
        ["val_dice", "peak_mem_train_bytes"],
        ["val_dice:max", "peak_mem_train_bytes:min"],
        [["val_dice", "maximize"], ["peak_mem_train_bytes", "minimize"]],
        [{"name": "val_dice", "direction": "maximize"}, {"column": "peak_mem_train_bytes"}],
    ],
)
def test_parse_objectives_spellings(spec: object) -> None:
    assert parse_objectives(spec) == DICE_MEM


def test_parse_objectives_rejects_bad_direction() -> None:
    with pytest.raises(ConfigError, match="'sideways'"):
        parse_objectives({"val_dice": "sideways"})


def test_study_info_from_spec_toml(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quick.toml").write_text(
        'name = "quick"\nmemory_budget = "150MiB"\n[search]\nn_blocks = [2, 3]\n'
        'start_filts = [8, 16]\n[objectives]\nval_dice = "maximize"\ntrain_step_s = "minimize"\n'
    )
    results = tmp_path / "results" / "quick"
    results.mkdir(parents=True)
    info = load_study_info(results)
    assert info.objectives == (
        Objective("val_dice", "maximize"),
        Objective("train_step_s", "minimize"),
    )
    assert info.memory_budget_bytes == 150 * MIB
    assert info.searched_fields == ("n_blocks", "start_filts")
    explicit = load_study_info(results, objectives=["val_iou"], memory_budget="1GiB")
    assert explicit.objectives == (Objective("val_iou", "maximize"),)
    assert explicit.memory_budget_bytes == 2**30


def test_study_info_from_study_json(tmp_path: Path) -> None:
    (tmp_path / "study.json").write_text(
        json.dumps(
            {
                "name": "s1",
                "objectives": [["val_dice", "maximize"], ["params", "minimize"]],
                "memory_budget_bytes": 123,
            }
        )
    )
    info = load_study_info(tmp_path)
    assert info.name == "s1" and info.memory_budget_bytes == 123
    assert info.objectives[1] == Objective("params", "minimize")


def test_build_report_writes_every_table(tmp_path: Path) -> None:
    df = make_trials()
    results = tmp_path / "demo"
    results.mkdir()
    df.to_parquet(results / "trials.parquet")
    tables = build_report(results, objectives=DICE_MEM, memory_budget="150MiB", plots=False)
    assert set(tables) == {"trials", "pareto", "factor_effects", "checkpointing", "failures"}
    for name, table in tables.items():
        back = pd.read_parquet(results / "report" / f"{name}.parquet")
        assert len(back) == len(table)
        assert len(pd.read_csv(results / "report" / f"{name}.csv")) == len(table)
    assert tables["trials"]["on_pareto_front"].sum() == len(tables["pareto"])
    text = (results / "report" / "report.md").read_text()
    assert "## Pareto front" in text and "MiB" in text and " ± " in text
    assert "memory budget: 150 MiB" in text


def test_build_report_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(UsageError, match=r"no trials\.parquet"):
        build_report(tmp_path)
    make_trials().to_csv(tmp_path / "trials.csv", index=False)
    with pytest.raises(ConfigError, match="'val_f1'"):
        build_report(tmp_path, objectives=["val_f1"], plots=False)


def sweep_shaped(df: pd.DataFrame) -> pd.DataFrame:
    """The sweep's layout: one row per trial, each mode's profile in <column>__<mode>."""
    key = ["n_blocks", "start_filts", "attention"]
    wide = df[df.checkpointing == "none"].copy()
    for mode in ("none", "blocks"):
        part = df[df.checkpointing == mode].set_index(key)
        for col in ("peak_mem_train_bytes", "train_step_s", "status"):
            wide[f"{col}__{mode}"] = part.loc[
                list(wide[key].itertuples(index=False, name=None)), col
            ].to_numpy()
    wide["in_channels"] = wide["in_channels"].astype(float)  # ints become floats next to NaN
    wide.loc[wide.index[0], "in_channels"] = np.nan
    return wide


def test_checkpointing_savings_from_sweep_per_mode_columns() -> None:
    df = make_trials()
    long = checkpointing_savings(df)
    wide = checkpointing_savings(sweep_shaped(df))
    assert len(wide) > 0 and (wide["checkpointing"] == "blocks").all()
    merged = wide.merge(long, on=["n_blocks", "start_filts", "attention"], suffixes=("", "_l"))
    assert len(merged) == len(wide)
    assert np.allclose(merged["mem_saved_pct"], merged["mem_saved_pct_l"])
    assert np.allclose(merged["step_time_added_pct"], merged["step_time_added_pct_l"])
    assert not wide["label"].str.contains(r"\.0\b").any()  # 3, not 3.0


def test_reused_trials_count_once() -> None:
    df = make_trials()
    copy = df[df.trial_number == 19].assign(trial_number=99, reused_from=19)
    with_copy = pd.concat([df.assign(reused_from=np.nan), copy], ignore_index=True)
    front = pareto_front(with_copy, DICE_MEM)
    assert 99 not in set(front["trial_number"])
    assert set(front["trial_number"]) == brute_force_front(df)
    assert factor_effects(with_copy, DICE_MEM)["n"].sum() == factor_effects(df, DICE_MEM)["n"].sum()


def test_study_info_from_the_sweep_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)  # no studies/ directory to find a spec in
    results = tmp_path / "elsewhere" / "s2"
    results.mkdir(parents=True)
    study = optuna.create_study(
        storage=f"sqlite:///{results / 'study.db'}", study_name="s2", directions=["maximize"]
    )
    spec = {
        "name": "s2",
        "objectives": [["val_iou", "maximize"]],
        "memory_budget_bytes": 2**30,
        "search": {"n_blocks": [2, 3]},
    }
    study.set_user_attr("unetbench_spec", spec)
    info = load_study_info(results)
    assert info.objectives == (Objective("val_iou", "maximize"),)
    assert info.memory_budget_bytes == 2**30 and info.searched_fields == ("n_blocks",)
    assert info.source == (str(results / "study.db"),)
