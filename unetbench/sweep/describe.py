"""The sweep's side of :mod:`unetbench.studyinfo`: describe a spec, store it in the study."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import optuna

from unetbench.studyinfo import SYSTEM_ATTR, Objective, StudyInfo, write_study_json
from unetbench.sweep.spec import StudySpec
from unetbench.values import jsonable

__all__ = ["describe", "record_description", "stored_description"]

_LOG = logging.getLogger(__name__)


def describe(spec: StudySpec) -> StudyInfo:
    """The resolved description of ``spec`` (no file or storage is touched)."""
    resolved = {k: v for k, v in dataclasses.asdict(spec).items() if k != "source"}
    return StudyInfo(
        name=spec.name,
        objectives=tuple(Objective(c, d) for c, d in spec.objectives),
        memory_budget_bytes=spec.memory_budget_bytes,
        search={field: [jsonable(c) for c in choices] for field, choices in spec.search.items()},
        fixed=dict(spec.fixed),
        fingerprint=spec.fingerprint(),
        spec=resolved,
    )


def record_description(study: optuna.Study, spec: StudySpec, results_dir: str | Path) -> Path:
    """Store the description in the study's system attributes and in ``study.json``.

    Called by every run of the sweep (the first worker and each one that joins), so the
    stored form always matches the spec whose fingerprint the study accepted.
    """
    info = describe(spec)
    storage = study._storage
    storage.set_study_system_attr(study._study_id, SYSTEM_ATTR, info.to_dict())
    path = write_study_json(info, results_dir)
    _LOG.debug("study %s described in %s and its storage", spec.name, path)
    return path


def stored_description(study: optuna.Study) -> StudyInfo | None:
    """The description a sweep stored in ``study``, or None for a study made without one."""
    raw = study._storage.get_study_system_attrs(study._study_id).get(SYSTEM_ATTR)
    if raw is None:
        return None
    return StudyInfo.from_dict(raw, f"study {study.study_name!r} ({SYSTEM_ATTR})")
