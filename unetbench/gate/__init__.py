"""Regression gate: compare profile records against a baseline.

:func:`compare_records` compares two record tables (deterministic metrics exactly, measured
ones within a tolerance); :func:`load_records` reads CSV, Parquet, JSON, pytest-benchmark JSON
and the baseline files of the ``unetbench`` pytest plugin.
"""

from __future__ import annotations

from unetbench.gate._load import load_records, records_from_json
from unetbench.gate.compare import (
    DEFAULT_TOLERANCE,
    EXACT_METRICS,
    ComparisonResult,
    compare_records,
    metric_columns,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXACT_METRICS",
    "ComparisonResult",
    "compare_records",
    "load_records",
    "metric_columns",
    "records_from_json",
]
