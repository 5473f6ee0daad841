"""One row per config: the search trial's measurements plus accuracy over all its seeds.

A study's ``trials.parquet`` holds one row per trial: the search trial that measured a config
(memory, speed, FLOPs and the accuracy of its seeds) and, for Pareto candidates, confirmation
trials that trained it with more seeds. ``runs.parquet`` holds one row per training run.
The config table joins the two, so the Pareto front and the factor effects compare configs by
their mean accuracy over every counted seed (:mod:`unetbench.seeds`), with a 95% interval.

Trials stopped before they measured anything (``interrupted`` by a signal, ``surplus`` to a
study that already had its trials) are bookkeeping, not configs: a resumed study has the same
configs as one that ran without a break.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from unetbench.report.rungs import rung_ladder, with_rungs
from unetbench.report.stats import config_accuracy
from unetbench.report.tables import (
    config_columns,
    is_stopped,
    pareto_mask,
    trial_states,
    usable_mask,
)
from unetbench.seeds import RUN_METRICS
from unetbench.studyinfo import Objective

__all__ = ["BOUNDS", "RUN_METRICS", "config_table", "overlapping", "restore_choices"]

#: Values a run metric can take; its intervals are clipped to them.
BOUNDS = {
    "val_dice": (0.0, 1.0),
    "val_iou": (0.0, 1.0),
    "train_loss": (0.0, math.inf),
    "train_s": (0.0, math.inf),
}


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _text(value: object, booleans: bool) -> str:
    """A value as text that equals its choice's: 2.0 -> "2", np.True_ -> "True", [0, 1]."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        if booleans and number in (0.0, 1.0):
            return str(bool(number))
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, list | tuple | np.ndarray):
        return str([_text(v, False) for v in value]).replace("'", "")
    return str(value)


def restore_choices(frame: pd.DataFrame, search: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """``frame`` with each searched field's values as the study's choices.

    A column of ints becomes floats next to the empty cell of a trial that stored no config
    (``2.0, 4.0``); read back as the choices they are, the report prints ``2, 4`` and finds
    every option the study searched. Values that match no choice are kept as they are.
    """
    out = frame.copy()
    for field, choices in search.items():
        if field not in out.columns:
            continue
        booleans = all(isinstance(c, bool) for c in choices)
        lookup = {_text(c, booleans): c for c in choices}

        def back(value: Any, lookup: dict[str, Any] = lookup, booleans: bool = booleans) -> Any:
            return None if _missing(value) else lookup.get(_text(value, booleans), value)

        # Built as objects: Series.map would infer floats again from ints next to None.
        out[field] = pd.Series([back(v) for v in out[field]], index=out.index, dtype=object)
    return out


def config_table(
    trials: pd.DataFrame,
    runs: pd.DataFrame | None,
    objectives: Sequence[Objective],
    rungs: Sequence[int] = (),
) -> pd.DataFrame:
    """The search trials, one per config, with run metrics replaced by their seed means.

    A config is a search trial that completed (infeasible ones included: their memory
    estimate still says what they would cost) or failed with its config recorded; a config
    tried more than once (a dead worker's trial, a crash, then a completed retry) is shown
    by its best trial. Interrupted and surplus trials are never configs. Only usable configs
    can be on the front.

    Adds ``n_seeds`` (counted runs), ``seeds``, ``run_status`` ("2 ok, 1 capped (not
    counted)"), ``<metric>_std``, ``<metric>_ci95_low``/``_high`` for every run metric present,
    and ``on_pareto_front`` (over all objectives, on the means, with timing spreads as ties).
    Without ``runs`` each trial counts as one seed of its own config.

    With successive-halving ``rungs`` (the steps of each rung), promotion trials are the
    same config trained longer: a config's accuracy is that of its highest rung, with
    ``<metric>_rung<k>``, ``steps_rung<k>`` and ``top_rung``
    (:func:`unetbench.report.rungs.with_rungs`), and only configs that reached the top rung
    can be on the front, as in the sweep.
    """
    search = trials
    if "role" in trials.columns:
        roles = trials["role"].fillna("search").astype(str)
        search = trials[~roles.isin(("confirm", "promote"))]
    complete = trial_states(search).eq("COMPLETE")
    described = search[config_columns(search, with_setting=False)].notna().any(axis=1)
    search = search[~is_stopped(search) & (complete | described)]
    if "config_key" not in search.columns:
        search = search.assign(config_key=None)
    keys = search["config_key"].where(
        search["config_key"].notna(), "trial " + search["trial_number"].astype(str)
    )
    # Best trial of each config first: usable, then complete, then failed.
    preference = 2 - usable_mask(search, feasible_only=False).astype(int) - complete[search.index]
    order = preference.sort_values(kind="stable").index
    configs = search.assign(config_key=keys).loc[order].drop_duplicates("config_key")
    configs = configs.sort_values("trial_number").reset_index(drop=True)
    metrics = [m for m in RUN_METRICS if m in configs.columns]
    all_runs = runs
    if runs is None or runs.empty or "config_key" not in runs.columns:
        runs = configs.assign(train_seed=configs.get("train_seed", 0))
    accuracy = config_accuracy(runs, [m for m in metrics if m in runs.columns], BOUNDS)
    keep = [c for c in configs.columns if c not in accuracy.columns or c == "config_key"]
    table = configs[keep].merge(accuracy, on="config_key", how="left")
    if rungs:
        ladder = rung_ladder(trials, all_runs, rungs, metrics, table, BOUNDS)
        wide = ["val_dice", *(o.column for o in objectives if o.column in RUN_METRICS)]
        table = with_rungs(table, ladder, rungs, metrics, wide)
    table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
    # A study in which nothing finished (every trial crashed) has no front, and may not
    # even have the objectives' columns: its report is its failures.
    # With rungs, the front is judged at the top rung, where the sweep judges it.
    ranked = table[table["top_rung"].eq(len(rungs) - 1)] if rungs else table
    table["on_pareto_front"] = False
    if usable_mask(ranked).any():
        table.loc[ranked.index, "on_pareto_front"] = pareto_mask(ranked, objectives)
    return _whole_numbers_as_ints(table)


def _whole_numbers_as_ints(table: pd.DataFrame) -> pd.DataFrame:
    """Float columns without gaps whose values are all whole, as ints (object columns of
    bools or ints as such).

    A column of ints becomes floats in ``trials.parquet`` when any trial (one stopped before
    it stored a record) has no value; once the configs leave that trial out, they are ints
    again, as in a study that ran without a break.
    """
    out = table.infer_objects()  # True/False next to a missing value: bools again
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_float_dtype(values) and values.notna().all() and len(values):
            finite = np.isfinite(values.to_numpy())
            if finite.all() and (values == values.round()).all():
                out[column] = values.astype("int64")
    return out


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
