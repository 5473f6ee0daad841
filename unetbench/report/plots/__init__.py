"""Plots of the report's tables: each function returns a matplotlib Figure; callers save it.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision
deficiencies) and series also differ by marker or hatch, so the plots survive greyscale
printing. Figures are built with ``matplotlib.figure.Figure``, not pyplot: they render with the
Agg canvas whatever the user's backend is, hold no global state and never open a window.
Accuracy is a mean over seeds and is drawn with its 95% interval wherever the table has one.
"""

from __future__ import annotations

from unetbench.report.plots._style import DPI, OKABE_ITO
from unetbench.report.plots.accuracy import plot_dice_vs_memory
from unetbench.report.plots.checkpointing import plot_checkpointing
from unetbench.report.plots.factors import plot_factor_effects
from unetbench.report.plots.rungs import plot_rung_agreement
from unetbench.report.plots.throughput import plot_throughput_vs_flops

__all__ = [
    "DPI",
    "OKABE_ITO",
    "plot_checkpointing",
    "plot_dice_vs_memory",
    "plot_factor_effects",
    "plot_rung_agreement",
    "plot_throughput_vs_flops",
]
