"""The one ranking of configs over several objectives, used by the sweep and the report.

Configs are sorted by non-dominated rank (rank 0 is the Pareto front), then by their first
objective (best first), then by trial number. A config dominates another when it is at least
as good on every objective and better on one, where differences within the objectives'
measured **spread** are ties: a step time or throughput is a median of a few timed rounds,
and a difference smaller than its interquartile range is noise, not a result (memory, FLOPs
and parameters are exact and have no spread; Dice is a mean over seeds whose noise the report
shows with intervals, so it counts as measured).

:func:`spread_of` says what the spread of each objective column is; :func:`ranks` and
:func:`ranked` take values already read from records, so the sweep (Optuna trials) and the
report (parquet rows) rank the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["dominates", "ranked", "ranks", "spread_of"]


def spread_of(row: Mapping[str, Any], column: str) -> float:
    """The measured spread of objective ``column`` in ``row``; 0 for exact quantities.

    ``train_step_s`` has its interquartile range ``train_step_iqr_s``; a throughput
    ``X_per_s`` derived from it has the same relative spread. Missing or non-finite -> 0.
    """
    step: Any = row.get("train_step_s")
    iqr: Any = row.get("train_step_iqr_s")
    if not (_finite(step) and _finite(iqr)) or float(step) <= 0:
        return 0.0
    if column == "train_step_s":
        return float(iqr)
    if column.endswith("_per_s") and _finite(row.get(column)):
        return abs(float(row[column])) * float(iqr) / float(step)
    return 0.0


def dominates(a: Sequence[float], b: Sequence[float], tie: Sequence[float]) -> bool:
    """Whether scores ``a`` dominate ``b`` (larger is better) when differences up to ``tie``
    (per objective) are ties: no objective worse beyond its tie, one better beyond it."""
    worse = any(x < y - t for x, y, t in zip(a, b, tie, strict=True))
    better = any(x > y + t for x, y, t in zip(a, b, tie, strict=True))
    return better and not worse


def ranks(scores: np.ndarray, spreads: np.ndarray | None = None) -> np.ndarray:
    """Non-dominated rank of each row of ``scores`` (n x k, larger is better); 0 = front.

    ``spreads`` (n x k, >= 0) are the rows' measured spreads; two rows tie on an objective
    when they differ by no more than the larger of their spreads.
    """
    n = len(scores)
    spreads = np.zeros_like(scores, dtype=float) if spreads is None else spreads
    rank = np.full(n, -1, dtype=int)
    left = list(range(n))
    level = 0
    while left:
        front = [
            i
            for i in left
            if not any(
                dominates(scores[j], scores[i], np.maximum(spreads[i], spreads[j]))
                for j in left
                if j != i
            )
        ]
        if not front:  # ties make dominance cyclic: what is left is one rank
            front = left
        for i in front:
            rank[i] = level
        left = [i for i in left if i not in front]
        level += 1
    return rank


def ranked(
    numbers: Sequence[int], scores: np.ndarray, spreads: np.ndarray | None = None
) -> list[int]:
    """``numbers`` (trial numbers, one per row of ``scores``) best first: by :func:`ranks`,
    then by the first objective, then by number."""
    rank = ranks(scores, spreads)
    order = sorted(range(len(numbers)), key=lambda i: (rank[i], -scores[i][0], numbers[i]))
    return [numbers[i] for i in order]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
