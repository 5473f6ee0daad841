"""unetbench: choose a U-Net for the accuracy, GPU memory and time you have.

The data flows one way: study spec -> :class:`UNetConfig` -> :class:`UNet` ->
profile/train -> flat record (pandas) -> report/plot.
"""

from __future__ import annotations

import importlib
from typing import Any

from unetbench._errors import ConfigError, UnetbenchError, UsageError
from unetbench.config import UNetConfig
from unetbench.model import UNet

__version__ = "0.1.0"

# Heavier parts (profiler, sweeps, reports) are imported on first use.
_LAZY = {
    "profile": "unetbench.profiler",
    "plan": "unetbench.profiler",
    "run_sweep": "unetbench.sweep",
    "load_study_spec": "unetbench.sweep",
    "build_report": "unetbench.report",
    "compare_records": "unetbench.gate",
}

__all__ = [
    "ConfigError",
    "UNet",
    "UNetConfig",
    "UnetbenchError",
    "UsageError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetbench' has no attribute {name!r}")
