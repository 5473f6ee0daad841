"""The next thing a worker does: start a search trial, start a confirmation, wait, or stop.

Workers never count on each other. Each time it is free, a worker fails the RUNNING trials of
dead workers, reads the trials and decides:

1. fewer than ``n_trials`` COMPLETE search trials, and fewer than ``n_trials`` COMPLETE or
   RUNNING: start a search trial (a trial a user enqueued first, else a new one). It is
   created with its role and worker in one storage call; then it is checked against the
   **surplus rule** (if ``n_trials`` search trials numbered before it are COMPLETE or RUNNING,
   workers on other machines started trials at the same moment and this one is not needed: it
   is failed as ``surplus`` before anything is proposed or trained); then the sampler proposes
   and claims a legal, new config (:mod:`unetbench.sweep.sampling`).
2. the search trials are all started but not all COMPLETE: wait (one may die and need a rerun).
3. the search is done: the next item of the confirmation round
   (:mod:`unetbench.sweep.confirm`) that no trial holds is claimed, re-checked, and its trial
   created with role, config and seeds in one call; none left but some running: wait;
   none at all: stop.

No trial is ever created without its role, and no WAITING trial is left for a worker to pick
up by accident. On local storages the worker holds the storage's lock around this step, so the
trials it reads cannot change under it; on shared storages claims and the surplus rule make
it safe without a lock.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from unetbench.sweep.claims import ConfigClaims
from unetbench.sweep.confirm import ConfirmItem, confirm_todo
from unetbench.sweep.liveness import Liveness
from unetbench.sweep.record import (
    CONFIG_KEY,
    CONFIRM_OF,
    N_SEEDS,
    PROMOTED_FROM,
    REPEAT_START,
    RUNG,
    new_trial,
    role_of,
    set_worker,
    write_failure,
)
from unetbench.sweep.rungs import Promotion, promotions_todo, rung_of
from unetbench.sweep.space import suggest
from unetbench.sweep.spec import StudySpec

__all__ = ["Proposal", "Proposer"]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Proposal:
    """What :meth:`Proposer.next` decided. ``action`` is ``run``, ``wait`` or ``stop``; a
    ``run`` has the trial, its role, the sampled field values and the claim it holds."""

    action: str
    trial: optuna.Trial | None = None
    role: str = "search"
    sampled: dict[str, Any] = dataclasses.field(default_factory=dict)
    claim: str | None = None


class Proposer:
    """Decides and starts the next trial of one worker (see the module docstring)."""

    def __init__(
        self,
        spec: StudySpec,
        study: optuna.Study,
        n_trials: int,
        claims: ConfigClaims,
        liveness: Liveness,
    ) -> None:
        self.spec = spec
        self.study = study
        self.n_trials = n_trials
        self.claims = claims
        self.liveness = liveness
        self.started: int | None = None  # the trial the latest call started, for the worker

    def next(self) -> Proposal:
        self.liveness.fail_dead(self.study)
        trials = self.study.get_trials(deepcopy=False)
        if self.spec.rungs:  # successive halving: a promotion goes before a new config
            promoted = self._promotion(trials)
            if promoted is not None:
                return promoted
        search = [t for t in trials if role_of(t) == "search"]
        complete = sum(t.state == TrialState.COMPLETE for t in search)
        running = sum(t.state == TrialState.RUNNING for t in search)
        if complete < self.n_trials:
            if complete + running >= self.n_trials:
                return Proposal("wait")
            return self._search()
        if self.spec.rungs and any(
            t.state == TrialState.RUNNING and role_of(t) != "confirm" for t in trials
        ):
            return Proposal("wait")  # a running rung may yet promote: confirm at the end
        proposal = self._confirmation(trials)
        if proposal is not None:
            return proposal
        if any(t.state == TrialState.RUNNING for t in trials):
            return Proposal("wait")
        return Proposal("stop")

    def _search(self) -> Proposal:
        trial_id = self._pop_enqueued()
        popped = trial_id is not None
        if trial_id is None:
            trial_id = new_trial(self.study, "search")
        self.started = trial_id
        if self._surplus(trial_id, popped):
            return Proposal("wait")
        trial = optuna.Trial(self.study, trial_id)
        sampled = suggest(trial, self.spec)
        key = trial.study._storage.get_trial_user_attrs(trial_id).get(CONFIG_KEY)
        held = key if key is not None and self.claims.holds(key) else None
        return Proposal("run", trial, role_of(trial), sampled, held)

    def _pop_enqueued(self) -> int | None:
        """A WAITING trial (enqueued by a user, or a confirmation of a study run before 0.3),
        now RUNNING and recorded as this worker's; None if there is none."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if self.study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                set_worker(self.study._storage, t._trial_id)
                return t._trial_id
        return None

    def _surplus(self, trial_id: int, popped: bool) -> bool:
        """Fail the new search trial if ``n_trials`` search trials before it are COMPLETE or
        RUNNING (started by other workers at the same moment). A trial popped from the queue
        has an old number: every other search trial counts."""
        trial = self.study._storage.get_trial(trial_id)
        if role_of(trial) != "search":
            return False
        ahead = sum(
            (t.number < trial.number or (popped and t.number != trial.number))
            and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
            and role_of(t) == "search"
            for t in self.study.get_trials(deepcopy=False)
        )
        if ahead < self.n_trials:
            return False
        self._fail_surplus(
            trial_id, f"surplus: the study already had {self.n_trials} trials when this one started"
        )
        return True

    def _fail_surplus(self, trial_id: int, reason: str) -> None:
        """Fail a trial this worker just created and does not need (status ``surplus``)."""
        write_failure(self.study._storage, trial_id, reason, status="surplus")
        self.study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
        self.started = None
        _LOG.info("trial %d not run: %s", self.study._storage.get_trial(trial_id).number, reason)

    def _confirmation(self, trials: list[FrozenTrial]) -> Proposal | None:
        """Start the next confirmation no trial holds; None if none is left to start."""
        todo, _ = confirm_todo(self.spec, trials)
        for item in todo:
            trial_id = self._create_confirmation(item)
            self.started = trial_id
            claim = f"{item.config_key}|confirm"
            if self.claims.take(claim, trial_id) and not self._confirm_held(item, trial_id):
                trial = optuna.Trial(self.study, trial_id)
                _LOG.info(
                    "confirming trial %d's config with %d more seed(s)", item.source, item.n_seeds
                )
                return Proposal("run", trial, "confirm", suggest(trial, self.spec), claim)
            # A worker elsewhere started the same confirmation at the same moment.
            self.claims.release(claim)
            self._fail_surplus(trial_id, "surplus: another worker confirms this config")
        return None

    def _promotion(self, trials: list[FrozenTrial]) -> Proposal | None:
        """Start the first promotion no trial holds (:mod:`unetbench.sweep.rungs`); None if
        there is none to start."""
        search = [t for t in trials if role_of(t) == "search"]
        done = sum(t.state == TrialState.COMPLETE for t in search) >= self.n_trials
        for item in promotions_todo(self.spec, trials, done):
            trial_id = self._create_promotion(item)
            self.started = trial_id
            claim = f"{item.config_key}|rung{item.rung}"
            if self.claims.take(claim, trial_id) and not self._promotion_held(item, trial_id):
                trial = optuna.Trial(self.study, trial_id)
                _LOG.info(
                    "promoting trial %d's config to rung %d (%d steps)",
                    item.source,
                    item.rung,
                    self.spec.rung_steps(item.rung),
                )
                return Proposal("run", trial, "promote", suggest(trial, self.spec), claim)
            self.claims.release(claim)
            self._fail_surplus(trial_id, "surplus: another worker promotes this config")
        return None

    def _promotion_held(self, item: Promotion, mine: int) -> bool:
        """Whether a promotion of the item's config to its rung finished since the list was
        read (RUNNING ones hold the claim: it decided)."""
        return any(
            t._trial_id != mine
            and role_of(t) == "promote"
            and rung_of(t) == item.rung
            and t.user_attrs.get(CONFIG_KEY) == item.config_key
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        )

    def _create_promotion(self, item: Promotion) -> int:
        source = self.study._storage.get_trial(
            self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, item.source
            )
        )
        return new_trial(
            self.study,
            "promote",
            attrs={CONFIG_KEY: item.config_key, RUNG: item.rung, PROMOTED_FROM: item.source},
            params=source.params,
            distributions=source.distributions,
        )

    def _confirm_held(self, item: ConfirmItem, mine: int) -> bool:
        """Whether a confirmation of the item's config finished (or is WAITING, from a study
        before 0.3) since the todo list was read. RUNNING ones hold the claim: it decided."""
        return any(
            t._trial_id != mine
            and role_of(t) == "confirm"
            and t.user_attrs.get(CONFIG_KEY) == item.config_key
            for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.WAITING, TrialState.COMPLETE)
            )
        )

    def _create_confirmation(self, item: ConfirmItem) -> int:
        source = self.study._storage.get_trial(
            self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, item.source
            )
        )
        return new_trial(
            self.study,
            "confirm",
            attrs={
                CONFIG_KEY: item.config_key,
                CONFIRM_OF: item.source,
                REPEAT_START: item.repeat_start,
                N_SEEDS: item.n_seeds,
            },
            params=source.params,
            distributions=source.distributions,
        )
