"""Reports of a study: tables (CSV, Parquet, Markdown) and plots, computed from trial records."""

from __future__ import annotations

from unetbench.report.build import TABLES, build_report, load_runs, load_trials
from unetbench.report.markdown import summarize
from unetbench.report.outcomes import failures, stopped_trials
from unetbench.report.render import render_table
from unetbench.report.study import load_study_info
from unetbench.report.tables import (
    checkpointing_savings,
    pareto_front,
    pareto_mask,
)
from unetbench.studyinfo import Objective, StudyInfo

__all__ = [
    "TABLES",
    "Objective",
    "StudyInfo",
    "build_report",
    "checkpointing_savings",
    "failures",
    "load_runs",
    "load_study_info",
    "load_trials",
    "pareto_front",
    "pareto_mask",
    "render_table",
    "stopped_trials",
    "summarize",
]
