"""Reports of a study: tables (CSV, Parquet, Markdown) and plots, computed from trial records."""

from __future__ import annotations

from unetbench.report._study import (
    Objective,
    StudyInfo,
    load_study_info,
    parse_bytes,
    parse_objectives,
)
from unetbench.report.build import TABLES, build_report, load_trials, markdown_table, summarize
from unetbench.report.tables import (
    checkpointing_savings,
    factor_effects,
    failures,
    pareto_front,
    pareto_mask,
)

__all__ = [
    "TABLES",
    "Objective",
    "StudyInfo",
    "build_report",
    "checkpointing_savings",
    "factor_effects",
    "failures",
    "load_study_info",
    "load_trials",
    "markdown_table",
    "pareto_front",
    "pareto_mask",
    "parse_bytes",
    "parse_objectives",
    "summarize",
]
