"""Small checks for study-spec values: each raises ConfigError naming the key and the value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from unetbench._errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_bytes(value: object, where: str = "memory_budget") -> int:
    """``"8GiB"``, ``"512 MiB"``, ``"2GB"`` or an integer number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if isinstance(value, str) and m and m.group(2).upper() in _UNITS:
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
        if n > 0:
            return n
    raise ConfigError(
        f"{where} must be a positive size like '8GiB', '512MiB' or bytes, but got {value!r}"
    )


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
    if value == "auto":
        return ("auto",)
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
