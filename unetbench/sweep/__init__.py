"""Optuna sweeps over the U-Net design space: accuracy, memory and speed per trial.

A study is a TOML file (``studies/*.toml``; every key is in docs/sweeps.md, "Writing a study").
:func:`run_sweep` runs or resumes it until ``n_trials`` search trials (each a legal config
not tried before) are COMPLETE, then runs the confirmation round (``[confirm]``), and writes
``results/<study>/trials.parquet`` (one row per trial) and ``runs.parquet`` (one row per
training run) next to the Optuna storage, which optuna-dashboard opens unchanged.
"""

from __future__ import annotations

from unetbench.sweep.evaluator import Evaluator, TorchEvaluator
from unetbench.sweep.export import runs_frame, trials_frame
from unetbench.sweep.runner import SweepResult, run_sweep
from unetbench.sweep.spec import StudySpec, load_study_spec

__all__ = [
    "Evaluator",
    "StudySpec",
    "SweepResult",
    "TorchEvaluator",
    "load_study_spec",
    "run_sweep",
    "runs_frame",
    "trials_frame",
]
