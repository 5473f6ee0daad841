"""Proposals that are legal and new: no trial is spent on an illegal or a repeated config.

Optuna's samplers propose from the product of the searched choices: some combinations are not
legal ``UNetConfig``\\ s (resize-conv with ``merge_mode="add"``), and TPE or NSGA-II propose
configs they have already seen. :class:`LegalSampler` proposes a whole config at once (every
searched field is in its relative search space) and

- in an exhaustive study (the legal space is no larger than ``n_trials``, or
  ``sampler = "grid"``) takes the first config of a seeded shuffle of the legal list that no
  search trial holds, so every legal config runs exactly once and a resumed study goes on
  where it stopped;
- otherwise asks the wrapped sampler up to ``_TRIES`` times for a legal config that no search
  trial holds, then takes a random new legal one; a repeat is proposed only when none is left
  (its result is then reused, see :mod:`unetbench.sweep.measure`).

A search trial holds a config while it is WAITING, RUNNING or COMPLETE (a FAIL trial, a killed
worker's, gives its config back). The chosen config's key is written to the trial at once, so
the next proposal sees it taken, and the trial claims the config atomically, then reads the
trials again (see :mod:`unetbench.sweep.claims`), so two workers proposing at the same moment
on different machines of one PostgreSQL or gRPC storage never get the same config, and a
config is never proposed again because its trial finished between a read and a claim.

Optuna's own samplers do not fit: GridSampler runs the full product, illegal combinations
included, and BruteForceSampler needs a conditional search space and may hand one config to
two workers that sample at the same time.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from unetbench._errors import ConfigError
from unetbench.sweep.claims import NAMING_S, ConfigClaims
from unetbench.sweep.record import CONFIG_KEY, CONSTRAINTS, role_of, set_config_key
from unetbench.sweep.space import (
    MAX_COMBINATIONS,
    decode_param,
    encode_param,
    legal_values,
    param_choices,
    values_key,
)
from unetbench.sweep.spec import StudySpec

__all__ = [
    "CONSTRAINT_NAMES",
    "LegalSampler",
    "SearchPlan",
    "constraints_from_attrs",
    "make_sampler",
    "search_plan",
]

_LOG = logging.getLogger(__name__)
_TRIES = 20  # proposals asked of the wrapped sampler before a random new config is taken
_RANDOM_TRIES = 1000  # random draws for a new legal config when the space is not listed
_HOLDING = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
#: Constraints of every trial (feasible when <= 0): estimated memory over the budget as a
#: fraction of it, and 1 for a trial that failed (illegal config, out of memory, diverged,
#: capped by the time guard).
CONSTRAINT_NAMES = ("memory_over_budget", "failed")


def constraints_from_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` for Optuna < 5 (see :data:`CONSTRAINT_NAMES`); <= 0 is satisfied."""
    value = trial.system_attrs.get(CONSTRAINTS)
    return [float(v) for v in value] if isinstance(value, list) else [1.0, 1.0]


