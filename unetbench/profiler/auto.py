"""``checkpointing="auto"``: the policy a config should train with, chosen from estimates.

Every registered policy is sized on fake tensors (nothing is allocated) and counted with
torch's FLOP counter. With a memory budget, the choice is the policy with the fewest training
FLOPs whose step (estimated peak + optimizer state + batch) fits the budget less its headroom,
ties broken by memory; without a budget, or when none fits, the one with the least memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unetbench.budget import AUTO
from unetbench.model.policies import policy_names
from unetbench.profiler import _step, flops
from unetbench.profiler.memory import estimate_step_bytes

__all__ = ["AUTO", "AutoChoice", "choose_policy"]


@dataclasses.dataclass(frozen=True)
class AutoChoice:
    """The chosen policy and what every candidate was estimated at."""

    name: str
    fits: bool  # False when no policy fits the budget (the leanest is chosen then)
    est_peak_bytes: dict[str, int]
    total_bytes: dict[str, int]
    train_flops: dict[str, int]


def choose_policy(
    config: Any,
    full_shape: tuple[int, ...],
    precision: str = "fp32",
    budget_bytes: int | None = None,
    optimizer: str = "adam",
    candidates: tuple[str, ...] | None = None,
    device: str = "cpu",
    *,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> AutoChoice:
    """Choose the checkpointing policy for ``config`` at ``full_shape`` (N, C, *spatial).

    ``budget_bytes`` is what the step may use, headroom already subtracted; ``device`` is
    where the step will run (CUDA's autocast rules differ from the CPU's); ``dice_loss`` as
    the step trains (the soft Dice loss adds to the step's peak), ``memory_format`` the
    layout of weights and input.
    """
    cfg = _step.config_of(config)
    names = candidates or policy_names()
    step = {
        n: estimate_step_bytes(
            cfg,
            full_shape,
            n,
            precision,
            device,
            optimizer,
            dice_loss=dice_loss,
            memory_format=memory_format,
        )
        for n in names
    }
    peak = {n: step[n].peak for n in names}
    total = {n: step[n].total for n in names}
    fitting = [n for n in names if budget_bytes is None or total[n] <= budget_bytes]
    if budget_bytes is None or not fitting:
        name = min(names, key=lambda n: (peak[n], names.index(n)))
        counted = {n: flops.count_torch_flops(cfg, full_shape, 1, n)[1] for n in (name,)}
        return AutoChoice(name, budget_bytes is None, peak, total, counted)
    counted = {n: flops.count_torch_flops(cfg, full_shape, 1, n)[1] for n in fitting}
    name = min(fitting, key=lambda n: (counted[n], peak[n], names.index(n)))
    return AutoChoice(name, True, peak, total, counted)
