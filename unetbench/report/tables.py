"""Report tables computed from flat trial/profile records (pandas), never from models.

Every function takes a DataFrame whose columns follow the profiler's records (config fields,
``checkpointing``, ``status``, ``peak_mem_train_bytes``, ``train_step_s``, ``trial_number``,
``val_dice``, ``trial_state``, ``feasible``, ``reason``...) and returns a new DataFrame.
Columns that a table needs but the records lack are reported as errors naming the column.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from unetbench._errors import ConfigError
from unetbench.config import UNetConfig
from unetbench.profiler.load import under_load
from unetbench.ranking import ranks, spread_of
from unetbench.studyinfo import Objective

__all__ = [
    "STOPPED",
    "checkpointing_savings",
    "config_columns",
    "config_labels",
    "is_false",
    "is_stopped",
    "memory_column",
    "natural_key",
    "pareto_front",
    "pareto_mask",
    "searched_fields",
    "timing_notes",
    "trial_states",
    "usable_mask",
]

log = logging.getLogger(__name__)

# Columns that, with the UNetConfig fields, identify one measured setting.
SETTING_COLUMNS = ("input_shape", "batch_size", "precision")
_ENV_COLUMNS = ("device", "dtype")
# Spread (interquartile range) of the timed steps, kept next to the median step time.
_IQR = "train_step_iqr_s"
#: Statuses of trials stopped before they measured anything: ``interrupted`` (a signal) and
#: ``surplus`` (the study already had its trials). Bookkeeping, not outcomes of a config.
STOPPED = ("interrupted", "surplus")
# Where the profiler records why a timing is not to be trusted ("" when it is); the one rule
# that reads it is unetbench.profiler.load.under_load.
_NOTE = "timing_note"


def config_columns(df: pd.DataFrame, *, with_setting: bool = True) -> list[str]:
    """UNetConfig fields (plus input shape and batch size) present in ``df``, in field order."""
    names = [*UNetConfig.field_names(), *(SETTING_COLUMNS if with_setting else ())]
    return [c for c in names if c in df.columns]


def _hashable(series: pd.Series) -> pd.Series:
    """Lists/tuples/arrays (e.g. planar_blocks) as strings so they can be grouped and matched."""
    if series.dtype == object:
        return series.map(lambda v: str(list(v)) if isinstance(v, list | tuple | np.ndarray) else v)
    if pd.api.types.is_float_dtype(series):  # ints that became floats next to a NaN: 3.0 -> 3
        whole = series.dropna()
        if (whole == whole.round()).all():
            return series.map(lambda v: v if v != v else int(v)).astype(object)
    return series


def is_false(series: pd.Series) -> pd.Series:
    """``feasible`` cells that say no (False, or "false"/"0" read back from CSV)."""
    return series.map(lambda v: v is False or v is np.False_ or str(v).lower() in ("false", "0"))


def _state(series: pd.Series) -> pd.Series:
    return series.astype(str).str.upper().str.replace("TRIALSTATE.", "", regex=False)


def trial_states(df: pd.DataFrame) -> pd.Series:
    """Each row's Optuna state (``COMPLETE``, ``FAIL``...); COMPLETE for records without one."""
    if "trial_state" not in df.columns:
        return pd.Series("COMPLETE", index=df.index)
    return _state(df["trial_state"])


def is_stopped(df: pd.DataFrame) -> pd.Series:
    """Rows of trials stopped before they measured anything (status in :data:`STOPPED`)."""
    if "status" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["status"].astype(str).str.lower().isin(STOPPED)


def timing_notes(df: pd.DataFrame, mode: str | None = None) -> pd.Series:
    """Why each row's timing is not to be trusted, "" where nothing says so.

    The profiler writes ``timing_note`` (and a sweep ``timing_note__<mode>`` per profiled
    checkpointing mode); ``mode`` reads that mode's column, else the row's own. A timing
    with a note was taken while the machine was busy: it is flagged wherever a time is
    shown, never presented as a result.
    """
    column = f"{_NOTE}__{mode}" if mode is not None and f"{_NOTE}__{mode}" in df.columns else _NOTE
    if column not in df.columns:
        return pd.Series("", index=df.index, dtype=object)
    notes = [str(v).strip() if under_load({_NOTE: v}) else "" for v in df[column]]
    return pd.Series(notes, index=df.index, dtype=object)


