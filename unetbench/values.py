"""The one way unetbench turns values into stored ones: JSON values for Optuna attributes and
``study.json``, flat cells for records (parquet/CSV columns)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["flat_cell", "jsonable"]


def jsonable(value: Any) -> Any:
    """A JSON value that reads back equal: numpy scalars become Python ones, NaN and
    infinities None, tuples lists (all the way down), anything else unknown its ``str``."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def flat_cell(value: Any) -> Any:
    """A value as one record cell: a list, tuple or dict as its JSON text (``planar_blocks``
    ``[0, 1]`` -> ``"[0, 1]"``), anything else as it is."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(jsonable(value))
    return value
