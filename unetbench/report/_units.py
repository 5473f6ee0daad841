"""Human units for record columns: axis labels for plots and cell text for Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["format_cell", "label_for", "scale_for"]

_NAMES = {
    "val_dice": "validation Dice",
    "val_iou": "validation IoU",
    "train_loss": "training loss",
    "peak_mem_train_bytes": "peak training memory",
    "est_peak_mem_train_bytes": "estimated peak training memory",
    "peak_mem_infer_bytes": "peak inference memory",
    "opt_state_bytes": "optimizer state",
    "train_step_s": "training step time",
    "infer_s": "inference time",
    "train_s": "training time",
    "train_voxels_per_s": "training throughput",
    "infer_voxels_per_s": "inference throughput",
    "params": "parameters",
    "fwd_macs": "forward MACs",
    "fwd_flops": "forward FLOPs",
    "train_flops": "training FLOPs per step",
}


def _finite_max(values: Iterable[float]) -> float:
    arr = np.abs(np.asarray(list(values), dtype=float))
    arr = arr[np.isfinite(arr)]
    return float(arr.max()) if arr.size else 0.0


def scale_for(column: str, values: Iterable[float]) -> tuple[float, str]:
    """Divisor and unit suited to the magnitude of ``values`` for this column.

    Bytes become MiB or GiB, seconds become ms when small, FLOP/MAC counts G or T,
    parameter counts millions; throughputs stay voxels/s.
    """
    top = _finite_max(values)
    if column.endswith("_bytes"):
        return (2.0**30, "GiB") if top >= 2.0**30 else (2.0**20, "MiB")
    if column.endswith("_per_s"):
        return 1.0, "voxels/s"
    if column.endswith("_s"):
        return (1e-3, "ms") if top < 1.0 else (1.0, "s")
    if column.endswith(("_flops", "_macs")):
        unit = "FLOP" if column.endswith("_flops") else "MAC"
        return (1e12, f"T{unit}") if top >= 1e12 else (1e9, f"G{unit}")
    if column == "params":
        return 1e6, "M"
    if column.endswith("_pct"):
        return 1.0, "%"
    return 1.0, ""


def label_for(column: str, values: Iterable[float]) -> tuple[float, str]:
    """Divisor and axis label (name and unit) for plotting ``column``."""
    divisor, unit = scale_for(column, values)
    name = _NAMES.get(column, column.replace("_", " "))
    return divisor, f"{name} ({unit})" if unit else name


def format_cell(column: str, value: object) -> str:
    """Text for one Markdown table cell: bytes in MiB/GiB, times in s/ms, 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        if math.isnan(number):
            return ""
        if column.endswith(("_bytes", "_s", "_flops", "_macs")) or column == "params":
            divisor, unit = scale_for(column, [number])
            scaled = number / divisor
            return f"{scaled:,.0f} {unit}" if abs(scaled) >= 1e4 else f"{scaled:.4g} {unit}"
        if column.endswith("_pct"):
            return f"{number:+.1f}%"
        if float(number).is_integer() and abs(number) < 1e15:
            return str(int(number))
        return f"{number:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
