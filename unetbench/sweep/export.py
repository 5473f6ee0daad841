"""Trials as one flat table: ``results/<study>/trials.parquet``, one row per trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from unetbench.sweep.liveness import REASON_ATTR_PREFIX, identity_of

__all__ = ["export_trials", "trials_frame"]

# Columns that lead the table, in this order; the rest follow as the trials recorded them.
_LEADING = (
    "trial_number",
    "trial_state",
    "feasible",
    "status",
    "reason",
    "reused_from",
    "val_dice",
    "val_iou",
    "train_loss",
    "peak_mem_train_bytes",
    "est_peak_mem_train_bytes",
    "train_voxels_per_s",
    "checkpointing",
)
# Bookkeeping attributes that are not record columns.
_DROP = frozenset({"constraints", "config_key", "worker_start", "worker"})


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of the study (any state) as a flat row with the profiler's column names."""
    rows = []
    late_reasons = {
        k[len(REASON_ATTR_PREFIX) :]: v
        for k, v in study._storage.get_study_system_attrs(study._study_id).items()
        if k.startswith(REASON_ATTR_PREFIX)
    }
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {k: v for k, v in t.user_attrs.items() if k not in _DROP}
        ident = identity_of(t.user_attrs)
        if ident is not None:
            row.update(worker_host=ident["host"], worker_pid=ident["pid"])
        if t.state.name == "FAIL" and not row.get("reason") and str(t.number) in late_reasons:
            row.update(status="error", reason=late_reasons[str(t.number)])
        row["trial_number"] = t.number
        row["trial_state"] = t.state.name
        row.setdefault("feasible", False)
        row["feasible"] = bool(row["feasible"]) and t.state.name == "COMPLETE"
        for key, value in row.items():
            if isinstance(value, list):
                row[key] = "x".join(map(str, value)) if key != "planar_blocks" else str(value)
        row["datetime_start"] = t.datetime_start
        row["datetime_complete"] = t.datetime_complete
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(_LEADING))
    lead = [c for c in _LEADING if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]


def export_trials(study: optuna.Study, path: Path) -> pd.DataFrame:
    """Write :func:`trials_frame` to ``path`` atomically (a kill never leaves half a file)."""
    frame = trials_frame(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return frame
