"""What became of each trial and config: failures with their errors, and stopped trials.

Three kinds of rows that are not results, told apart:

- **failures** (:func:`failures`): trials whose config could not be measured or was found
  infeasible: ``status`` oom, capped, diverged, error (with the exception's type, message,
  traceback and the worker it ran on), a trial state other than COMPLETE, or ``feasible``
  false;
- **stopped trials** (:func:`stopped_trials`): ``interrupted`` by a signal or ``surplus`` to
  a study that already had its trials. They measured nothing and say nothing about a
  config; a resumed study measures their configs again, so they are listed apart, with the
  trial that measured the config afterwards;
- **config outcomes** (:func:`config_outcomes`): one word per config (``feasible``, ``oom``,
  ``error``...), which the report's header and its plots both count, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from unetbench.report.tables import (
    is_false,
    is_stopped,
    trial_states,
    usable_mask,
)

__all__ = [
    "config_outcomes",
    "count_words",
    "failure_tracebacks",
    "failures",
    "last_frames",
    "stopped_trials",
]

_NO_REASON = "(no reason recorded)"


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _first_line(reason: object, width: int = 120) -> str:
    text = _text(reason)
    if not text:
        return _NO_REASON
    line = text.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def last_frames(traceback: object, frames: int = 2) -> str:
    """The end of a formatted traceback: its last ``frames`` frames and the error line."""
    lines = _text(traceback).splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    if not starts:
        return "\n".join(lines[-3:])
    return "\n".join(lines[starts[-frames] if len(starts) >= frames else starts[0] :])


def _kinds(df: pd.DataFrame) -> pd.Series:
    """``status`` when not ok, else the trial state when not COMPLETE, else ``infeasible``;
    "" for rows that are results and for stopped trials."""
    kind = pd.Series("", index=df.index, dtype=object)
    if "feasible" in df.columns:
        kind[is_false(df["feasible"])] = "infeasible"
    state = trial_states(df)
    bad = state.ne("COMPLETE")
    if "trial_state" in df.columns:
        bad &= df["trial_state"].notna()
    kind[bad] = state[bad].str.lower()
    if "status" in df.columns:
        status = df["status"].astype(str).str.lower()
        bad = status.ne("ok") & df["status"].notna()
        kind[bad] = status[bad]
    kind[is_stopped(df)] = ""
    return kind


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)


def _listed(values: Iterable[object], max_listed: int) -> str:
    items = list(dict.fromkeys(str(v) for v in values if _text(v)))
    more = len(items) - max_listed
    return ", ".join(items[:max_listed]) + (f" (+{more} more)" if more > 0 else "")


def failures(df: pd.DataFrame, *, max_listed: int = 10) -> pd.DataFrame:
    """Failed, pruned and infeasible trials grouped by kind, error type and reason.

    Columns: ``kind`` (the record ``status`` when not ok, e.g. ``oom``, ``error``; else the
    trial state when not COMPLETE, e.g. ``fail``, ``pruned``; else ``infeasible``),
    ``error_type`` (the exception's type for a crashed trial), ``reason`` (first line of the
    recorded reason: for a crash ``Type: message``), ``n_trials``, ``n_configs`` (distinct
    configs among them), ``trials`` (their numbers), ``workers`` (the hosts they ran on) and
    ``last_frames`` (where the first of them crashed: the end of its traceback; every full
    traceback is in :func:`failure_tracebacks`). Interrupted and surplus trials are not
    failures (see :func:`stopped_trials`).
    """
    kind = _kinds(df)
    chosen = df[kind != ""]
    ids = chosen["trial_number"] if "trial_number" in chosen.columns else chosen.index.to_series()
    keys = _column(chosen, "config_key")
    table = pd.DataFrame(
        {
            "kind": kind[chosen.index],
            "error_type": _column(chosen, "error_type").map(_text),
            "reason": _column(chosen, "reason").map(_first_line),
            "id": ids,
            "config": keys.where(keys.notna(), "trial " + ids.astype(str)),
            "host": _column(chosen, "worker_host"),
            "traceback": _column(chosen, "traceback").map(_text),
        }
    )
    rows = []
    for (k, error_type, reason), group in table.groupby(
        ["kind", "error_type", "reason"], sort=True
    ):
        tracebacks = [t for t in group["traceback"] if t]
        rows.append(
            {
                "kind": k,
                "error_type": error_type,
                "reason": reason,
                "n_trials": len(group),
                "n_configs": group["config"].nunique(),
                "trials": _listed(group["id"], max_listed),
                "workers": _listed(group["host"], 3),
                "last_frames": last_frames(tracebacks[0]) if tracebacks else "",
            }
        )
    columns = ["kind", "error_type", "reason", "n_trials", "n_configs", "trials", "workers"]
    result = pd.DataFrame(rows, columns=[*columns, "last_frames"])
    return result.sort_values(["n_trials", "kind"], ascending=[False, True]).reset_index(drop=True)


def failure_tracebacks(df: pd.DataFrame) -> str:
    """Every crashed trial's full traceback, one section per trial ("" when none)."""
    if "traceback" not in df.columns:
        return ""
    parts = []
    for row in df[df["traceback"].map(_text) != ""].to_dict("records"):
        where = f"on {row['worker_host']}" if _text(row.get("worker_host")) else ""
        pid = f" (pid {int(row['worker_pid'])})" if _text(row.get("worker_pid")) else ""
        head = f"trial {row.get('trial_number')} {where}{pid}: {_first_line(row.get('reason'))}"
        parts.append(f"=== {head.strip()}\n{_text(row['traceback'])}\n")
    return "\n".join(parts)


