"""Which trial trains a config: one claim per config, taken atomically in the storage itself.

Workers may share nothing but the storage (machines on one PostgreSQL server, or hundreds of
workers behind the gRPC proxy), so the claim uses the one operation every Optuna storage makes
atomic for all its clients: creating a study under a unique name. The claim of config ``K`` in
study ``S`` is a study named ``S:claim:<hash of K>``; its system attribute ``owner`` is the
claiming trial's id. A claim is deleted once its trial is finished (the COMPLETE trial's
``config_key`` is then the lasting record), and a claim whose owner died is deleted by the
first worker that needs it, so at rest a study has no claims left.

The protocol, for a trial that has already stored its ``config_key``:

1. a COMPLETE trial with the same key exists -> reuse its result;
2. otherwise try to create the claim; on success re-check (1), because the previous owner may
   have completed and released in between, then train;
3. the claim exists: its owner is RUNNING -> wait; COMPLETE -> (1); FAIL or gone -> delete
   that claim (by its id, so a newer claim is never deleted) and try again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import optuna
from optuna.study import StudyDirection

__all__ = ["ConfigClaims"]

_LOG = logging.getLogger(__name__)
_OWNER = "owner"


class ConfigClaims:
    """Claims of configs of one study (see the module docstring)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name

    def name(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.study_name}:claim:{digest}"

    def try_claim(self, key: str, trial_id: int) -> bool:
        """Take the claim for ``key`` for ``trial_id``; False if it is held already."""
        try:
            claim_id = self.storage.create_new_study([StudyDirection.MINIMIZE], self.name(key))
        except optuna.exceptions.DuplicatedStudyError:
            return False
        self.storage.set_study_system_attr(claim_id, _OWNER, trial_id)
        return True

    def holder(self, key: str) -> tuple[int, int | None] | None:
        """``(claim id, owner trial id)`` of the claim on ``key``; None if there is none.

        The owner is None for a moment after the claim is created (two storage calls).
        """
        try:
            claim_id = self.storage.get_study_id_from_name(self.name(key))
            owner: Any = self.storage.get_study_system_attrs(claim_id).get(_OWNER)
        except KeyError:
            return None
        return claim_id, None if owner is None else int(owner)

    def drop(self, claim_id: int) -> None:
        """Delete one claim by id; a claim already deleted by another worker is fine."""
        try:
            self.storage.delete_study(claim_id)
        except KeyError:
            pass
        else:
            _LOG.debug("claim %d deleted", claim_id)

    def release(self, key: str, trial_id: int) -> None:
        """Delete the claim on ``key`` if ``trial_id`` holds it (its trial is finished)."""
        held = self.holder(key)
        if held is not None and held[1] == trial_id:
            self.drop(held[0])

    def drop_finished(self, study: optuna.Study) -> int:
        """Delete the claims of this study whose owners are finished; returns how many."""
        prefix = f"{self.study_name}:claim:"
        states = {t._trial_id: t.state for t in study.get_trials(deepcopy=False)}
        dropped = 0
        for s in self.storage.get_all_studies():
            if not s.study_name.startswith(prefix):
                continue
            owner = s.system_attrs.get(_OWNER)
            if owner is not None and states.get(int(owner)) != optuna.trial.TrialState.RUNNING:
                self.drop(s._study_id)
                dropped += 1
        return dropped
