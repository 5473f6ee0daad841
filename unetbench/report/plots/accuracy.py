"""Accuracy against training memory, one point per config with its 95% interval."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from unetbench.report._units import label_for, scale_for
from unetbench.report.plots._style import (
    OKABE_ITO,
    figure,
    infeasible_label,
    short_name,
    status_words,
)
from unetbench.report.tables import (
    memory_column,
    pareto_mask,
    usable_mask,
)
from unetbench.studyinfo import Objective

__all__ = ["plot_dice_vs_memory"]


def plot_dice_vs_memory(
    configs: pd.DataFrame,
    *,
    objectives: Sequence[Objective],
    memory_budget_bytes: float | None = None,
    dice: str = "val_dice",
    subset: str = "",
) -> Figure:
    """Mean validation Dice (95% CI over seeds) against peak training memory, one point per config.

    The step line is the Pareto front of the two plotted axes (computed here); diamonds mark
    ``configs["on_pareto_front"]``, the front over all ``objectives``, which may include
    configs that look dominated in two dimensions. Configs without a Dice or memory value are
    counted in the title by status ("over budget", "capped", "error"). ``subset`` says in the
    title which configs ``configs`` holds (e.g. those that reached the top rung).
    """
    memory = memory_column(configs)
    directions = {o.column: o.direction for o in objectives}
    axes_objectives = [
        Objective(dice, directions.get(dice, "maximize")),
        Objective(memory, directions.get(memory, "minimize")),
    ]
    shown = configs[configs[dice].notna() & configs[memory].notna()]
    feasible = usable_mask(shown)
    front_2d = pareto_mask(configs, axes_objectives)[shown.index]
    front_all = (
        shown["on_pareto_front"].astype(bool)
        if "on_pareto_front" in shown.columns
        else pd.Series(False, index=shown.index)
    )
    top = float(shown[memory].max()) if len(shown) else 0.0
    # A budget far beyond every config would squash the points against the y axis: name it in
    # the legend instead of stretching the axis to it.
    budget_on_axis = memory_budget_bytes is not None and (not top or memory_budget_bytes <= 3 * top)
    shown_budget = float(memory_budget_bytes) if budget_on_axis and memory_budget_bytes else 0.0
    divisor, xlabel = label_for(memory, [top, shown_budget])
    x = shown[memory] / divisor

    # A few collapsed configs (Dice near 0) would squash the others into a line at the top:
    # they are drawn as down-pointing triangles on the lower edge instead.
    floor = _low_outlier_floor(shown[dice])
    y = shown[dice] if floor is None else shown[dice].clip(lower=floor)
    low = shown[dice] < floor if floor is not None else pd.Series(False, index=shown.index)

    fig = figure(7.5, 5.0)
    ax = fig.add_subplot()
    lo_col, hi_col = f"{dice}_ci95_low", f"{dice}_ci95_high"
    if {lo_col, hi_col} <= set(shown.columns):
        has_ci = shown[lo_col].notna() & shown[hi_col].notna() & ~low
        ci = shown[has_ci]
        if len(ci):
            lows = ci[lo_col] if floor is None else ci[lo_col].clip(lower=floor)
            ax.errorbar(
                x[ci.index],
                y[ci.index],
                yerr=[y[ci.index] - lows, ci[hi_col] - y[ci.index]],
                fmt="none",
                ecolor=OKABE_ITO["black"],
                elinewidth=0.8,
                capsize=2.5,
                alpha=0.6,
                zorder=1,
                label=f"95% CI over seeds ({len(ci)} configs with ≥ 2 seeds)",
            )
    good = shown[feasible]
    ax.scatter(
        x[good.index],
        y[good.index],
        s=28,
        color=OKABE_ITO["blue"],
        alpha=0.8,
        marker="o",
        zorder=2,
        label=f"feasible configs ({len(good)})",
    )
    bad = shown[~feasible]
    if len(bad):
        ax.scatter(
            x[bad.index],
            y[bad.index],
            s=36,
            color=OKABE_ITO["vermillion"],
            marker="x",
            zorder=2,
            label=infeasible_label(bad),
        )
    same_objectives = {o.column for o in objectives} == {dice, memory}
    line = shown[front_2d].sort_values(memory)
    if len(line):
        ax.step(
            x[line.index],
            y[line.index],
            where="post",
            color=OKABE_ITO["orange"] if same_objectives else OKABE_ITO["green"],
            linewidth=1.6,
            zorder=3,
            label=None if same_objectives else f"Pareto front of these 2 axes only ({len(line)})",
        )
    diamonds = shown[front_all]
    others = [short_name(o.column) for o in objectives if o.column not in (dice, memory)]
    if same_objectives:
        front_label = f"Pareto front ({len(diamonds)})"
    else:
        also = f", incl. {', '.join(others)}" if others else ""
        front_label = f"Pareto front over all {len(objectives)} objectives{also} ({len(diamonds)})"
    ax.scatter(
        x[diamonds.index],
        y[diamonds.index],
        s=80,
        color=OKABE_ITO["orange"],
        edgecolor="black",
        marker="D",
        zorder=4,
        label=front_label,
    )
    if low.any():
        ax.scatter(
            x[low],
            y[low],
            s=110,
            facecolor="none",
            edgecolor=OKABE_ITO["black"],
            marker="v",
            zorder=5,
            label=f"Dice < {floor:.2f} (lowest {shown[dice].min():.2f}), on the lower edge "
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
    ax.set_ylabel(f"{short_name(dice)} (mean over seeds)")
    hidden = status_words(configs.drop(index=shown.index))
    not_shown = f"; not shown: {', '.join(hidden)}" if hidden else ""
    title = f"Accuracy vs training memory ({len(shown)} configs{subset}{not_shown})"
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    # Below the axes, where it cannot cover a point.
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
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
