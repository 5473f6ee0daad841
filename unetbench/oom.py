"""One test for "out of memory", shared by the profiler and the sweep.

Recognises CUDA's ``torch.OutOfMemoryError`` and the host's allocation failures: Python's
``MemoryError`` and the ``RuntimeError`` that torch's CPU allocator raises
("DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."). Importing this
module does not import torch.
"""

from __future__ import annotations

import sys

__all__ = ["is_oom"]

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """True if ``exc`` means the device or the host ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # an OutOfMemoryError can only come from a loaded torch
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)
