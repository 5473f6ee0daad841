"""A study as flat tables: ``trials.parquet`` (one row per trial) and ``runs.parquet`` (one row
per training run, a trial times a seed) in ``results/<study>/``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from unetbench.sweep.record import LEADING, fail_reason, identity_of, row_of
from unetbench.values import flat_cell

__all__ = ["RUN_COLUMNS", "export_results", "export_trials", "runs_frame", "trials_frame"]

# Bookkeeping attributes that are not record columns (runs are in runs.parquet).
_DROP = frozenset({"constraints", "worker_start", "worker", "runs", "record", "failure"})
#: Columns of runs.parquet, before the searched fields.
RUN_COLUMNS = (
    "trial_number",
    "role",
    "config_key",
    "rung",
    "train_seed",
    "resumed_steps",
    "steps_done",
    "train_steps",
    "status",
    "capped",
    "val_dice",
    "val_iou",
    "train_loss",
    "train_s",
)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of the study (any state) as a flat row with the profiler's column names."""
    rows = []
    late_reasons = fail_reason(study)  # studies before 0.3: reasons Optuna's heartbeat left
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {k: v for k, v in row_of(t).items() if k not in _DROP}
        ident = identity_of(t.user_attrs)
        if ident is not None:
            row.update(worker_host=ident["host"], worker_pid=ident["pid"])
        if t.state.name == "FAIL" and not row.get("reason") and t.number in late_reasons:
            row.update(status="error", reason=late_reasons[t.number])
        row["trial_number"] = t.number
        row["trial_state"] = t.state.name
        row.setdefault("feasible", False)
        row.setdefault("role", "search")  # a trial killed before it stored its row
        row["feasible"] = bool(row["feasible"]) and t.state.name == "COMPLETE"
        row = {key: flat_cell(value) for key, value in row.items()}
        row["datetime_start"] = t.datetime_start
        row["datetime_complete"] = t.datetime_complete
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(LEADING))
    lead = [c for c in LEADING if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]


def export_trials(study: optuna.Study, path: Path) -> pd.DataFrame:
    """Write :func:`trials_frame` to ``path`` atomically (a kill never leaves half a file)."""
    frame = trials_frame(study)
    _write(frame, path)
    return frame


def runs_frame(study: optuna.Study, searched: Sequence[str]) -> pd.DataFrame:
    """One row per training run of a finished trial (a reused result trained nothing), with
    the values of the ``searched`` fields."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = row_of(t)
        if "reused_from" in attrs or not isinstance(attrs.get("runs"), list):
            continue
        fields = {f: flat_cell(attrs.get(f)) for f in searched}
        for run in attrs["runs"]:
            rows.append(
                {
                    "trial_number": t.number,
                    "role": attrs.get("role", "search"),
                    "config_key": attrs.get("config_key"),
                    "rung": attrs.get("rung", 0),
                    "train_steps": attrs.get("train_steps"),
                    **{c: run.get(c) for c in RUN_COLUMNS if c in run},
                    **fields,
                }
            )
    columns = [*RUN_COLUMNS, *searched]
    frame = pd.DataFrame(rows, columns=columns)
    if not frame.empty:
        frame["capped"] = frame["capped"].astype(bool)
    return frame


def export_results(study: optuna.Study, study_dir: Path, searched: Sequence[str]) -> pd.DataFrame:
    """Write ``trials.parquet`` and ``runs.parquet`` to ``study_dir``; returns the trials."""
    _write(runs_frame(study, searched), study_dir / "runs.parquet")
    return export_trials(study, study_dir / "trials.parquet")


def _write(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
