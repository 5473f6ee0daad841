"""Regression gate: compare profile records against a baseline.

:func:`compare_records` compares two record tables (deterministic metrics exactly, measured
ones within a tolerance); :func:`load_records` reads CSV, Parquet, JSON, pytest-benchmark JSON
and the baseline files of the ``unetbench`` pytest plugin. Names are imported on first use so
that loading the pytest plugin (``unetbench.gate.pytest_plugin``) does not import pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unetbench._lazy import lazy_getattr

if TYPE_CHECKING:
    from unetbench.gate._load import load_records, records_from_json
    from unetbench.gate.baseline import Baseline, deterministic_metrics
    from unetbench.gate.compare import (
        DEFAULT_TOLERANCE,
        EXACT_METRICS,
        ComparisonResult,
        compare_records,
        metric_columns,
    )

_LAZY = {
    "load_records": "unetbench.gate._load",
    "records_from_json": "unetbench.gate._load",
    "Baseline": "unetbench.gate.baseline",
    "deterministic_metrics": "unetbench.gate.baseline",
    "DEFAULT_TOLERANCE": "unetbench.gate.compare",
    "EXACT_METRICS": "unetbench.gate.compare",
    "ComparisonResult": "unetbench.gate.compare",
    "compare_records": "unetbench.gate.compare",
    "metric_columns": "unetbench.gate.compare",
}

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXACT_METRICS",
    "Baseline",
    "ComparisonResult",
    "compare_records",
    "deterministic_metrics",
    "load_records",
    "metric_columns",
    "records_from_json",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
