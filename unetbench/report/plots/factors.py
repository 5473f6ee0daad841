"""Each searched field's options with 95% intervals and their difference to the reference."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from unetbench.report._units import label_for, scale_for
from unetbench.report.configs import RUN_METRICS
from unetbench.report.plots._style import (
    MINUS,
    OKABE_ITO,
    THOUSANDS,
    figure,
    signed,
)

__all__ = ["plot_factor_effects"]


def plot_factor_effects(
    levels: pd.DataFrame,
    differences: pd.DataFrame,
    objective: str,
    *,
    ncols: int = 3,
    note: str = "",
) -> Figure:
    """Mean ``objective`` over the configs of each option (95% CI), one panel per searched field.

    ``levels`` comes from ``stats.option_levels``; ``differences`` from
    ``stats.option_differences``; rows of other objectives (by an ``objective`` column) are
    ignored in both. Under each panel: every option's difference to the field's reference
    option with its interval, and whether that interval excludes 0. ``note`` ends the title
    (e.g. the rung the effects are computed at).
    """
    # Both tables may stack several objectives, told apart by their ``objective`` column.
    if "objective" in levels.columns:
        levels = levels[levels["objective"] == objective]
    if "objective" in differences.columns:
        differences = differences[differences["objective"] == objective]
    fields = list(dict.fromkeys(levels["field"]))
    ncols = max(1, min(ncols, len(fields)))
    nrows = max(1, math.ceil(len(fields) / ncols))
    lo_col, hi_col = f"{objective}_ci95_low", f"{objective}_ci95_high"
    values = [*levels[objective], *levels.get(lo_col, []), *levels.get(hi_col, [])]
    divisor, ylabel = label_for(objective, values)
    width = max(3.9 * ncols, 6.0)
    fig = figure(width, 3.4 * nrows + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, field in zip(axes, fields, strict=False):
        rows = levels[levels["field"] == field]
        _effect_panel(ax, rows, objective, divisor)
        ax.set_title(field, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        diffs = differences[differences["field"] == field]
        ax.set_xlabel(_difference_text(diffs, objective), fontsize=7.5)
    for ax in axes[len(fields) :]:
        ax.set_visible(False)
    title = f"Effect of each searched field on {ylabel}{note} (mean over configs, 95% CI)"
    # About 11 characters of 11-point text per inch: one panel alone gets two lines.
    if len(title) > width * 11:
        title = title.replace(" (mean over", "\n(mean over")
    fig.suptitle(title, fontsize=11)
    return fig


def _effect_panel(ax: Axes, rows: pd.DataFrame, objective: str, divisor: float) -> None:
    """One point per option with its CI; the y axis spans the data, not 0."""
    x = np.arange(len(rows))
    mean = rows[objective].to_numpy(dtype=float) / divisor
    lo_col, hi_col = f"{objective}_ci95_low", f"{objective}_ci95_high"
    if {lo_col, hi_col} <= set(rows.columns):
        low = rows[lo_col].to_numpy(dtype=float) / divisor
        high = rows[hi_col].to_numpy(dtype=float) / divisor
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            ax.errorbar(
                x[ok],
                mean[ok],
                yerr=[mean[ok] - low[ok], high[ok] - mean[ok]],
                fmt="none",
                ecolor=OKABE_ITO["black"],
                elinewidth=1,
                capsize=4,
            )
    ax.plot(x, mean, "o", color=OKABE_ITO["blue"], markersize=6, linestyle="none")
    if len(mean) and math.isfinite(mean[0]):  # the reference option's level, to compare by eye
        ax.axhline(mean[0], color=OKABE_ITO["black"], linestyle=":", linewidth=0.8, alpha=0.6)
    ticks = [f"{v}\n(n={n})" for v, n in zip(rows["value"], rows["n_configs"], strict=True)]
    ax.set_xticks(x, ticks, fontsize=8, rotation=30 if len(rows) > 4 else 0)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.margins(y=0.15)
    if np.nanmax(np.abs(mean), initial=0.0) >= 1e4:
        ax.yaxis.set_major_formatter(THOUSANDS)
    ax.grid(True, axis="y", alpha=0.3)


def _difference_text(diffs: pd.DataFrame, objective: str) -> str:
    """``"add − concat: +0.012 [−0.004, +0.028]\\nwithin seed noise (paired, n=6)"`` per row.

    Differences get their own unit (a 7 MiB difference between 1 GiB levels reads as 7 MiB).
    """
    if "design" in diffs.columns:
        skipped = diffs[diffs["design"] == "not analysed"]
        if len(skipped):  # the reason, wrapped to the panel's width
            return "\n".join(textwrap.wrap(f"not analysed: {skipped['note'].iloc[0]}", 48))
    numbers = diffs[["diff", "diff_ci95_low", "diff_ci95_high"]].to_numpy(dtype=float)
    divisor, unit = scale_for(objective, numbers.ravel())
    numbers = numbers / divisor
    # Only accuracy varies with the training seed; memory and time differences are compared
    # with their spread over configs.
    same = "within seed noise" if objective in RUN_METRICS else "not distinguishable"
    finite = np.abs(numbers[np.isfinite(numbers)])
    # Two significant digits on the largest number, the same decimals for all of them.
    top = float(finite.max()) if finite.size else 0.0
    decimals = min(4, max(0, 1 - math.floor(math.log10(top)))) if top > 0 else 0
    suffix = f" {unit}" if unit else ""
    lines = []
    for (_, row), (diff, low, high) in zip(diffs.iterrows(), numbers, strict=True):
        head = f"{row['option']} {MINUS} {row['reference']}: {signed(diff, decimals)}{suffix}"
        if math.isfinite(low) and math.isfinite(high):
            head += f" [{signed(low, decimals)}, {signed(high, decimals)}]"
            verdict = "distinguishable" if bool(row["distinguishable"]) else same
        else:
            verdict = "no interval"
        lines += [head, f"{verdict} ({row['design']}, n={int(row['n'])})"]
    return "\n".join(lines)
