"""The profiler: memory, operation counts and speed of a U-Net, as flat pandas records.

``profile`` measures; ``plan`` sizes a patch or batch for a memory budget from the fake
estimate; ``estimate_train_memory`` is the cheap estimate a sweep can call per trial.
Names are imported on first use, so that readers of records (the report, ``compare``) can
import :mod:`unetbench.profiler.load` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unetbench._lazy import lazy_getattr

if TYPE_CHECKING:
    from unetbench.profiler.api import RECORD_COLUMNS, planned_steps, profile
    from unetbench.profiler.memory import estimate_train_memory
    from unetbench.profiler.planner import PLAN_COLUMNS, plan

_LAZY = {
    "RECORD_COLUMNS": "unetbench.profiler.api",
    "planned_steps": "unetbench.profiler.api",
    "profile": "unetbench.profiler.api",
    "estimate_train_memory": "unetbench.profiler.memory",
    "PLAN_COLUMNS": "unetbench.profiler.planner",
    "plan": "unetbench.profiler.planner",
}

__all__ = [
    "PLAN_COLUMNS",
    "RECORD_COLUMNS",
    "estimate_train_memory",
    "plan",
    "planned_steps",
    "profile",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
