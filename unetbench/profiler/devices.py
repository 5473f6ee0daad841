"""Peak memory of a step on a device, and cleaning up after a failed measurement.

Device names are parsed and checked in :mod:`unetbench.devices` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from unetbench.devices import empty_cache, resolve_device, resolve_devices
from unetbench.oom import is_oom
from unetbench.profiler.memory import cuda_peak_bytes, tracked_peak_bytes

__all__ = ["Peak", "is_oom", "peak_bytes", "release", "resolve_device", "resolve_devices"]


def release(device: torch.device) -> None:
    """Give cached memory back after a failed measurement so later ones start clean."""
    empty_cache(device)


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
