"""What every report figure shares: palette, resolution, number formats, status words."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from unetbench.report._units import label_for
from unetbench.report.outcomes import config_outcomes, count_words

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
THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:g}")
SERIES = ["blue", "orange", "green", "vermillion", "purple", "sky_blue", "black"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
MINUS = "−"


def figure(width: float = 7.0, height: float = 4.5) -> Figure:
    # Figure() directly (not pyplot): no global state, nothing to close.
    return Figure(figsize=(width, height), layout="constrained", dpi=DPI)


def short_name(column: str) -> str:
    """The column's name without its unit ("training step time")."""
    return label_for(column, [])[1].split(" (")[0]


def signed(value: float, decimals: int) -> str:
    return f"{value:+,.{decimals}f}".replace("-", MINUS)


def status_words(rows: pd.DataFrame) -> list[str]:
    """``["3 oom", "1 capped"]``: the configs counted by outcome, in the words (and by the
    function, :func:`unetbench.report.outcomes.config_outcomes`) of the report's header, so
    a plot and the report never count differently. A feasible config a plot cannot show
    (it has no accuracy) is "without Dice"."""
    words = config_outcomes(rows)
    words[words.eq("feasible")] = "without Dice"
    return count_words(words, order=())


def infeasible_label(rows: pd.DataFrame) -> str:
    words = status_words(rows)
    if words == [f"{len(rows)} infeasible"]:
        return f"infeasible ({len(rows)})"
    return f"infeasible: {', '.join(words)}"
