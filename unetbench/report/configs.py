"""One row per config: the search trial's measurements plus accuracy over all its seeds.

A study's ``trials.parquet`` holds one row per trial: the search trial that measured a config
(memory, speed, FLOPs and the accuracy of its seeds) and, for Pareto candidates, confirmation
trials that trained it with more seeds. ``runs.parquet`` holds one row per training run.
The config table joins the two, so the Pareto front and the factor effects compare configs by
their mean accuracy over every seed, with a 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from unetbench.report.stats import config_accuracy
from unetbench.report.tables import pareto_mask, usable_mask
from unetbench.studyinfo import Objective

__all__ = ["BOUNDS", "RUN_METRICS", "config_table", "overlapping"]

#: Run columns that vary with the training seed (aggregated over seeds per config).
RUN_METRICS = ("val_dice", "val_iou", "train_loss")
#: Values a run metric can take; its intervals are clipped to them.
BOUNDS = {"val_dice": (0.0, 1.0), "val_iou": (0.0, 1.0), "train_loss": (0.0, float("inf"))}


def config_table(
    trials: pd.DataFrame, runs: pd.DataFrame | None, objectives: Sequence[Objective]
) -> pd.DataFrame:
    """The search trials, one per config, with run metrics replaced by their seed means.

    Every search trial's config appears once, infeasible ones included (their memory
    estimate still says what they would cost); only usable ones can be on the front.

    Adds ``n_seeds``, ``seeds``, ``<metric>_std``, ``<metric>_ci95_low``/``_high`` for every
    run metric present, and ``on_pareto_front`` (over all objectives, on the means). Without
    ``runs`` each trial counts as one seed of its own config.
    """
    search = trials
    if "role" in trials.columns:
        search = trials[trials["role"].fillna("search").astype(str).ne("confirm")]
    if "config_key" not in search.columns:
        search = search.assign(config_key=None)
    keys = search["config_key"].where(
        search["config_key"].notna(), "trial " + search["trial_number"].astype(str)
    )
    usable = usable_mask(search, feasible_only=False)
    # A config retried after a dead worker has a FAIL and a COMPLETE trial: keep the latter.
    order = (~usable).astype(int).sort_values(kind="stable").index
    configs = search.assign(config_key=keys).loc[order].drop_duplicates("config_key")
    configs = configs.sort_values("trial_number").reset_index(drop=True)
    metrics = [m for m in RUN_METRICS if m in configs.columns]
    if runs is None or runs.empty or "config_key" not in runs.columns:
        runs = configs.assign(train_seed=configs.get("train_seed", 0))
        runs = runs[runs["status"].astype(str).eq("ok")] if "status" in runs else runs
    accuracy = config_accuracy(runs, [m for m in metrics if m in runs.columns], BOUNDS)
    keep = [c for c in configs.columns if c not in accuracy.columns or c == "config_key"]
    table = configs[keep].merge(accuracy, on="config_key", how="left")
    table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
    table["on_pareto_front"] = pareto_mask(table, objectives)
    return table


def overlapping(front: pd.DataFrame, metric: str) -> pd.Series:
    """For each front row, the trial numbers of other front rows whose ``metric`` CIs overlap.

    Two configs whose intervals overlap cannot be told apart on ``metric`` by these seeds.
    Rows without an interval (one seed) get ``"1 seed"``.
    """
    low, high = front[f"{metric}_ci95_low"], front[f"{metric}_ci95_high"]
    out = []
    for i in front.index:
        if pd.isna(low[i]) or pd.isna(high[i]):
            out.append("1 seed")
            continue
        ties = [
            str(front.at[j, "trial_number"])
            for j in front.index
            if j != i and pd.notna(low[j]) and low[j] <= high[i] and low[i] <= high[j]
        ]
        out.append(", ".join(ties) if ties else "none")
    return pd.Series(out, index=front.index, dtype=object)