def stopped_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Trials stopped before they measured anything, and what measured their config later.

    Columns: ``trial_number``, ``role``, ``status`` (``interrupted`` or ``surplus``),
    ``reason``, ``worker_host``, ``config_key`` and ``measured_by``: the completed trial of
    the same role that measured the same config (empty when none did, or when no config had
    been chosen yet).
    """
    stopped = df[is_stopped(df)]
    columns = ["trial_number", "role", "status", "reason", "worker_host", "config_key"]
    done = df[trial_states(df).eq("COMPLETE") & ~is_stopped(df)]
    role = _column(df, "role").fillna("search").astype(str).to_dict()
    numbers = _column(done, "trial_number")
    measured = list(zip(done.index, _column(done, "config_key"), numbers, strict=True))
    rows = []
    for i, row in zip(stopped.index, stopped.to_dict("records"), strict=True):
        key = row.get("config_key")
        same = [n for j, k, n in measured if k == key and role[j] == role[i]]
        rows.append(
            {
                **{c: row.get(c) for c in columns},
                "role": role[i],
                "reason": _first_line(row.get("reason")),
                "measured_by": ", ".join(str(n) for n in same),
            }
        )
    return pd.DataFrame(rows, columns=[*columns, "measured_by"])


def config_outcomes(configs: pd.DataFrame) -> pd.Series:
    """One word per config: ``feasible`` (usable), ``infeasible`` (status ok, flagged
    infeasible), else its ``status`` (``oom``, ``capped``, ``diverged``, ``error``...), or
    its trial state (``pruned``)."""
    status = _column(configs, "status").fillna("ok").astype(str).str.lower()
    state = trial_states(configs).str.lower()
    words = status.where(status.ne("ok"), state.where(state.ne("complete"), "infeasible"))
    words[usable_mask(configs)] = "feasible"
    return words.astype(object)


def count_words(words: pd.Series, order: Iterable[str] = ("feasible",)) -> list[str]:
    """``["8 feasible", "3 oom", "1 error"]``: ``order`` first, then by count."""
    counts = words.value_counts(sort=False)
    first = [w for w in order if w in counts.index]
    rest = sorted((w for w in counts.index if w not in first), key=lambda w: (-counts[w], w))
    return [f"{counts[w]} {w}" for w in [*first, *rest]]
