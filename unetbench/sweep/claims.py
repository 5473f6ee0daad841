"""Which trial trains a config: one claim per config, taken atomically in the storage itself.

Workers may share nothing but the storage (machines on one PostgreSQL server, or hundreds of
workers behind the gRPC proxy), so a claim uses the one operation every Optuna storage makes
atomic for all its clients: creating a study under a unique name. The claim on key ``K`` in
study ``S`` is a study named ``S:claim:<hash of K>``; its system attribute ``owner`` is the id
of the trial that holds it, set right after the claim is created.

**The one rule for stale claims**: a claim is held while its owner trial is RUNNING, and a
claim without an owner (its creator names itself in its next call, or died between the two)
is held for ``NAMING_S`` seconds, counted on the reader's own clock from when it first saw it;
a creator that finds its claim dropped meanwhile claims again. Any other claim
(owner finished, failed or gone) is stale, and whoever meets it deletes it, by id, so a newer
claim on the same key is never deleted. The owner deletes its claim when its trial ends.

A claim only says "being trained now"; the lasting record of a trained config is the
``config_key`` of its COMPLETE trial, so a caller re-reads the trials after taking a claim
(see :mod:`unetbench.sweep.sampling`): a trial may have finished that config and released
its claim between the caller's read and its claim.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

__all__ = ["NAMING_S", "ConfigClaims"]

_LOG = logging.getLogger(__name__)
_OWNER = "owner"
#: Seconds a claim may stay without an owner before it is taken for its dead creator's.
NAMING_S = 10.0


class ConfigClaims:
    """Claims of configs of one study (see the module docstring)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self._ownerless: dict[int, float] = {}  # claim id -> when this reader first saw it
        self._mine: dict[str, int] = {}  # key -> claim id, claims this process holds

    def name(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.study_name}:claim:{digest}"

    def take(self, key: str, owner: int) -> bool:
        """Claim ``key`` for trial ``owner``; a stale claim on it is dropped first. False if
        it is held."""
        for _ in range(5):
            try:
                claim_id = self.storage.create_new_study([StudyDirection.MINIMIZE], self.name(key))
            except optuna.exceptions.DuplicatedStudyError:
                held = self.holder(key)
                if held is None:
                    continue  # released between our two calls
                claim_id, holder = held
                if holder == owner:
                    self._mine[key] = claim_id
                    return True
                if not self.stale(claim_id, holder):
                    return False
                self.drop(claim_id)
                continue
            try:
                self.storage.set_study_system_attr(claim_id, _OWNER, owner)
            except KeyError:
                continue  # dropped as owner-less between our two calls (a sweep ending)
            self._mine[key] = claim_id
            return True
        return False

    def holds(self, key: str) -> bool:
        """Whether this process took the claim on ``key`` and has not released it."""
        return key in self._mine

    def holder(self, key: str) -> tuple[int, int | None] | None:
        """``(claim id, owner trial id)`` of the claim on ``key``; None if there is none."""
        try:
            claim_id = self.storage.get_study_id_from_name(self.name(key))
            owner: Any = self.storage.get_study_system_attrs(claim_id).get(_OWNER)
        except KeyError:
            return None
        return claim_id, None if owner is None else int(owner)

    def stale(self, claim_id: int, owner: int | None) -> bool:
        """The one rule (see the module docstring)."""
        if owner is None:
            first = self._ownerless.setdefault(claim_id, time.monotonic())
            return time.monotonic() - first > NAMING_S
        try:
            return self.storage.get_trial(owner).state != TrialState.RUNNING
        except KeyError:
            return True

    def drop(self, claim_id: int) -> None:
        """Delete one claim by id; a claim already deleted by another worker is fine."""
        self._ownerless.pop(claim_id, None)
        try:
            self.storage.delete_study(claim_id)
        except KeyError:
            return
        _LOG.debug("claim %d deleted", claim_id)

    def release(self, key: str) -> None:
        """Delete this process's claim on ``key``, if it still holds it."""
        claim_id = self._mine.pop(key, None)
        if claim_id is None:
            return
        held = self.holder(key)
        if held is not None and held[0] == claim_id:
            self.drop(claim_id)

    def release_all(self) -> None:
        """Delete every claim this process holds (its trials are over)."""
        for key in list(self._mine):
            self.release(key)

    def drop_stale(self, running: bool) -> int:
        """Delete this study's stale claims; owner-less ones too unless a trial is ``running``
        (only a worker starting a trial could still name itself). Returns how many."""
        prefix = f"{self.study_name}:claim:"
        dropped = 0
        for s in self.storage.get_all_studies():
            if not s.study_name.startswith(prefix):
                continue
            owner = s.system_attrs.get(_OWNER)
            if (owner is None and not running) or (
                owner is not None and self.stale(s._study_id, int(owner))
            ):
                self.drop(s._study_id)
                dropped += 1
        return dropped