def usable_mask(df: pd.DataFrame, *, feasible_only: bool = True) -> pd.Series:
    """Rows that finished normally: status ok, trial COMPLETE and (optionally) feasible.

    Trials whose result the sweep copied from an earlier trial of the same config
    (``reused_from`` set) are left out, so no config counts twice.
    """
    mask = pd.Series(True, index=df.index)
    if "reused_from" in df.columns:
        mask &= df["reused_from"].isna()
    if "status" in df.columns:
        mask &= df["status"].astype(str).str.lower().eq("ok")
    if "trial_state" in df.columns:
        mask &= _state(df["trial_state"]).eq("COMPLETE")
    if feasible_only and "feasible" in df.columns:
        mask &= ~is_false(df["feasible"])
    return mask


def memory_column(df: pd.DataFrame) -> str:
    """Measured peak training memory if the records have it, else the fake-tensor estimate."""
    for column in ("peak_mem_train_bytes", "est_peak_mem_train_bytes"):
        if column in df.columns and df[column].notna().any():
            return column
    raise ConfigError(
        "records have no training memory: need column 'peak_mem_train_bytes' or "
        f"'est_peak_mem_train_bytes', got {sorted(df.columns)}"
    )


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{what} needs record columns {missing}, which are missing; "
            f"available: {sorted(df.columns)}"
        )


def pareto_mask(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """True for usable rows of rank 0 in :func:`unetbench.ranking.ranks` over ``objectives``.

    The sweep ranks the same way: a row is dominated by another that is at least as good
    on every objective (respecting each direction) and better on one, where differences
    within a timing's measured spread (:func:`unetbench.ranking.spread_of`: a step time's
    interquartile range) are ties. Infeasible, failed and incomplete rows never count.
    """
    if not objectives:
        raise ConfigError("a Pareto front needs at least one objective")
    _require(df, [o.column for o in objectives], "the Pareto front")
    values = df[[o.column for o in objectives]].apply(pd.to_numeric, errors="coerce")
    mask = usable_mask(df) & values.notna().all(axis=1)
    # Turn every objective into "larger is better".
    scores = values[mask].to_numpy(dtype=float) * np.array([o.sign for o in objectives])
    rows = df[mask].to_dict("records")
    spreads = np.array(
        [[spread_of(_plain(row), o.column) for o in objectives] for row in rows], dtype=float
    ).reshape(scores.shape)
    front = ranks(scores, spreads) == 0
    result = pd.Series(False, index=df.index)
    result[mask[mask].index[front]] = True
    return result


def _plain(row: dict[str, object]) -> dict[str, object]:
    """numpy numbers as Python ones (the ranking reads ints and floats)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def pareto_front(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The non-dominated usable rows, best first on the first objective."""
    front = df[pareto_mask(df, objectives)]
    first = objectives[0]
    return front.sort_values(first.column, ascending=first.direction == "minimize").reset_index(
        drop=True
    )


def searched_fields(df: pd.DataFrame, fields: Iterable[str] | None = None) -> list[str]:
    """Fields given (and present), else config/setting columns that take more than one value."""
    if fields is not None:
        return [f for f in fields if f in df.columns]
    candidates = [*config_columns(df), "checkpointing"]
    return [c for c in candidates if c in df.columns and _hashable(df[c]).nunique() > 1]


def natural_key(value: object) -> tuple[int, float, str]:
    """Sort key: numbers by value (8 < 16 < 32), then text; "none" first."""
    text = str(value)
    try:
        return (1, float(text), text)
    except ValueError:
        return (0 if text == "none" else 2, 0.0, text)


def config_labels(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Short row labels naming only the columns that differ between rows (``field=value``)."""
    varying = [c for c in columns if _hashable(df[c]).astype(str).nunique() > 1]
    if not varying:
        return pd.Series("all configs equal", index=df.index)
    parts = [_hashable(df[c]).astype(str).radd(f"{c}=") for c in varying]
    label = parts[0]
    for part in parts[1:]:
        label = label + ", " + part
    return label


def _modes(df: pd.DataFrame, column: str) -> list[str]:
    """Checkpointing modes of the sweep's per-mode columns ``<column>__<mode>`` with data."""
    prefix = f"{column}__"
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix) and df[c].notna().any()]


