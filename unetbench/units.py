"""Byte sizes as people write them: ``"2GiB"``, ``"512 MiB"``, ``"8GB"`` or a number of bytes.

Decimal units (KB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB, GiB, TiB) powers of
1024; case does not matter. Importing this module does not import torch.
"""

from __future__ import annotations

import re

from unetbench._errors import SizeError

__all__ = ["GIB", "MIB", "parse_bytes"]

MIB = 2**20
GIB = 2**30

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_ALLOWED = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
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
    if size is None or size < 0 or (size == 0 and not allow_zero):
        low = "non-negative" if allow_zero else "positive"
        raise SizeError(
            f"{name} must be a {low} size such as 8GiB, 512 MiB or a number of bytes "
            f"(units: {_ALLOWED}), but got {value!r}"
        )
    return size
