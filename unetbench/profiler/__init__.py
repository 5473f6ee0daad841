"""The profiler: memory, operation counts and speed of a U-Net, as flat pandas records.

``profile`` measures; ``plan`` sizes a patch or batch for a memory budget from the fake
estimate; ``estimate_train_memory`` is the cheap estimate a sweep can call per trial.
"""

from __future__ import annotations

from unetbench.profiler.api import RECORD_COLUMNS, planned_steps, profile
from unetbench.profiler.memory import estimate_train_memory
from unetbench.profiler.planner import PLAN_COLUMNS, plan

__all__ = [
    "PLAN_COLUMNS",
    "RECORD_COLUMNS",
    "estimate_train_memory",
    "plan",
    "planned_steps",
    "profile",
]
