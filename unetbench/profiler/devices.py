"""Devices: parse the user's device, measure peak memory on it, recognise out-of-memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from unetbench._errors import UsageError
from unetbench.device_names import ALL, parse_device, parse_devices
from unetbench.oom import is_oom
from unetbench.profiler.memory import cuda_peak_bytes, tracked_peak_bytes

__all__ = ["Peak", "is_oom", "peak_bytes", "release", "resolve_device", "resolve_devices"]


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


def release(device: torch.device) -> None:
    """Give cached memory back after a failed measurement so later ones start clean."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Peak(NamedTuple):
    """Peak bytes of a step: allocated by tensors, and reserved by the caching allocator
    (CUDA; on the CPU there is no cache and both are the tracked peak)."""

    allocated: int
    reserved: int


def peak_bytes(fn: Callable[[], object], model: nn.Module, device: torch.device) -> Peak:
    """Peak bytes of ``fn`` on ``device``: allocator statistics on CUDA, tracked on CPU."""
    if device.type == "cuda":
        allocated, reserved = cuda_peak_bytes(fn, model, device)
        return Peak(allocated, reserved)
    peak = tracked_peak_bytes(fn, model)
    return Peak(peak, peak)
