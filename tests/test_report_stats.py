"""Seed statistics of the report, checked against numbers worked out by hand.

Student-t quantiles come from printed tables: t(0.975, 1) = 12.706, t(0.975, 2) = 4.303,
t(0.975, 3) = 3.182.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from unetbench.report.configs import config_table, overlapping
from unetbench.report.stats import (
    config_accuracy,
    mean_interval,
    option_differences,
    option_levels,
    seed_noise,
)
from unetbench.studyinfo import Objective


def test_mean_interval_by_hand() -> None:
    mean, low, high, n = mean_interval([0.80, 0.82, 0.84])
    # std = 0.02, half width = 4.303 * 0.02 / sqrt(3) = 0.04969
    assert (mean, n) == (pytest.approx(0.82), 3)
    assert low == pytest.approx(0.82 - 0.04969, abs=2e-5)
    assert high == pytest.approx(0.82 + 0.04969, abs=2e-5)


def test_mean_interval_needs_two_values() -> None:
    mean, low, high, n = mean_interval([0.7, float("nan")])
    assert mean == 0.7 and n == 1 and math.isnan(low) and math.isnan(high)
    assert math.isnan(mean_interval([])[0])


def runs_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "config_key": ["a", "a", "a", "b", "b", "c"],
            "train_seed": [3, 1, 2, 1, 2, 1],
            "capped": [False, False, False, False, True, False],
            "val_dice": [0.80, 0.82, 0.84, 0.5, 0.1, 0.9],
        }
    )


def test_config_accuracy_leaves_capped_runs_out() -> None:
    acc = config_accuracy(runs_table(), ["val_dice"]).set_index("config_key")
    assert acc.loc["a", "n_seeds"] == 3 and acc.loc["a", "seeds"] == "1,2,3"
    assert acc.loc["a", "val_dice_std"] == pytest.approx(0.02)
    assert acc.loc["b", "n_seeds"] == 1 and acc.loc["b", "val_dice"] == 0.5
    assert math.isnan(acc.loc["b", "val_dice_ci95_low"])


def test_seed_noise_pools_repeated_configs_only() -> None:
    runs = pd.DataFrame(
        {"config_key": ["a", "a", "b", "b", "c"], "val_dice": [0.1, 0.3, 0.5, 0.5, 0.9]}
    )
    est = seed_noise(runs, "val_dice")
    # squares: 0.02 (a) + 0 (b); 2 degrees of freedom -> sqrt(0.01) = 0.1
    assert est == {"std": pytest.approx(0.1), "configs": 2.0, "dof": 2.0}
    assert math.isnan(seed_noise(runs[runs.config_key == "c"], "val_dice")["std"])


def grid() -> pd.DataFrame:
    """Four configs of a 2x2 design; attention adds exactly +0.02 or +0.04 in each context."""
    return pd.DataFrame(
        {
            "attention": [False, True, False, True],
            "merge_mode": ["concat", "concat", "add", "add"],
            "val_dice": [0.80, 0.82, 0.70, 0.74],
        }
    )


def test_paired_difference_by_hand() -> None:
    diff = option_differences(grid(), ["attention", "merge_mode"], "val_dice").set_index("field")
    att = diff.loc["attention"]
    # pairs: +0.02 and +0.04: mean 0.03, std 0.014142, half = 12.706 * 0.014142 / sqrt(2)
    assert (att["design"], att["n"], att["option"], att["reference"]) == (
        "paired",
        2,
        "True",
        "False",
    )
    assert att["diff"] == pytest.approx(0.03)
    assert att["diff_ci95_high"] - att["diff"] == pytest.approx(0.12706, abs=2e-5)
    assert not att["distinguishable"]
    merge = diff.loc["merge_mode"]
    assert merge["option"] == "add" and merge["diff"] == pytest.approx(-0.09)


def test_reference_comes_from_the_study_order_and_a_clear_effect_is_distinguishable() -> None:
    data = pd.concat([grid()] * 3, ignore_index=True)
    data["start_filts"] = [8] * 4 + [16] * 4 + [32] * 4
    data["val_dice"] = data["val_dice"] + data["start_filts"] / 1000
    diff = option_differences(
        data,
        ["attention", "merge_mode", "start_filts"],
        "val_dice",
        order={"merge_mode": ["add", "concat"]},
    ).set_index(["field", "option"])
    merge = diff.loc[("merge_mode", "concat")]
    assert merge["reference"] == "add" and merge["n"] == 6
    # each concat config is 0.10 or 0.08 above its add twin: interval well above 0
    assert merge["diff"] == pytest.approx(0.09) and merge["distinguishable"]


def test_unpaired_when_the_design_has_no_pairs() -> None:
    data = pd.DataFrame(
        {
            "up_mode": ["transpose", "transpose", "resize", "resize"],
            "merge_mode": ["concat", "add", "concat", "concat"],
            "val_dice": [0.8, 0.7, 0.75, 0.77],
        }
    )
    row = option_differences(data, ["up_mode", "merge_mode"], "val_dice").iloc[0]
    assert row["design"] == "unpaired" and row["n"] == 2
    assert row["diff"] == pytest.approx(0.76 - 0.75)


def test_option_levels() -> None:
    levels = option_levels(grid(), ["merge_mode"], "val_dice").set_index("value")
    assert levels.loc["add", "n_configs"] == 2
    assert levels.loc["add", "val_dice"] == pytest.approx(0.72)


def test_config_table_uses_seed_means_for_the_front() -> None:
    trials = pd.DataFrame(
        {
            "trial_number": [0, 1, 2, 3],
            "role": ["search", "search", "confirm", "search"],
            "config_key": ["a", "b", "a", "c"],
            "status": ["ok", "ok", "ok", "oom"],
            "trial_state": "COMPLETE",
            "feasible": [True, True, True, False],
            "val_dice": [0.95, 0.85, 0.70, float("nan")],
            "peak_mem_train_bytes": [200.0, 100.0, 200.0, 900.0],
        }
    )
    runs = pd.DataFrame(
        {
            "config_key": ["a", "b", "a", "a"],
            "train_seed": [0, 0, 1, 2],
            "val_dice": [0.95, 0.85, 0.70, 0.72],
        }
    )
    objectives = [Objective("val_dice", "maximize"), Objective("peak_mem_train_bytes", "minimize")]
    table = config_table(trials, runs, objectives).set_index("config_key")
    assert list(table.index) == ["a", "b", "c"]  # the confirm trial is not a config of its own
    assert table.loc["a", "n_seeds"] == 3
    assert table.loc["a", "val_dice"] == pytest.approx((0.95 + 0.70 + 0.72) / 3)
    # a's mean (0.79) is below b's 0.85 at twice the memory: only b is on the front
    assert table["on_pareto_front"].to_dict() == {"a": False, "b": True, "c": False}


def test_overlapping_intervals() -> None:
    front = pd.DataFrame(
        {
            "trial_number": [1, 2, 3, 4],
            "val_dice_ci95_low": [0.80, 0.84, 0.90, float("nan")],
            "val_dice_ci95_high": [0.85, 0.88, 0.95, float("nan")],
        }
    )
    assert list(overlapping(front, "val_dice")) == ["2", "1", "none", "1 seed"]


def test_dice_intervals_stay_within_what_dice_can_be() -> None:
    """One collapsed seed widens the t-interval past 1.0; the report clips it to [0, 1]."""
    runs = pd.DataFrame({"config_key": ["a"] * 3, "val_dice": [0.9, 0.92, 0.1]})
    raw = config_accuracy(runs, ["val_dice"]).iloc[0]
    clipped = config_accuracy(runs, ["val_dice"], {"val_dice": (0.0, 1.0)}).iloc[0]
    assert raw["val_dice_ci95_high"] > 1.0 and raw["val_dice_ci95_low"] < 0.0
    assert (clipped["val_dice_ci95_low"], clipped["val_dice_ci95_high"]) == (0.0, 1.0)
    assert clipped["val_dice"] == raw["val_dice"]


def test_option_levels_follow_the_study_order() -> None:
    levels = option_levels(grid(), ["attention"], "val_dice", {"attention": ["False", "True"]})
    assert list(levels["value"]) == ["False", "True"]
    assert list(option_levels(grid().iloc[::-1], ["attention"], "val_dice")["value"]) == [
        "True",
        "False",
    ]


def test_config_accuracy_counts_diverged_runs_and_says_what_each_run_was() -> None:
    """The one seed mean (unetbench.seeds): ok and diverged runs count, capped and failed
    ones do not; ``run_status`` tells a diverged 0 from a real 0."""
    runs = pd.DataFrame(
        {
            "config_key": ["a", "a", "a", "a", "b"],
            "train_seed": [1, 2, 3, 4, 1],
            "status": ["ok", "diverged", "ok", "error", "ok"],
            "capped": [False, False, True, False, False],
            "val_dice": [0.8, 0.0, 0.9, None, 0.0],
        }
    )
    acc = config_accuracy(runs, ["val_dice"]).set_index("config_key")
    assert acc.loc["a", "n_seeds"] == 2 and acc.loc["a", "seeds"] == "1,2"
    assert acc.loc["a", "val_dice"] == pytest.approx(0.4)  # (0.8 + 0.0) / 2
    # std = 0.5657, half width = 12.706 * 0.5657 / sqrt(2) = 5.082
    assert acc.loc["a", "val_dice_ci95_low"] == pytest.approx(0.4 - 5.0825, abs=1e-3)
    assert (
        acc.loc["a", "run_status"]
        == "1 diverged, 1 ok, 1 capped (not counted), 1 error (not counted)"
    )
    assert acc.loc["b", "run_status"] == "1 ok" and acc.loc["b", "val_dice"] == 0.0
    assert seed_noise(runs, "val_dice")["configs"] == 1.0  # only "a" has two counted runs


def test_a_field_that_cannot_be_compared_says_why() -> None:
    configs = grid().assign(n_blocks=[2, 2, 2, 2])
    order = {"n_blocks": ["2", "3"], "merge_mode": ["concat", "add"]}
    diff = option_differences(configs, ["n_blocks", "merge_mode", "depth"], "val_dice", order)
    skipped = diff[diff["design"] == "not analysed"].set_index("field")["note"].to_dict()
    assert skipped == {
        "n_blocks": "only configs with n_blocks = 2 have a value of val_dice; "
        "n_blocks = 3: no value",
        "depth": "the records have no such column",
    }
    assert diff.loc[diff["field"] == "merge_mode", "note"].tolist() == [""]
