"""Plots of the report's tables: each function returns a matplotlib Figure; callers save it.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision
deficiencies) and series also differ by marker or hatch, so the plots survive greyscale
printing. Figures are built with ``matplotlib.figure.Figure``, not pyplot: they render with the
Agg canvas whatever the user's backend is, hold no global state and never open a window.
Accuracy is a mean over seeds and is drawn with its 95% interval wherever the table has one.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from unetbench.report._units import label_for, scale_for
from unetbench.report.configs import RUN_METRICS
from unetbench.report.tables import (
    checkpointing_savings,
    memory_column,
    natural_key,
    pareto_mask,
    usable_mask,
)
from unetbench.studyinfo import Objective

__all__ = [
    "DPI",
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
#: Resolution of every figure: sharp and legible on a laptop screen at 100% zoom.
DPI = 150
# 500,000 rather than 500000 or 5e5; small values keep matplotlib's own precision.
_THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:g}")
_SERIES = ["blue", "orange", "green", "vermillion", "purple", "sky_blue", "black"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
# The report's words for a config's status (the sweep writes "oom" for a config whose
# estimate is over the memory budget as well as for one that ran out of memory).
_STATUS_WORDS = {"oom": "over budget", "over_budget": "over budget"}
_MINUS = "−"


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    # Figure() directly (not pyplot): no global state, nothing to close.
    return Figure(figsize=(width, height), layout="constrained", dpi=DPI)


def _name(column: str) -> str:
    """The column's name without its unit ("training step time")."""
    return label_for(column, [])[1].split(" (")[0]


def _signed(value: float, decimals: int) -> str:
    return f"{value:+,.{decimals}f}".replace("-", _MINUS)


