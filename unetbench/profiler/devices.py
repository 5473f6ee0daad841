"""Devices: parse the user's device, measure peak memory on it, recognise out-of-memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from unetbench._errors import UsageError
from unetbench.profiler.memory import cuda_peak_bytes, tracked_peak_bytes

__all__ = ["is_oom", "peak_bytes", "release", "resolve_device"]

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` ("cpu", "cuda", "cuda:N") and check that it exists here.

    Raises:
        UsageError: Unknown device, CUDA requested without a usable GPU, or a GPU index
            beyond the ones present.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
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


def is_oom(exc: BaseException) -> bool:
    """True if ``exc`` means the device (or host) ran out of memory."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, (oom_type, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXT)


def release(device: torch.device) -> None:
    """Give cached memory back after a failed measurement so later ones start clean."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_bytes(fn: Callable[[], object], model: nn.Module, device: torch.device) -> int:
    """Peak live bytes of ``fn`` on ``device``: allocator statistics on CUDA, tracked on CPU."""
    if device.type == "cuda":
        return cuda_peak_bytes(fn, model, device)
    return tracked_peak_bytes(fn, model)
