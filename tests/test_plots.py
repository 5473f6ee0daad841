"""Plots from synthetic records: each returns a Figure with labelled axes, units and legends."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from test_report import DICE_MEM, MIB, make_trials

from unetbench.report import build_report, checkpointing_savings, factor_effects
from unetbench.report.plots import (
    OKABE_ITO,
    plot_checkpointing,
    plot_dice_vs_memory,
    plot_factor_effects,
    plot_throughput_vs_flops,
)


def save(fig: Figure, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000  # a real raster, not an empty canvas
    return path


def test_dice_vs_memory_front_budget_and_units(tmp_path: Path) -> None:
    df = make_trials()
    fig = plot_dice_vs_memory(df, objectives=DICE_MEM, memory_budget_bytes=150 * MIB)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "peak training memory (MiB)"
    assert ax.get_ylabel() == "validation Dice"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    n_front = int(
        (df.status.eq("ok") & df.trial_state.eq("COMPLETE") & df.feasible.astype(bool)).sum()
    )
    assert any(lab.startswith("Pareto front (") for lab in labels)
    assert "memory budget (150 MiB)" in labels
    assert any(lab.startswith("infeasible trials") for lab in labels)
    assert any(lab == f"feasible trials ({n_front})" for lab in labels)
    budget_line = next(line for line in ax.get_lines() if line.get_linestyle() == "--")
    assert budget_line.get_xdata()[0] == pytest.approx(150)
    colours = {to_hex(c.get_facecolor()[0]).upper() for c in ax.collections}
    assert colours <= {v.upper() for v in OKABE_ITO.values()}
    save(fig, tmp_path, "dice_vs_memory")


def test_dice_vs_memory_switches_to_gib() -> None:
    df = make_trials()
    df["peak_mem_train_bytes"] *= 100
    fig = plot_dice_vs_memory(df, memory_budget_bytes=16 * 2**30)
    assert fig.axes[0].get_xlabel() == "peak training memory (GiB)"


def test_checkpointing_panels(tmp_path: Path) -> None:
    df = make_trials()
    fig = plot_checkpointing(df)  # records in, savings computed
    mem_ax, time_ax = fig.axes
    assert mem_ax.get_xlabel() == "peak training memory (MiB)"
    assert time_ax.get_xlabel() == "training step time (ms)"
    savings = checkpointing_savings(df)
    assert len(mem_ax.get_yticklabels()) == min(15, len(savings))
    notes = [t.get_text() for t in mem_ax.texts]
    assert all(n.startswith("−") and n.endswith("%") for n in notes)
    assert all(t.get_text().startswith("+") for t in time_ax.texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["no checkpointing", "with checkpointing"]
    save(fig, tmp_path, "checkpointing")


def test_throughput_vs_flops(tmp_path: Path) -> None:
    fig = plot_throughput_vs_flops(make_trials())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training FLOPs per step (GFLOP)"
    assert ax.get_ylabel() == "training throughput (voxels/s)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = {t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()}
    assert legend == {"checkpointing=none", "checkpointing=blocks"}
    save(fig, tmp_path, "throughput")


def test_factor_effects_one_panel_per_field(tmp_path: Path) -> None:
    effects = factor_effects(make_trials(), DICE_MEM)
    fig = plot_factor_effects(effects, "peak_mem_train_bytes")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(dict.fromkeys(effects["field"]))
    assert all(ax.get_ylabel() == "peak training memory (MiB)" for ax in visible)
    save(fig, tmp_path, "effects")


def test_build_report_writes_pngs(tmp_path: Path) -> None:
    make_trials().to_parquet(tmp_path / "trials.parquet")
    build_report(tmp_path, objectives=DICE_MEM, memory_budget="150MiB")
    names = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert names == [
        "checkpointing.png",
        "dice_vs_memory.png",
        "factor_effects_peak_mem_train_bytes.png",
        "factor_effects_val_dice.png",
        "throughput_vs_flops.png",
    ]
    assert "![dice_vs_memory](dice_vs_memory.png)" in (tmp_path / "report/report.md").read_text()


def test_budget_far_beyond_the_trials_stays_in_the_legend() -> None:
    fig = plot_dice_vs_memory(make_trials(), memory_budget_bytes=64 * 2**30)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "peak training memory (MiB)"  # not squashed into GiB
    assert ax.get_xlim()[1] < 1024
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "memory budget (64 GiB), beyond the x range →" in labels


def test_collapsed_trials_sit_on_the_lower_edge_and_the_title_counts_what_is_hidden() -> None:
    df = make_trials()
    ok = df.index[df.status.eq("ok") & df.trial_state.eq("COMPLETE")]
    df.loc[ok[:2], "val_dice"] = 0.0  # two trials that learned nothing
    repeat = df.loc[[ok[5]]].assign(trial_number=999, reused_from=float(ok[5]))
    df = pd.concat([df, repeat], ignore_index=True)
    fig = plot_dice_vs_memory(df, objectives=DICE_MEM)
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    edge = next(lab for lab in labels if lab.startswith("Dice < "))
    assert edge.endswith("on the lower edge (2)") and "(lowest 0.00)" in edge
    others = df.loc[ok[2:], "val_dice"]
    bottom = ax.get_ylim()[0]
    assert 0.0 < bottom < others.min()  # the axis is not stretched down to 0
    assert ax.get_ylim()[1] - bottom < 0.5
    shown = int((df.reused_from.isna() & df.status.eq("ok") & df.trial_state.eq("COMPLETE")).sum())
    n_failed = len(df) - shown - 1
    assert ax.get_title() == (
        f"Accuracy vs training memory ({shown} trials; not shown: {n_failed} failed/unscored, "
        "1 repeated config)"
    )


def test_no_outliers_no_edge_marker() -> None:
    fig = plot_dice_vs_memory(make_trials(), objectives=DICE_MEM)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any(lab.startswith("Dice < ") for lab in labels)
    assert any(lab.startswith("Pareto front (") for lab in labels)  # staircase: 2 objectives
