"""Training seeds, and the confirmation round that retrains the best configs after a search.

Every config is trained with the same list of seeds, so comparisons between configs are
paired: repeat ``r`` of any config trains with seed ``1000 * spec.seed + r``. A search trial
trains repeats ``0 .. repeats-1``. Once the search is done, the ``confirm_top`` best configs
(the Pareto front over the study's objectives among feasible search trials, filled up from
the next non-dominated ranks; within a rank, best first objective first) each get one
confirmation trial that trains repeats ``repeats .. confirm_repeats-1``.

Configs are ranked by their means over every seed trained so far, so a config whose extra
seeds bring its accuracy down may leave the top, and the next one is confirmed in its place:
the round ends when the ``confirm_top`` best configs by their means all have their seeds, or
after ``2 * confirm_top`` confirmations (so a noisy study cannot retrain everything).

The plan depends only on the finished trials, so every worker, and a resumed sweep, computes
the same one; an item is done or under way once a confirmation trial of its config is
WAITING, RUNNING or COMPLETE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from unetbench.seeds import seed_means as mean_over_seeds
from unetbench.sweep.record import CONFIG_KEY, role_of, row_of
from unetbench.sweep.rungs import rung_of, rung_ranked
from unetbench.sweep.spec import StudySpec

__all__ = ["ConfirmItem", "confirm_todo", "pareto_ranked", "seed_means", "train_seeds"]

_ACTIVE = (TrialState.WAITING, TrialState.RUNNING)


@dataclasses.dataclass(frozen=True)
class ConfirmItem:
    """One confirmation trial to run: a config and the repeats it still needs."""

    params: dict[str, Any]  # the Optuna parameters of the config's search trial
    config_key: str
    source: int  # number of the search trial of the config
    repeat_start: int
    n_seeds: int


def train_seeds(spec: StudySpec, start: int, count: int) -> list[int]:
    """Training seeds of repeats ``start .. start+count-1`` (the same for every config)."""
    return [1000 * spec.seed + r for r in range(start, start + count)]


def pareto_ranked(spec: StudySpec, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Feasible COMPLETE trials at the top rung (search trials, without rungs), one per
    config, best first by :func:`~unetbench.sweep.rungs.rung_ranked`, run metrics as seed
    means over every seed trained there, confirmations included (:func:`seed_means`)."""
    return rung_ranked(spec, trials, spec.top_rung, seed_means(trials, spec.top_rung))


def seed_means(trials: Sequence[FrozenTrial], rung: int = 0) -> dict[Any, dict[str, Any]]:
    """Per config key, :func:`unetbench.seeds.seed_means` over the runs of all its finished
    trials that trained at ``rung`` (the top rung, where a study has rungs; confirmations
    train there): each run metric's mean and ``n_seeds``."""
    runs = []
    for t in trials:
        row = row_of(t)
        if t.state != TrialState.COMPLETE or "reused_from" in row:
            continue
        if role_of(t) != "confirm" and rung_of(t) != rung:
            continue
        for run in row.get("runs") or []:
            runs.append({**run, "config_key": row.get(CONFIG_KEY)})
    table = mean_over_seeds(runs)
    return {r["config_key"]: {str(k): v for k, v in r.items()} for r in table.to_dict("records")}


def confirm_todo(spec: StudySpec, trials: Sequence[FrozenTrial]) -> tuple[list[ConfirmItem], int]:
    """The confirmation items not yet done or under way, and how many are under way."""
    if spec.confirm_top < 1 or spec.confirm_repeats <= spec.repeats:
        return [], 0
    confirm = [t for t in trials if role_of(t) == "confirm"]
    done = {t.user_attrs.get(CONFIG_KEY) for t in confirm if t.state == TrialState.COMPLETE}
    active = {t.user_attrs.get(CONFIG_KEY) for t in confirm if t.state in _ACTIVE}
    room = 2 * spec.confirm_top - len(done | active)
    todo: list[ConfirmItem] = []
    for t in pareto_ranked(spec, trials)[: spec.confirm_top]:
        key = str(t.user_attrs[CONFIG_KEY])
        if key not in done and key not in active and len(todo) < room:
            todo.append(
                ConfirmItem(
                    params=dict(t.params),
                    config_key=key,
                    source=t.number,
                    repeat_start=spec.repeats,
                    n_seeds=spec.confirm_repeats - spec.repeats,
                )
            )
    return todo, sum(t.state in _ACTIVE for t in confirm)
