"""Dice at one rung against Dice at the next: does short training rank configs as long does?"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from unetbench.report.plots._style import OKABE_ITO, figure

__all__ = ["plot_rung_agreement"]


def _tau_text(row: pd.Series | None) -> str:
    if row is None:
        return "tau not computed"
    n = int(row["n_configs"])
    configs = f"{n} config{'s' * (n != 1)}"
    if pd.isna(row["kendall_tau"]):
        return f"tau not computed ({configs})"
    low, high = row["tau_ci95_low"], row["tau_ci95_high"]
    return f"tau = {row['kendall_tau']:.2f} [{low:.2f}, {high:.2f}], {configs}"


def plot_rung_agreement(
    ladder: pd.DataFrame, agreement: pd.DataFrame, *, metric: str = "val_dice"
) -> Figure:
    """One panel per pair of consecutive rungs: each config that reached both, its ``metric``
    at the lower rung (x) against the higher (y), labelled with its trial number.

    ``ladder`` is :func:`unetbench.report.rungs.rung_ladder`, ``agreement``
    :func:`unetbench.report.rungs.rank_agreement` (its ``next`` rows give each panel's tau
    and interval). The dashed line is y = x (no change with more training); ticks on the
    bottom edge are the configs of the lower rung that were not promoted.
    """
    rungs = sorted(int(r) for r in ladder["rung"].unique())
    steps = ladder.groupby("rung")["train_steps"].first().to_dict()
    pairs = [(a, a + 1) for a in rungs if a + 1 in rungs]
    ncols = max(1, len(pairs))
    fig = figure(max(4.2 * ncols, 5.0), 4.6)
    axes = np.atleast_1d(fig.subplots(1, ncols, squeeze=False)).ravel()
    nexts = agreement[agreement["comparison"].eq("next")] if len(agreement) else agreement
    for ax, (a, b) in zip(axes, pairs, strict=False):
        low = ladder[ladder["rung"].eq(a)].set_index("config_key")
        high = ladder[ladder["rung"].eq(b)].set_index("config_key")
        both = low[[metric, "trial_number"]].join(high[[metric]].add_suffix("_b"), how="inner")
        x, y = both[metric].to_numpy(float), both[f"{metric}_b"].to_numpy(float)
        ax.scatter(x, y, s=30, color=OKABE_ITO["blue"], zorder=3,
                   label=f"reached both ({len(both)})")  # fmt: skip
        for xi, yi, n in zip(x, y, both["trial_number"], strict=True):
            ax.annotate(str(int(n)), (xi, yi), xytext=(3, 3), textcoords="offset points",
                        fontsize=7)  # fmt: skip
        left = low[~low.index.isin(high.index)]
        if len(left):
            ax.plot(left[metric], np.zeros(len(left)), "|", markersize=12,
                    color=OKABE_ITO["vermillion"], transform=ax.get_xaxis_transform(),
                    label=f"not promoted ({len(left)})", zorder=2)  # fmt: skip
        values = [*low[metric], *y]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color=OKABE_ITO["black"],
                linewidth=0.8, label="same Dice", zorder=1)  # fmt: skip
        row = nexts[nexts["rung_a"].eq(a) & nexts["rung_b"].eq(b)]
        tau = _tau_text(row.iloc[0] if len(row) else None)
        ax.set_title(f"{steps[a]} → {steps[b]} steps\n{tau}", fontsize=9)
        ax.set_xlabel(f"{metric} at {steps[a]} steps (rung {a})", fontsize=9)
        ax.set_ylabel(f"{metric} at {steps[b]} steps (rung {b})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        if not math.isfinite(lo):
            ax.set_visible(False)
    fig.suptitle("Does the ranking at fewer steps predict the ranking at more? "
                 "(Kendall's tau, 95% bootstrap CI)", fontsize=10)  # fmt: skip
    return fig
