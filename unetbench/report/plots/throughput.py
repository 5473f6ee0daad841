"""Training throughput against compute per step, one series per checkpointing mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from unetbench.report._units import label_for
from unetbench.report.plots._style import (
    MARKERS,
    OKABE_ITO,
    SERIES,
    THOUSANDS,
    figure,
)
from unetbench.report.tables import (
    natural_key,
    timing_notes,
    usable_mask,
)

__all__ = ["plot_throughput_vs_flops"]


def _throughput_series(
    configs: pd.DataFrame,
) -> list[tuple[str, pd.Series, pd.Series, pd.Series]]:
    """``(legend label, FLOPs, voxels/s, timed under load)`` per profiled checkpointing mode.

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
        loaded = timing_notes(rows, mode).ne("")
        series.append((f"checkpointing={mode}", flops, speed, loaded))
    if not modes and "train_voxels_per_s" in rows.columns:
        speed = pd.to_numeric(rows["train_voxels_per_s"], errors="coerce")
        flops = pd.to_numeric(fallback, errors="coerce")
        loaded = timing_notes(rows).ne("")
        if "checkpointing" in rows.columns:
            groups = rows.groupby(rows["checkpointing"].astype(str)).groups
            for value in sorted(groups, key=natural_key):
                index = groups[value]
                series.append((f"checkpointing={value}", flops[index], speed[index], loaded[index]))
        else:
            series.append(("configs", flops, speed, loaded))
    return series


def _label_log_axis(axis: Any, values: Sequence[float]) -> None:
    """Plain numbers on a log axis; minor ticks labelled (2, 3, 5) only over a short range,
    where the decades alone would leave one label or none, and never crowded."""
    axis.set_major_formatter(THOUSANDS)
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    span = max(finite) / min(finite) if finite else math.inf
    if span < 30:
        mantissa = {2, 3, 5} if span < 10 else {2, 5}
        axis.set_minor_formatter(
            FuncFormatter(
                lambda v, _: (
                    THOUSANDS(v) if round(v / 10 ** math.floor(math.log10(v))) in mantissa else ""
                )
            )
        )
    else:
        axis.set_minor_formatter(NullFormatter())


def plot_throughput_vs_flops(configs: pd.DataFrame) -> Figure:
    """Training throughput (voxels/s) against FLOPs per step, log-log, one series per mode.

    A throughput timed under load (``timing_note``, or ``timing_note__<mode>``) is drawn
    hollow and counted in the title: it measured a busy machine, not the config.
    """
    series = []
    for name, flops, speed, loaded in _throughput_series(configs):
        both = flops.notna() & speed.reindex(flops.index).notna()
        series.append(
            (name, flops[both], speed.reindex(flops.index)[both], loaded.reindex(flops.index)[both])
        )
    all_flops = [v for _, f, _, _ in series for v in f]
    fdiv, xlabel = label_for("train_flops", all_flops)
    _, ylabel = label_for("train_voxels_per_s", [])
    fig = figure()
    ax = fig.add_subplot()
    n_loaded = 0
    for i, (name, flops, speed, loaded) in enumerate(series):
        colour = OKABE_ITO[SERIES[i % len(SERIES)]]
        marker = MARKERS[i % len(MARKERS)]
        calm = ~loaded.astype(bool)
        ax.scatter(
            flops[calm] / fdiv,
            speed[calm],
            s=32,
            alpha=0.8,
            color=colour,
            marker=marker,
            label=f"{name} ({int(calm.sum())})",
        )
        if (~calm).any():
            n_loaded += int((~calm).sum())
            ax.scatter(
                flops[~calm] / fdiv,
                speed[~calm],
                s=32,
                facecolor="none",
                edgecolor=colour,
                marker=marker,
                label=f"{name}, timed under load ({int((~calm).sum())})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label_log_axis(ax.xaxis, [v / fdiv for v in all_flops])
    _label_log_axis(ax.yaxis, [v for _, _, s, _ in series for v in s])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    title = "Training throughput vs compute per step, per checkpointing mode"
    if n_loaded:
        title += f"\nhollow: {n_loaded} timed under load, not results (see timing_note)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    if series:
        ax.legend(fontsize=9, framealpha=0.9)
    return fig
