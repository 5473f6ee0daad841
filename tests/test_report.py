"""Report tables on synthetic trial records that use the contract's exact column names."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetbench import ConfigError, UNetConfig, UsageError
from unetbench.report import (
    TABLES,
    Objective,
    build_report,
    checkpointing_savings,
    failures,
    load_study_info,
    pareto_front,
    pareto_mask,
    stopped_trials,
)
from unetbench.report.configs import restore_choices
from unetbench.studyinfo import StudyInfo, write_study_json

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
    assert over["n_trials"] == n_over and over["reason"] == "peak_mem_train_bytes over budget"
    assert table["n_trials"].sum() == n_over + 3


def write_study(results: Path, trials: pd.DataFrame, **info: object) -> Path:
    """A results directory as the sweep leaves it: trials.parquet and study.json."""
    results.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(results / "trials.parquet")
    described = StudyInfo(
        name=results.name,
        objectives=DICE_MEM,
        memory_budget_bytes=150 * MIB,
        search={"n_blocks": [2, 3, 4], "start_filts": [8, 16, 32], "attention": [False, True]},
    ).replace(**info)
    write_study_json(described, results)
    return results


def test_build_report_writes_every_table(tmp_path: Path) -> None:
    results = write_study(tmp_path / "demo", sweep_shaped(make_trials()))
    tables = build_report(results, plots=False)
    assert set(tables) == set(TABLES)
    for name, table in tables.items():
        back = pd.read_parquet(results / "report" / f"{name}.parquet")
        assert len(back) == len(table)
        assert len(pd.read_csv(results / "report" / f"{name}.csv")) == len(table)
    assert tables["trials"]["on_pareto_front"].sum() == len(tables["pareto"])
    assert set(tables["factor_effects"]["field"]) == {"n_blocks", "start_filts", "attention"}
    text = (results / "report" / "report.md").read_text()
    assert "## Pareto front" in text and "peak_mem_train (MiB)" in text
    lines = text.splitlines()
    headers = [a for a, b in itertools.pairwise(lines) if b.startswith("|---")]
    assert headers and not any("_bytes" in line for line in headers)
    assert "memory budget: 150 MiB" in text
    assert "attention = True instead of False: val_dice" in text


def test_report_reads_the_stored_description_not_the_spec_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "demo.toml").write_text(
        'name = "demo"\nmemory_budget = "1GiB"\n[objectives]\nval_iou = "maximize"\n'
    )
    results = write_study(tmp_path / "results" / "demo", sweep_shaped(make_trials()))
    info = load_study_info(results)
    assert info.objectives == DICE_MEM and info.memory_budget_bytes == 150 * MIB
    assert info.source == str(results / "study.json")
    explicit = load_study_info(results, objectives=["val_iou:maximize", "params:minimize"])
    assert explicit.objectives[0] == Objective("val_iou", "maximize")
    bare = load_study_info(results, objectives=["peak_mem_train_bytes"], memory_budget_bytes=7)
    assert bare.objectives == DICE_MEM[1:] and bare.memory_budget_bytes == 7
    with pytest.raises(UsageError, match="needs a direction"):
        load_study_info(results, objectives=["params"])


def test_build_report_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(UsageError, match=r"no trials\.parquet"):
        build_report(tmp_path)
    make_trials().to_csv(tmp_path / "trials.csv", index=False)
    with pytest.raises(UsageError, match=r"study\.json does not exist.*run the sweep again"):
        build_report(tmp_path)
    write_study(tmp_path, make_trials())
    with pytest.raises(ConfigError, match="'val_f1'"):
        build_report(tmp_path, objectives=["val_f1:maximize"], plots=False)
    (tmp_path / "study.json").write_text('{"schema": "other"}')
    with pytest.raises(ConfigError, match="not a unetbench study description"):
        build_report(tmp_path)


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


def test_searched_fields_read_back_as_the_studys_choices() -> None:
    """A trial without a record turns a column of ints into floats and bools into objects;
    read back, they are the study's choices again (2, not 2.0)."""
    trials = pd.DataFrame(
        {
            "n_blocks": [2.0, np.nan, 4.0],
            "attention": [True, None, False],
            "planar_blocks": ["[0, 1]", None, "[]"],
            "lr": [0.5, np.nan, 1e-3],  # not searched: left alone
        }
    )
    search = {"n_blocks": [2, 3, 4], "attention": [False, True], "planar_blocks": [[], [0, 1]]}
    back = restore_choices(trials, search)
    assert back["n_blocks"].tolist() == [2, None, 4]
    assert [type(v) for v in back["n_blocks"]] == [int, type(None), int]
    assert back["attention"].tolist() == [True, None, False]
    assert back["planar_blocks"].tolist() == [[0, 1], None, []]
    assert back["lr"].equals(trials["lr"])


