"""Devices that exist here: a user's device name checked against this machine's GPUs.

Parsing a name needs no torch (:mod:`unetbench.device_names`); checking it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from unetbench._errors import UsageError
from unetbench.device_names import ALL, parse_device, parse_devices

__all__ = ["empty_cache", "make_current", "on_device", "resolve_device", "resolve_devices"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` ("cpu", "cuda", "cuda:N") and check that it exists here.

    Raises:
        UsageError: Unknown device, CUDA requested without a usable GPU, or a GPU index
            beyond the ones present.
    """
    dev = device if isinstance(device, torch.device) else torch.device(parse_device(device))
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {device!r} requested but no CUDA GPU is available "
                f"(torch {torch.__version__}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"device {device!r} does not exist: {count} CUDA device(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_devices(devices: str | Sequence[str]) -> list[str]:
    """A list of devices, one per worker (see :func:`unetbench.device_names.parse_devices`);
    ``"all"`` becomes every CUDA device here, and each is checked with :func:`resolve_device`.

    Raises:
        UsageError: an empty list, ``all`` without a GPU, or any device that does not exist.
    """
    names = parse_devices(devices)
    if names == [ALL]:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(
                "--devices all: no CUDA device here; give a list such as cpu,cpu or cuda:0"
            )
        return [f"cuda:{i}" for i in range(count)]
    return [str(resolve_device(name)) for name in names]


def make_current(device: str | torch.device) -> torch.device:
    """Make ``device`` this process's current CUDA device (``torch.cuda.set_device``) and
    return it resolved; nothing for the CPU. A worker on ``cuda:1`` calls it first, so that
    nothing it runs without a device argument creates a context on, or waits for, ``cuda:0``.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Within the block, ``device`` is the current CUDA device (restored after); nothing for
    the CPU."""
    if device.type != "cuda":
        yield
        return
    with torch.cuda.device(device):
        yield


def empty_cache(device: torch.device) -> None:
    """Give the caching allocator's unused blocks back to the driver, with ``device``
    current (``torch.cuda.empty_cache`` has no device argument); nothing for the CPU."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()
