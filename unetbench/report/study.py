"""The study a report describes: read from the description the sweep stored, never guessed.

The sweep writes ``results/<study>/study.json`` (see :mod:`unetbench.studyinfo`) for every
storage kind; the report reads that file and nothing else, so a spec edited after the run
cannot change how the run is reported. Objectives and the memory budget may be overridden
explicitly (``unetbench report --objective ... --memory-budget ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetbench.studyinfo import Objective, StudyInfo, read_study_json

__all__ = ["load_study_info"]


def load_study_info(
    results_dir: str | Path,
    *,
    objectives: Sequence[str | Objective] | None = None,
    memory_budget_bytes: int | None = None,
) -> StudyInfo:
    """The stored description of ``results_dir``'s study, with explicit overrides applied.

    ``objectives`` are ``"column:maximize"``/``"column:minimize"`` (a bare column takes the
    direction the study gave it) or :class:`Objective` values.
    """
    info = read_study_json(results_dir)
    changes: dict[str, object] = {}
    if objectives:
        known = {o.column: o.direction for o in info.objectives}
        changes["objectives"] = tuple(
            o if isinstance(o, Objective) else Objective.parse(o, known) for o in objectives
        )
    if memory_budget_bytes is not None:
        changes["memory_budget_bytes"] = memory_budget_bytes
    return info.replace(**changes) if changes else info
