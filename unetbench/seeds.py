"""The one definition of a config's accuracy over seeds, used by the sweep and the report.

A config's run metric (``val_dice`` ...) is the plain mean over its **counted** runs:
- a run with status ``ok`` counts;
- a ``diverged`` run counts with the Dice and IoU of 0 it records: training this config at
  this learning rate is unstable, and that is a property of the config;
- a ``capped`` run (stopped by the time guard before its step budget) does not: it measures
  how busy the machine was, not the config; nor does a run that failed (``error``, ``oom``),
  which measured nothing.
``n_seeds`` says how many runs count; ``runs.parquet`` keeps every run with its ``status``.

The confirmation round's ranking, the ``best ... mean of K seeds`` line of ``unetbench
sweep`` and the report's config table all call :func:`seed_means`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["COUNTED", "RUN_METRICS", "counted", "counted_runs", "seed_means"]

#: Run statuses whose metrics count (a capped run never does, whatever its status).
COUNTED = frozenset({"ok", "diverged"})

#: Run columns that vary with the training seed; a trial stores their mean over its runs.
RUN_METRICS = ("val_dice", "val_iou", "train_loss", "train_s")


def counted(run: Mapping[str, Any]) -> bool:
    """Whether a run counts towards its config's means: ok or diverged, not capped."""
    status = run.get("status", "ok")
    return str(status) in COUNTED and not bool(run.get("capped", False))


def counted_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``runs`` (one per training run) that :func:`counted` accepts."""
    mask = pd.Series(True, index=runs.index)
    if "status" in runs.columns:
        mask &= runs["status"].fillna("ok").astype(str).isin(COUNTED)
    if "capped" in runs.columns:
        mask &= ~runs["capped"].fillna(False).astype(bool)
    return runs[mask]


def seed_means(
    runs: pd.DataFrame | Iterable[Mapping[str, Any]], metrics: Sequence[str] = RUN_METRICS
) -> pd.DataFrame:
    """One row per ``config_key``: ``n_seeds`` (counted runs), ``seeds`` ("1000,1001") and the
    mean of each of ``metrics`` over the counted runs (NaN where a metric is missing).

    ``runs`` needs ``config_key`` and may have ``train_seed``, ``status`` and ``capped``.
    Configs without a counted run are absent.
    """
    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame(list(runs))
    columns = ["config_key", "n_seeds", "seeds", *metrics]
    if frame.empty or "config_key" not in frame.columns:
        return pd.DataFrame(columns=columns)
    ok = counted_runs(frame)
    rows = []
    for key, group in ok.groupby("config_key", sort=False, dropna=False):
        row: dict[str, Any] = {"config_key": key, "n_seeds": len(group), "seeds": ""}
        if "train_seed" in group.columns:
            seeds = pd.to_numeric(group["train_seed"], errors="coerce").dropna()
            row["seeds"] = ",".join(str(int(s)) for s in sorted(seeds))
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce") if m in group else pd.Series([])
            row[m] = float(values.mean()) if values.notna().all() and len(values) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
