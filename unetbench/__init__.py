"""unetbench: choose a U-Net for the accuracy, GPU memory and time you have.

The data flows one way: study spec -> :class:`UNetConfig` -> :class:`UNet` ->
profile/train -> flat record (pandas) -> report/plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unetbench._errors import ConfigError, UnetbenchError, UsageError
from unetbench._lazy import lazy_getattr

if TYPE_CHECKING:
    from unetbench.config import UNetConfig
    from unetbench.gate import compare_records
    from unetbench.model import UNet
    from unetbench.profiler import estimate_train_memory, plan, profile
    from unetbench.report import build_report
    from unetbench.sweep import load_study_spec, run_sweep

__version__ = "0.1.0"

# Everything that needs torch is imported on first use, so that `import unetbench` (and the
# pytest plugin that pytest loads in every session of a user's project) stays cheap.
_LAZY = {
    "UNetConfig": "unetbench.config",
    "UNet": "unetbench.model",
    "estimate_train_memory": "unetbench.profiler",
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
    "build_report",
    "compare_records",
    "estimate_train_memory",
    "load_study_spec",
    "plan",
    "profile",
    "run_sweep",
]


def _check_optuna(module: str) -> None:
    if module == "unetbench.sweep":  # an untested Optuna: one line, not a deep error
        from unetbench._versions import require_tested

        require_tested("optuna")


__getattr__ = lazy_getattr(__name__, _LAZY, _check_optuna)