class LegalSampler(optuna.samplers.BaseSampler):
    """Wraps ``base`` (None: exhaustive over ``legal``); see the module docstring."""

    def __init__(
        self,
        spec: StudySpec,
        base: optuna.samplers.BaseSampler | None,
        legal: Sequence[dict[str, Any]] | None,
        seed: int,
        claims: ConfigClaims,
    ) -> None:
        if base is None and legal is None:
            raise ValueError("an exhaustive sampler needs the list of legal configs")
        self.spec = spec
        self.claims = claims
        self.base = base
        self._rng = random.Random(seed)
        self.legal: list[dict[str, Any]] | None = None
        self._keys: list[str | None] = []
        if legal is not None:
            self.legal = list(legal)
            random.Random(spec.seed).shuffle(self.legal)  # the same order in every worker
            self._keys = [values_key(spec, v) for v in self.legal]
        self.space = {
            f: CategoricalDistribution(param_choices(f, ch)) for f, ch in spec.search.items()
        }

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self.space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.system_attrs.get("fixed_params") or role_of(trial) != "search":
            return {}  # an enqueued trial brings its own config
        deadline = time.monotonic() + NAMING_S + 2.0
        while True:
            values, key, claimed = self._claim_new(study, trial)
            if claimed or self.legal is None or time.monotonic() > deadline:
                break
            # Every config no trial holds is claimed: by a trial being set up on another
            # machine, or by one that died before naming itself. In an exhaustive search a
            # repeat would leave such a config out: wait until it is named or stale.
            tried = self._taken(study, trial.number)
            if all(k in tried for k in self._keys if k is not None):
                break  # truly every legal config is tried: a repeat, whose result is reused
            time.sleep(1.0)
        set_config_key(study._storage, trial._trial_id, key)
        return {f: encode_param(f, v) for f, v in values.items()}

    def _claim_new(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> tuple[dict[str, Any], str | None, bool]:
        """A legal config no other search trial holds, claimed for ``trial``:
        ``(values, key, claimed)``; a repeat (not claimed) if none could be had."""
        taken = self._taken(study, trial.number)
        values: dict[str, Any] = {}
        key = None
        for _ in range(len(self.legal) if self.legal is not None else _TRIES):
            values = self._choose(study, trial, taken)
            key = values_key(self.spec, values)
            if key is None or key in taken:
                break  # every legal config is taken
            if self.claims.take(key, trial._trial_id):
                # Claim, then read again: a trial may have finished this config and released
                # its claim between the first read and the claim.
                if key not in self._taken(study, trial.number):
                    return values, key, True
                self.claims.release(key)
            taken.add(key)  # a worker on another machine took it a moment ago
        return values, key, False

    @staticmethod
    def _taken(study: optuna.Study, number: int) -> set[Any]:
        """Config keys held by other search trials (WAITING, RUNNING or COMPLETE)."""
        return {
            t.user_attrs.get(CONFIG_KEY)
            for t in study.get_trials(deepcopy=False, states=_HOLDING)
            if t.number != number and role_of(t) == "search"
        }

    def _choose(self, study: optuna.Study, trial: FrozenTrial, taken: set[Any]) -> dict[str, Any]:
        if self.base is None:
            assert self.legal is not None
            new = [v for v, k in zip(self.legal, self._keys, strict=True) if k not in taken]
            return new[0] if new else self.legal[0]
        proposal: dict[str, Any] = {}
        for _ in range(_TRIES):
            proposal = self._propose(study, trial)
            key = values_key(self.spec, proposal)
            if key is not None and key not in taken:
                return proposal
        _LOG.debug("trial %d: no new legal proposal from the sampler; drawing one", trial.number)
        if self.legal is not None:
            pool, keys = self.legal, self._keys
        else:
            pool = [
                {f: self._rng.choice(ch) for f, ch in self.spec.search.items()}
                for _ in range(_RANDOM_TRIES)
            ]
            keys = [values_key(self.spec, v) for v in pool]
        new = [v for v, k in zip(pool, keys, strict=True) if k is not None and k not in taken]
        if new:
            return self._rng.choice(new)
        legal = [v for v, k in zip(pool, keys, strict=True) if k is not None]
        _LOG.info("trial %d: every legal config is taken; one is repeated", trial.number)
        return self._rng.choice(legal) if legal else proposal

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        """One proposal of the wrapped sampler, as field values."""
        assert self.base is not None
        space = self.base.infer_relative_search_space(study, trial)
        params = self.base.sample_relative(study, trial, space) if space else {}
        for name, dist in self.space.items():
            if name not in params:
                params[name] = self.base.sample_independent(study, trial, name, dist)
        return {f: decode_param(f, params[f]) for f in self.spec.search}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Only for parameters outside the searched fields (none in a unetbench study).
        if self.base is not None:
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        return optuna.samplers.RandomSampler().sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.base is not None:
            self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self.base is not None:
            self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._rng.seed()
        if self.base is not None:
            self.base.reseed_rng()


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """How a study's search trials are proposed, and how many it runs."""

    legal: list[dict[str, Any]] | None  # every legal config; None: too many to list
    exhaustive: bool  # every legal config once (grid), not a sampler's choice
    n_trials: int  # search trials wanted, at most the number of legal configs


def search_plan(spec: StudySpec, n_trials: int) -> SearchPlan:
    """Decide between an exhaustive and a sampled search; caps ``n_trials`` to the space."""
    legal = legal_values(spec)
    if legal is None:
        if spec.sampler == "grid":
            raise ConfigError(
                f"{spec.source}: sampler.name='grid' needs a search space of at most "
                f"{MAX_COMBINATIONS} combinations (allowed: 'tpe', 'nsga2' or 'random' here)"
            )
        return SearchPlan(None, False, n_trials)
    if n_trials > len(legal):
        _LOG.info(
            "%s: n_trials=%d but the search space has %d legal configs; running each once",
            spec.name, n_trials, len(legal),
        )  # fmt: skip
    n = min(n_trials, len(legal))
    return SearchPlan(legal, spec.sampler == "grid" or n == len(legal), n)


def make_sampler(
    spec: StudySpec, seed: int, plan: SearchPlan, claims: ConfigClaims
) -> LegalSampler:
    """The spec's sampler, seeded and wrapped so that it proposes only legal, new configs.

    The memory budget and failures reach it as constraints (see :mod:`.objective`).
    """
    if plan.exhaustive:
        return LegalSampler(spec, None, plan.legal, seed, claims)
    opts: dict[str, Any] = dict(spec.sampler_options)
    if not hasattr(optuna.Trial, "set_constraint"):  # Optuna < 5 only reads constraints when
        opts["constraints_func"] = constraints_from_attrs  # a constraints_func is given
    base: optuna.samplers.BaseSampler
    if spec.sampler == "nsga2":
        opts.setdefault("population_size", 8)
        base = optuna.samplers.NSGAIISampler(seed=seed, **opts)
    elif spec.sampler == "tpe":
        opts.setdefault("multivariate", True)
        base = optuna.samplers.TPESampler(seed=seed, **opts)
    else:
        base = optuna.samplers.RandomSampler(seed=seed)
    return LegalSampler(spec, base, plan.legal, seed, claims)
