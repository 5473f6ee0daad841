"""The one table renderer: records as aligned text (terminal) or GitHub Markdown (reports).

Numeric columns are shown in one unit per column (MiB, ms, GFLOP...), named in the header
(``peak_mem_train (MiB)``), so a header never names bytes over values in MiB. Text cells are
shown as they are. Torch-free.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from unetbench.report._units import format_cell, scale_for

__all__ = ["cell", "render_table", "unit_header"]

_SUFFIXES = ("_bytes", "_s", "_flops", "_macs", "_pct")


def unit_header(column: str, values: pd.Series) -> tuple[float, str]:
    """Divisor and header for a numeric column: the unit replaces the name's unit suffix."""
    if column.endswith("_per_s") or (not column.endswith(_SUFFIXES) and column != "params"):
        return 1.0, column
    numbers = pd.to_numeric(values, errors="coerce")
    divisor, unit = scale_for(column, numbers.to_numpy(dtype=float))
    base = column
    for suffix in ("_bytes", "_s", "_pct"):
        if column.endswith(suffix):
            base = column[: -len(suffix)]
    return divisor, f"{base} ({unit})"


def cell(value: object, divisor: float = 1.0) -> str:
    """One cell: numbers divided by ``divisor``, 4 significant digits; text as it is."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))  # as the sentences and the study spec write it
    if not isinstance(value, int | float | np.integer | np.floating):
        return format_cell("", value)
    number = float(value) / divisor
    if math.isnan(number):
        return ""
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}" if abs(number) >= 1e4 else str(int(number))
    return f"{number:,.0f}" if abs(number) >= 1e4 else f"{number:.4g}"


def render_table(
    df: pd.DataFrame,
    *,
    style: Literal["text", "markdown"] = "markdown",
    max_rows: int | None = None,
) -> str:
    """``df`` as a table; numeric columns scaled to one unit named in the header."""
    shown = df if max_rows is None else df.head(max_rows)
    headers, columns = [], []
    for name in shown.columns:
        series = shown[name]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        divisor, header = unit_header(str(name), series) if numeric else (1.0, str(name))
        headers.append(header)
        columns.append([cell(v, divisor) for v in series])
    if style == "text":
        text = pd.DataFrame(dict(zip(headers, columns, strict=True))).to_string(index=False)
    else:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in zip(*columns, strict=True)]
        text = "\n".join(lines)
    if max_rows is not None and len(df) > max_rows:
        text += f"\n\n({len(df) - max_rows} more rows in the CSV/Parquet file)"
    return text