def _status_words(rows: pd.DataFrame) -> list[str]:
    """``["3 over budget", "1 capped"]``: the rows counted by status in the report's words.

    A row whose status is ok is "infeasible" when flagged so, else "without Dice" (it was
    measured but has no accuracy to plot).
    """
    status = rows.get("status", pd.Series("ok", index=rows.index)).astype(str).str.lower()
    words = status.map(lambda s: _STATUS_WORDS.get(s, s))
    infeasible = ~usable_mask(rows) & status.eq("ok")
    words[status.eq("ok")] = "without Dice"
    words[infeasible] = "infeasible"
    counts = words.value_counts(sort=False)
    return [f"{n} {word}" for word, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def _infeasible_label(rows: pd.DataFrame) -> str:
    words = _status_words(rows)
    if words == [f"{len(rows)} infeasible"]:
        return f"infeasible ({len(rows)})"
    return f"infeasible: {', '.join(words)}"


def plot_dice_vs_memory(
    configs: pd.DataFrame,
    *,
    objectives: Sequence[Objective],
    memory_budget_bytes: float | None = None,
    dice: str = "val_dice",
) -> Figure:
    """Mean validation Dice (95% CI over seeds) against peak training memory, one point per config.

    The step line is the Pareto front of the two plotted axes (computed here); diamonds mark
    ``configs["on_pareto_front"]``, the front over all ``objectives``, which may include
    configs that look dominated in two dimensions. Configs without a Dice or memory value are
    counted in the title by status ("over budget", "capped", "error").
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

    fig = _figure(7.5, 5.0)
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
            label=_infeasible_label(bad),
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
    others = [_name(o.column) for o in objectives if o.column not in (dice, memory)]
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
    ax.set_ylabel(f"{_name(dice)} (mean over seeds)")
    hidden = _status_words(configs.drop(index=shown.index))
    not_shown = f"; not shown: {', '.join(hidden)}" if hidden else ""
    title = f"Accuracy vs training memory ({len(shown)} configs{not_shown})"
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


def plot_checkpointing(
    savings: pd.DataFrame,
    *,
    max_configs: int = 30,
    listed_in: str = "report/checkpointing.csv",
) -> Figure:
    """Peak training memory and median step time with and without checkpointing, per config.

    ``savings`` is the table from ``checkpointing_savings`` (records are converted), sorted by
    memory saving; the first ``max_configs`` rows are drawn and the title says how many were
    left out and where they are listed. Step-time bars carry the interquartile range of the
    timed steps (median ± IQR/2) where the table has it.
    """
    if "mem_saved_pct" not in savings.columns:
        savings = checkpointing_savings(savings)
    total = len(savings)
    savings = savings.head(max_configs).iloc[::-1]
    # Long config labels wrap onto two or three lines instead of squashing the panels.
    labels = [
        textwrap.fill(f"{lab} [{mode}]", width=44)
        for lab, mode in zip(savings["label"], savings["checkpointing"], strict=True)
    ]
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    y = np.arange(len(savings))
    height = max(3.0, (0.25 + 0.14 * lines) * len(savings) + 1.6)
    fig = _figure(11.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    has_column = "memory_column" in savings.columns and len(savings)
    mem_column = str(savings["memory_column"].iloc[0]) if has_column else ""
    # (column for units, baseline column, checkpointed column, IQR columns, change vs none)
    panels = [
        (
            mem_column or "peak_mem_train_bytes",
            "peak_mem_none_bytes",
            "peak_mem_bytes",
            None,
            -savings["mem_saved_pct"],
        ),
        (
            "train_step_s",
            "train_step_none_s",
            "train_step_s",
            ("train_step_none_iqr_s", "train_step_iqr_s"),
            savings["step_time_added_pct"],
        ),
    ]
    for ax, (unit_column, base, cp, iqr, change) in zip(axes, panels, strict=True):
        none = savings[base].to_numpy(dtype=float)
        with_cp = savings[cp].to_numpy(dtype=float)
        divisor, xlabel = label_for(unit_column, [*none, *with_cp])
        spreads: list[np.ndarray | None] = [None, None]
        if iqr is not None and set(iqr) <= set(savings.columns):
            # Half the IQR each side of the median: the middle half of the timed steps.
            spreads = [savings[c].to_numpy(dtype=float) / divisor / 2 for c in iqr]
        error = {"ecolor": OKABE_ITO["black"], "elinewidth": 0.9, "capsize": 2.5}
        for offset, values, spread, colour, hatch, name in (
            (0.2, none, spreads[0], "sky_blue", None, "no checkpointing"),
            (-0.2, with_cp, spreads[1], "blue", "//", "with checkpointing"),
        ):
            ax.barh(
                y + offset,
                values / divisor,
                height=0.4,
                xerr=spread,
                error_kw=error,
                color=OKABE_ITO[colour],
                hatch=hatch,
                edgecolor="white",
                label=name,
            )
        ends = with_cp / divisor + np.nan_to_num(spreads[1] if spreads[1] is not None else 0.0)
        for yi, end, pct in zip(y, ends, change, strict=True):
            if math.isfinite(end) and math.isfinite(pct):
                ax.annotate(
                    f"{pct:+.0f}%".replace("-", _MINUS),
                    (end, yi - 0.2),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].set_title(_name(mem_column or "peak_mem_train_bytes").capitalize(), fontsize=10)
    has_iqr = any(s is not None and np.isfinite(s).any() for s in spreads)
    axes[1].set_title(
        "Training step time (median" + (", error bar: IQR of timed steps)" if has_iqr else ")"),
        fontsize=10,
    )
    if len(savings) < total:
        shown = (
            f"{len(savings)} of {total} configs shown (largest memory saving); "
            f"left out: {total - len(savings)}, listed in {listed_in}"
        )
    else:
        shown = f"all {total} configs shown"
    fig.suptitle(
        f"Gradient checkpointing per config (bar labels: change vs none)\n{shown}", fontsize=11
    )
    handles, names = axes[1].get_legend_handles_labels()
    # Below the panels, so it never covers a bar.
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def _throughput_series(configs: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """``(legend label, FLOPs, voxels/s)`` per profiled checkpointing mode.

    The sweep stores each mode's profile as ``<column>__<mode>``; records from before it
    stored FLOPs per mode fall back to the single ``train_flops``.
    """
    prefix = "train_voxels_per_s__"
    modes = [
        c[len(prefix) :]
        for c in configs.columns
        if c.startswith(prefix) and configs[c].notna().any()
    ]
    rows = configs[usable_mask(configs, feasible_only=False)]
    fallback = rows.get("train_flops", pd.Series(np.nan, index=rows.index))
    series = []
    for mode in sorted(modes, key=natural_key):
        speed = pd.to_numeric(rows[f"{prefix}{mode}"], errors="coerce")
        flops = pd.to_numeric(rows.get(f"train_flops__{mode}", fallback), errors="coerce")
        flops = flops.fillna(pd.to_numeric(fallback, errors="coerce"))
        if f"status__{mode}" in rows.columns:
            speed = speed[rows[f"status__{mode}"].astype(str).str.lower().eq("ok")]
        series.append((f"checkpointing={mode}", flops, speed))
    if not modes and "train_voxels_per_s" in rows.columns:
        speed = pd.to_numeric(rows["train_voxels_per_s"], errors="coerce")
        flops = pd.to_numeric(fallback, errors="coerce")
        if "checkpointing" in rows.columns:
            groups = rows.groupby(rows["checkpointing"].astype(str)).groups
            for value in sorted(groups, key=natural_key):
                index = groups[value]
                series.append((f"checkpointing={value}", flops[index], speed[index]))
        else:
            series.append(("configs", flops, speed))
    return series


def _label_log_axis(axis: Any, values: Sequence[float]) -> None:
    """Plain numbers on a log axis; minor ticks labelled (2, 3, 5) only over a short range,
    where the decades alone would leave one label or none, and never crowded."""
    axis.set_major_formatter(_THOUSANDS)
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    span = max(finite) / min(finite) if finite else math.inf
    if span < 30:
        mantissa = {2, 3, 5} if span < 10 else {2, 5}
        axis.set_minor_formatter(
            FuncFormatter(
                lambda v, _: (
                    _THOUSANDS(v) if round(v / 10 ** math.floor(math.log10(v))) in mantissa else ""
                )
            )
        )
    else:
        axis.set_minor_formatter(NullFormatter())


def plot_throughput_vs_flops(configs: pd.DataFrame) -> Figure:
    """Training throughput (voxels/s) against FLOPs per step, log-log, one series per mode."""
    series = []
    for name, flops, speed in _throughput_series(configs):
        both = flops.notna() & speed.reindex(flops.index).notna()
        series.append((name, flops[both], speed.reindex(flops.index)[both]))
    all_flops = [v for _, f, _ in series for v in f]
    fdiv, xlabel = label_for("train_flops", all_flops)
    _, ylabel = label_for("train_voxels_per_s", [])
    fig = _figure()
    ax = fig.add_subplot()
    for i, (name, flops, speed) in enumerate(series):
        ax.scatter(
            flops / fdiv,
            speed,
            s=32,
            alpha=0.8,
            color=OKABE_ITO[_SERIES[i % len(_SERIES)]],
            marker=_MARKERS[i % len(_MARKERS)],
            label=f"{name} ({len(speed)})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label_log_axis(ax.xaxis, [v / fdiv for v in all_flops])
    _label_log_axis(ax.yaxis, [v for _, _, s in series for v in s])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Training throughput vs compute per step, per checkpointing mode", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if series:
        ax.legend(fontsize=9, framealpha=0.9)
    return fig


def plot_factor_effects(
    levels: pd.DataFrame, differences: pd.DataFrame, objective: str, *, ncols: int = 3
) -> Figure:
    """Mean ``objective`` over the configs of each option (95% CI), one panel per searched field.

    ``levels`` comes from ``stats.option_levels``; ``differences`` from
    ``stats.option_differences``; rows of other objectives (by an ``objective`` column) are
    ignored in both. Under each panel: every option's difference to the field's reference
    option with its interval, and whether that interval excludes 0.
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
    fig = _figure(width, 3.4 * nrows + 0.5)
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
    title = f"Effect of each searched field on {ylabel} (mean over configs, 95% CI)"
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
        ax.yaxis.set_major_formatter(_THOUSANDS)
    ax.grid(True, axis="y", alpha=0.3)


def _difference_text(diffs: pd.DataFrame, objective: str) -> str:
    """``"add − concat: +0.012 [−0.004, +0.028]\\nwithin seed noise (paired, n=6)"`` per row.

    Differences get their own unit (a 7 MiB difference between 1 GiB levels reads as 7 MiB).
    """
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
        head = f"{row['option']} {_MINUS} {row['reference']}: {_signed(diff, decimals)}{suffix}"
        if math.isfinite(low) and math.isfinite(high):
            head += f" [{_signed(low, decimals)}, {_signed(high, decimals)}]"
            verdict = "distinguishable" if bool(row["distinguishable"]) else same
        else:
            verdict = "no interval"
        lines += [head, f"{verdict} ({row['design']}, n={int(row['n'])})"]
    return "\n".join(lines)
