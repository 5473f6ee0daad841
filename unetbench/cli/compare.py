"""``unetbench compare BASELINE CURRENT``: exit 1 when CURRENT regresses against BASELINE."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unetbench._errors import UsageError


def _tolerance_for(text: str) -> tuple[str, float]:
    metric, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not sep or not metric or number < 0:
        raise UsageError(f"--tolerance-for must look like METRIC=0.2, but got {text!r}")
    return metric, number


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="gate profile records against a baseline (exit 1 on regression)",
        description=(
            "Compare CURRENT records with BASELINE (CSV, Parquet, JSON records, pytest-benchmark "
            "JSON with metrics in extra_info, a unetbench baseline file, or a sweep's "
            "trials.parquet or runs.parquet). params, fwd_macs, fwd_flops, train_flops and "
            "estimates (est_*) must be equal; times, throughputs and measured memory may be "
            "worse by at most the tolerance. Times of a row timed under load (timing_note) are "
            "not judged; settings (memory budget, threads, backend flags) are reported when "
            "they differ, never as regressions. Exit code: 0 pass, 1 regression, 2 bad input."
        ),
    )
    p.add_argument("baseline", type=Path, help="baseline records file")
    p.add_argument("current", type=Path, help="current records file")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="relative tolerance of measured metrics (default 0.1 = 10%%)",
    )
    p.add_argument(
        "--tolerance-for",
        action="append",
        default=[],
        metavar="METRIC=TOL",
        help="tolerance of one metric, e.g. train_step_s=0.25 (repeatable)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=None,
        metavar="COLUMN",
        help="column identifying a row (repeatable; default: config fields, "
        "input_shape, batch_size, checkpointing, or the benchmark name, or config_key and role "
        "for a sweep's trials, config_key and train_seed for its runs; plus device type and "
        "precision when the tables have them)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="METRIC",
        help="metric not to compare (repeatable)",
    )
    p.add_argument("--all", action="store_true", help="show every comparison, not only changes")


def run(args: argparse.Namespace) -> int:
    from unetbench.gate import compare_records, load_records

    tolerances = dict(_tolerance_for(t) for t in args.tolerance_for)
    result = compare_records(
        load_records(args.baseline),
        load_records(args.current),
        tolerances,
        default_tolerance=args.tolerance,
        key=args.key,
        ignore=args.ignore,
    )
    print(result.format(all_rows=args.all))
    return 0 if result.passed else 1
