"""Small checks for study-spec values: each raises ConfigError naming the key and the value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unetbench._errors import ConfigError
from unetbench.budget import AUTO
from unetbench.units import parse_bytes as parse_bytes  # spec.py reads sizes through here


def no_unknown(
    table: Mapping[str, Any], allowed: set[str] | frozenset[str], src: str, at: str
) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{src}: unknown key {at}{unknown[0]}; allowed keys are {sorted(allowed) or 'none'}"
        )


def as_table(raw: Mapping[str, Any], key: str, src: str) -> Mapping[str, Any]:
    value = raw[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{src}: {key} must be a table ([{key}]), got {value!r}")
    return value


def as_int(value: object, where: str, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {value!r}")
    return value


def as_positive(value: object, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def as_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def as_seconds(value: object, src: str) -> float | None:
    return None if value is None else as_positive(value, f"{src}: train.seconds")


def as_shape(value: object, src: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(
            f"{src}: train.patch_shape must be [D, H, W] (or [H, W] for dim=2), got {value!r}"
        )
    return tuple(value)


def as_modes(value: object, src: str) -> tuple[str, ...]:
    if value == AUTO:
        return (AUTO,)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) for v in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(
            f"{src}: profile.checkpointing must be 'auto' or a non-empty list of distinct mode "
            f"names, e.g. ['none', 'blocks'], got {value!r}"
        )
    return tuple(value)
