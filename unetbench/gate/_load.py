"""Read profile records for comparison: CSV, Parquet, JSON records, pytest-benchmark JSON and
the baseline files written by the unetbench pytest plugin."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from unetbench._errors import UsageError

__all__ = ["BASELINE_FORMAT", "BENCH_STATS", "load_records", "records_from_json"]

#: Marker key and version of the baseline files written by the pytest plugin.
BASELINE_FORMAT = "unetbench-baseline"
#: pytest-benchmark statistics kept as columns (seconds), named with their unit.
BENCH_STATS = {"min": "bench_min_s", "median": "bench_median_s", "mean": "bench_mean_s"}


def _benchmark_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for bench in doc["benchmarks"]:
        row: dict[str, Any] = {"benchmark": bench.get("fullname") or bench.get("name")}
        row.update(bench.get("extra_info") or {})
        stats = bench.get("stats") or {}
        row.update({col: stats[key] for key, col in BENCH_STATS.items() if key in stats})
        rows.append(row)
    return rows


def _baseline_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in doc["entries"].items():
        rows.append(
            {
                "benchmark": name,
                **(entry.get("metrics") or {}),
                **{f"setting.{k}": v for k, v in (entry.get("setting") or {}).items()},
            }
        )
    return rows


def records_from_json(doc: Any, source: str = "<json>") -> pd.DataFrame:
    """Records from a parsed JSON document of any supported shape.

    Shapes: a list of flat records; ``{"records": [...]}``; pytest-benchmark's saved run
    (``{"benchmarks": [...]}``, metrics from ``extra_info``, timing stats as
    ``bench_min_s``/``bench_median_s``/``bench_mean_s``, key ``benchmark`` = full test name);
    a unetbench baseline (``{"format": "unetbench-baseline", "entries": {...}}``).
    """
    if isinstance(doc, list) and all(isinstance(r, Mapping) for r in doc):
        return pd.DataFrame(doc)
    if isinstance(doc, Mapping):
        if isinstance(doc.get("benchmarks"), list):
            return pd.DataFrame(_benchmark_rows(doc))
        if doc.get("format") == BASELINE_FORMAT and isinstance(doc.get("entries"), Mapping):
            return pd.DataFrame(_baseline_rows(doc))
        if isinstance(doc.get("records"), list):
            return pd.DataFrame(doc["records"])
        if doc and all(isinstance(v, list) for v in doc.values()):  # DataFrame.to_json(orient=list)
            return pd.DataFrame(doc)
    raise UsageError(
        f"{source}: JSON must be a list of records, {{'records': [...]}}, a pytest-benchmark "
        "run ({'benchmarks': [...]}) or a unetbench baseline file"
    )


def load_records(path: str | Path) -> pd.DataFrame:
    """Profile records from ``.csv``, ``.parquet`` or ``.json`` (see :func:`records_from_json`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"records file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".json":
            return records_from_json(json.loads(path.read_text()), str(path))
    except (ValueError, OSError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{path}: cannot read records ({exc})") from exc
    raise UsageError(f"records file must end in .csv, .parquet or .json, but got {str(path)!r}")
