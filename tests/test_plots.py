"""Plots from tiny hand-made tables: what is drawn (points, error bars, fronts, titles, legends)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from unetbench.report.plots import (
    DPI,
    plot_checkpointing,
    plot_dice_vs_memory,
    plot_factor_effects,
    plot_rung_agreement,
    plot_throughput_vs_flops,
)
from unetbench.report.rungs import rank_agreement
from unetbench.studyinfo import Objective

MIB = 2**20
DICE_MEM = (Objective("val_dice", "maximize"), Objective("peak_mem_train_bytes", "minimize"))
THREE = (*DICE_MEM, Objective("train_step_s", "minimize"))


def save(fig: Figure, tmp_path: Path, name: str) -> Path:
    assert fig.dpi == DPI == 150
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000  # a real raster, not an empty canvas
    return path


def configs() -> pd.DataFrame:
    """Eight scored configs (2-D front: 6, 7, 0, 1, 5, 3 by memory), four that are not."""
    mem = [100, 120, 150, 200, 250, 300, 90, 180, 400, 500, 160, np.nan]
    dice = [0.80, 0.85, 0.84, 0.90, 0.88, 0.91, 0.70, 0.86, *[np.nan] * 4]
    half = [0.01, 0.02, 0.015, 0.01, 0.03, 0.02, np.nan, np.nan, *[np.nan] * 4]
    status = ["ok"] * 8 + ["oom", "oom", "capped", "error"]
    df = pd.DataFrame(
        {
            "trial_number": range(12),
            "up_mode": ["transpose", "resize"] * 6,
            "status": status,
            "feasible": [s == "ok" for s in status],
            "n_seeds": [3] * 6 + [1, 1] + [0] * 4,
            "val_dice": dice,
            "val_dice_ci95_low": np.subtract(dice, half),
            "val_dice_ci95_high": np.add(dice, half),
            "peak_mem_train_bytes": np.multiply(mem, MIB),
            "train_step_s": [0.2, 0.3, 0.25, 0.4, 0.1, 0.5, 0.3, 0.3, *[np.nan] * 4],
        }
    )
    df.loc[8:9, "est_peak_mem_train_bytes"] = [400 * MIB, 500 * MIB]
    # Given, not computed: the plot must mark exactly these (config 4 is fastest).
    df["on_pareto_front"] = df["trial_number"].isin([1, 3, 4])
    return df


def rows(points: object) -> np.ndarray:
    """Points as an array sorted by row, to compare sets of points."""
    return np.array(sorted(map(tuple, np.asarray(points, dtype=float))))


def scatter_offsets(fig: Figure, label_start: str) -> np.ndarray:
    ax = fig.axes[0]
    points = next(
        c
        for c in ax.collections
        if isinstance(c, PathCollection) and c.get_label().startswith(label_start)
    )
    return np.asarray(points.get_offsets())


def test_dice_vs_memory_fronts_intervals_and_hidden_configs(tmp_path: Path) -> None:
    df = configs()
    fig = plot_dice_vs_memory(df, objectives=THREE, memory_budget_bytes=350 * MIB)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "peak training memory (MiB)"
    assert ax.get_ylabel() == "validation Dice (mean over seeds)"
    assert ax.get_title() == (
        "Accuracy vs training memory (8 configs; not shown: 2 oom, 1 capped, 1 error)"
    )
    # The 2-D front is a step line through exactly the non-dominated points, by memory.
    (step,) = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    front = df.loc[[6, 0, 1, 7, 3, 5]]
    assert list(step.get_xdata()) == pytest.approx(list(front.peak_mem_train_bytes / MIB))
    assert list(step.get_ydata()) == pytest.approx(list(front.val_dice))
    assert step.get_label() == "Pareto front of these 2 axes only (6)"
    # Diamonds: the front over all objectives as given, including config 4 (dominated here).
    diamonds = scatter_offsets(fig, "Pareto front over all 3 objectives")
    expected = df.loc[[1, 3, 4], ["peak_mem_train_bytes", "val_dice"]].to_numpy() / [MIB, 1]
    assert rows(diamonds) == pytest.approx(rows(expected))
    assert len(scatter_offsets(fig, "feasible configs (8)")) == 8
    # One error bar per config with an interval (configs 6 and 7 have one seed).
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = [b for b in bars.lines[2] if isinstance(b, LineCollection)]
    spans = [(s[0][1], s[1][1]) for s in segments.get_segments()]
    ci = df.loc[:5, ["val_dice_ci95_low", "val_dice_ci95_high"]].to_numpy()
    assert rows(spans) == pytest.approx(rows(ci))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "95% CI over seeds (6 configs with ≥ 2 seeds)" in labels
    assert "Pareto front over all 3 objectives, incl. training step time (3)" in labels
    assert "memory budget (350 MiB)" in labels
    budget = next(line for line in ax.get_lines() if line.get_linestyle() == "--")
    assert budget.get_xdata()[0] == pytest.approx(350)
    save(fig, tmp_path, "dice_vs_memory")


def test_dice_vs_memory_with_two_objectives_draws_one_front() -> None:
    df = configs()
    df["on_pareto_front"] = df["trial_number"].isin([6, 0, 1, 7, 3, 5])
    fig = plot_dice_vs_memory(df, objectives=DICE_MEM)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Pareto front (6)" in labels
    assert not any("axes" in label or "all" in label for label in labels)


def test_dice_vs_memory_names_infeasible_points_and_uses_the_estimate() -> None:
    df = configs().drop(columns="peak_mem_train_bytes")
    df["est_peak_mem_train_bytes"] = np.arange(1, 13) * 100.0 * 2**30
    df.loc[2, ["status", "feasible"]] = ["capped", False]
    fig = plot_dice_vs_memory(df, objectives=DICE_MEM)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "estimated peak training memory (GiB)"
    assert len(scatter_offsets(fig, "infeasible: 1 capped")) == 1
    assert ax.get_title() == (
        "Accuracy vs training memory (8 configs; not shown: 2 oom, 1 capped, 1 error)"
    )


def test_budget_far_beyond_the_configs_stays_in_the_legend() -> None:
    fig = plot_dice_vs_memory(configs(), objectives=DICE_MEM, memory_budget_bytes=64 * 2**30)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "peak training memory (MiB)"  # not squashed into GiB
    assert ax.get_xlim()[1] < 1024
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "memory budget (64 GiB), beyond the x range →" in labels


def test_collapsed_configs_sit_on_the_lower_edge() -> None:
    df = configs()
    df.loc[2, ["val_dice", "val_dice_ci95_low", "val_dice_ci95_high"]] = [0.0, 0.0, 0.01]
    fig = plot_dice_vs_memory(df, objectives=DICE_MEM)
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    edge = next(label for label in labels if label.startswith("Dice < "))
    assert edge.endswith("on the lower edge (1)") and "(lowest 0.00)" in edge
    bottom = ax.get_ylim()[0]
    assert 0.0 < bottom < 0.70  # the axis is not stretched down to 0
    assert "95% CI over seeds (5 configs with ≥ 2 seeds)" in labels  # none on the edge


LEVELS = pd.DataFrame(
    {
        "field": ["up_mode", "up_mode", "merge_mode", "merge_mode", "merge_mode"],
        "value": ["transpose", "resize", "concat", "add", "sum"],
        "n_configs": [6, 6, 4, 4, 1],
        "val_dice": [0.84, 0.88, 0.86, 0.872, 0.85],
        "val_dice_ci95_low": [0.83, 0.86, 0.85, 0.86, np.nan],
        "val_dice_ci95_high": [0.85, 0.90, 0.87, 0.884, np.nan],
    }
)
DIFFERENCES = pd.DataFrame(
    {
        "objective": ["val_dice"] * 3 + ["peak_mem_train_bytes"],
        "field": ["up_mode", "merge_mode", "merge_mode", "up_mode"],
        "option": ["resize", "add", "sum", "resize"],
        "reference": ["transpose", "concat", "concat", "transpose"],
        "design": ["paired", "paired", "unpaired", "paired"],
        "n": [6, 4, 1, 6],
        "diff": [0.04, 0.012, -0.01, 250 * MIB],
        "diff_ci95_low": [0.02, -0.004, np.nan, 200 * MIB],
        "diff_ci95_high": [0.06, 0.028, np.nan, 300 * MIB],
        "distinguishable": [True, False, False, True],
    }
)


def test_factor_effects_points_intervals_and_differences(tmp_path: Path) -> None:
    other = LEVELS.rename(columns=lambda c: c.replace("val_dice", "val_iou"))
    stacked = pd.concat([LEVELS.assign(objective="val_dice"), other.assign(objective="val_iou")])
    fig = plot_factor_effects(stacked, DIFFERENCES, "val_dice")
    up, merge = (ax for ax in fig.axes if ax.get_visible())
    assert [up.get_title(), merge.get_title()] == ["up_mode", "merge_mode"]
    assert fig.get_suptitle() == (
        "Effect of each searched field on validation Dice (mean over configs, 95% CI)"
    )
    for ax, n_points, n_bars in ((up, 2, 2), (merge, 3, 2)):
        assert ax.get_ylabel() == "validation Dice"
        assert not ax.patches  # points, not bars from 0
        (points,) = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert len(points.get_xdata()) == n_points
        (bars,) = ax.containers
        assert isinstance(bars, ErrorbarContainer)
        assert len(bars.lines[2][0].get_segments()) == n_bars
        assert ax.get_ylim()[0] > 0.8  # the axis spans the data, not 0
    assert up.get_xlabel() == (
        "resize − transpose: +0.040 [+0.020, +0.060]\ndistinguishable (paired, n=6)"
    )
    assert merge.get_xlabel().splitlines() == [
        "add − concat: +0.012 [−0.004, +0.028]",
        "within seed noise (paired, n=4)",
        "sum − concat: −0.010",
        "no interval (unpaired, n=1)",
    ]
    assert [t.get_text() for t in merge.get_xticklabels()] == [
        "concat\n(n=4)",
        "add\n(n=4)",
        "sum\n(n=1)",
    ]
    save(fig, tmp_path, "effects_dice")


def test_factor_effects_in_bytes_gives_levels_and_differences_their_own_units() -> None:
    levels = pd.DataFrame(
        {
            "field": ["up_mode", "up_mode"],
            "value": ["transpose", "resize"],
            "n_configs": [6, 6],
            "peak_mem_train_bytes": [2048 * MIB, 2298 * MIB],
            "peak_mem_train_bytes_ci95_low": [1900 * MIB, 2100 * MIB],
            "peak_mem_train_bytes_ci95_high": [2200 * MIB, 2500 * MIB],
        }
    )
    fig = plot_factor_effects(levels, DIFFERENCES, "peak_mem_train_bytes")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "peak training memory (GiB)"
    assert ax.get_xlabel() == (
        "resize − transpose: +250 MiB [+200, +300]\ndistinguishable (paired, n=6)"
    )
    assert fig.get_suptitle() == (  # one panel: too narrow for the title on one line
        "Effect of each searched field on peak training memory (GiB)\n(mean over configs, 95% CI)"
    )
    # Memory does not vary with the seed: an interval around 0 is not called seed noise.
    same = DIFFERENCES.iloc[[3]].assign(distinguishable=False, diff_ci95_low=-50.0 * MIB)
    text = plot_factor_effects(levels, same, "peak_mem_train_bytes").axes[0].get_xlabel()
    assert text.endswith("\nnot distinguishable (paired, n=6)")


def savings(n: int) -> pd.DataFrame:
    saved = np.linspace(60, 5, n)
    none = np.full(n, 400.0 * MIB)
    return pd.DataFrame(
        {
            "label": [f"up_mode=transpose, merge_mode=concat, base_channels={i}" for i in range(n)],
            "checkpointing": "blocks",
            "peak_mem_none_bytes": none,
            "peak_mem_bytes": none * (1 - saved / 100),
            "mem_saved_pct": saved,
            "train_step_none_s": 0.1,
            "train_step_s": 0.13,
            "step_time_added_pct": 30.0,
            "train_step_none_iqr_s": [np.nan] + [0.01] * (n - 1),
            "train_step_iqr_s": 0.02,
            "memory_column": "peak_mem_train_bytes",
        }
    )


def test_checkpointing_names_what_it_leaves_out(tmp_path: Path) -> None:
    fig = plot_checkpointing(savings(22), max_configs=15)
    mem_ax, time_ax = fig.axes
    assert mem_ax.get_xlabel() == "peak training memory (MiB)"
    assert time_ax.get_xlabel() == "training step time (ms)"
    assert len(mem_ax.get_yticklabels()) == 15
    assert "base_channels=0 [blocks]" in mem_ax.get_yticklabels()[-1].get_text()  # largest on top
    assert fig.get_suptitle().splitlines()[1] == (
        "15 of 22 configs shown (largest memory saving); "
        "left out: 7, listed in report/checkpointing.csv"
    )
    # Step-time bars carry the IQR (half each side), memory bars none.
    mem_bars = [c for c in mem_ax.containers if isinstance(c, BarContainer)]
    time_bars = [c for c in time_ax.containers if isinstance(c, BarContainer)]
    assert [b.errorbar for b in mem_bars] == [None, None]
    with_cp = time_bars[1].errorbar
    assert with_cp is not None
    (segments,) = with_cp.lines[2]
    widths = [s[1][0] - s[0][0] for s in segments.get_segments()]
    assert widths == pytest.approx([20.0] * 15)  # ms
    assert all(t.get_text() == "+30%" for t in time_ax.texts)
    assert all(t.get_text().startswith("−") for t in mem_ax.texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["no checkpointing", "with checkpointing"]
    save(fig, tmp_path, "checkpointing_cut")


def test_checkpointing_shows_all_when_they_fit(tmp_path: Path) -> None:
    table = savings(22)
    table["train_step_iqr_s"] = np.nan  # old records: no spread measured
    fig = plot_checkpointing(table)
    mem_ax, time_ax = fig.axes
    assert len(mem_ax.get_yticklabels()) == 22
    assert fig.get_suptitle().endswith("\nall 22 configs shown")
    assert time_ax.get_title() == "Training step time (median, error bar: IQR of timed steps)"
    save(fig, tmp_path, "checkpointing_all")


def throughput_configs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_number": [0, 1, 2, 3],
            "status": ["ok", "ok", "ok", "oom"],
            "train_flops": [10e9, 20e9, 40e9, np.nan],
            "train_voxels_per_s__none": [4e6, 2e6, 1e6, np.nan],
            "train_voxels_per_s__blocks": [3e6, 1.5e6, np.nan, np.nan],
            "train_flops__none": [10e9, 20e9, 40e9, np.nan],
            "train_flops__blocks": [13e9, 26e9, np.nan, np.nan],
        }
    )


def test_throughput_one_series_per_mode(tmp_path: Path) -> None:
    fig = plot_throughput_vs_flops(throughput_configs())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training FLOPs per step (GFLOP)"
    assert ax.get_ylabel() == "training throughput (voxels/s)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["checkpointing=none (3)", "checkpointing=blocks (2)"]
    blocks = scatter_offsets(fig, "checkpointing=blocks")
    assert blocks == pytest.approx(np.array([[13, 3e6], [26, 1.5e6]]))
    save(fig, tmp_path, "throughput")


def test_throughput_falls_back_to_the_single_flops_column() -> None:
    old = throughput_configs().drop(columns=["train_flops__none", "train_flops__blocks"])
    fig = plot_throughput_vs_flops(old)
    blocks = scatter_offsets(fig, "checkpointing=blocks")
    assert blocks == pytest.approx(np.array([[10, 3e6], [20, 1.5e6]]))
    single = pd.DataFrame(
        {
            "status": ["ok", "ok"],
            "checkpointing": ["none", "blocks"],
            "train_flops": [10e9, 20e9],
            "train_voxels_per_s": [4e6, 2e6],
        }
    )
    labels = [t.get_text() for t in plot_throughput_vs_flops(single).axes[0].get_legend().texts]
    assert labels == ["checkpointing=none (1)", "checkpointing=blocks (1)"]


def test_throughput_timed_under_load_is_drawn_hollow_and_named(tmp_path: Path) -> None:
    df = throughput_configs()
    df["timing_note__none"] = ["", "waited for a CPU 30% of the time", "", ""]
    fig = plot_throughput_vs_flops(df)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "checkpointing=none (2)",
        "checkpointing=none, timed under load (1)",
        "checkpointing=blocks (2)",
    ]
    hollow = scatter_offsets(fig, "checkpointing=none, timed under load")
    assert hollow == pytest.approx(np.array([[20, 2e6]]))
    assert ax.get_title().endswith("hollow: 1 timed under load, not results (see timing_note)")
    save(fig, tmp_path, "throughput_under_load")


def test_checkpointing_time_under_load_has_no_percentage(tmp_path: Path) -> None:
    table = savings(4)
    table["timing_note"] = ["", "none: load average 4 on 2 CPUs", "", ""]
    table.loc[1, "step_time_added_pct"] = np.nan  # as checkpointing_savings leaves it
    fig = plot_checkpointing(table)
    _, time_ax = fig.axes
    texts = sorted(t.get_text() for t in time_ax.texts)
    assert texts == ["+30%", "+30%", "+30%", "timed under load"]
    assert fig.get_suptitle().splitlines()[1] == (
        "all 4 configs shown; 1 timed under load: their step time change is not a result"
    )
    save(fig, tmp_path, "checkpointing_under_load")


def test_rung_agreement_has_one_panel_per_pair_of_consecutive_rungs(tmp_path: Path) -> None:
    """Six configs at 40 steps, three promoted to 160 (tau over 3), one to 640 (no tau)."""
    dice = {0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1: {3: 0.5, 4: 0.7, 5: 0.6}, 2: {4: 0.8}}
    rows = [{"config_key": f"c{i}", "trial_number": i, "rung": 0, "train_steps": 40, "val_dice": v}
            for i, v in enumerate(dice[0])]  # fmt: skip
    rows += [{"config_key": f"c{i}", "trial_number": i, "rung": k, "train_steps": 40 * 4**k,
              "val_dice": v} for k in (1, 2) for i, v in dice[k].items()]  # fmt: skip
    ladder = pd.DataFrame(rows)
    agreement = rank_agreement(ladder, (40, 160, 640))
    fig = plot_rung_agreement(ladder, agreement)
    first, second = fig.axes
    low, high = agreement.loc[0, ["tau_ci95_low", "tau_ci95_high"]]
    assert first.get_title() == (
        f"40 → 160 steps\ntau = {agreement.loc[0, 'kendall_tau']:.2f} [{low:.2f}, {high:.2f}], "
        "3 configs"
    )
    assert second.get_title() == "160 → 640 steps\ntau not computed (1 config)"
    points = first.collections[0].get_offsets()
    assert np.asarray(points).tolist() == [[0.4, 0.5], [0.5, 0.7], [0.6, 0.6]]
    assert sorted(t.get_text() for t in first.texts) == ["3", "4", "5"]
    legend = [t.get_text() for t in first.get_legend().get_texts()]
    assert legend == ["reached both (3)", "not promoted (3)", "same Dice"]
    ticks = next(line for line in first.lines if line.get_label() == "not promoted (3)")
    assert list(ticks.get_xdata()) == [0.1, 0.2, 0.3]  # the configs left at 40 steps
    assert first.get_xlabel() == "val_dice at 40 steps (rung 0)"
    save(fig, tmp_path, "rung_agreement")
