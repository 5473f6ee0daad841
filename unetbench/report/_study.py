"""What a report needs to know about a study: its objectives, memory budget and searched fields.

The sweep writes the study spec (``studies/<name>.toml``) and may write a ``study.json`` next to
``trials.parquet``. Their exact keys belong to the sweep, so this reader is tolerant: it accepts
the usual spellings, and every value can also be given explicitly by the caller.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetbench._errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Objective",
    "StudyInfo",
    "default_direction",
    "load_study_info",
    "parse_bytes",
    "parse_objectives",
]

log = logging.getLogger(__name__)

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}
# Keys under which a spec or study.json may hold each piece of information.
_OBJECTIVE_KEYS = ("objectives", "objective")
_BUDGET_KEYS = (
    "memory_budget",
    "memory_budget_bytes",
    "mem_budget",
    "budget",
    "max_memory",
    "max_peak_mem_train_bytes",
)
_BUDGET_INNER_KEYS = ("memory", "memory_bytes", "bytes", "peak_mem_train_bytes", "max_memory")
_SPACE_KEYS = ("search_space", "space", "search", "searched", "searched_fields")


@dataclass(frozen=True)
class Objective:
    """One column of the trial records and whether larger or smaller is better."""

    column: str
    direction: str  # "maximize" or "minimize"

    @property
    def sign(self) -> int:
        """+1 if larger is better, -1 if smaller is better."""
        return 1 if self.direction == "maximize" else -1


@dataclass(frozen=True)
class StudyInfo:
    """Objectives, memory budget (bytes) and searched fields of one study."""

    name: str
    objectives: tuple[Objective, ...]
    memory_budget_bytes: float | None = None
    searched_fields: tuple[str, ...] | None = None
    source: tuple[str, ...] = field(default=())


def parse_bytes(value: Any) -> float:
    """Read a byte count such as ``8GiB``, ``"500 MB"`` or ``8589934592``.

    Examples:
        >>> parse_bytes("1.5 GiB")
        1610612736.0
        >>> parse_bytes(1024)
        1024.0
    """
    if isinstance(value, bool):
        raise UsageError(f"memory budget must be a size like '8GiB', but got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _BYTES_RE.match(str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in (*_UNITS, ""):
        raise UsageError(
            f"memory budget must be a number of bytes or a size like '8GiB' "
            f"(units: {', '.join(sorted(_UNITS))}), but got {value!r}"
        )
    return float(match.group(1)) * _UNITS.get(unit, 1)


def default_direction(column: str) -> str:
    """Direction implied by a record column's name: accuracies and throughputs are maximised."""
    if column.startswith(("val_", "test_")) or column.endswith("_per_s"):
        return "maximize"
    return "minimize"


def _one_objective(item: Any, direction: Any = None) -> Objective:
    if isinstance(item, Objective):
        return item
    if isinstance(item, Mapping):
        column = item.get("column") or item.get("name") or item.get("metric") or item.get("key")
        direction = item.get("direction", direction)
    elif isinstance(item, list | tuple) and len(item) == 2:  # ("val_dice", "maximize")
        column, direction = item
    elif isinstance(item, str) and ":" in item:
        column, direction = (part.strip() for part in item.split(":", 1))
    else:
        column = item
    if not isinstance(column, str) or not column:
        raise ConfigError(f"objective must name a record column, but got {item!r}")
    if direction is None:
        direction = default_direction(column)
    normal = _DIRECTIONS.get(str(direction).lower())
    if normal is None:
        raise ConfigError(
            f"objective {column!r}: direction must be 'maximize' or 'minimize', "
            f"but got {direction!r}"
        )
    return Objective(column, normal)


def parse_objectives(spec: Any, directions: Iterable[str] | None = None) -> tuple[Objective, ...]:
    """Objectives from any of the usual spellings.

    Accepted: ``["val_dice", "peak_mem_train_bytes"]`` (directions from the names),
    ``["val_dice:maximize", ...]``, ``{"val_dice": "maximize", ...}``,
    ``[{"name": "val_dice", "direction": "maximize"}, ...]``, or names plus a separate
    ``directions`` list.
    """
    if spec is None:
        return ()
    if isinstance(spec, str | Objective):
        spec = [spec]
    if isinstance(spec, Mapping) and not {"name", "column", "metric"} & set(spec):
        return tuple(_one_objective(k, v) for k, v in spec.items())
    if isinstance(spec, Mapping):
        spec = [spec]
    items = list(spec)
    dirs = list(directions) if directions is not None else [None] * len(items)
    if len(dirs) != len(items):
        raise ConfigError(
            f"got {len(items)} objectives but {len(dirs)} directions: {items!r} / {dirs!r}"
        )
    return tuple(_one_objective(item, d) for item, d in zip(items, dirs, strict=True))


def _find(tables: list[Mapping[str, Any]], keys: Iterable[str]) -> Any:
    """First value under one of ``keys`` at the top level or one table down."""
    for table in tables:
        for key in keys:
            if key in table:
                return table[key]
        for value in table.values():
            if isinstance(value, Mapping):
                for key in keys:
                    if key in value:
                        return value[key]
    return None


def _find_spec(results_dir: Path, meta: Mapping[str, Any]) -> Path | None:
    for key in ("spec", "spec_path", "study_spec"):
        if isinstance(meta.get(key), str) and Path(meta[key]).is_file():
            return Path(meta[key])
    name = str(meta.get("name") or meta.get("study") or results_dir.name)
    for base in (results_dir, results_dir.parent.parent / "studies", Path("studies")):
        for candidate in (base / f"{name}.toml", base / "study.toml", base / "spec.toml"):
            if candidate.is_file():
                return candidate
    return None


def _spec_from_db(results_dir: Path) -> Mapping[str, Any] | None:
    """The spec the sweep stored in ``study.db`` (study user attribute ``unetbench_spec``)."""
    path = results_dir / "study.db"
    if not path.is_file():
        return None
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        summaries = optuna.get_all_study_summaries(f"sqlite:///{path.resolve()}")
    except Exception as exc:  # a broken or foreign DB only costs the fallback
        log.warning("could not read the study spec from %s: %s", path, exc)
        return None
    for summary in summaries:
        spec = summary.user_attrs.get("unetbench_spec")
        if isinstance(spec, Mapping) and summary.study_name == spec.get("name", results_dir.name):
            return spec
    return None


def load_study_info(
    results_dir: str | Path,
    *,
    spec_path: str | Path | None = None,
    objectives: Any = None,
    memory_budget: Any = None,
    searched_fields: Iterable[str] | None = None,
) -> StudyInfo:
    """Study metadata for ``results/<study>``: explicit arguments first, then the files.

    Files read when present: ``<results_dir>/study.json`` (or ``metadata.json``) and the spec
    TOML (given, named in study.json, or ``studies/<study>.toml``); failing both, the spec the
    sweep stored in ``<results_dir>/study.db``. Without any objective the
    report falls back to ``val_dice`` (maximise) and ``peak_mem_train_bytes`` (minimise).
    """
    results_dir = Path(results_dir)
    tables: list[Mapping[str, Any]] = []
    sources: list[str] = []
    for meta_name in ("study.json", "metadata.json", "meta.json"):
        path = results_dir / meta_name
        if path.is_file():
            try:
                tables.append(json.loads(path.read_text()))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
            sources.append(str(path))
            break
    spec = (
        Path(spec_path)
        if spec_path is not None
        else _find_spec(results_dir, tables[0] if tables else {})
    )
    if spec is not None:
        if not spec.is_file():
            raise UsageError(f"study spec {str(spec)!r} does not exist")
        try:
            tables.append(tomllib.loads(spec.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{spec}: not valid TOML ({exc})") from exc
        sources.append(str(spec))
    elif not tables:
        stored = _spec_from_db(results_dir)
        if stored is not None:
            tables.append(stored)
            sources.append(str(results_dir / "study.db"))

    if objectives is None:
        objectives = _find(tables, _OBJECTIVE_KEYS)
        directions = _find(tables, ("directions",))
        parsed = parse_objectives(objectives, directions if objectives is not None else None)
    else:
        parsed = parse_objectives(objectives)
    if not parsed:
        log.info("no objectives found for %s; using val_dice and peak training memory", results_dir)
        parsed = parse_objectives(["val_dice:maximize", "peak_mem_train_bytes:minimize"])

    budget = memory_budget if memory_budget is not None else _find(tables, _BUDGET_KEYS)
    if isinstance(budget, Mapping):
        budget = _find([budget], _BUDGET_INNER_KEYS)
    budget_bytes = parse_bytes(budget) if budget is not None else None

    if searched_fields is None:
        space = _find(tables, _SPACE_KEYS)
        if isinstance(space, Mapping):
            searched_fields = list(space)
        elif isinstance(space, list) and all(isinstance(s, str) for s in space):
            searched_fields = space
    name = str(tables[0].get("name", results_dir.name)) if tables else results_dir.name
    return StudyInfo(
        name=name,
        objectives=parsed,
        memory_budget_bytes=budget_bytes,
        searched_fields=tuple(searched_fields) if searched_fields is not None else None,
        source=tuple(sources),
    )
