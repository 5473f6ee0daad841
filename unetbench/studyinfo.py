"""A study's description of itself: what the sweep stores and the report reads.

The sweep resolves a study spec once (objectives with directions, memory budget in bytes,
searched fields with their choices, fixed fields, fingerprint) and stores it twice: as the
study system attribute :data:`SYSTEM_ATTR` in the Optuna storage (any kind: SQLite, journal,
PostgreSQL, gRPC proxy) and as ``results/<study>/study.json`` next to ``trials.parquet``.
The report reads only that description, so editing ``studies/<name>.toml`` after a run
changes nothing about how the run is reported. This module is torch- and optuna-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unetbench._errors import ConfigError, UsageError
from unetbench.values import jsonable

__all__ = [
    "FILE_NAME",
    "SCHEMA",
    "SYSTEM_ATTR",
    "Objective",
    "StudyInfo",
    "read_study_json",
    "write_study_json",
]

#: Format tag of the description; a reader refuses any other.
SCHEMA = "unetbench.study/1"
#: Optuna study system attribute holding the description.
SYSTEM_ATTR = "unetbench:study"
#: File written next to ``trials.parquet``.
FILE_NAME = "study.json"
_DIRECTIONS = ("maximize", "minimize")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One record column a study optimises and whether larger or smaller is better."""

    column: str
    direction: str  # "maximize" or "minimize"

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ConfigError(
                f"objective {self.column!r}: direction must be 'maximize' or 'minimize', "
                f"but got {self.direction!r}"
            )

    @property
    def sign(self) -> int:
        """+1 if larger is better, -1 if smaller is better."""
        return 1 if self.direction == "maximize" else -1

    @classmethod
    def parse(cls, text: str, known: Mapping[str, str] | None = None) -> Objective:
        """``"val_dice:maximize"``, or a bare column whose direction ``known`` gives."""
        column, _, direction = (part.strip() for part in text.partition(":"))
        if not direction:
            if known is None or column not in known:
                raise UsageError(
                    f"objective {text!r} needs a direction: write {column}:maximize or "
                    f"{column}:minimize"
                )
            direction = known[column]
        if not column:
            raise UsageError(f"objective {text!r} must name a record column")
        return cls(column, direction.lower())


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """The resolved description of one study.

    ``search`` maps each searched field to its choices (JSON values: lists for tuples),
    ``fixed`` the fields set for every trial, ``spec`` the whole resolved spec as the sweep
    ran it (training, data, sampler, profiling...), ``fingerprint`` what makes two runs of
    the study comparable, and ``source`` where this description was read from.
    """

    name: str
    objectives: tuple[Objective, ...]
    memory_budget_bytes: int | None = None
    search: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    fingerprint: str = ""
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    @property
    def searched_fields(self) -> tuple[str, ...]:
        return tuple(self.search)

    def replace(self, **changes: Any) -> StudyInfo:
        """A copy with some fields changed (e.g. objectives given on the command line)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, tagged with :data:`SCHEMA` (``source`` is not stored)."""
        return jsonable(
            {
                "schema": SCHEMA,
                "name": self.name,
                "objectives": [[o.column, o.direction] for o in self.objectives],
                "memory_budget_bytes": self.memory_budget_bytes,
                "search": self.search,
                "fixed": self.fixed,
                "fingerprint": self.fingerprint,
                "spec": self.spec,
            }
        )

    @classmethod
    def from_dict(cls, raw: object, source: str) -> StudyInfo:
        """Read :meth:`to_dict`'s form; anything else is one ConfigError naming ``source``."""
        if not isinstance(raw, Mapping) or raw.get("schema") != SCHEMA:
            found = raw.get("schema") if isinstance(raw, Mapping) else type(raw).__name__
            raise ConfigError(
                f"{source}: not a unetbench study description (schema {SCHEMA!r} expected, "
                f"got {found!r})"
            )
        try:
            objectives = tuple(Objective(str(c), str(d)) for c, d in raw["objectives"])
            budget = raw["memory_budget_bytes"]
            info = cls(
                name=str(raw["name"]),
                objectives=objectives,
                memory_budget_bytes=None if budget is None else int(budget),
                search={str(k): list(v) for k, v in raw["search"].items()},
                fixed=dict(raw["fixed"]),
                fingerprint=str(raw["fingerprint"]),
                spec=dict(raw["spec"]),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed study description ({exc!r})") from exc
        if not info.objectives:
            raise ConfigError(f"{source}: the study description names no objective")
        return info


def write_study_json(info: StudyInfo, results_dir: str | Path) -> Path:
    """Write ``<results_dir>/study.json`` atomically; returns its path."""
    path = Path(results_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_study_json(results_dir: str | Path) -> StudyInfo:
    """The description in ``<results_dir>/study.json``; one clear error when it is missing."""
    path = Path(results_dir) / FILE_NAME
    if not path.is_file():
        raise UsageError(
            f"{path} does not exist: the report reads the description `unetbench sweep` "
            "stores with every study; run the sweep again on this study (it resumes and "
            "writes the file, training nothing if the study is finished)"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return StudyInfo.from_dict(raw, str(path))
