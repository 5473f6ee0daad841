"""Device names as users write them: ``cpu``, ``cuda``, ``cuda:N`` (and ``cpu:N``), and lists
of them for worker pools (``"cuda:0,cuda:1"``, ``"all"``, ``"cpu,cpu"``).

Only the spelling is checked here, without importing torch; whether a GPU exists is checked by
:mod:`unetbench.profiler.devices` when work is about to run on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from unetbench._errors import UsageError

__all__ = ["ALL", "device_type", "parse_device", "parse_devices"]

#: A device list meaning every CUDA device of this machine.
ALL = "all"

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")
_ALLOWED = "cpu, cuda or cuda:N"


def parse_device(device: object) -> str:
    """The canonical name of ``device`` (``" CUDA:1 "`` -> ``"cuda:1"``).

    Raises:
        UsageError: Not one of cpu, cpu:N, cuda, cuda:N.
    """
    text = str(device).strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise UsageError(f"unknown device {device!r}; use {_ALLOWED}")
    kind, index = match.groups()
    return kind if index is None else f"{kind}:{int(index)}"


def device_type(device: object) -> str:
    """``"cuda:1"`` -> ``"cuda"``; the kind of a device, whatever its index."""
    return parse_device(device).split(":", 1)[0]


def parse_devices(devices: str | Sequence[str]) -> list[str]:
    """One device per worker from ``"cuda:0,cuda:1"``, ``"all"`` or a sequence of names.

    ``"all"`` comes back as ``[ALL]`` for the caller to expand to the GPUs present.

    Raises:
        UsageError: An empty list or an unknown device name.
    """
    if isinstance(devices, str):
        names = [d.strip() for d in devices.split(",") if d.strip()]
        if [n.lower() for n in names] == [ALL]:
            return [ALL]
    else:
        names = [str(d).strip() for d in devices]
    if not names:
        raise UsageError(f"--devices is empty; give e.g. cuda:0,cuda:1, {ALL}, or cpu")
    return [parse_device(name) for name in names]
