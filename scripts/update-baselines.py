"""Rewrite (or check) the project's baseline of deterministic metrics.

    .venv/bin/python scripts/update-baselines.py          # rewrite the baseline
    .venv/bin/python scripts/update-baselines.py --check  # compare only; exit 1 on a difference

The baseline is results/baselines/regression.json (``--baseline PATH`` for another file).

The configs are the project's regression set (tests/regression_suite.py); tests/test_baseline.py
checks the committed file on every CI run. Rewrite it after an intended change (new torch, new
counting rule, model change) and commit the file with the change.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

# The regression set is test code, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from regression_suite import BASELINE_PATH, compute_entries

from unetbench.gate.baseline import Baseline, environment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/update-baselines.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE_PATH)
    parser.add_argument(
        "--check", action="store_true", help="compare with the baseline instead of rewriting it"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    entries = compute_entries()
    baseline = Baseline.load(args.baseline)
    if not args.check:
        baseline.entries, baseline.environment = entries, environment()
        print(f"wrote {len(entries)} entries to {baseline.save()}")
        return 0
    failed = 0
    for name, entry in entries.items():
        if name not in baseline.entries:
            print(f"{name}: not in {args.baseline}")
            failed += 1
            continue
        result = baseline.compare(name, entry["metrics"])
        if not result.passed:
            print(f"{name}:\n{result.format()}")
            failed += 1
    stale = sorted(set(baseline.entries) - set(entries))
    if stale:
        print(f"entries of no current case: {', '.join(stale)}")
    print(f"{len(entries) - failed}/{len(entries)} entries match {args.baseline}")
    return 1 if failed or stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
