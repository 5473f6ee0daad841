"""Memory budgets: how much of a device's memory a training step may plan to use.

A budget keeps a headroom free: on CUDA the context and the cuDNN/cuBLAS handles (a few
hundred MiB that PyTorch's allocator statistics do not see) and the caching allocator's
fragmentation (reserved beyond allocated); on the CPU nothing. Importing this module does not
import torch.
"""

from __future__ import annotations

from unetbench.device_names import device_type
from unetbench.units import MIB

__all__ = ["CUDA_HEADROOM_BYTES", "default_headroom_bytes", "usable_bytes"]

CUDA_HEADROOM_BYTES = 512 * MIB


def default_headroom_bytes(device: str) -> int:
    """The headroom a budget keeps free on ``device``: 512 MiB on CUDA, nothing on the CPU."""
    return CUDA_HEADROOM_BYTES if device_type(device) == "cuda" else 0


def usable_bytes(budget: int, headroom: int | None, device: str) -> int:
    """What a step may use of ``budget``: the budget less the headroom (default by device)."""
    room = default_headroom_bytes(device) if headroom is None else headroom
    return budget - room
