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
            "plus PNG plots. Objectives, memory budget and searched fields come from the "
            "description the sweep stored (<results>/<study>/study.json) unless given. "
            "The plots are attached to the study as Optuna artifacts, so optuna-dashboard "
            "shows them (optuna-dashboard STORAGE --artifact-dir DIR)."
        ),
    )
    p.add_argument("results", type=Path, help="study results directory, e.g. results/quick")
    p.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="COLUMN[:maximize|minimize]",
        help="objective column (repeat for several); overrides the study's objectives",
    )
    p.add_argument("--memory-budget", default=None, help="e.g. 8GiB; overrides the study's budget")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: <results>/report)"
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--storage",
        default=None,
        help="the study's Optuna storage, to attach the plots to (any string `unetbench sweep "
        "--storage` takes; default <results>/study.db when it exists)",
    )
    p.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR",
        help="folder of the study's artifacts (default: the study's [storage] artifacts, else "
        "<results>/artifacts, as the sweep)",
    )
    p.add_argument("--no-attach", action="store_true", help="do not attach the plots to the study")


def run(args: argparse.Namespace) -> int:
    from unetbench.report import build_report, load_study_info, summarize
    from unetbench.report.build import TRACEBACKS
    from unetbench.units import parse_bytes

    budget = (
        None if args.memory_budget is None else parse_bytes(args.memory_budget, "--memory-budget")
    )
    overrides = {"objectives": args.objective, "memory_budget_bytes": budget}
    tables = build_report(
        args.results,
        plots=not args.no_plots,
        out_dir=args.out,
        attach=not args.no_attach,
        storage=args.storage,
        artifacts=args.artifacts,
        **overrides,
    )
    info = load_study_info(args.results, **overrides)
    out = args.out or args.results / "report"
    print(summarize(tables, info))
    print(f"report written to {out}/report.md ({len(list(Path(out).glob('*.png')))} plots)")
    if (Path(out) / TRACEBACKS).is_file():
        crashed = int(tables["failures"].query("kind == 'error'")["n_trials"].sum())
        print(f"tracebacks of {crashed} crashed trial(s): {out}/{TRACEBACKS}")
    if "artifacts" in tables:
        print(_attached(tables["artifacts"]))
    return 0


def _attached(table: Any) -> str:
    """What became of the plots as artifacts of the study, and how to see them."""
    done = table[table["action"] != "not attached"]
    if not len(done):
        return f"plots not attached to the study: {table['reason'].iloc[0]}"
    counts = done["action"].value_counts()
    what = ", ".join(f"{counts[a]} {a}" for a in ("added", "replaced", "unchanged") if a in counts)
    row = done.iloc[0]
    return (
        f"plots attached to study {row['study']} as Optuna artifacts ({what}); see them with: "
        f"optuna-dashboard {row['storage']} --artifact-dir {row['artifact_dir']}"
    )