def test_timings_within_their_spread_are_ties_on_the_front() -> None:
    """The report's front is the sweep's (unetbench.ranking): a throughput better by less
    than its interquartile range does not push an equally accurate config off the front."""
    objectives = (Objective("val_dice", "maximize"), Objective("train_voxels_per_s", "maximize"))
    df = pd.DataFrame(
        {
            "val_dice": [0.8, 0.8, 0.8],
            "train_voxels_per_s": [1000.0, 1050.0, 2000.0],
            "train_step_s": [1.0, 1.0, 0.5],
            "train_step_iqr_s": [0.1, 0.1, 0.01],
        }
    )
    assert pareto_mask(df, objectives).tolist() == [False, False, True]
    df.loc[2, "train_voxels_per_s"] = 1040.0  # now within 10% of the others: a tie
    assert pareto_mask(df, objectives).tolist() == [True, True, True]
    exact = df.assign(train_step_iqr_s=0.0)
    assert pareto_mask(exact, objectives).tolist() == [False, True, False]


def test_checkpointing_time_under_load_is_flagged_not_a_result(tmp_path: Path) -> None:
    df = sweep_shaped(make_trials())
    df["timing_note__none"] = ""
    df["timing_note__blocks"] = ""
    loaded = df.index[(df.n_blocks == 3) & (df.start_filts == 16) & df.attention.astype(bool)]
    df.loc[loaded, "timing_note__blocks"] = "waited for a CPU 40% of the time"
    table = checkpointing_savings(df)
    flagged = table[table["timing_note"] != ""]
    assert flagged["timing_note"].tolist() == ["blocks: waited for a CPU 40% of the time"]
    assert flagged["step_time_added_pct"].isna().all()
    assert flagged["train_step_s"].notna().all()  # the measurement is kept, labelled
    assert table.loc[table["timing_note"] == "", "step_time_added_pct"].notna().all()
    results = write_study(tmp_path / "demo", df)
    build_report(results, plots=False)
    md = (results / "report" / "report.md").read_text()
    section = md.split("## Checkpointing savings")[1].split("## ")[0]
    line = next(row for row in section.splitlines() if "waited for a CPU" in row)
    assert "timed under load" in line and "%" not in line.replace("40%", "")


def test_configs_timed_under_load_are_flagged(tmp_path: Path) -> None:
    df = sweep_shaped(make_trials())
    df["timing_note"] = ""
    first = df["trial_number"].iloc[1]
    df.loc[df.index[1], "timing_note"] = "load average 5.1 on 2 CPUs"
    results = write_study(
        tmp_path / "demo",
        df,
        objectives=(Objective("val_dice", "maximize"), Objective("train_voxels_per_s", "maximize")),
    )
    tables = build_report(results, plots=False)
    md = (results / "report" / "report.md").read_text()
    assert f"**Timed under load** (trials {first}): their train_voxels_per_s" in md
    assert "timed under load: 1 config (see timing_note)" in md
    configs = md.split("## All configs")[1]
    assert "timing_note" in configs.splitlines()[2] and "load average 5.1 on 2 CPUs" in configs
    assert len(tables["configs"]) == 18


def test_stopped_trials_are_listed_apart_with_what_measured_them() -> None:
    df = pd.DataFrame(
        {
            "trial_number": [0, 1, 2, 3],
            "trial_state": ["FAIL", "COMPLETE", "FAIL", "FAIL"],
            "role": ["search", "search", "search", "confirm"],
            "status": ["interrupted", "ok", "surplus", "interrupted"],
            "reason": ["interrupted (SIGINT)", "", "surplus: done", "interrupted (SIGTERM)"],
            "config_key": ["k1", "k1", None, "k1"],
            "feasible": [False, True, False, False],
        }
    )
    table = stopped_trials(df)
    assert table[["trial_number", "status", "measured_by"]].values.tolist() == [
        [0, "interrupted", "1"],
        [2, "surplus", ""],
        [3, "interrupted", ""],  # no confirmation of k1 completed
    ]
    assert failures(df).empty  # bookkeeping, not failures


def test_a_study_in_which_every_trial_crashed_still_reports(tmp_path: Path) -> None:
    trials = pd.DataFrame(
        {
            "trial_number": [0, 1],
            "trial_state": ["FAIL", "FAIL"],
            "role": ["search", "search"],
            "status": ["error", "error"],
            "reason": ["KeyError: 'out'", "KeyError: 'out'"],
            "error_type": ["KeyError", "KeyError"],
            "feasible": [False, False],
            "config_key": ["k0", "k1"],
            "n_blocks": [2, 3],
            "start_filts": [8, 8],
            "attention": [False, False],
        }
    )
    results = write_study(tmp_path / "crashed", trials)
    tables = build_report(results, plots=False)
    assert tables["pareto"].empty and len(tables["configs"]) == 2
    assert tables["failures"][["kind", "n_trials", "n_configs"]].values.tolist() == [
        ["error", 2, 2]
    ]
    md = (results / "report" / "report.md").read_text()
    assert "configs: 2 error; 0 trained (0 counted runs)" in md
    assert "- n_blocks: not analysed for val_dice: no config has a value of val_dice." in md
