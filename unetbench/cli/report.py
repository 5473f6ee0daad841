"""``unetbench report results/<study>``: write the report tables and plots, print a summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables and plots of a finished study",
        description=(
            "Read <results>/<study>/trials.parquet and write the report under "
            "<results>/<study>/report/: all trials, Pareto front, per-factor effects, "
            "checkpointing savings and failures as CSV, Parquet and Markdown (report.md), "
            "plus PNG plots. Objectives and memory budget come from the study spec unless given."
        ),
    )
    p.add_argument("results", type=Path, help="study results directory, e.g. results/quick")
    p.add_argument("--spec", type=Path, default=None, help="study spec (default: found by name)")
    p.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="COLUMN[:maximize|minimize]",
        help="objective column (repeat for several); overrides the spec",
    )
    p.add_argument("--memory-budget", default=None, help="e.g. 8GiB; overrides the spec")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: <results>/report)"
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from unetbench.report import build_report, load_study_info, summarize

    tables = build_report(
        args.results,
        spec=args.spec,
        objectives=args.objective,
        memory_budget=args.memory_budget,
        plots=not args.no_plots,
        out_dir=args.out,
    )
    info = load_study_info(
        args.results,
        spec_path=args.spec,
        objectives=args.objective,
        memory_budget=args.memory_budget,
    )
    out = args.out or args.results / "report"
    print(summarize(tables, info))
    print(f"report written to {out}/report.md ({len(list(Path(out).glob('*.png')))} plots)")
    return 0