def _long_from_per_mode(df: pd.DataFrame, memory: str, time: str, key: list[str]) -> pd.DataFrame:
    """Sweep trials carry every mode's profile in ``<column>__<mode>`` columns; one row per
    (trial, mode) makes them look like profiler records."""
    parts = []
    for mode in _modes(df, memory):
        part = df[key].copy()
        part["checkpointing"] = mode
        part[memory] = pd.to_numeric(df[f"{memory}__{mode}"], errors="coerce")
        for column in (time, _IQR):
            values = df[f"{column}__{mode}"] if f"{column}__{mode}" in df.columns else np.nan
            part[column] = pd.to_numeric(pd.Series(values, index=df.index), errors="coerce")
        part[_NOTE] = timing_notes(df, mode)
        if f"status__{mode}" in df.columns:
            part = part[df[f"status__{mode}"].astype(str).str.lower().eq("ok")]
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0]


def checkpointing_savings(
    df: pd.DataFrame, *, memory: str | None = None, time: str = "train_step_s"
) -> pd.DataFrame:
    """Memory saved and step time added by each checkpointing mode versus ``none``, per config.

    Profiler records (one row per config and mode): rows with the same config, input shape,
    batch size, device and dtype are matched. Sweep trials (one row per trial, each mode's
    profile in ``<column>__<mode>`` columns): each trial's modes are compared. Repeated
    measurements are reduced to their median; configs measured without ``none`` are skipped.
    ``timing_note`` joins the notes of both timings (:func:`timing_notes`); where there is
    one, ``step_time_added_pct`` is empty: a difference between times taken under load
    measures the load, not checkpointing.
    """
    if memory is None:
        wide = [
            c
            for c in ("peak_mem_train_bytes", "est_peak_mem_train_bytes")
            if "none" in _modes(df, c)
        ]
        memory = wide[0] if wide else memory_column(df)
    per_mode = "none" in _modes(df, memory)
    if not per_mode:
        _require(df, ["checkpointing", time], "checkpointing savings")
    ok = df[usable_mask(df, feasible_only=False)].copy()
    key = config_columns(ok) + [c for c in _ENV_COLUMNS if c in ok.columns]
    for column in key:
        ok[column] = _hashable(ok[column]).astype(str)
    if per_mode:
        ok = _long_from_per_mode(ok, memory, time, key)
    else:
        ok[_NOTE] = timing_notes(ok)
    if _IQR not in ok.columns:
        ok[_IQR] = np.nan
    numbers = [memory, time, _IQR]
    groups = ok.groupby([*key, "checkpointing"], sort=False)
    med = groups[numbers].median()
    med[_NOTE] = groups[_NOTE].agg(lambda notes: "; ".join(dict.fromkeys(n for n in notes if n)))
    med = med.reset_index()
    base = med[med["checkpointing"] == "none"].drop(columns="checkpointing")
    other = med[med["checkpointing"] != "none"]
    merged = (
        other.merge(base, on=key, suffixes=("", "_none"))
        if key
        else other.assign(**{f"{c}_none": base[c].median() for c in numbers}).assign(
            **{f"{_NOTE}_none": "; ".join(n for n in base[_NOTE] if n)}
        )
    )
    out = merged[[*key, "checkpointing"]].copy()
    out.insert(0, "label", config_labels(merged, key) if key else "records")
    out["peak_mem_none_bytes"] = merged[f"{memory}_none"]
    out["peak_mem_bytes"] = merged[memory]
    out["mem_saved_pct"] = 100.0 * (1.0 - merged[memory] / merged[f"{memory}_none"])
    out["train_step_none_s"] = merged[f"{time}_none"]
    out["train_step_s"] = merged[time]
    notes = [
        "; ".join(f"{mode}: {n}" for mode, n in (("none", a), (cp, b)) if n)
        for a, b, cp in zip(
            merged[f"{_NOTE}_none"], merged[_NOTE], merged["checkpointing"], strict=True
        )
    ]
    out[_NOTE] = notes
    # A time taken under load is no result: the percentage is left empty, the note says why.
    added = 100.0 * (merged[time] / merged[f"{time}_none"] - 1.0)
    out["step_time_added_pct"] = added.where(out[_NOTE].eq(""), np.nan)
    out["train_step_none_iqr_s"] = merged[f"{_IQR}_none"]
    out["train_step_iqr_s"] = merged[_IQR]
    out["memory_column"] = memory
    return out.sort_values("mem_saved_pct", ascending=False).reset_index(drop=True)
