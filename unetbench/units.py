"""Byte sizes as people write them: ``"2GiB"``, ``"512 MiB"``, ``"8GB"`` or a number of bytes.

Decimal units (KB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB, GiB, TiB) powers of
1024; case does not matter. GPU memory is sold and reported in GiB, so a size given in a
decimal unit is echoed once, in the log, in binary units ("--budget: 11 GB = 10.24 GiB").
Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import re

from unetbench._errors import SizeError

__all__ = ["GIB", "MIB", "binary_size", "parse_bytes"]

_LOG = logging.getLogger(__name__)
_ECHOED: set[tuple[str, str]] = set()

MIB = 2**20
GIB = 2**30

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_ALLOWED = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
_DECIMAL = ("KB", "MB", "GB", "TB")
_BINARY = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*")


def parse_bytes(value: object, name: str = "memory size", *, allow_zero: bool = False) -> int:
    """Read a byte count such as ``"11GiB"``, ``"512 MiB"``, ``"8 GB"``, ``"4096"`` or ``4096``.

    Args:
        value: The size as text or an integer number of bytes.
        name: What the size is (``"--budget"``, ``"studies/x.toml: memory_budget"``); the error
            message starts with it.
        allow_zero: Accept 0 (a headroom may be nothing); sizes are positive otherwise.

    Raises:
        SizeError: Not a number with one of the allowed units, negative, or zero when zero is
            not allowed. SizeError is both a UsageError and a ConfigError.

    Examples:
        >>> parse_bytes("1.5 GiB")
        1610612736
        >>> parse_bytes(1024)
        1024
    """
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = match.group(2).upper() if match else ""
        if match and unit in (*_UNITS, ""):
            size = int(float(match.group(1)) * _UNITS.get(unit, 1))
            if unit in _DECIMAL and (name, value) not in _ECHOED:
                _ECHOED.add((name, value))
                decimal, binary = unit[0] + "B", unit[0] + "iB"
                power = 3 * (_DECIMAL.index(unit) + 1)
                _LOG.info(
                    "%s: %s = %s (%s counts 10^%d bytes, %s 2^%d: write %s%s if you meant that)",
                    name, value.strip(), binary_size(size), decimal, power, binary,
                    10 * (power // 3), match.group(1), binary,
                )  # fmt: skip
    if size is None or size < 0 or (size == 0 and not allow_zero):
        low = "non-negative" if allow_zero else "positive"
        raise SizeError(
            f"{name} must be a {low} size such as 8GiB, 512 MiB or a number of bytes "
            f"(units: {_ALLOWED}), but got {value!r}"
        )
    return size


def binary_size(size: int) -> str:
    """``size`` bytes in the largest binary unit it reaches, e.g. ``"10.24 GiB"``."""
    for factor, unit in _BINARY:
        if size >= factor:
            return f"{size / factor:.2f} {unit}"
    return f"{size} B"
