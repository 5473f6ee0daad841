"""Plots of trial/profile records: each function returns a matplotlib Figure; callers save it.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision
deficiencies) and series also differ by marker or hatch, so the plots survive greyscale
printing. Figures are built with ``matplotlib.figure.Figure``, not pyplot: they render with the
Agg canvas whatever the user's backend is, hold no global state and never open a window.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from unetbench.report._study import Objective
from unetbench.report._units import label_for, scale_for
from unetbench.report.tables import (
    checkpointing_savings,
    memory_column,
    natural_key,
    pareto_mask,
    usable_mask,
)

__all__ = [
    "OKABE_ITO",
    "plot_checkpointing",
    "plot_dice_vs_memory",
    "plot_factor_effects",
    "plot_throughput_vs_flops",
]

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
# 500,000 rather than 500000 or 5e5; small values keep matplotlib's own precision.
_THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:g}")
_SERIES = ["blue", "orange", "green", "vermillion", "purple", "sky_blue", "black"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    # Figure() directly (not pyplot): no global state, nothing to close.
    return Figure(figsize=(width, height), layout="constrained", dpi=110)


def plot_dice_vs_memory(
    records: pd.DataFrame,
    *,
    objectives: Sequence[Objective] | None = None,
    memory_budget_bytes: float | None = None,
    dice: str = "val_dice",
    memory: str | None = None,
) -> Figure:
    """Validation Dice against peak training memory; Pareto front highlighted, budget drawn.

    The front is computed over ``objectives`` (default: Dice maximised, memory minimised);
    when those are exactly these two axes it is drawn as a staircase.
    """
    memory = memory or memory_column(records)
    objectives = list(objectives or [Objective(dice, "maximize"), Objective(memory, "minimize")])
    done = records[usable_mask(records, feasible_only=False)]
    done = done[done[dice].notna() & done[memory].notna()]
    infeasible = ~usable_mask(done)
    on_front = pareto_mask(records, objectives)[done.index]
    top = float(done[memory].max()) if len(done) else 0.0
    # A budget far beyond every trial would squash the points against the y axis: name it in
    # the legend instead of stretching the axis to it.
    budget_on_axis = memory_budget_bytes is not None and (not top or memory_budget_bytes <= 3 * top)
    shown_budget = float(memory_budget_bytes) if budget_on_axis and memory_budget_bytes else 0.0
    divisor, xlabel = label_for(memory, [top, shown_budget])

    # A few collapsed trials (Dice near 0) would squash the others into a line at the top:
    # they are drawn as down-pointing triangles on the lower edge instead.
    floor = _low_outlier_floor(done[dice])
    y = done[dice] if floor is None else done[dice].clip(lower=floor)
    low = done[dice] < floor if floor is not None else pd.Series(False, index=done.index)

    fig = _figure()
    ax = fig.add_subplot()
    rest = done[~infeasible & ~on_front]
    ax.scatter(
        rest[memory] / divisor,
        y[rest.index],
        s=28,
        color=OKABE_ITO["blue"],
        alpha=0.75,
        marker="o",
        label=f"feasible trials ({len(rest) + int(on_front.sum())})",
    )
    bad = done[infeasible]
    if len(bad):
        ax.scatter(
            bad[memory] / divisor,
            y[bad.index],
            s=36,
            color=OKABE_ITO["vermillion"],
            marker="x",
            label=f"infeasible trials ({len(bad)})",
        )
    front = done[on_front].sort_values(memory)
    staircase = {o.column for o in objectives} == {dice, memory}
    if staircase and len(front) > 1:
        ax.step(
            front[memory] / divisor,
            y[front.index],
            where="post",
            color=OKABE_ITO["orange"],
            linewidth=1.8,
            zorder=2,
        )
    over = "" if staircase else f" over all {len(objectives)} objectives"
    ax.scatter(
        front[memory] / divisor,
        y[front.index],
        s=80,
        color=OKABE_ITO["orange"],
        edgecolor="black",
        marker="D",
        zorder=3,
        label=f"Pareto front{over} ({len(front)})",
    )
    if low.any():
        ax.scatter(
            done.loc[low, memory] / divisor,
            y[low],
            s=110,
            facecolor="none",
            edgecolor=OKABE_ITO["black"],
            marker="v",
            zorder=4,
            label=f"Dice < {floor:.2f} (lowest {done[dice].min():.2f}), on the lower edge "
            f"({int(low.sum())})",
        )
    if memory_budget_bytes is not None:
        budget_div, budget_unit = scale_for(memory, [memory_budget_bytes])
        budget_text = f"memory budget ({memory_budget_bytes / budget_div:.3g} {budget_unit})"
        style: dict[str, Any] = {"color": OKABE_ITO["black"], "linestyle": "--", "linewidth": 1.2}
        if budget_on_axis:
            ax.axvline(memory_budget_bytes / divisor, label=budget_text, **style)
        else:  # legend entry only
            ax.plot([], [], label=f"{budget_text}, beyond the x range →", **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label_for(dice, [])[1])
    ax.set_title(_dice_title(records, len(done)), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    # Below the axes, where it cannot cover a point.
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def _low_outlier_floor(values: pd.Series) -> float | None:
    """Lower y limit that leaves out far low outliers (below Q1 - 3 IQR), or None if none."""
    if len(values) < 5:
        return None
    q1, q3 = values.quantile([0.25, 0.75])
    spread = max(q3 - q1, 0.01)
    inliers = values[values >= q1 - 3 * spread]
    if len(inliers) == len(values):
        return None
    return float(inliers.min() - 0.5 * spread)


def _dice_title(records: pd.DataFrame, shown: int) -> str:
    """Title naming what the plot leaves out: unscored trials and repeats of a config."""
    repeats = int(records["reused_from"].notna().sum()) if "reused_from" in records else 0
    unscored = len(records) - shown - repeats
    parts = [f"{unscored} failed/unscored"] if unscored else []
    parts += [f"{repeats} repeated config{'s' if repeats > 1 else ''}"] if repeats else []
    hidden = f"; not shown: {', '.join(parts)}" if parts else ""
    return f"Accuracy vs training memory ({shown} trials{hidden})"


def plot_checkpointing(records_or_savings: pd.DataFrame, *, max_configs: int = 15) -> Figure:
    """Peak training memory and step time with and without checkpointing, one row per config.

    Accepts the records (savings are computed) or the table from ``checkpointing_savings``.
    """
    savings = records_or_savings
    if "mem_saved_pct" not in savings.columns:
        savings = checkpointing_savings(savings)
    savings = savings.head(max_configs).iloc[::-1]
    # Long config labels wrap onto two or three lines instead of squashing the panels.
    labels = [
        textwrap.fill(f"{lab} [{mode}]", width=48)
        for lab, mode in zip(savings["label"], savings["checkpointing"], strict=True)
    ]
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    y = np.arange(len(savings))
    height = max(2.5, (0.3 + 0.15 * lines) * len(savings) + 1.8)
    fig = _figure(11.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    # (record column for units, baseline column, checkpointed column, change in % vs none)
    panels = [
        (
            "peak_mem_train_bytes",
            "peak_mem_none_bytes",
            "peak_mem_bytes",
            -savings["mem_saved_pct"],
        ),
        ("train_step_s", "train_step_none_s", "train_step_s", savings["step_time_added_pct"]),
    ]
    for ax, (unit_column, base, cp, change) in zip(axes, panels, strict=True):
        none = savings[base].to_numpy(dtype=float)
        with_cp = savings[cp].to_numpy(dtype=float)
        divisor, xlabel = label_for(unit_column, [*none, *with_cp])
        ax.barh(
            y + 0.2,
            none / divisor,
            height=0.4,
            color=OKABE_ITO["sky_blue"],
            label="no checkpointing",
        )
        ax.barh(
            y - 0.2,
            with_cp / divisor,
            height=0.4,
            color=OKABE_ITO["blue"],
            hatch="//",
            edgecolor="white",
            label="with checkpointing",
        )
        for yi, value, pct in zip(y, with_cp / divisor, change, strict=True):
            if math.isfinite(value) and math.isfinite(pct):
                ax.annotate(
                    f"{pct:+.0f}%".replace("-", "−"),
                    (value, yi - 0.2),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].set_title("Peak training memory", fontsize=10)
    axes[1].set_title("Training step time", fontsize=10)
    fig.suptitle("Gradient checkpointing per config (bar labels: change vs none)", fontsize=11)
    handles, names = axes[1].get_legend_handles_labels()
    # Below the panels, so it never covers a bar.
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def plot_throughput_vs_flops(
    records: pd.DataFrame,
    *,
    flops: str = "train_flops",
    throughput: str = "train_voxels_per_s",
    by: str = "checkpointing",
) -> Figure:
    """Training throughput (voxels/s) against FLOPs per step, log-log, one series per ``by``."""
    done = records[usable_mask(records, feasible_only=False)]
    done = done[done[flops].notna() & done[throughput].notna()]
    fdiv, xlabel = label_for(flops, done[flops])
    _, ylabel = label_for(throughput, done[throughput])
    fig = _figure()
    ax = fig.add_subplot()
    groups: list[tuple[object, pd.DataFrame]] = [("all", done)]
    if by in done.columns:
        groups = sorted(done.groupby(done[by].astype(str)), key=lambda g: natural_key(g[0]))
    for i, (name, group) in enumerate(groups):
        ax.scatter(
            group[flops] / fdiv,
            group[throughput],
            s=32,
            alpha=0.8,
            color=OKABE_ITO[_SERIES[i % len(_SERIES)]],
            marker=_MARKERS[i % len(_MARKERS)],
            label=f"{by}={name} ({len(group)})" if by in done.columns else str(name),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Training throughput vs compute per step", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if len(done):
        ax.legend(fontsize=9, framealpha=0.9)
    return fig


def plot_factor_effects(effects: pd.DataFrame, objective: str, *, ncols: int = 3) -> Figure:
    """Mean ± std of one objective for each value of each searched field (one panel per field).

    ``effects`` is the table from :func:`unetbench.report.tables.factor_effects`.
    """
    mean, std = f"{objective}_mean", f"{objective}_std"
    fields = list(dict.fromkeys(effects["field"]))
    ncols = max(1, min(ncols, len(fields)))
    nrows = max(1, math.ceil(len(fields) / ncols))
    divisor, ylabel = label_for(objective, effects[mean] if mean in effects.columns else [])
    fig = _figure(3.6 * ncols, 2.8 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, name in zip(axes, fields, strict=False):
        rows = effects[effects["field"] == name]
        x = np.arange(len(rows))
        ax.bar(
            x,
            rows[mean] / divisor,
            yerr=rows[std] / divisor,  # no bar for a single trial (std NaN)
            capsize=4,
            color=OKABE_ITO["sky_blue"],
            edgecolor=OKABE_ITO["blue"],
            error_kw={"ecolor": OKABE_ITO["black"], "elinewidth": 1},
        )
        ticks = [f"{v}\n(n={n})" for v, n in zip(rows["value"], rows["n"], strict=True)]
        ax.set_xticks(x, ticks, fontsize=8, rotation=30 if len(rows) > 4 else 0)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.yaxis.set_major_formatter(_THOUSANDS)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(fields) :]:
        ax.set_visible(False)
    fig.suptitle(f"Effect of each searched field on {ylabel} (mean ± std)", fontsize=11)
    return fig
