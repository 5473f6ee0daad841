"""Successive halving across workers: which configs train on to the next rung (ASHA).

With ``[train] steps = [40, 160, 640]`` every searched config trains 40 steps (rung 0, its
search trial). Whenever a worker is free it first looks for a **promotion**, top rung first:
of the ``n`` configs that finished rung ``k`` (feasible), the best ``n // eta`` by the one
ranking (:func:`unetbench.ranking.ranked` over the study's objectives, rung ``k``'s Dice with
the config's measured memory and speed) that no trial trains at rung ``k + 1`` yet. Only if
there is none does it start a new config at rung 0. No worker waits for a rung to fill
(asynchronous successive halving, ASHA: Li et al. 2020); the counts of promotions per rung
are those of synchronous successive halving or more: a config promoted early, when its rung
had few finished configs, stays promoted even if later configs push it out of the best
``1/eta`` (measured: 3 configs reached the top rung of an 18-config study where synchronous
halving keeps 2).

A promotion is a trial with role ``promote``, its rung and the number of the trial it
continues (``promoted_from``); it trains only the extra steps, from the stored state of that
trial (:mod:`unetbench.sweep.states`). A promotion whose worker died leaves a FAIL trial: the
config is promotable again, and another worker takes it. The confirmation round runs at the
top rung, over the configs that reached it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from unetbench.ranking import ranked, spread_of
from unetbench.sweep.record import CONFIG_KEY, RUNG, role_of, row_of
from unetbench.sweep.spec import StudySpec

__all__ = ["Promotion", "promotions_todo", "rung_of", "rung_ranked"]

_HELD = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)


@dataclasses.dataclass(frozen=True)
class Promotion:
    """One config to train on from ``source`` (a trial at rung ``rung - 1``) to ``rung``."""

    config_key: str
    source: int
    rung: int


def rung_of(trial: FrozenTrial) -> int:
    """The rung a trial trained to (0: a search trial, or any trial of a study without rungs)."""
    return int(trial.user_attrs.get(RUNG, 0))


def rung_ranked(
    spec: StudySpec,
    trials: Sequence[FrozenTrial],
    rung: int,
    means: Mapping[Any, Mapping[str, Any]] | None = None,
) -> list[FrozenTrial]:
    """Feasible COMPLETE trials that trained at ``rung`` (search or promotion, one per config,
    results reused from another trial left out), best first by the one ranking; ``means``
    (per config key) replace a trial's run metrics, e.g. seed means over more seeds."""
    seen: set[Any] = set()
    ok = []
    for t in sorted(trials, key=lambda t: t.number):
        row = row_of(t)
        key = row.get(CONFIG_KEY)
        if (
            t.state == TrialState.COMPLETE
            and role_of(t) in ("search", "promote")
            and rung_of(t) == rung
            and row.get("feasible")
            and "reused_from" not in row
            and key not in seen
            and t.values is not None
        ):
            seen.add(key)
            ok.append(t)
    if not ok:
        return []
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in spec.directions])
    scores, spreads = [], []
    for t in ok:
        row = {**row_of(t), **(means or {}).get(t.user_attrs[CONFIG_KEY], {})}
        values = [row.get(n, v) for n, v in zip(spec.objective_names, t.values, strict=True)]
        scores.append(signs * np.array(values, dtype=float))
        spreads.append([spread_of(row, n) for n in spec.objective_names])
    by_number = {t.number: t for t in ok}
    order = ranked([t.number for t in ok], np.array(scores), np.array(spreads))
    return [by_number[n] for n in order]


def promotions_todo(
    spec: StudySpec, trials: Sequence[FrozenTrial], search_done: bool
) -> list[Promotion]:
    """Promotions no trial holds yet, top rung first, best first within a rung.

    Rung ``k`` promotes ``n // eta`` of its ``n`` finished configs; once it is *closed* (the
    search is done, ``search_done``, and nothing below or at rung ``k`` runs or waits to be
    promoted) at least one, so a small study still reaches the top rung.
    """
    by_rung: list[list[Promotion]] = []
    closed = search_done and not _running(trials, 0)
    for rung in range(spec.top_rung):
        done = rung_ranked(spec, trials, rung)
        held = {
            t.user_attrs.get(CONFIG_KEY)
            for t in trials
            if role_of(t) == "promote" and rung_of(t) == rung + 1 and t.state in _HELD
        }
        quota = max(1, len(done) // spec.eta) if closed else len(done) // spec.eta
        todo = [
            Promotion(str(t.user_attrs[CONFIG_KEY]), t.number, rung + 1)
            for t in done[:quota]
            if t.user_attrs[CONFIG_KEY] not in held
        ]
        by_rung.append(todo)
        closed = closed and not todo and not _running(trials, rung + 1)
    return [p for todo in reversed(by_rung) for p in todo]


def _running(trials: Sequence[FrozenTrial], rung: int) -> bool:
    return any(
        t.state == TrialState.RUNNING and role_of(t) in ("search", "promote") and rung_of(t) == rung
        for t in trials
    )
