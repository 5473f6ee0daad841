"""Memory saved and step time added by gradient checkpointing, per config."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from unetbench.report._units import label_for
from unetbench.report.plots._style import (
    MINUS,
    OKABE_ITO,
    figure,
    short_name,
)
from unetbench.report.tables import (
    checkpointing_savings,
    timing_notes,
)

__all__ = ["plot_checkpointing"]


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
    timed steps (median ± IQR/2) where the table has it. A row whose timing was taken under
    load (``timing_note``) is labelled so instead of with a step-time change.
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
    flagged = timing_notes(savings).ne("").to_numpy()
    height = max(3.0, (0.25 + 0.14 * lines) * len(savings) + 1.6)
    fig = figure(11.0, height)
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
        timed = iqr is not None
        for yi, end, pct, loaded in zip(y, ends, change, flagged, strict=True):
            if not math.isfinite(end):
                continue
            if timed and loaded:  # a time taken under load is no result: say so, no number
                text, colour = "timed under load", OKABE_ITO["vermillion"]
            elif math.isfinite(pct):
                text, colour = f"{pct:+.0f}%".replace("-", MINUS), OKABE_ITO["black"]
            else:
                continue
            ax.annotate(
                text,
                (end, yi - 0.2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=colour,
            )
        ax.set_xlabel(xlabel)
        ax.margins(x=0.15)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].set_title(short_name(mem_column or "peak_mem_train_bytes").capitalize(), fontsize=10)
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
    n_loaded = int(flagged.sum())
    if n_loaded:
        shown += f"; {n_loaded} timed under load: their step time change is not a result"
    fig.suptitle(
        f"Gradient checkpointing per config (bar labels: change vs none)\n{shown}", fontsize=11
    )
    handles, names = axes[1].get_legend_handles_labels()
    # Below the panels, so it never covers a bar.
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig
