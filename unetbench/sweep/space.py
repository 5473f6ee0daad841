"""The search space: Optuna parameters <-> :class:`~unetbench.UNetConfig` fields.

Every searched field is one categorical Optuna parameter with the field's name, so the
dashboard shows ``up_mode``, ``attention``... as they are. ``planar_blocks`` choices are lists,
which Optuna cannot store, so its parameter values are their JSON text (``"[]"``, ``"[0, 1]"``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from unetbench._errors import ConfigError
from unetbench.shapes import fmt_shape

if TYPE_CHECKING:
    import optuna

    from unetbench.config import UNetConfig
    from unetbench.sweep.spec import StudySpec

__all__ = [
    "build_config",
    "config_key",
    "encode_param",
    "legal_values",
    "param_choices",
    "suggest",
    "validate_space",
    "values_key",
]

# Fields that decide whether a patch shape is legal; always enumerated together.
#: Searchable fields that describe how a config is trained, not the config itself.
TRAINING_FIELDS = ("precision", "memory_format")
_SHAPE_FIELDS = ("n_blocks", "planar_blocks", "conv_mode")
# Above this many combinations, validation enumerates each field with the shape fields only,
# and a sweep samples the space instead of listing its legal configs.
MAX_COMBINATIONS = 20_000


def param_choices(field: str, choices: tuple[Any, ...]) -> list[Any]:
    """The Optuna categorical choices that stand for a field's choices."""
    if field == "planar_blocks":
        return [json.dumps(list(c)) for c in choices]
    return list(choices)


def encode_param(field: str, value: Any) -> Any:
    """The Optuna parameter value that stands for a field value (inverse of decode_param)."""
    return json.dumps(list(value)) if field == "planar_blocks" else value


def decode_param(field: str, value: Any) -> Any:
    """The field value an Optuna parameter value stands for."""
    return tuple(json.loads(value)) if field == "planar_blocks" else value


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample every searched field; returns field values (not yet validated together)."""
    return {
        field: decode_param(field, trial.suggest_categorical(field, param_choices(field, ch)))
        for field, ch in spec.search.items()
    }


def build_config(spec: StudySpec, values: dict[str, Any]) -> UNetConfig:
    """Fixed fields plus sampled values; raises ConfigError for illegal combinations.

    Sampled training fields (``precision``, ``memory_format``) are not part of the config.
    """
    from unetbench.config import UNetConfig

    kwargs = {k: v for k, v in {**spec.fixed, **values}.items() if k not in TRAINING_FIELDS}
    if "planar_blocks" in kwargs:
        kwargs["planar_blocks"] = tuple(kwargs["planar_blocks"])
    return UNetConfig(**kwargs)


def config_key(
    config: UNetConfig, precision: str = "fp32", memory_format: str = "contiguous"
) -> str:
    """Canonical text of a config trained at ``precision`` in ``memory_format``; equal keys
    mean the same result.

    fp32 contiguous keys are the config alone, as before these were dimensions.
    """
    d = config.to_dict()
    if precision != "fp32":
        d["precision"] = precision
    if memory_format != "contiguous":
        d["memory_format"] = memory_format
    return json.dumps(d, sort_keys=True)


def values_key(spec: StudySpec, values: dict[str, Any]) -> str | None:
    """:func:`config_key` of sampled field values; None if they are not a legal config."""
    try:
        config = build_config(spec, values)
    except (ConfigError, TypeError, ValueError):
        return None
    return config_key(
        config,
        values.get("precision", spec.precision),
        values.get("memory_format", spec.memory_format),
    )


def legal_values(spec: StudySpec) -> list[dict[str, Any]] | None:
    """Every legal combination of the searched fields (training fields included), in
    product order; None if the space has more than ``MAX_COMBINATIONS`` combinations.

    Legality is what :class:`~unetbench.UNetConfig` accepts: its own validation decides.
    """
    total = 1
    for choices in spec.search.values():
        total *= len(choices)
    if total > MAX_COMBINATIONS:
        return None
    fields = list(spec.search)
    combos = (
        dict(zip(fields, combo, strict=True))
        for combo in itertools.product(*(spec.search[f] for f in fields))
    )
    return [values for values in combos if values_key(spec, values) is not None]


def validate_space(spec: StudySpec) -> None:
    """Check fixed fields, every choice and the patch shape against the searched combinations.

    Raises ConfigError for: an unknown or doubly given field, a choice that is illegal in every
    combination (a misspelt value), or a legal combination that cannot take the patch shape.
    Combinations that are illegal only together (resize-conv with merge_mode='add') are
    allowed: the sweep records them as infeasible trials.
    """
    from unetbench.config import UNetConfig

    src = spec.source
    known = UNetConfig.field_names()
    for field in spec.fixed:
        if field not in known:
            raise ConfigError(f"{src}: fixed.{field} is not a UNetConfig field; fields: {known}")
        if field in spec.search:
            raise ConfigError(f"{src}: {field} is both fixed and searched; keep one")
    dim = spec.fixed.get("dim", 3)
    if len(spec.patch_shape) != dim:
        raise ConfigError(
            f"{src}: train.patch_shape {fmt_shape(spec.patch_shape)} has "
            f"{len(spec.patch_shape)} axes but dim={dim}"
        )
    legal: dict[tuple[str, str], str | None] = {}
    first_error = None
    for values in _combinations(spec):
        try:
            config = build_config(spec, values)
        except (ConfigError, TypeError, ValueError) as exc:
            first_error = first_error or str(exc)
            for field, value in values.items():
                legal.setdefault((field, json.dumps(value, default=list)), str(exc))
            continue
        for field, value in values.items():
            legal[(field, json.dumps(value, default=list))] = None
        try:
            config.check_input_shape(spec.patch_shape)
        except ConfigError as exc:
            combo = ", ".join(f"{k}={_show(v)}" for k, v in values.items() if k in _SHAPE_FIELDS)
            raise ConfigError(
                f"{src}: train.patch_shape {fmt_shape(spec.patch_shape)} is illegal for "
                f"{combo or 'the fixed config'}: {exc}"
            ) from None
    if first_error is not None and not any(e is None for e in legal.values()):
        raise ConfigError(f"{src}: no searched combination is a legal UNetConfig: {first_error}")
    for (field, value), error in legal.items():
        if error is not None:
            raise ConfigError(f"{src}: search.{field} choice {value} is never legal: {error}")


def _combinations(spec: StudySpec) -> Iterator[dict[str, Any]]:

    search = {f: c for f, c in spec.search.items() if f not in TRAINING_FIELDS}
    fields = list(search)
    total = 1
    for choices in search.values():
        total *= len(choices)
    if not fields:
        yield {}
        return
    groups = [fields]
    if total > MAX_COMBINATIONS:
        shape = [f for f in _SHAPE_FIELDS if f in search]
        groups = [[f, *(s for s in shape if s != f)] for f in fields]
    for group in groups:
        base = {f: search[f][0] for f in fields if f not in group}
        for combo in itertools.product(*(search[f] for f in group)):
            yield {**base, **dict(zip(group, combo, strict=True))}


def _show(value: Any) -> str:
    return json.dumps(list(value)) if isinstance(value, tuple) else repr(value)
