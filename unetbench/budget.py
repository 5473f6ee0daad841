"""Memory budgets: how much of a device's memory a training step may plan to use.

A budget keeps a headroom free: on CUDA the context and the cuDNN/cuBLAS handles (a few
hundred MiB that PyTorch's allocator statistics do not see) and the caching allocator's
fragmentation (reserved beyond allocated); on the CPU nothing. Importing this module does not
import torch.
"""

from __future__ import annotations

from typing import Any

from unetbench._errors import UsageError
from unetbench.device_names import device_type
from unetbench.units import MIB, parse_bytes

__all__ = [
    "AUTO",
    "BUDGET_COLUMNS",
    "CUDA_HEADROOM_BYTES",
    "budget_columns",
    "default_headroom_bytes",
    "headroom_bytes",
    "split_budget",
    "usable_bytes",
]

CUDA_HEADROOM_BYTES = 512 * MIB
#: The checkpointing "policy" that picks, per config, the policy with the fewest training FLOPs
#: whose step fits the budget (:func:`unetbench.profiler.auto.choose_policy`).
AUTO = "auto"
#: Record columns of a budget, in the order :func:`budget_columns` returns them.
BUDGET_COLUMNS = ("memory_budget_bytes", "memory_headroom_bytes", "memory_usable_bytes")


def default_headroom_bytes(device: str) -> int:
    """The headroom a budget keeps free on ``device``: 512 MiB on CUDA, nothing on the CPU."""
    return CUDA_HEADROOM_BYTES if device_type(device) == "cuda" else 0


def usable_bytes(budget: int, headroom: int | None, device: str) -> int:
    """What a step may use of ``budget``: the budget less the headroom (default by device)."""
    return budget - headroom_bytes(headroom, device)


def headroom_bytes(headroom: int | None, device: str) -> int:
    """The headroom actually kept: ``headroom``, or the device's default when None."""
    return default_headroom_bytes(device) if headroom is None else headroom


def split_budget(
    budget: int | str | None, headroom: int | str | None, device: str
) -> tuple[int | None, int]:
    """``(usable bytes, headroom bytes)`` of a budget given as bytes or a size string
    (``"11GiB"``); usable is None without a budget.

    Raises:
        UsageError: a size that cannot be read, or a headroom that leaves nothing.
    """
    room = headroom_bytes(
        None if headroom is None else parse_bytes(headroom, "memory_headroom", allow_zero=True),
        device,
    )
    if budget is None:
        return None, room
    total = parse_bytes(budget, "memory_budget")
    if room >= total:
        raise UsageError(
            f"the memory headroom ({room} B) leaves nothing of the budget ({total} B); "
            "raise the budget or lower the headroom"
        )
    return total - room, room


def budget_columns(spec: Any) -> dict[str, int | None]:
    """The record columns of a study's budget (anything with ``memory_budget_bytes``,
    ``memory_headroom_bytes`` and ``device``): the budget, the headroom kept and the usable
    rest; all None without a budget."""
    budget = spec.memory_budget_bytes
    if budget is None:
        return dict.fromkeys(BUDGET_COLUMNS)
    room = headroom_bytes(spec.memory_headroom_bytes, spec.device)
    return dict(zip(BUDGET_COLUMNS, (budget, room, budget - room), strict=True))
